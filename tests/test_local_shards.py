"""Local shards: the shards inside the coordinator's process (`vecshard serve`'s default).

Every test on the shared clusters already runs in both modes (conftest's `cluster_of`). These
are the promises of the local mode itself: a kill -9 of its one process loses nothing
acknowledged, a data dir serves in either mode, and the errors and deadlines of a call are the
ones the remote path gives.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from vecshard import Client, DeadlineExceeded, InvalidArgument, NotFound
from vecshard_server.cluster.local import ClusterError, LocalCluster

from .conftest import clustered
from .support import run_vecshard
from .test_durability import Load, verify


def test_kill_9_of_the_one_process_loses_no_acknowledged_write(tmp_path: Path, name: str) -> None:
    with LocalCluster(shards=2, data_dir=tmp_path, log_level="ERROR", shard_mode="local") as cluster:
        assert not cluster.shards  # one process: the coordinator, holding both shards
        with Client(cluster.address) as c:
            c.create_collection(name, 8, index="ivf_flat", nlist=8, train_threshold=2000)
        with Load(cluster.address, name) as load:
            time.sleep(2.0)
            assert cluster.coordinator is not None
            cluster.coordinator.kill()
            time.sleep(3.0)  # longer than the SDK's UNAVAILABLE retries
            cluster.coordinator.restart()
            time.sleep(1.0)
        result = verify(cluster.address, name, load)
        with Client(cluster.address) as c:
            assert c.describe(name).trained
    print("\nlocal mode, kill -9:", result, "failed batches:", load.failures)
    assert load.failures > 0 and result["acked_present"] > 1000
    assert result["acked_missing"] == result["wrong_vectors"] == 0
    assert result["removed_resurrected"] == result["unacked_half_written"] == 0


def test_a_data_dir_serves_in_either_mode(tmp_path: Path, name: str) -> None:
    x = clustered(3000, 16, seed=4)
    queries = x[:20] + 0.01
    with LocalCluster(shards=2, data_dir=tmp_path, log_level="ERROR", shard_mode="local") as cluster:
        with Client(cluster.address) as c:
            c.create_collection(name, 16, index="ivf_sq8", nlist=16, refine_factor=2)
            c.add(name, np.arange(3000), x, payloads=[{"i": i} for i in range(3000)])
            c.train(name)
            want = c.search(name, queries, 10, nprobe=4, with_payload=True)
    with LocalCluster(shards=2, data_dir=tmp_path, log_level="ERROR", shard_mode="remote") as cluster:
        assert len(cluster.shards) == 2
        with Client(cluster.address) as c:
            got = c.search(name, queries, 10, nprobe=4, with_payload=True)
            np.testing.assert_array_equal(got.ids, want.ids)
            assert got.payloads == want.payloads
            c.add(name, np.arange(3000, 3100), x[:100])
    with LocalCluster(shards=2, data_dir=tmp_path, log_level="ERROR", shard_mode="local") as cluster:
        with Client(cluster.address) as c:
            assert c.describe(name).count == 3100
            np.testing.assert_array_equal(c.get(name, [3000]), x[:1])


def test_errors_and_deadlines_are_those_of_the_remote_path(served_cluster: LocalCluster, name: str) -> None:
    """(Run in both modes: the same calls get the same answers.)"""
    with Client(served_cluster.address) as c:
        with pytest.raises(NotFound, match="does not exist"):
            c.search("nope", np.ones((1, 4), np.float32), 3)
        c.create_collection(name, 4)
        with pytest.raises(InvalidArgument, match="dimension 5"):
            c.add(name, [1], np.ones((1, 5), np.float32))
        c.add(name, np.arange(200_000), np.random.default_rng(0).normal(size=(200_000, 4)).astype(np.float32))
        with pytest.raises(DeadlineExceeded):  # a FLAT scan of 200k x 1000 queries cannot finish in 1 ms
            c.search(name, np.ones((1000, 4), np.float32), 100, timeout=0.001)
        assert c.describe(name).count == 200_000  # and the cluster is fine afterwards


def test_local_mode_has_one_replica_per_shard(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="one replica each"):
        LocalCluster(shards=2, replicas=2, shard_mode="local")
    out = run_vecshard("serve", "--shard-mode", "local", "--replicas", "2", "--port", "0", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "one replica each" in out.stderr
