"""Write quorum (coordinator/fanout.py): a write goes to every replica of a group and is acknowledged
once `write_quorum` of them have it.

A real cluster of 2 groups x 2 replicas (shard processes) with one replica of group 0 stopped (kill -9),
driven through a coordinator's ShardSet in this process: with quorum 1 the write is acknowledged and
the stopped replica is marked behind (reads avoid it, repair resyncs it); with quorum 2 it is refused
UNAVAILABLE naming the group, and a plain (non-upsert) Add is taken back out of the replica that
applied it, through the ShardSet's hook and, end to end, through the coordinator's Add.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from vecshard import Client, wire
from vecshard.errors import Unavailable
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.config import Settings
from vecshard_server.common.placement import shard_of
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.groups import ShardGroup
from vecshard_server.coordinator.shard_api import ADD, GET, REMOVE, CallMeta, ShardApi

from .support import NoDeadline, ShardBackend, routed_adds

T = 20.0
DIM = 4


@pytest.fixture(scope="module")
def half_down() -> Iterator[LocalCluster]:
    """2 groups x 2 replicas, the second replica of group 0 killed; collections made before."""
    with LocalCluster(shards=2, replicas=2, log_level="ERROR") as cluster:
        with Client(cluster.address, timeout=60) as c:
            for name in ("q_one", "q_two", "q_upsert", "q_service"):
                c.create_collection(name, DIM)
        cluster.groups[0][1].kill()
        yield cluster


def vectors(ids: np.ndarray) -> np.ndarray:
    return np.repeat(ids.astype(np.float32)[:, None], DIM, axis=1)


def run(cluster: LocalCluster, quorum: int, scenario: Callable[[ShardSet], Awaitable[None]]) -> None:
    async def main() -> None:
        shards = ShardSet(cluster.shard_addresses, Settings(write_quorum=quorum))
        try:
            await scenario(shards)
        finally:
            await shards.close()

    asyncio.run(main())


async def held(replica: ShardApi, name: str, ids: np.ndarray) -> list[bool]:
    """Which of the ids this one replica stores."""
    req = pb.GetRequest(collection=name, ids=wire.pack_ids(ids), allow_missing=True)
    resp = await replica.get(req, CallMeta(T))
    return [bool(f) for f in np.frombuffer(resp.found, np.uint8)]


def test_quorum_one_acknowledges_and_marks_the_stopped_replica_behind(half_down: LocalCluster) -> None:
    stopped = half_down.groups[0][1].address

    async def scenario(shards: ShardSet) -> None:
        ids = np.arange(40)
        out = await shards.call(ADD, routed_adds("q_one", ids, vectors(ids), 2), T)
        assert sum(r.added for r in out.results.values()) == 40 and not out.failures
        # Only the replica that missed it, only for this collection: reads avoid it until resynced.
        assert shards.replication.behind == {(0, stopped, "q_one"): 1}
        assert shards.replication.lagging(0, "q_one") == {stopped}
        assert shards.replication.lagging(1, "q_one") == frozenset()
        assert shards.replication.lagging(0, "q_two") == frozenset()
        live = shards.shards[0].replicas[0]
        assert all(await held(live, "q_one", ids[shard_of(ids, 2) == 0]))

        removed = await shards.call(
            REMOVE, shards.all(pb.RemoveRequest(collection="q_one", ids=wire.pack_ids(ids[:5]))), T
        )
        assert sum(r.removed for r in removed.results.values()) == 5
        assert shards.replication.behind == {(0, stopped, "q_one"): 2}  # every write it misses counts
        for _ in range(4):  # every read is answered, whichever replica round-robin starts with
            get = pb.GetRequest(collection="q_one", ids=wire.pack_ids(ids), allow_missing=True)
            got = await shards.call(GET, shards.all(get), T)
            found = np.zeros(40, bool)
            for resp in got.results.values():
                found |= np.frombuffer(resp.found, np.uint8).astype(bool)
            assert found.tolist() == [False] * 5 + [True] * 35

    run(half_down, 1, scenario)


def test_quorum_two_refuses_and_a_plain_add_is_taken_back(half_down: LocalCluster) -> None:
    async def scenario(shards: ShardSet) -> None:
        ids = np.arange(100, 140)
        requests = routed_adds("q_two", ids, vectors(ids), 2)
        version = shards.clock.next()
        applied: list[str] = []

        async def take_back(group: ShardGroup, request: Any, replicas: list[ShardApi], timeout: float) -> None:
            """What the coordinator's Add does: RollbackAdd of its version on the replicas that applied it."""
            applied.extend(r.address for r in replicas)
            rollback = spb.RollbackAddRequest(collection=request.collection, write_token=version, ids=request.ids)
            for r in replicas:
                await r.rollback_add(rollback, CallMeta(timeout))

        with pytest.raises(Unavailable, match=r"shard-0 \(.*\) is unavailable"):
            await shards.call(ADD, requests, T, version=version, unacknowledged=take_back)
        live = shards.shards[0].replicas[0]
        assert applied == [live.address]  # only group 0 is short of its quorum; its live replica had it
        assert not any(await held(live, "q_two", wire.unpack_ids(requests[0].ids)))  # taken back
        # Nothing of group 0 to resync: the write is gone. (The fail-fast raise cancelled group 1's
        # write, whose replicas may then be marked for a resync: its outcome there is unknown.)
        assert not [key for key in shards.replication.behind if key[0] == 0]

    run(half_down, 2, scenario)


def test_quorum_two_leaves_an_upsert_for_the_replicas_to_resync(half_down: LocalCluster) -> None:
    stopped = half_down.groups[0][1].address

    async def scenario(shards: ShardSet) -> None:
        ids = np.arange(200, 240)
        requests = routed_adds("q_upsert", ids, vectors(ids), 2, upsert=True)
        # As the coordinator's writes: every group's outcome (no hook: an upsert cannot be taken back).
        out = await shards.call(ADD, requests, T, fail_fast=False)
        assert set(out.results) == {1} and out.results[1].added == len(requests[1].ids) // 8  # both replicas
        assert set(out.failures) == {0} and out.failures[0].code() == grpc.StatusCode.UNAVAILABLE
        err = shards.first_error(out.failures)
        assert isinstance(err, Unavailable) and re.match(r"shard-0 \(.*\) is unavailable", err.details), err
        live = shards.shards[0].replicas[0]
        assert all(await held(live, "q_upsert", wire.unpack_ids(requests[0].ids)))  # applied there ...
        assert shards.replication.behind == {(0, stopped, "q_upsert"): 1}  # ... so the other must get it

    run(half_down, 2, scenario)


def test_a_plain_add_short_of_its_quorum_is_all_or_nothing(half_down: LocalCluster) -> None:
    """Through the coordinator's Add: refused UNAVAILABLE and nothing kept, on either group."""

    async def scenario() -> None:
        async with ShardBackend.of(half_down).coordinator(Settings(write_quorum=2)) as service:
            ids = np.arange(300, 340)
            add = pb.AddRequest(collection="q_service", ids=wire.pack_ids(ids), vectors=wire.pack_matrix(vectors(ids)))
            with pytest.raises(Unavailable, match=r"shard-0 \("):
                await service.Add(add, NoDeadline())
            get = pb.GetRequest(collection="q_service", ids=wire.pack_ids(ids), allow_missing=True)
            resp = await service.Get(get, NoDeadline())
            assert not np.frombuffer(resp.found, np.uint8).any()
            stopped = half_down.groups[0][1].address
            live = [r for g in service.shards.shards for r in g.replicas if r.address != stopped]
            assert len(live) == 3
            for replica in live:  # asked one by one: none kept any of it
                assert not any(await held(replica, "q_service", ids))

    asyncio.run(scenario())
