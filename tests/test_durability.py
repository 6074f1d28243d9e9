"""Nothing acknowledged is lost: crashes (kill -9) under load, torn and corrupt logs and snapshots,
graceful shutdown."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vecshard import Client, VecshardError
from vecshard.v1 import shard_pb2
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.shard.engine import SnapshotCorrupt
from vecshard_server.shard.service import ShardService
from vecshard_server.shard.wal import WalCorrupt, segments

from .support import open_shard, run_vecshard

DIM = 8
REPORT: dict[str, object] = {}  # figures printed with -s for the closing notes


def vec(i: int | np.ndarray) -> np.ndarray:
    """The vector of id i: derivable from the id, so any stored row can be checked exactly."""
    ids = np.atleast_1d(np.asarray(i, dtype=np.float64))
    return (np.sin(np.outer(ids, np.arange(1, DIM + 1)) * 0.001) * 100).astype(np.float32)


class Load:
    """Several clients adding (and removing) disjoint ids; records what was acknowledged."""

    def __init__(self, address: str, name: str, clients: int = 4) -> None:
        self.address, self.name, self.clients = address, name, clients
        self.acked: set[int] = set()
        self.unacked: set[int] = set()
        self.removed: set[int] = set()
        self.failures = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(clients)]

    def _run(self, w: int) -> None:
        with Client(self.address, timeout=10) as c:
            next_id = w * 10_000_000
            batch = 0
            while not self._stop.is_set():
                ids = np.arange(next_id, next_id + 25)
                next_id += 25
                try:
                    c.add(self.name, ids, vec(ids))
                    with self._lock:
                        self.acked.update(ids.tolist())
                except VecshardError:
                    with self._lock:
                        self.unacked.update(ids.tolist())
                        self.failures += 1
                    time.sleep(0.05)
                batch += 1
                if batch % 5 == 0:
                    with self._lock:
                        victims = [i for i in ids.tolist() if i in self.acked][:3]
                    if victims:
                        try:
                            c.remove(self.name, victims)
                            with self._lock:
                                self.removed.update(victims)
                        except VecshardError:  # unknown outcome: such ids are checked as "either way"
                            with self._lock:
                                self.acked.difference_update(victims)
                                self.unacked.update(victims)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def verify(address: str, name: str, load: Load) -> dict[str, int]:
    with Client(address, timeout=60) as c:
        present_ids = sorted(load.acked - load.removed)
        got = c.get(name, present_ids, allow_missing=True)
        missing = int(np.isnan(got[:, 0]).sum())
        wrong = int((~np.isclose(got, vec(np.array(present_ids))).all(1) & ~np.isnan(got[:, 0])).sum())
        gone = c.get(name, sorted(load.removed), allow_missing=True) if load.removed else np.empty((0, DIM))
        resurrected = int((~np.isnan(gone[:, 0])).sum())
        maybe = sorted(load.unacked)
        half = 0
        if maybe:
            m = c.get(name, maybe, allow_missing=True)
            present = ~np.isnan(m[:, 0])
            half = int((~np.isclose(m[present], vec(np.array(maybe)[present])).all(1)).sum())
        _, I = c.search(name, vec(np.array(sorted(load.removed)[:200])), k=5) if load.removed else (None, np.empty(0))
        in_search = int(np.isin(I, list(load.removed)).sum())
    return {
        "acked_present": len(present_ids) - missing,
        "acked_missing": missing,
        "wrong_vectors": wrong,
        "removed_resurrected": resurrected,
        "removed_in_search": in_search,
        "unacked_half_written": half,
        "unacked_attempted": len(maybe),
    }


def test_shard_kill_9_under_load_loses_no_acknowledged_write(tmp_path: Path, name: str) -> None:
    with LocalCluster(shards=2, data_dir=tmp_path, log_level="ERROR") as cluster:
        with Client(cluster.address) as c:
            c.create_collection(name, DIM, index="ivf_flat", nlist=8, train_threshold=2000)
        with Load(cluster.address, name) as load:
            time.sleep(2.0)
            victim = cluster.shards[1]
            victim.kill()
            time.sleep(0.5)
            started = time.monotonic()
            victim.restart()
            restart_s = time.monotonic() - started
            time.sleep(1.5)
        result = verify(cluster.address, name, load)
        with Client(cluster.address) as c:
            trained = c.describe(name).trained
    REPORT["shard_kill"] = {**result, "failed_batches": load.failures, "restart_s": round(restart_s, 2)}
    print("\nshard kill -9:", REPORT["shard_kill"], "trained:", trained)
    assert result["acked_present"] > 1000
    assert result["acked_missing"] == result["wrong_vectors"] == 0
    assert result["removed_resurrected"] == result["removed_in_search"] == 0
    assert result["unacked_half_written"] == 0


def test_coordinator_kill_9_under_load_loses_no_acknowledged_write(tmp_path: Path, name: str) -> None:
    with LocalCluster(shards=2, data_dir=tmp_path, log_level="ERROR") as cluster:
        with Client(cluster.address) as c:
            c.create_collection(name, DIM)
        with Load(cluster.address, name) as load:
            time.sleep(1.5)
            assert cluster.coordinator is not None
            cluster.coordinator.kill()
            time.sleep(3.0)  # longer than the SDK's UNAVAILABLE retries (5 attempts, ~1.5 s of backoff)
            cluster.coordinator.restart()
            time.sleep(1.0)
        result = verify(cluster.address, name, load)
    REPORT["coordinator_kill"] = {**result, "failed_batches": load.failures}
    print("\ncoordinator kill -9:", REPORT["coordinator_kill"])
    assert load.failures > 0 and result["acked_present"] > 500
    assert result["acked_missing"] == result["wrong_vectors"] == 0
    assert result["removed_resurrected"] == result["unacked_half_written"] == 0


# -- the log and snapshots, at the level of one shard's files ---------------------------------------


def _write(s: ShardService, n: int, start: int = 0) -> None:
    from vecshard import wire
    from vecshard.v1 import types_pb2
    from vecshard.v1 import vector_search_pb2 as pb

    if "c" not in s.collections:
        s._create(types_pb2.CollectionConfig(name="c", dim=DIM, metric=1, index_type=1))
    for i in range(start, start + n):
        req = pb.AddRequest(collection="c", ids=wire.pack_ids(np.array([i])), vectors=wire.pack_matrix(vec(i)))
        s._logged(
            s.collections["c"],
            lambda req=req: shard_pb2.WalRecord(add=req),
            lambda j, i=i: s.collections["c"].add(np.array([i]), vec(i), False, j),
        )


def _ids(s: ShardService) -> set[int]:
    part = s.collections["c"]
    got, found, _ = part.get(np.arange(0, 1000))
    return set(np.flatnonzero(found).tolist())


def test_torn_log_tail_is_dropped_and_the_rest_recovered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = open_shard(tmp_path)
    _write(s, 50)
    # crash: no checkpoint, no close. Then tear the last record in half.
    seg = segments(tmp_path / "wal")[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - 20])
    s2 = open_shard(tmp_path)
    assert _ids(s2) == set(range(49))  # the torn 50th write was never acknowledged
    assert "dropping a torn write" in caplog.text
    _write(s2, 10, start=100)  # the log continues after the cut
    s3 = open_shard(tmp_path)
    assert _ids(s3) == set(range(49)) | set(range(100, 110))


def test_corrupt_log_record_before_the_end_refuses_to_start(tmp_path: Path) -> None:
    s = open_shard(tmp_path)
    _write(s, 30)
    seg = segments(tmp_path / "wal")[-1]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorrupt, match="is damaged at byte"):
        open_shard(tmp_path)


def test_snapshot_plus_log_and_corrupt_snapshot(tmp_path: Path) -> None:
    s = open_shard(tmp_path)
    _write(s, 40)
    s.checkpoint()
    _write(s, 20, start=40)  # after the snapshot: only in the log
    assert len(segments(tmp_path / "wal")) == 1  # the checkpoint removed the covered segment
    s2 = open_shard(tmp_path)
    assert _ids(s2) == set(range(60))
    index = tmp_path / "collections" / "c" / "index.faiss"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0x01
    index.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt, match="checksum"):
        open_shard(tmp_path)
    result = run_vecshard("shard", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path))
    assert result.returncode != 0 and "does not match the checksum" in result.stderr


def test_graceful_shutdown_finishes_in_flight_searches_and_flips_health_first(tmp_path: Path, name: str) -> None:
    with LocalCluster(shards=1, log_level="ERROR", env={"VECSHARD_DRAIN_S": "1.0"}) as cluster:
        rng = np.random.default_rng(0)
        with Client(cluster.address, timeout=60) as c:
            c.create_collection(name, 64)
            data = rng.random((100_000, 64), dtype=np.float32)
            c.add(name, np.arange(len(data)), data)
            queries = rng.random((2000, 64), dtype=np.float32)
            results: list[object] = []
            t = threading.Thread(target=lambda: results.append(c.search(name, queries, k=10)))
            t.start()
            time.sleep(0.2)  # the search is in flight
            assert cluster.coordinator is not None
            cluster.coordinator.popen.send_signal(signal.SIGTERM)
            health = health_pb2_grpc.HealthStub(grpc.insecure_channel(cluster.address))
            statuses = []
            for _ in range(10):
                try:
                    statuses.append(health.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
                except grpc.RpcError:
                    break
                time.sleep(0.05)
            t.join()
            assert results and results[0].ids.shape == (2000, 10)  # type: ignore[attr-defined]
            assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses  # seen while still listening
            assert cluster.coordinator.popen.wait(30) == 0
