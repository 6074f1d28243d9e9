"""Shard groups of R = 2 replicas: losing one replica per group fails no search and changes no
result; a restarted replica catches up from its peer and then answers exactly as the peer does."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from vecshard import Client, Unavailable, wire
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

from .conftest import clustered

DIM = 16


def _replica_views(cluster: LocalCluster, name: str, queries: np.ndarray) -> list[list[tuple[int, bytes]]]:
    """For each group, each replica's (digest, raw search answer), asked directly."""
    views = []
    for group in cluster.groups:
        per = []
        for proc in group:
            with grpc.insecure_channel(f"{cluster.host}:{proc.port}") as ch:
                stub = shard_pb2_grpc.ShardStub(ch)
                state = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=30)
                res = stub.Search(
                    pb.SearchRequest(collection=name, queries=wire.pack_matrix(queries), k=10, nprobe=4), timeout=30
                )
                per.append((state.digest, res.ids))
        views.append(per)
    return views


def test_losing_a_replica_per_group_fails_no_search_and_it_catches_up(tmp_path: Path, name: str) -> None:
    data = clustered(4000, DIM, seed=3)
    queries = data[:64] + 0.01
    env = {"VECSHARD_WRITE_QUORUM": "1", "VECSHARD_HEDGE_DELAY_S": "0.05"}
    with LocalCluster(shards=2, replicas=2, data_dir=tmp_path, env=env, log_level="ERROR") as cluster:
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, DIM, index="ivf_flat", nlist=16, nprobe=4, train_threshold=10**6)
            c.add(name, np.arange(3000), data[:3000])
            c.train(name)
            reference = c.search(name, queries, k=10).ids

            stats = {"searches": 0, "failed": 0, "different": 0}
            stop = threading.Event()

            def searching() -> None:
                with Client(cluster.address, timeout=30) as sc:
                    while not stop.is_set():
                        try:
                            ids = sc.search(name, queries, k=10).ids
                            stats["different"] += int(not np.array_equal(ids, reference))
                        except Unavailable:
                            stats["failed"] += 1
                        stats["searches"] += 1

            threads = [threading.Thread(target=searching) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            cluster.groups[0][1].kill()
            cluster.groups[1][0].kill()
            time.sleep(1.5)
            stop.set()
            for t in threads:
                t.join()
            print(f"\nreplica loss under search load: {stats}")
            assert stats["searches"] > 20
            assert stats["failed"] == 0 and stats["different"] == 0

            # writes while a replica of each group is down (write quorum 1)
            c.add(name, np.arange(3000, 4000), data[3000:])
            c.remove(name, np.arange(0, 100))
            expected = c.search(name, queries, k=10).ids
            assert not np.isin(expected, np.arange(100)).any()

            started = time.monotonic()
            cluster.restart_replica(0, 1)
            cluster.restart_replica(1, 0)
            print(f"two replicas restarted and caught up in {time.monotonic() - started:.2f}s")
            for group in _replica_views(cluster, name, queries):
                (digest_a, ids_a), (digest_b, ids_b) = group
                assert digest_a == digest_b
                assert ids_a == ids_b  # identical answers from both replicas
            for _ in range(8):  # round-robin reads hit every replica
                assert np.array_equal(c.search(name, queries, k=10).ids, expected)
            assert c.describe(name).count == 3900
            np.testing.assert_array_equal(c.get(name, [3500, 3999]), data[[3500, 3999]])


def test_default_quorum_refuses_writes_while_a_replica_is_down(tmp_path: Path, name: str) -> None:
    with LocalCluster(shards=1, replicas=2, data_dir=tmp_path, log_level="ERROR") as cluster:
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, 4)
            c.add(name, [1, 2], np.ones((2, 4)))
            cluster.groups[0][0].kill()
            with pytest.raises(Unavailable, match=r"shard-0 \("):
                c.add(name, [3], np.ones((1, 4)))
            assert c.search(name, np.ones((1, 4)), k=2).ids.tolist() == [[1, 2]]  # reads still served
            cluster.restart_replica(0, 0)
            deadline = time.monotonic() + 10
            while True:  # the coordinator reconnects within its backoff (at most 1 s)
                try:
                    c.add(name, [3], np.ones((1, 4)))
                    break
                except Unavailable:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert c.describe(name).count == 3
