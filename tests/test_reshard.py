"""Elastic shards: a collection moves to another number of shard groups online (coordinator/reshard.py).

Real clusters (both shard modes), real faiss. Writers (adds, upserts, removes, payloads) and
searchers run throughout every reshard; a nemesis kills processes mid-copy. After every step each
acknowledged point is present with its exact vector and payload, no removed point is back, every
search was answered, and results equal one in-process faiss index over the same data.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path

import faiss
import grpc
import numpy as np
import pytest

from vecshard import Client, FailedPrecondition, InvalidArgument, NotFound, Unavailable, wire
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import types_pb2 as tpb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.hashing import fmix64
from vecshard_server.common.placement import JUMP, MOD, Placement, jump_hash

from .support import free_port, start_role

DIM = 16
# VECSHARD_RESHARD_LONG=1: the long profile (run locally): 50,000 points, the steps twice over.
LONG = os.environ.get("VECSHARD_RESHARD_LONG") == "1"
POINTS = 50_000 if LONG else 3_000


def test_jump_placement_moves_the_minimum() -> None:
    """S -> S+1 moves about 1/(S+1) of the ids (all to the new group), S -> S-1 only the last group's;
    MOD moves most of them. Checked against the reference jump hash loop."""
    ids = np.arange(200_000, dtype=np.int64)
    keys = fmix64(ids[:500])

    def reference(key: int, n: int) -> int:
        b, j = -1, 0
        while j < n:
            b = j
            key = (key * 2862933555777941757 + 1) % (1 << 64)
            j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
        return b

    for n in (1, 2, 3, 5, 64):
        assert jump_hash(keys, n).tolist() == [reference(int(k), n) for k in keys]
    for s in (1, 2, 3, 4, 7):
        before, after = Placement(JUMP, s).owner(ids), Placement(JUMP, s + 1).owner(ids)
        moved = before != after
        assert moved.mean() <= 1.05 / (s + 1), (s, moved.mean())
        assert (after[moved] == s).all()  # every moved id goes to the new group
        assert (before[after != s] == after[after != s]).all()
        counts = np.bincount(after, minlength=s + 1)
        assert counts.min() > 0.9 * ids.size / (s + 1)
    # Shrinking 5 -> 2: only ids of groups 2..4 move.
    five, two = Placement(JUMP, 5).owner(ids), Placement(JUMP, 2).owner(ids)
    assert (five[five < 2] == two[five < 2]).all()
    assert (Placement(MOD, 2).owner(ids) != Placement(MOD, 3).owner(ids)).mean() > 0.6


class Workload:
    """Concurrent writers and searchers, remembering every acknowledged write."""

    def __init__(self, client: Client, name: str, rng: np.random.Generator, first_id: int) -> None:
        self.client, self.name, self.rng = client, name, rng
        self.live: dict[int, tuple[np.ndarray, str]] = {}
        self.removed: set[int] = set()
        self.next_id = first_id
        self.errors: list[BaseException] = []
        self.searches = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def writer(self) -> None:
        try:
            while not self.stop.is_set():
                op = self.rng.integers(0, 6)
                with self.lock:
                    known = list(self.live)
                if op <= 1 or not known:  # add new ids
                    ids = np.arange(self.next_id, self.next_id + 20, dtype=np.int64)
                    self.next_id += 20
                    x = self.rng.standard_normal((ids.size, DIM)).astype(np.float32)
                    tags = [f"t{i}" for i in ids.tolist()]
                    self.client.add(self.name, ids, x, payloads=[{"tag": t} for t in tags])
                    with self.lock:
                        for i, v, t in zip(ids.tolist(), x, tags, strict=True):
                            self.live[i] = (v, t)
                elif op == 2:  # upsert existing ids
                    ids = np.array(self.rng.choice(known, size=min(10, len(known)), replace=False), dtype=np.int64)
                    x = self.rng.standard_normal((ids.size, DIM)).astype(np.float32)
                    tags = [f"u{i}" for i in ids.tolist()]
                    with self.lock:  # (the only writer of these ids: no other thread races it)
                        self.client.add(self.name, ids, x, upsert=True, payloads=[{"tag": t} for t in tags])
                        for i, v, t in zip(ids.tolist(), x, tags, strict=True):
                            self.live[i] = (v, t)
                elif op == 4:  # payload writes by id (partial: MERGE), and by filter
                    ids = np.array(self.rng.choice(known, size=min(6, len(known)), replace=False), dtype=np.int64)
                    with self.lock:
                        self.client.set_payload(self.name, {"tag": f"p{ids[0]}"}, ids=ids[:3])
                        old_tag = self.live[int(ids[3])][1]
                        n = self.client.set_payload(
                            self.name, {"tag": f"f{ids[3]}"}, filter={"must": [{"key": "tag", "match": old_tag}]}
                        )
                        for i in ids[:3].tolist():
                            self.live[i] = (self.live[i][0], f"p{ids[0]}")
                        for i, (v, t) in list(self.live.items()):
                            if t == old_tag:
                                self.live[i] = (v, f"f{ids[3]}")
                                n -= 1
                        assert n == 0
                elif op == 5 and len(known) > 50:  # remove by filter
                    with self.lock:
                        tag = self.live[int(self.rng.choice(known))][1]
                        self.client.remove(self.name, filter={"must": [{"key": "tag", "match": tag}]})
                        for i, (_, t) in list(self.live.items()):
                            if t == tag:
                                del self.live[i]
                                self.removed.add(i)
                else:  # remove
                    ids = np.array(self.rng.choice(known, size=min(5, len(known)), replace=False), dtype=np.int64)
                    with self.lock:
                        self.client.remove(self.name, ids)
                        for i in ids.tolist():
                            self.live.pop(i, None)
                            self.removed.add(i)
        except BaseException as err:  # noqa: BLE001 (reported by check)
            self.errors.append(err)

    def searcher(self) -> None:
        try:
            q = self.rng.standard_normal((1, DIM)).astype(np.float32)
            while not self.stop.is_set():
                r = self.client.search(self.name, q, k=5)
                assert r.shards_ok == r.shards_total
                self.searches += 1
        except BaseException as err:  # noqa: BLE001
            self.errors.append(err)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.writer), threading.Thread(target=self.searcher)]
        for t in threads:
            t.start()
        return threads

    def halt(self, threads: list[threading.Thread]) -> None:
        self.stop.set()
        for t in threads:
            t.join(60)
        self.stop.clear()
        assert not self.errors, self.errors[:3]

    def check(self) -> None:
        """Every acknowledged point with its exact vector and payload, none removed, and search equal
        to an in-process faiss index of the same data."""
        ids = np.array(sorted(self.live), dtype=np.int64)
        points = self.client.retrieve(self.name, ids, with_vectors=True)
        expect = np.stack([self.live[i][0] for i in ids.tolist()])
        assert all(p is not None for p in points), [i for i, p in zip(ids.tolist(), points, strict=True) if p is None][
            :10
        ]
        assert np.array_equal(np.stack([p.vector for p in points if p is not None]), expect)
        assert [p.payload["tag"] for p in points if p is not None and p.payload] == [
            self.live[i][1] for i in ids.tolist()
        ]
        gone = np.array(sorted(self.removed - set(self.live)), dtype=np.int64)
        if gone.size:
            assert all(p is None for p in self.client.retrieve(self.name, gone))
        assert self.client.count(self.name) == ids.size
        ref = faiss.IndexIDMap2(faiss.IndexFlatL2(DIM))
        ref.add_with_ids(expect, ids)
        q = np.random.default_rng(7).standard_normal((20, DIM)).astype(np.float32)
        D, I = ref.search(q, 10)
        r = self.client.search(self.name, q, k=10)
        assert np.array_equal(r.ids, I)
        assert np.allclose(r.distances, D, rtol=1e-4, atol=1e-4)


def placement_of(client: Client, name: str) -> tuple[int, int]:
    info = client._stub.DescribeCollection(pb.DescribeCollectionRequest(name=name))  # the raw config
    return info.config.placement.shards, info.config.placement.epoch


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_reshard_2_3_5_2_under_load_with_kills(mode: str, tmp_path: Path) -> None:
    """2 -> 3 -> 5 -> 2 while writers and searchers run; the coordinator process is killed (-9) mid-copy
    of one step, and (remote) a new shard of another and a leaving one of the last: running the
    reshard again finishes it."""
    shards = 2 if mode == "local" else 5
    cluster = LocalCluster(shards=shards, data_dir=tmp_path / "data", shard_mode=mode, log_level="WARNING").start()
    try:
        client = Client(cluster.address)
        client.create_collection("elastic", dim=DIM, metric="l2")
        work = Workload(client, "elastic", np.random.default_rng(1), 0)
        x = np.random.default_rng(2).standard_normal((POINTS, DIM)).astype(np.float32)
        ids = np.arange(100_000, 100_000 + POINTS, dtype=np.int64)
        client.add("elastic", ids, x, payloads=[{"tag": f"t{i}"} for i in ids.tolist()])
        for i, v in zip(ids.tolist(), x, strict=True):
            work.live[i] = (v, f"t{i}")
        steps = [3, 5, 2] if mode == "local" else [2, 3, 5, 2]
        steps = steps + steps[-3:] if LONG else steps
        epoch = 0
        for n, target in enumerate(steps):
            threads = work.run()
            try:
                if n % 3 == 1:  # kill -9 the coordinator mid-copy, restart it, run the reshard again
                    progress = client.reshard(target, wait=False, max_points_per_s=2000, page_size=200)
                    assert progress[0].phase in ("PREPARING", "COPYING")
                    time.sleep(0.8)
                    work.halt(threads)  # (their calls would fail while it is down)
                    assert cluster.coordinator is not None
                    cluster.coordinator.kill()
                    cluster.coordinator.restart()
                    client.close()
                    client = Client(cluster.address)
                    work.client = client
                    status = client.reshard(status_only=True)
                    assert status[0].phase in ("PREPARING", "COPYING"), status
                    threads = work.run()
                elif n % 3 != 1 and n >= 2 and mode == "remote":  # kill -9 a shard mid-copy: it fails, then resumes
                    client.reshard(target, wait=False, max_points_per_s=2000, page_size=200)
                    time.sleep(0.8)
                    work.halt(threads)
                    victim = 4 if target == 5 else 3  # 3 -> 5: a new group; 5 -> 2: a leaving one
                    cluster.groups[victim][0].kill()
                    deadline = time.monotonic() + 60
                    while client.reshard(status_only=True)[0].phase != "FAILED":
                        assert time.monotonic() < deadline
                        time.sleep(0.2)
                    cluster.groups[victim][0].restart()
                    deadline = time.monotonic() + 30
                    while True:  # the coordinator reconnects to the restarted shard within a second
                        try:
                            client.list_collections()  # (asks every group)
                            break
                        except Unavailable:
                            assert time.monotonic() < deadline
                            time.sleep(0.1)
                    threads = work.run()
                done = client.reshard(target)
                assert [p.phase for p in done] == ["DONE"], done
                epoch += 1
                assert done[0].copied >= POINTS
                # Moved: what the jump hash must move, |S' - S| / max(S, S') of the points, no more.
                share = abs(target - done[0].from_shards) / max(target, done[0].from_shards)
                assert abs(done[0].moved / done[0].copied - share) < 0.05, (done, share)
            finally:
                work.halt(threads)
            assert placement_of(client, "elastic") == (target, epoch)
            assert work.searches > 0
            work.check()
        # The same target again changes nothing; a bad target is refused.
        assert client.reshard(2)[0].phase == "UNCHANGED"
        with pytest.raises(InvalidArgument):
            client.reshard(0)
        if mode == "remote":
            with pytest.raises(FailedPrecondition, match="shard groups"):
                client.reshard(9)
        with pytest.raises(NotFound):
            client.reshard(3, collections=["nope"])
    finally:
        cluster.stop()
    if mode == "local":  # the groups a reshard added are served again after a restart
        again = LocalCluster(shards=2, data_dir=tmp_path / "data", shard_mode="local", log_level="WARNING").start()
        try:
            c = Client(again.address)
            work.client = c
            work.check()
        finally:
            again.stop()


def test_abort_returns_to_the_old_placement(tmp_path: Path) -> None:
    """An abort mid-copy drops the new placement: the collection is back where it was, nothing lost,
    writes made during the reshard kept; a second reshard then completes. An IVF collection keeps its
    training across the move (the new partitions get the same centroids: equal results)."""
    metrics_port = free_port()
    cluster = LocalCluster(shards=3, shard_mode="remote", log_level="WARNING", metrics_port=metrics_port).start()
    try:
        client = Client(cluster.address)
        client.create_collection("ivf", dim=DIM, metric="l2", index="ivf_flat", nlist=16, nprobe=4)
        rng = np.random.default_rng(3)
        x = rng.standard_normal((4000, DIM)).astype(np.float32)
        ids = np.arange(4000, dtype=np.int64)
        client.add("ivf", ids, x)
        client.train("ivf")
        q = rng.standard_normal((10, DIM)).astype(np.float32)
        before = client.search("ivf", q, k=10)
        client.reshard(2, wait=False, max_points_per_s=1000, page_size=100)
        time.sleep(0.5)
        client.add("ivf", np.arange(9000, 9005), x[:5] + 1, upsert=True)  # a dual write
        with pytest.raises(FailedPrecondition, match="resharded"):
            client.train("ivf")
        with pytest.raises(FailedPrecondition, match="runs on this coordinator"):
            client.reshard(3, wait=False)
        aborted = client.reshard(abort=True)
        assert aborted[0].phase == "ABORTED"
        assert placement_of(client, "ivf") == (3, 0)
        assert client.count("ivf") == 4005
        assert np.array_equal(client.get("ivf", np.arange(9000, 9005)), x[:5] + 1)
        done = client.reshard(2)
        assert done[0].phase == "DONE"
        assert placement_of(client, "ivf") == (2, 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert f'vecshard_reshard_points{{collection="ivf",kind="scanned"}} {float(done[0].copied)}' in metrics
        assert f'vecshard_reshard_points{{collection="ivf",kind="moved"}} {float(done[0].moved)}' in metrics
        assert 'vecshard_reshard_active{collection="ivf"} 0.0' in metrics
        assert client.describe("ivf").trained
        client.remove("ivf", np.arange(9000, 9005))
        after = client.search("ivf", q, k=10)
        assert np.array_equal(after.ids, before.ids)
        assert np.allclose(after.distances, before.distances, rtol=1e-5, atol=1e-5)
    finally:
        cluster.stop()


def test_shard_fences_writes_that_miss_the_new_placement(tmp_path: Path) -> None:
    """Once a shard holds a collection's newer placement, a write to the older one from a writer that
    does not declare it is refused (ABORTED: it would miss the copy); one declaring it is accepted."""
    cluster = LocalCluster(shards=3, shard_mode="remote", log_level="WARNING").start()
    try:
        client = Client(cluster.address)
        client.create_collection("fenced", dim=DIM, metric="l2")
        client.add("fenced", np.arange(100, 400), np.ones((300, DIM), np.float32))
        client.reshard(2, wait=False, max_points_per_s=1, page_size=1)
        stub = shard_pb2_grpc.ShardStub(grpc.insecure_channel(cluster.shard_addresses[0]))
        deadline = time.monotonic() + 30
        while "fenced@1" not in [s.config.name for s in stub.ListCollections(pb.ListCollectionsRequest()).collections]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        add = pb.AddRequest(
            collection="fenced",
            ids=wire.pack_ids(np.array([5], dtype=np.int64)),
            vectors=wire.pack_matrix(np.ones((1, DIM), np.float32)),
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.Add(add)
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert "resharded" in err.value.details()
        stub.Add(add, metadata=[("x-vecshard-placement-epoch", "1")])
        client.reshard(abort=True)
    finally:
        cluster.stop()


def test_reshard_bench_runs_and_reports(tmp_path: Path) -> None:
    """`vecshard bench --reshard` end to end at a small size: every step done, nothing failed, moves
    near the jump hash's expectation, recall the same idle and during the reshard."""
    from vecshard_server.bench import reshard as bench_reshard

    r = bench_reshard.run_reshard_bench(
        n=6000, dim=16, nlist=16, nprobe=16, steps=(3, 2), searchers=2, idle_s=0.5, workdir=tmp_path
    )
    assert [s["phase"] for s in r["steps"]] == ["DONE", "DONE"]
    for s in r["steps"]:
        assert s["idle"]["failures"] == 0 and s["resharding"]["failures"] == 0, s
        assert s["resharding"]["requests"] > 0 and s["copied"] >= 6000
        assert abs(s["moved"] - s["moved_expected"]) < 0.1 * s["copied"], s
        assert s["idle"]["recall"] == s["resharding"]["recall"] == 1.0  # nprobe = nlist: exact
    assert "2 -> 3" in bench_reshard.format_markdown(r)


def test_legacy_mod_placement_serves_then_migrates(tmp_path: Path) -> None:
    """A collection made before placements were recorded (no placement in its config, ids on
    fmix64(id) mod S) is served as it is, and its first reshard moves it to the jump hash."""
    cluster = LocalCluster(shards=3, shard_mode="remote", log_level="WARNING").start()  # (it was made on 2)
    try:
        x = np.random.default_rng(9).standard_normal((1000, DIM)).astype(np.float32)
        ids = np.arange(1000, dtype=np.int64)
        owner = Placement(MOD, 2).owner(ids)
        for g, address in enumerate(cluster.shard_addresses[:2]):
            with grpc.insecure_channel(address) as ch:
                stub = shard_pb2_grpc.ShardStub(ch)
                stub.CreateCollection(
                    tpb.CollectionConfig(name="old", dim=DIM, metric=tpb.METRIC_L2, index_type=tpb.INDEX_TYPE_FLAT)
                )
                mine = owner == g
                stub.Add(
                    pb.AddRequest(collection="old", ids=wire.pack_ids(ids[mine]), vectors=wire.pack_matrix(x[mine]))
                )
        client = Client(cluster.address)
        info = client._stub.DescribeCollection(pb.DescribeCollectionRequest(name="old"))
        assert (info.config.placement.function, info.config.placement.shards) == (tpb.PLACEMENT_FUNCTION_MOD, 2)
        assert np.array_equal(client.get("old", ids), x)  # routed by MOD
        done = client.reshard(3, collections=["old"])[0]
        assert done.phase == "DONE" and done.copied == 1000
        info = client._stub.DescribeCollection(pb.DescribeCollectionRequest(name="old"))
        assert (info.config.placement.function, info.config.placement.shards, info.config.placement.epoch) == (
            tpb.PLACEMENT_FUNCTION_JUMP,
            3,
            1,
        )
        assert np.array_equal(client.get("old", ids), x)
        expected = (Placement(MOD, 2).owner(ids) != Placement(JUMP, 3).owner(ids)).sum()
        assert done.moved == expected  # MOD -> jump moves more than a jump step would: once
        r = client.search("old", x[:5], k=1)
        assert r.ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    finally:
        cluster.stop()


def test_kill_mid_cutover_serves_the_new_placement_and_a_rerun_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator dies (exit as by kill -9, at a failpoint) right after the cutover dropped the old
    partition on group 0 only: a new coordinator serves every point from the new placement (no mix of
    the two), and running the reshard again drops the partitions the cutover left."""
    monkeypatch.setenv("VECSHARD_FAILPOINT", "reshard-mid-cutover")
    cluster = LocalCluster(shards=3, shard_mode="remote", log_level="WARNING").start()
    monkeypatch.delenv("VECSHARD_FAILPOINT")  # (the restarted coordinator has none)
    try:
        client = Client(cluster.address, timeout=60)
        client.create_collection("cut", dim=DIM, metric="l2")
        x = np.random.default_rng(11).standard_normal((2000, DIM)).astype(np.float32)
        ids = np.arange(2000, dtype=np.int64)
        client.add("cut", ids, x)
        with pytest.raises(Unavailable):
            client.reshard(2)
        assert cluster.coordinator is not None
        cluster.coordinator.popen.wait(30)
        cluster.coordinator.restart()
        client = Client(cluster.address, timeout=60)

        def partitions(g: int) -> list[str]:
            with grpc.insecure_channel(cluster.shard_addresses[g]) as ch:
                listed = shard_pb2_grpc.ShardStub(ch).ListCollections(pb.ListCollectionsRequest())
                return sorted(s.config.name for s in listed.collections)

        assert [partitions(g) for g in range(3)] == [["cut@1"], ["cut", "cut@1"], ["cut", "cut@1"]]
        assert placement_of(client, "cut") == (2, 1)
        assert np.array_equal(client.get("cut", ids), x)
        assert client.count("cut") == 2000
        r = client.search("cut", x[:3], k=1)
        assert r.ids[:, 0].tolist() == [0, 1, 2] and r.shards_total == 2
        assert [p.phase for p in client.reshard(2)] == ["DONE"]
        assert [partitions(g) for g in range(3)] == [["cut@1"], ["cut@1"], []]
        assert [p.phase for p in client.reshard(2)] == ["UNCHANGED"]
        assert np.array_equal(client.get("cut", ids), x)
    finally:
        cluster.stop()


def test_a_coordinator_missing_groups_refuses_instead_of_misrouting(tmp_path: Path) -> None:
    """A coordinator given fewer groups than a collection is placed on (one not rolled onto grown
    manifests) refuses that collection, naming the fix, instead of routing ids to the wrong groups."""
    cluster = LocalCluster(shards=3, shard_mode="remote", log_level="WARNING").start()
    try:
        with Client(cluster.address) as c:
            c.create_collection("wide", dim=DIM, metric="l2")
            c.add("wide", np.arange(100), np.ones((100, DIM), np.float32))
        args = ["coordinator", "--log-level", "WARNING"]
        for address in cluster.shard_addresses[:2]:
            args += ["--shard", address]
        old = start_role(args, tmp_path / "old.port")
        try:
            with Client(f"127.0.0.1:{old.port}") as c:
                for call in (lambda: c.get("wide", [1]), lambda: c.search("wide", np.ones((1, DIM), np.float32))):
                    with pytest.raises(FailedPrecondition, match="placed on 3 shard groups.*knows only 2"):
                        call()
                c.drop_collection("wide")  # (a drop still reaches what it knows)
        finally:
            old.terminate()
    finally:
        cluster.stop()


def test_reshard_with_replicas_then_drop_and_recreate(tmp_path: Path) -> None:
    """Groups of 2 replicas: a reshard under upserts leaves both replicas of every new group equal
    (count and digest) and exact; dropping the resharded collection drops every placement, and a new
    collection of the same name starts clean at epoch 0."""
    cluster = LocalCluster(shards=3, replicas=2, shard_mode="remote", log_level="WARNING").start()
    try:
        client = Client(cluster.address, timeout=60)
        client.create_collection("rep", dim=DIM, metric="l2")
        rng = np.random.default_rng(13)
        x = rng.standard_normal((3000, DIM)).astype(np.float32)
        client.add("rep", np.arange(3000), x)
        client.reshard(2, wait=False, max_points_per_s=3000, page_size=200)
        for _ in range(10):  # upserts racing the copy
            ids = rng.choice(3000, size=50, replace=False)
            x[ids] = rng.standard_normal((50, DIM)).astype(np.float32)
            client.add("rep", ids, x[ids], upsert=True)
            time.sleep(0.05)
        deadline = time.monotonic() + 120
        while (p := client.reshard(status_only=True, collections=["rep"])[0]).phase != "DONE":
            assert p.phase in ("PREPARING", "COPYING", "CUTTING_OVER") and time.monotonic() < deadline, p
            time.sleep(0.2)
        assert placement_of(client, "rep") == (2, 1)
        assert np.array_equal(client.get("rep", np.arange(3000)), x)
        for group in cluster.groups[:2]:
            states = []
            for replica in group:
                with grpc.insecure_channel(replica.address) as ch:
                    listed = shard_pb2_grpc.ShardStub(ch).ListCollections(pb.ListCollectionsRequest())
                states.append([(s.config.name, s.count, s.digest) for s in listed.collections])
            assert states[0] == states[1] and [n for n, _, _ in states[0]] == ["rep@1"], states
        client.drop_collection("rep")
        client.create_collection("rep", dim=DIM, metric="l2")
        assert placement_of(client, "rep") == (3, 0) and client.count("rep") == 0
        client.add("rep", [1], x[:1])
        assert np.array_equal(client.get("rep", [1]), x[:1])
    finally:
        cluster.stop()


def test_two_coordinators_racing_one_reshard(tmp_path: Path) -> None:
    """Two coordinators run the same reshard at once while upserts go through both: one cuts over, the
    other's copy then finds the old partitions gone and reports the reshard done; every point is exact
    through either coordinator."""
    cluster = LocalCluster(shards=3, shard_mode="remote", log_level="WARNING").start()
    try:
        a = Client(cluster.address, timeout=60)
        a.create_collection("two", dim=DIM)
        x = np.random.default_rng(1).standard_normal((5000, DIM)).astype(np.float32)
        a.add("two", np.arange(5000), x)
        args = ["coordinator", "--log-level", "WARNING"]
        for address in cluster.shard_addresses:
            args += ["--shard", address]
        other = start_role(args, tmp_path / "other.port")
        try:
            b = Client(f"127.0.0.1:{other.port}", timeout=60)
            for c in (a, b):
                c.reshard(2, wait=False, max_points_per_s=20_000, page_size=300)
            for i in range(400):
                ids = np.arange(i * 10, i * 10 + 10) % 5000
                x[ids] += 1
                (a if i % 2 else b).add("two", ids, x[ids], upsert=True)
                phases = [c.reshard(status_only=True, collections=["two"])[0].phase for c in (a, b)]
                if all(p in ("DONE", "FAILED") for p in phases):
                    break
                time.sleep(0.02)
            assert phases == ["DONE", "DONE"], phases
            for c in (a, b):
                assert np.array_equal(c.get("two", np.arange(5000)), x)
                assert c.count("two") == 5000
        finally:
            other.terminate()
    finally:
        cluster.stop()
