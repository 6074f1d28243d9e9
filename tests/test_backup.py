"""Backups to a directory (docs/backup.md), with the shards in the coordinator's process (local mode):
the cut under concurrent writes and removes, exact restores onto 2 and 5 groups, the CLI as the docs
write it, a damaged or foreign backup refused, a restore killed (-9) midway then run again, and the
backup RPCs refused to a read-only API key. Real servers on loopback, real faiss, no mocks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from vecshard import Client, FailedPrecondition, NotFound
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cluster.local import LocalCluster

from .support import run_vecshard, serve_process

DIM = 16
N = 3000
HOT = np.arange(5000, 5040)  # upserted together, again and again, by the writer
DOOMED = np.arange(2000, 2600)  # removed in batches of 20 by the remover


def vectors_of(ids: np.ndarray, seq: int) -> np.ndarray:
    rng = np.random.default_rng(seq)
    return (rng.random((ids.size, DIM), dtype=np.float32) + ids[:, None].astype(np.float32) % 7).astype(np.float32)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data = tmp_path_factory.mktemp("backup-cluster")
    with LocalCluster(shards=3, shard_mode="local", log_level="WARNING", data_dir=data) as c:
        yield c


@pytest.fixture(scope="module")
def c(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.address, timeout=120) as client:
        ids = np.arange(N)
        client.create_collection("src", dim=DIM, index="ivf_flat", nlist=16, nprobe=3)
        payloads = [{"tag": f"t{i % 5}", "n": int(i), "doc": {"len": i % 11}} for i in range(N)]
        client.add("src", ids=ids, vectors=vectors_of(ids, 0), payloads=payloads)
        client.add("src", ids=np.arange(9000, 9010), payloads=[{"tag": "novec", "n": i} for i in range(10)])
        client.add("src", ids=HOT, vectors=vectors_of(HOT, 1), payloads=[{"seq": 1}] * HOT.size)
        client.train("src")
        client.create_payload_index("src", "tag", "keyword")
        client.create_payload_index("src", "n", "integer")
        yield client


def _points(c: Client, name: str) -> dict[int, dict]:
    return {int(p.id): p.payload for p in c.scroll(name, with_payload=True, page_size=2000)}


def _same_collection(c: Client, a: str, b: str) -> None:
    """b answers as a does: counts, payloads, payload indexes, vectors, plain and filtered searches."""
    ia, ib = c.describe(a), c.describe(b)
    assert ia.count == ib.count and ia.payload_indexes == ib.payload_indexes, (ia, ib)
    assert (ia.training_state, ia.nlist) == (ib.training_state, ib.nlist)
    assert _points(c, a) == _points(c, b)
    ids = np.arange(0, N, 7)
    np.testing.assert_array_equal(c.get(a, ids, allow_missing=True), c.get(b, ids, allow_missing=True))
    q = vectors_of(np.arange(40), 99)
    for f in (None, {"must": [{"key": "tag", "match": "t2"}, {"key": "n", "range": {"gte": 500}}]}):
        ra, rb = c.search(a, q, k=10, filter=f), c.search(b, q, k=10, filter=f)
        np.testing.assert_array_equal(ra.ids, rb.ids)
        np.testing.assert_array_equal(ra.distances, rb.distances)
    assert c.count(a, 'tag = "t3"') == c.count(b, 'tag = "t3"')


def test_cut_under_concurrent_writes_then_exact_restores(c: Client, cluster: LocalCluster, tmp_path: Path) -> None:
    """Every write acknowledged before the cut is in the backup, none begun after it, none torn
    (an upsert of 40 ids over 3 groups, a remove of 20); restores onto 2 and 5 groups answer as
    the source at the cut."""
    where = str(tmp_path / "backups")
    log: dict[str, list[tuple[int, float, float]]] = {"upsert": [], "remove": []}  # (seq, started, acked)
    stop = threading.Event()

    def upserts() -> None:
        with Client(cluster.address, timeout=60) as w:
            seq = 2
            while not stop.is_set():
                t = time.monotonic()
                w.add("src", ids=HOT, vectors=vectors_of(HOT, seq), payloads=[{"seq": seq}] * HOT.size, upsert=True)
                log["upsert"].append((seq, t, time.monotonic()))
                seq += 1

    def removes() -> None:
        with Client(cluster.address, timeout=60) as w:
            for j, batch in enumerate(np.array_split(DOOMED, DOOMED.size // 20)):
                if stop.is_set():
                    return
                t = time.monotonic()
                w.remove("src", batch)
                log["remove"].append((j, t, time.monotonic()))
                time.sleep(0.005)

    threads = [threading.Thread(target=f) for f in (upserts, removes)]
    for t in threads:
        t.start()
    time.sleep(0.4)
    t0 = time.monotonic()
    p = c.create_backup(where, collections=["src"])
    t1 = time.monotonic()
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert p.phase == "DONE" and p.backup_id, p
    info = c.describe_backup(p.backup_id, where)
    assert info.fence_ms < 2000 and info.files == sum(len(x.files) for x in info.collections) > 0
    assert c.verify_backup(p.backup_id, where).ok

    r = c.restore_backup(p.backup_id, where, collection="src", as_name="cut", shards=2)
    assert r.phase == "DONE", r
    got = [pt for pt in c.retrieve("cut", HOT.tolist(), with_vectors=True) if pt is not None]
    assert len(got) == HOT.size
    seqs = {pt.payload["seq"] for pt in got}
    assert len(seqs) == 1, f"a torn upsert: the hot ids hold versions {seqs}"
    (cut_seq,) = seqs
    np.testing.assert_array_equal(
        np.stack([pt.vector for pt in got if pt.vector is not None]), vectors_of(HOT, cut_seq)
    )
    acked_before = [s for s, _, acked in log["upsert"] if acked < t0]
    begun_after = [s for s, started, _ in log["upsert"] if started > t1]
    assert not acked_before or cut_seq >= max(acked_before)
    assert not begun_after or cut_seq < min(begun_after)
    batches = np.array_split(DOOMED, DOOMED.size // 20)
    present = {int(pt.id) for pt in c.retrieve("cut", DOOMED.tolist()) if pt is not None}
    gone = [j for j, b in enumerate(batches) if not present & set(b.tolist())]
    kept = [j for j, b in enumerate(batches) if set(b.tolist()) <= present]
    assert len(gone) + len(kept) == len(batches), "a remove half applied"
    assert gone == list(range(len(gone))), "the removes in the backup are not those before one point"
    assert all(j in gone for j, _, acked in log["remove"] if acked < t0)
    assert not any(j in gone for j, started, _ in log["remove"] if started > t1)

    # Quiescent now: a second backup restored onto 2 and 5 groups answers exactly as the source.
    q = c.create_backup(where, collections=["src"])
    for shards in (2, 5):
        done = c.restore_backup(q.backup_id, where, collection="src", as_name=f"src{shards}", shards=shards)
        assert done.phase == "DONE" and done.done == c.describe("src").count
        assert {s.name for s in c.describe(f"src{shards}").shards} and len(c.describe(f"src{shards}").shards) == shards
        _same_collection(c, "src", f"src{shards}")
    again = c.restore_backup(q.backup_id, where, collection="src", as_name="src2", shards=2)
    assert again.phase == "DONE" and again.done == 0  # (idempotent: nothing to do)
    with pytest.raises(FailedPrecondition, match="exists"):
        c.restore_backup(q.backup_id, where, collection="src")
    listed = [b.id for b in c.list_backups(where)]
    assert listed == [q.backup_id, p.backup_id]
    assert c.delete_backup(p.backup_id, where) > 0
    assert [b.id for b in c.list_backups(where)] == [q.backup_id]
    with pytest.raises(NotFound):
        c.describe_backup(p.backup_id, where)


def test_cli_and_damaged_backups(c: Client, cluster: LocalCluster, tmp_path: Path) -> None:
    """The commands of docs/backup.md; one byte flipped, a foreign manifest: refused, naming the file."""
    where = str(tmp_path / "b")
    addr = ("--address", cluster.address)
    made = run_vecshard("backup", "create", "--collection", "src", "--to", where, "--no-progress", *addr)
    assert made.returncode == 0, made.stderr
    backup_id = made.stdout.strip().splitlines()[-1]
    listed = json.loads(run_vecshard("backup", "list", "--from", where, "--json", *addr).stdout)
    assert [b["id"] for b in listed] == [backup_id] and listed[0]["collections"][0]["name"] == "src"
    described = json.loads(run_vecshard("backup", "describe", backup_id, "--from", where, "--json", *addr).stdout)
    files = [f["path"] for coll in described["collections"] for f in coll["files"]]
    assert {f.split("/")[1] for f in files} == {"g0", "g1", "g2"}
    assert run_vecshard("backup", "verify", backup_id, "--from", where, *addr).returncode == 0
    restored = run_vecshard(
        "restore", backup_id, "--from", where, "--collection", "src", "--as", "viacli", "--shards", "2", *addr
    )
    assert restored.returncode == 0, restored.stderr
    assert c.describe("viacli").count == c.describe("src").count

    victim = Path(where) / backup_id / "src" / "g1" / "versions.npy"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    checked = run_vecshard("backup", "verify", backup_id, "--from", where, *addr)
    assert checked.returncode != 0 and "src/g1/versions.npy" in checked.stdout, checked.stdout
    assert not c.verify_backup(backup_id, where).ok
    with pytest.raises(FailedPrecondition, match="src/g1/versions.npy"):
        c.restore_backup(backup_id, where, collection="src", as_name="broken")
    assert "broken" not in [x.name for x in c.list_collections()]

    foreign = Path(where) / "20200101T000000Z-000000"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"format": "something-else/3", "id": foreign.name}))
    with pytest.raises(FailedPrecondition, match="not a vecshard backup"):
        c.describe_backup(foreign.name, where)
    with pytest.raises(FailedPrecondition, match="manifest.json"):
        c.restore_backup(foreign.name, where)
    assert run_vecshard("backup", "delete", backup_id, "--from", where, *addr).returncode == 0


def test_restore_killed_midway_then_run_again(c: Client, tmp_path: Path) -> None:
    """kill -9 of the server in the middle of a restore: the half-restored collection shows no
    point; after a restart the same restore finishes it, exactly; a third run changes nothing."""
    data, where = tmp_path / "data", str(tmp_path / "b")
    env = {"VECSHARD_FAILPOINT": "restore-mid-copy"}
    proc, address, _ = serve_process(data, "--shards", "2", env=env)
    try:
        with Client(address, timeout=60) as k:
            ids = np.arange(4500)
            k.create_collection("big", dim=DIM, index="ivf_flat", nlist=8)
            k.add("big", ids=ids, vectors=vectors_of(ids, 5), payloads=[{"n": int(i)} for i in ids])
            k.train("big")
            backup_id = k.create_backup(where).backup_id
            with pytest.raises(Exception):  # noqa: B017 - the server dies under the call
                k.restore_backup(backup_id, where, as_name="copy", collection="big", shards=3)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    proc, address, _ = serve_process(data, "--shards", "3")  # (the restore added a third local group)
    try:
        with Client(address, timeout=60) as k:
            assert k.describe("copy").count == 0  # the partial copy stays hidden
            assert k.search("copy", vectors_of(np.arange(3), 1), k=5).ids.max() == -1
            done = k.restore_backup(backup_id, where, as_name="copy", collection="big", shards=3)
            assert done.phase == "DONE"
            _same_collection_small(k, "big", "copy")
            assert k.restore_backup(backup_id, where, as_name="copy", collection="big", shards=3).done == 0
            _same_collection_small(k, "big", "copy")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _same_collection_small(c: Client, a: str, b: str) -> None:
    assert c.describe(a).count == c.describe(b).count
    assert _points(c, a) == _points(c, b)
    q = vectors_of(np.arange(20), 7)
    ra, rb = c.search(a, q, k=10), c.search(b, q, k=10)
    np.testing.assert_array_equal(ra.ids, rb.ids)
    np.testing.assert_array_equal(ra.distances, rb.distances)


def test_backup_rpcs_are_admin_only(tmp_path: Path) -> None:
    """A read-only key can neither create nor restore (nor list) backups; the admin key can."""
    keys = tmp_path / "keys.toml"
    keys.write_text('admin = ["admin-key"]\nread = ["read-key"]\n')
    proc, address, _ = serve_process(tmp_path / "data", "--shards", "1", env={"VECSHARD_API_KEYS_FILE": str(keys)})
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.VectorSearchStub(channel)
            where = pb.BackupLocation(uri=str(tmp_path / "b"))
            calls = [
                (stub.CreateBackup, pb.CreateBackupRequest(location=where, wait=True)),
                (stub.RestoreBackup, pb.RestoreBackupRequest(id="20250101T000000Z-abcdef", location=where)),
                (stub.ListBackups, pb.ListBackupsRequest(location=where)),
            ]
            for method, request in calls:
                for key, code in (
                    ("read-key", grpc.StatusCode.PERMISSION_DENIED),
                    ("", grpc.StatusCode.UNAUTHENTICATED),
                ):
                    with pytest.raises(grpc.RpcError) as err:
                        method(request, timeout=10, metadata=[("x-api-key", key)] if key else None)
                    assert err.value.code() == code, (method, key, err.value)
            admin = [("x-api-key", "admin-key")]
            made = stub.CreateBackup(pb.CreateBackupRequest(location=where, wait=True), timeout=30, metadata=admin)
            assert made.phase == "DONE"
            with pytest.raises(grpc.RpcError) as err:
                stub.RestoreBackup(
                    pb.RestoreBackupRequest(id="20250101T000000Z-abcdef", location=where), timeout=10, metadata=admin
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_docs_commands_run_as_written(c: Client, cluster: LocalCluster, tmp_path: Path) -> None:
    """docs/backup.md's command block, run by bash as written (its backup directory moved under this
    test's tmp dir, the address from VECSHARD_ADDRESS): every command succeeds, and the restore it
    names leaves `docs_restored` equal in count to `docs`."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "backup.md").read_text()
    block = re.search(r"## Commands.*?```bash\n(.*?)```", doc, re.S)
    assert block is not None, "docs/backup.md lost its command block"
    script = block.group(1).replace("/tmp/vecshard-backups", str(tmp_path / "backups"))
    ids = np.arange(500)
    c.create_collection("docs", dim=DIM)
    c.add("docs", ids=ids, vectors=vectors_of(ids, 7), payloads=[{"n": int(i)} for i in ids])
    env = {**os.environ, "VECSHARD_ADDRESS": cluster.address}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert c.describe("docs_restored").count == c.describe("docs").count == ids.size
    c.drop_collection("docs_restored")
    c.drop_collection("docs")
