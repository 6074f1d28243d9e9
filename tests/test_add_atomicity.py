"""A non-upsert Add is all or nothing across shards, and its rollback takes back only what it wrote.

Faults are real: a shard process is paused with SIGSTOP (as a long GC pause, a swapped-out host or a
stalled disk would) while the coordinator and the other shard go on.
"""

from __future__ import annotations

import signal
import threading
import time

import grpc
import numpy as np
import pytest

from vecshard import AlreadyExists, Client, DeadlineExceeded, wire
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.placement import shard_of

DIM = 8


def _found_on(address: str, collection: str, ids: np.ndarray) -> np.ndarray:
    with grpc.insecure_channel(address) as ch:
        resp = shard_pb2_grpc.ShardStub(ch).Get(
            pb.GetRequest(collection=collection, ids=wire.pack_ids(ids)), timeout=10
        )
    return np.frombuffer(resp.found, dtype=np.uint8).astype(bool)


def _settle(c: Client, name: str, count: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        got = c.describe(name).count
        if got == count or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_an_add_that_times_out_on_one_shard_leaves_nothing(remote_cluster: LocalCluster, name: str) -> None:
    """It once left the other shards' part stored (their rollback covered only shards that answered,
    and the late shard committed after the deadline), and the retry failed with ALREADY_EXISTS."""
    ids = np.arange(200)
    x = np.random.default_rng(1).random((200, DIM), dtype=np.float32)
    late = remote_cluster.shards[1].popen
    with Client(remote_cluster.address, timeout=30) as c:
        c.create_collection(name, DIM)
        late.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(DeadlineExceeded):
                c.add(name, ids, x, timeout=1.5)
            time.sleep(0.5)
        finally:
            late.send_signal(signal.SIGCONT)
        assert _settle(c, name, 0) == 0, "part of a failed Add stayed stored"
        assert np.isnan(c.get(name, ids, allow_missing=True)).all()  # missing rows come back as NaN
        result = c.add(name, ids, x)  # the retry: nothing of the first attempt is in the way
        assert result.added == 200 and c.describe(name).count == 200
        np.testing.assert_array_equal(c.get(name, ids), x)


def test_rollback_keeps_a_concurrent_acknowledged_upsert(remote_cluster: LocalCluster, name: str) -> None:
    """Rollback once removed ids by value: an upsert of the same id, acknowledged meanwhile, was lost."""
    candidates = np.arange(1000)
    owner = shard_of(candidates, 2)
    a = int(candidates[owner == 0][0])  # lands on shard 0
    b = int(candidates[owner == 1][0])  # lands on shard 1, where it already exists
    old = np.full((1, DIM), 1.0, np.float32)
    new = np.full((1, DIM), 2.0, np.float32)
    slow = remote_cluster.shards[1].popen
    with Client(remote_cluster.address, timeout=60) as c:
        c.create_collection(name, DIM)
        c.add(name, [b], old)
        outcome: list[BaseException | None] = []

        def failing_add() -> None:
            try:
                c.add(name, [a, b], np.vstack([old, old]))
                outcome.append(None)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                outcome.append(err)

        slow.send_signal(signal.SIGSTOP)
        try:
            t = threading.Thread(target=failing_add)
            t.start()
            deadline = time.monotonic() + 20
            while not _found_on(remote_cluster.shards[0].address, name, np.array([a]))[0]:
                assert time.monotonic() < deadline, "the Add never reached shard 0"
                time.sleep(0.05)
            c.add(name, [a], new, upsert=True)  # acknowledged while the Add is still undecided
        finally:
            slow.send_signal(signal.SIGCONT)
        t.join(60)
        assert isinstance(outcome[0], AlreadyExists), outcome
        np.testing.assert_array_equal(c.get(name, [a]), new)  # the acknowledged upsert survived the rollback
        np.testing.assert_array_equal(c.get(name, [b]), old)
        assert c.describe(name).count == 2
