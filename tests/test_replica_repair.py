"""A replica that missed acknowledged writes while up is repaired while running, and not read meanwhile.

With a write quorum below the replica count, a write is acknowledged without a replica that is slow
or restarting. That replica used to stay behind until its next restart (reads round-robin over it
returned stale data). The coordinator now records each such miss, reads the other replicas, and
resyncs the replica from a peer (Resync RPC) as soon as it answers.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import numpy as np

from vecshard import Client, wire
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

DIM = 8


def _state(address: str, name: str) -> tuple[int, int]:
    with grpc.insecure_channel(address) as ch:
        s = shard_pb2_grpc.ShardStub(ch).DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=10)
    return s.count, s.digest


def _holds(address: str, name: str, i: int) -> bool:
    with grpc.insecure_channel(address) as ch:
        req = pb.GetRequest(collection=name, ids=wire.pack_ids(np.array([i])))
        return bool(shard_pb2_grpc.ShardStub(ch).Get(req, timeout=10).found[0])


def test_a_replica_that_missed_writes_is_resynced_while_running(tmp_path: Path, name: str) -> None:
    env = {"VECSHARD_WRITE_QUORUM": "1", "VECSHARD_HEDGE_DELAY_S": "5"}
    with LocalCluster(shards=1, replicas=2, data_dir=tmp_path, env=env, log_level="ERROR") as cluster:
        r0, r1 = cluster.groups[0]
        x = np.random.default_rng(0).random((300, DIM), dtype=np.float32)
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, DIM)
            c.add(name, np.arange(200), x[:200])
            r0.popen.send_signal(signal.SIGSTOP)  # r0 is up but does not answer: the next writes go without it
            try:
                c.add(name, np.arange(200, 300), x[200:], timeout=2.0)  # acknowledged by r1 (quorum 1)
                assert c.remove(name, [0, 1], timeout=2.0) == 2
            finally:
                r0.kill()  # it never saw those writes; it comes back without a peer to catch up from
            r0.restart()
            assert not _holds(r0.address, name, 250), "the fault did not happen: r0 has the write"
            for _ in range(20):  # meanwhile reads never come from r0
                np.testing.assert_array_equal(c.get(name, [250, 299]), x[[250, 299]])
                assert np.isnan(c.get(name, [0], allow_missing=True)).all()
            deadline = time.monotonic() + 30
            while _state(r0.address, name) != _state(r1.address, name):
                assert time.monotonic() < deadline, (
                    f"r0 not repaired: {_state(r0.address, name)} vs {_state(r1.address, name)}"
                )
                time.sleep(0.2)
            assert _holds(r0.address, name, 250) and not _holds(r0.address, name, 0)
            assert _state(r0.address, name)[0] == 298
            c.add(name, [1000], x[:1])  # and it takes writes as before
        r0.kill()  # the repaired state is durable on r0 itself
        r0.restart()
        assert _state(r0.address, name) == _state(r1.address, name)


def test_anti_entropy_merges_a_replica_that_drifted_into_the_others(tmp_path: Path, name: str) -> None:
    """A replica can drift without this coordinator knowing (the coordinator that saw the miss died):
    the periodic digest comparison finds it and merges the replicas: a write only one of three got
    reaches the other two (per id the newest version wins, not the majority)."""
    env = {"VECSHARD_ANTI_ENTROPY_S": "1"}
    with LocalCluster(shards=1, replicas=3, data_dir=tmp_path, env=env, log_level="ERROR") as cluster:
        x = np.random.default_rng(1).random((50, DIM), dtype=np.float32)
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, DIM)
            c.add(name, np.arange(50), x)
        stray = cluster.groups[0][2]
        with grpc.insecure_channel(stray.address) as ch:  # a write only this replica got
            req = pb.AddRequest(collection=name, ids=wire.pack_ids(np.array([777])), vectors=wire.pack_matrix(x[:1]))
            shard_pb2_grpc.ShardStub(ch).Add(req, timeout=10)
        assert _holds(stray.address, name, 777)
        deadline = time.monotonic() + 30
        while not all(_holds(r.address, name, 777) for r in cluster.groups[0]):
            assert time.monotonic() < deadline, "the drifted replica was not merged"
            time.sleep(0.3)
        good = _state(cluster.groups[0][0].address, name)
        assert all(_state(r.address, name) == good for r in cluster.groups[0]) and good[0] == 51


def test_anti_entropy_merges_two_replicas_that_each_missed_other_writes(tmp_path: Path, name: str) -> None:
    """With two replicas neither a majority nor a count of writes can tell which one is right when each
    missed writes the other got (their coordinators died before repairing them): per-id versions can.
    Anti-entropy merges them both ways: every write either got survives, and a remove stays a remove."""
    env = {"VECSHARD_ANTI_ENTROPY_S": "1"}
    with LocalCluster(shards=1, replicas=2, data_dir=tmp_path, env=env, log_level="ERROR") as cluster:
        x = np.random.default_rng(2).random((20, DIM), dtype=np.float32)
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, DIM)
            c.add(name, np.arange(20), x)
        r0, r1 = cluster.groups[0]

        def write(address: str, method: str, request: object) -> None:  # unknown to the coordinator
            with grpc.insecure_channel(address) as ch:
                getattr(shard_pb2_grpc.ShardStub(ch), method)(request, timeout=10)

        one = np.array([555])
        write(
            r0.address, "Add", pb.AddRequest(collection=name, ids=wire.pack_ids(one), vectors=wire.pack_matrix(x[:1]))
        )
        write(
            r1.address,
            "Add",
            pb.AddRequest(collection=name, ids=wire.pack_ids(one + 1), vectors=wire.pack_matrix(x[1:2])),
        )
        write(r1.address, "Remove", pb.RemoveRequest(collection=name, ids=wire.pack_ids(np.array([3]))))
        write(
            r0.address,
            "Add",
            pb.AddRequest(
                collection=name, ids=wire.pack_ids(np.array([4])), vectors=wire.pack_matrix(x[9:10]), upsert=True
            ),
        )
        deadline = time.monotonic() + 30
        while not (_holds(r1.address, name, 555) and _holds(r0.address, name, 556)):
            assert time.monotonic() < deadline, "the replicas were not merged"
            time.sleep(0.3)
        assert _state(r0.address, name) == _state(r1.address, name)
        with Client(cluster.address, timeout=30) as c:
            got = c.get(name, [3, 4, 555, 556], allow_missing=True)
        assert np.isnan(got[0]).all()  # removed on r1 after r0 stored it: stays removed
        np.testing.assert_array_equal(got[1], x[9])  # the newer upsert on r0 wins
        np.testing.assert_array_equal(got[2], x[0])
        np.testing.assert_array_equal(got[3], x[1])


def test_a_replica_that_missed_a_drop_and_re_create_takes_the_new_incarnation(tmp_path: Path, name: str) -> None:
    """The long nemesis found it: with write quorum 1, a replica down during a Drop and the Create of
    the same name after it came back with the old collection's ids, merged them into the new one (same
    config), and its peer then merged them too. Each partition now has an incarnation (its create's
    version): replicas merge only one incarnation, and the newer replaces the older."""
    env = {"VECSHARD_WRITE_QUORUM": "1", "VECSHARD_PEER_SYNC_S": "1"}
    with LocalCluster(shards=1, replicas=2, data_dir=tmp_path, env=env, log_level="ERROR") as cluster:
        x = np.random.default_rng(4).random((40, DIM), dtype=np.float32)
        r0, r1 = cluster.groups[0]
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, DIM)
            c.add(name, np.arange(20), x[:20])  # the old incarnation, on both replicas
            r1.kill()
            c.drop_collection(name)
            c.create_collection(name, DIM)  # same config, new incarnation: only r0 has it
            c.add(name, np.arange(20, 40), x[20:])
            cluster.restart_replica(0, 1)  # r1 catches up from r0
            deadline = time.monotonic() + 30
            while _state(r0.address, name) != _state(r1.address, name):
                assert time.monotonic() < deadline, "the replicas did not converge"
                time.sleep(0.3)
            for r in (r0, r1):
                assert not _holds(r.address, name, 0) and _holds(r.address, name, 20)
            assert c.describe(name).count == 20
            time.sleep(2.5)  # two peer-sync rounds: nothing of the old incarnation comes back
            assert not _holds(r0.address, name, 5) and _state(r0.address, name)[0] == 20


def test_a_collection_created_while_a_replica_was_down_survives_a_catch_up_from_that_replica(
    tmp_path: Path, name: str
) -> None:
    """Write quorum 1: a Create (and Adds) acknowledged by r0 alone while r1 was down. Then r0 restarts
    and catches up from r1, which never had the collection. Catch-up used to drop what the peer lacks
    ("it was dropped meanwhile"): acknowledged data gone. Shards now remember the versions of their
    drops: r1 never dropped it, so r0 keeps it, and r1 copies it from r0 (peer sync)."""
    env = {"VECSHARD_WRITE_QUORUM": "1", "VECSHARD_PEER_SYNC_S": "1"}
    with LocalCluster(shards=1, replicas=2, data_dir=tmp_path, env=env, log_level="ERROR") as cluster:
        x = np.random.default_rng(5).random((10, DIM), dtype=np.float32)
        r0, r1 = cluster.groups[0]
        r1.kill()
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, DIM)
            c.add(name, np.arange(10), x)
        r0.kill()
        cluster.restart_replica(0, 1)  # no peer up: serves its own state (no such collection)
        cluster.restart_replica(0, 0)  # catches up from r1, which lacks it and never dropped it
        deadline = time.monotonic() + 30
        while True:
            try:
                if _state(r1.address, name) == _state(r0.address, name):
                    break
            except grpc.RpcError:
                pass  # r1 has not copied it yet
            assert time.monotonic() < deadline, "r1 did not copy the collection r0 kept"
            time.sleep(0.3)
        assert _state(r0.address, name)[0] == 10
        with Client(cluster.address, timeout=30) as c:
            np.testing.assert_array_equal(c.get(name, np.arange(10)), x)
            c.drop_collection(name)  # and a drop is a drop on both, also after restarts
        r1.kill()
        cluster.restart_replica(0, 1)
        time.sleep(2.5)
        for r in (r0, r1):
            with grpc.insecure_channel(r.address) as ch:
                names = [
                    s.config.name
                    for s in shard_pb2_grpc.ShardStub(ch)
                    .ListCollections(pb.ListCollectionsRequest(), timeout=10)
                    .collections
                ]
            assert name not in names
