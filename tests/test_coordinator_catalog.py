"""The coordinator's catalog (coordinator/catalog.py): everything it knows is rebuilt from the shards'
lists, in both shard modes.

Collections are made and changed on the shards through a coordinator's ShardSet, behind the back of
the Catalog under test (as another coordinator would), and the catalog must then tell what exists,
with which config, placement and counts, find what it missed on a lookup, forget what was dropped,
and refuse collections it cannot serve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from vecshard.errors import FailedPrecondition, InvalidArgument, NotFound
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.placement import JUMP, Placement
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator.catalog import Catalog
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.shard_api import ADD, CREATE_COLLECTION, DROP_COLLECTION

from .support import ShardBackend, partition_config, routed_adds

T = 30.0  # each shard call's deadline
DIM = 4


def run(backend: ShardBackend, scenario: Callable[[ShardSet], Awaitable[None]]) -> None:
    async def main() -> None:
        async with backend.shard_set() as shards:
            await scenario(shards)

    asyncio.run(main())


async def create(shards: ShardSet, name: str, dim: int = DIM, groups: list[int] | None = None, **cfg: object) -> None:
    """Create the collection on `groups` (default: every group) as a coordinator does."""
    config = partition_config(name, dim, len(shards), **cfg)  # type: ignore[arg-type]
    targets = range(len(shards)) if groups is None else groups
    await shards.call(CREATE_COLLECTION, {g: config for g in targets}, T)


async def drop(shards: ShardSet, name: str, groups: list[int] | None = None) -> None:
    targets = range(len(shards)) if groups is None else groups
    await shards.call(DROP_COLLECTION, {g: pb.DropCollectionRequest(name=name) for g in targets}, T)


async def add(shards: ShardSet, name: str, ids: np.ndarray) -> None:
    x = np.random.default_rng(int(ids[0])).random((ids.size, DIM), dtype=np.float32)
    await shards.call(ADD, routed_adds(name, ids, x, len(shards)), T)


def per_group(ids: np.ndarray, groups: int) -> list[int]:
    return [int(n) for n in np.bincount(Placement(JUMP, groups).owner(ids), minlength=groups)]


def test_a_refresh_rebuilds_the_catalog_from_the_shards(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet) -> None:
        await create(shards, name, index="ivf_flat", nlist=4)
        await add(shards, name, np.arange(300))
        catalog = Catalog(shards)
        assert name not in catalog.collections  # it remembers nothing of its own
        with pytest.raises(RuntimeError, match="lock"):
            await catalog.refresh_locked(T)
        lists = await catalog.refresh(T)
        assert len(lists) == 2 and all(name in {s.config.name for s in part.collections} for part in lists)
        coll = catalog.collections[name]
        assert coll.spec == CollectionSpec.from_proto(partition_config(name, DIM, 2, index="ivf_flat", nlist=4))
        assert coll.name == name and coll.placement == Placement(JUMP, 2, 0)
        assert coll.shard_counts == per_group(np.arange(300), 2) and coll.count == 300
        assert not coll.trained and not coll.conflict and coll.reshard_phase == "" and coll.next is None

        await add(shards, name, np.arange(300, 350))  # more, behind its back
        await catalog.refresh(T)
        assert catalog.collections[name] is coll  # the same entry (its locks, its training task) ...
        assert coll.count == 350 and coll.shard_counts == per_group(np.arange(350), 2)  # ... updated
        info = await catalog.describe(coll, T)
        assert info.config.name == name and info.count == 350
        assert [s.count for s in info.shards] == coll.shard_counts
        assert info.training_state == pb.TRAINING_STATE_UNTRAINED
        await drop(shards, name)

    run(backend, scenario)


def test_a_lookup_miss_finds_a_collection_made_elsewhere(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet) -> None:
        catalog = Catalog(shards)
        await catalog.refresh(T)
        await create(shards, name)  # by another coordinator, after this one's refresh
        assert name not in catalog.collections
        coll = await catalog.get(name, lambda: T)  # a miss asks the shards before answering
        assert coll.name == name and coll.count == 0 and catalog.collections[name] is coll

        with pytest.raises(NotFound, match=r"'nobody_here' does not exist: create it first"):
            await catalog.get("nobody_here", lambda: T)
        with pytest.raises(NotFound, match="nothing to drop"):
            await catalog.get("nobody_here", lambda: T, if_missing="nothing to drop")
        with pytest.raises(InvalidArgument):
            await catalog.get("no spaces allowed", lambda: T)
        assert "nobody_here" not in catalog.collections
        await drop(shards, name)

    run(backend, scenario)


def test_a_dropped_collection_is_gone_after_the_next_refresh(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet) -> None:
        await create(shards, name)
        await add(shards, name, np.arange(40))
        catalog = Catalog(shards)
        await catalog.refresh(T)
        await drop(shards, name)  # by another coordinator
        # A hit is answered from the catalog (no shard call per request) until its next refresh ...
        assert (await catalog.get(name, lambda: T)).count == 40
        await catalog.refresh(T)
        assert name not in catalog.collections  # ... which forgets it
        with pytest.raises(NotFound, match="does not exist"):
            await catalog.get(name, lambda: T)

        await create(shards, name, dim=8)  # the name again, another config: a new collection
        coll = await catalog.get(name, lambda: T)
        assert coll.spec.dim == 8 and coll.count == 0
        await drop(shards, name)

    run(backend, scenario)


def test_shards_that_disagree_on_the_config_are_refused_but_for_a_drop(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet) -> None:
        await create(shards, name, dim=4, groups=[0])
        await create(shards, name, dim=8, groups=[1])  # (only the internal API can do this)
        catalog = Catalog(shards)
        await catalog.refresh(T)
        with pytest.raises(FailedPrecondition, match=r"another config on shard-1 .*dim 8.*drop it"):
            await catalog.get(name, lambda: T)
        coll = await catalog.get(name, lambda: T, conflict_ok=True)  # what DropCollection asks for
        assert coll.conflict and coll.spec.dim == 4
        await drop(shards, name)
        await catalog.refresh(T)
        assert name not in catalog.collections

    run(backend, scenario)


def test_a_placement_over_more_groups_than_known_is_refused(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet) -> None:
        config = partition_config(name, DIM, 3)  # placed on 3 groups; this coordinator knows 2
        await shards.call(CREATE_COLLECTION, shards.all(config), T)
        catalog = Catalog(shards)
        await catalog.refresh(T)
        with pytest.raises(FailedPrecondition, match="placed on 3 shard groups, and this coordinator knows only 2"):
            await catalog.get(name, lambda: T)
        assert catalog.collections[name].placement.shards == 2  # (what it can reach, for the drop)
        await drop(shards, name)

    run(backend, scenario)


def test_partitions_of_two_placements_are_a_reshard_until_the_old_one_is_dropped(
    backend: ShardBackend, name: str
) -> None:
    async def scenario(shards: ShardSet) -> None:
        await create(shards, name)
        await add(shards, name, np.arange(100))
        newer = partition_config(name, DIM, 1, epoch=1)  # a reshard to 1 group: a marker on group 1
        await shards.call(CREATE_COLLECTION, shards.all(newer), T)
        catalog = Catalog(shards)
        await catalog.refresh(T)
        coll = catalog.collections[name]
        assert coll.placement == Placement(JUMP, 2, 0) and coll.count == 100
        assert coll.next == Placement(JUMP, 1, 1) and coll.reshard_phase == "copying"
        assert [p for _, p, _ in coll.writers] == [Placement(JUMP, 2, 0), Placement(JUMP, 1, 1)]

        await drop(shards, name, groups=[0])  # the cutover began: group 0 first
        await catalog.refresh(T)
        coll = catalog.collections[name]
        assert coll.placement == Placement(JUMP, 1, 1) and coll.spec.name == f"{name}@1"
        assert coll.reshard_phase == "" and coll.next is None
        # What the interrupted cutover left: the old partition on group 1, the new one's marker there.
        assert sorted(coll.leftovers) == [(name, 1), (f"{name}@1", 1)]
        await drop(shards, name, groups=[1])
        await drop(shards, f"{name}@1")

    run(backend, scenario)
