"""The coordinator's Resharder (coordinator/reshard.py): how an export page is split among the groups
of a new placement, which reshard requests it refuses before changing anything (both shard modes),
and one reshard from 1 group to 2 on an in-process coordinator with local shards over a data dir:
every point on the group that owns it, exact, with its payload, trained as before, and served so
again after a restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from vecshard import wire
from vecshard.errors import FailedPrecondition, InvalidArgument, NotFound
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.placement import JUMP, MAX_GROUPS, Placement
from vecshard_server.coordinator.reshard import MAX_LOCAL_GROUPS, pages_by_owner
from vecshard_server.coordinator.service import CoordinatorService
from vecshard_server.coordinator.shard_api import LIST_COLLECTIONS

from .conftest import clustered
from .support import NoDeadline, ShardBackend

DIM = 8
CTX = NoDeadline()


def payload(i: int) -> ppb.Payload:
    p = ppb.Payload()
    p.fields["i"].int_value = i
    return p


def test_pages_by_owner_sends_each_entry_with_its_data_to_its_owner() -> None:
    rng = np.random.default_rng(2)
    ids = np.sort(rng.choice(10**9, size=300, replace=False)).astype(np.int64)
    live, dead = ids[:200], ids[200:]
    vectors = rng.random((200, DIM), dtype=np.float32)
    page = spb.ExportResponse(
        ids=wire.pack_ids(live),
        vectors=wire.pack_matrix(vectors),
        versions=wire.pack_ids(live * 3 + 1),
        tombstone_ids=wire.pack_ids(dead),
        tombstone_versions=wire.pack_ids(dead * 5 + 2),
        payloads=[payload(int(i)) for i in live],
    )
    placement = Placement(JUMP, 3, 1)
    parts = pages_by_owner(page, placement)
    assert sorted(parts) == [0, 1, 2]
    seen_live, seen_dead = [], []
    for group, part in parts.items():
        got = wire.unpack_ids(part.ids)
        gone = wire.unpack_ids(part.tombstone_ids)
        assert (placement.owner(got) == group).all() and (placement.owner(gone) == group).all()
        rows = np.searchsorted(live, got)
        np.testing.assert_array_equal(wire.unpack_matrix(part.vectors), vectors[rows])
        np.testing.assert_array_equal(wire.unpack_ids(part.versions), got * 3 + 1)
        np.testing.assert_array_equal(wire.unpack_ids(part.tombstone_versions), gone * 5 + 2)
        assert [p.fields["i"].int_value for p in part.payloads] == got.tolist()
        seen_live += got.tolist()
        seen_dead += gone.tolist()
    assert sorted(seen_live) == live.tolist() and sorted(seen_dead) == dead.tolist()  # each exactly once

    only_dead = spb.ExportResponse(tombstone_ids=wire.pack_ids(dead), tombstone_versions=wire.pack_ids(dead))
    split = pages_by_owner(only_dead, placement)
    assert all(not part.ids and not part.HasField("vectors") for part in split.values())
    assert sorted(i for part in split.values() for i in wire.unpack_ids(part.tombstone_ids).tolist()) == dead.tolist()
    assert pages_by_owner(spb.ExportResponse(), placement) == {}


def config(name: str, index: int = types_pb2.INDEX_TYPE_FLAT, nlist: int = 0) -> pb.CreateCollectionRequest:
    cfg = types_pb2.CollectionConfig(name=name, dim=DIM, metric=types_pb2.METRIC_L2, index_type=index, nlist=nlist)
    return pb.CreateCollectionRequest(config=cfg)


def test_bad_reshard_requests_are_refused_and_change_nothing(backend: ShardBackend, name: str) -> None:
    async def scenario() -> None:
        async with backend.coordinator() as service:
            await service.CreateCollection(config(name), CTX)
            await service.Add(
                pb.AddRequest(
                    collection=name, ids=wire.pack_ids(np.arange(50)), vectors=wire.pack_matrix(clustered(50, DIM))
                ),
                CTX,
            )

            async def ask(shards: int, *names: str, **extra: object) -> pb.ReshardResponse:
                request = pb.ReshardRequest(collections=list(names or [name]), shards=shards, wait=True, **extra)
                return await service.Reshard(request, CTX)

            for shards in (0, MAX_GROUPS + 1):
                with pytest.raises(InvalidArgument, match=f"shards must be between 1 and {MAX_GROUPS}"):
                    await ask(shards)
            if backend.mode == "remote":  # more groups than there are shard processes
                with pytest.raises(FailedPrecondition, match="knows 2 shard groups, fewer than 3"):
                    await ask(3)
            else:  # local groups are added on demand, up to a bound
                with pytest.raises(InvalidArgument, match=f"at most {MAX_LOCAL_GROUPS} local shard groups"):
                    await ask(MAX_LOCAL_GROUPS + 1)
            with pytest.raises(NotFound, match="'nobody_here' does not exist"):
                await ask(1, name, "nobody_here")

            assert len(service.shards) == 2  # no group was added
            status = (await ask(0, status_only=True)).collections
            assert [(p.collection, p.phase, p.from_shards, p.from_epoch) for p in status] == [(name, "IDLE", 2, 0)]
            assert [p.phase for p in (await ask(2)).collections] == ["UNCHANGED"]
            listed = await service.shards.call(LIST_COLLECTIONS, service.shards.all(pb.ListCollectionsRequest()), 30)
            partitions = {s.config.name for r in listed.results.values() for s in r.collections}
            assert name in partitions and not any(p.startswith(f"{name}@") for p in partitions)
            info = await service.DescribeCollection(pb.DescribeCollectionRequest(name=name), CTX)
            assert info.count == 50 and (info.config.placement.shards, info.config.placement.epoch) == (2, 0)
            await service.DropCollection(pb.DropCollectionRequest(name=name), CTX)

    asyncio.run(scenario())


def test_a_reshard_from_one_local_group_to_two(tmp_path: Path) -> None:
    n, nlist = 1200, 8
    data = clustered(n, DIM, seed=8)
    ids = np.arange(n, dtype=np.int64) * 7  # (not dense)
    removed = ids[::10]
    kept = np.setdiff1d(ids, removed)
    queries = data[:25] + 0.01
    one = ShardBackend("local", 1)

    async def search(service: CoordinatorService) -> np.ndarray:
        request = pb.SearchRequest(collection="moving", queries=wire.pack_matrix(queries), k=10, nprobe=nlist)
        resp = await service.Search(request, CTX)
        return np.frombuffer(resp.ids, "<i8").reshape(resp.nq, resp.k)

    async def get(service: CoordinatorService, which: np.ndarray) -> pb.GetResponse:
        request = pb.GetRequest(
            collection="moving",
            ids=wire.pack_ids(which),
            allow_missing=True,
            with_payload=ppb.PayloadSelector(enable=True),
        )
        return await service.Get(request, CTX)

    def check(resp: pb.GetResponse, which: np.ndarray) -> None:
        found = np.frombuffer(resp.found, np.uint8).astype(bool)
        assert found.tolist() == np.isin(which, kept).tolist()
        rows = np.searchsorted(ids, which[found])
        np.testing.assert_array_equal(wire.unpack_matrix(resp.vectors)[found], data[rows])
        got = [p.fields["i"].int_value for p, f in zip(resp.payloads, found, strict=True) if f]
        assert got == which[found].tolist()

    async def before_and_reshard() -> tuple[np.ndarray, pb.ReshardProgress]:
        async with one.coordinator(data_dir=tmp_path) as service:
            await service.CreateCollection(config("moving", types_pb2.INDEX_TYPE_IVF_FLAT, nlist), CTX)
            add = pb.AddRequest(
                collection="moving",
                ids=wire.pack_ids(ids),
                vectors=wire.pack_matrix(data),
                payloads=[payload(int(i)) for i in ids],
            )
            await service.Add(add, CTX)
            await service.Remove(pb.RemoveRequest(collection="moving", ids=wire.pack_ids(removed)), CTX)
            await service.Train(pb.TrainRequest(collection="moving"), CTX)
            describe = pb.DescribeCollectionRequest(name="moving", include_centroids=True)
            trained = await service.DescribeCollection(describe, CTX)
            assert trained.training_state == pb.TRAINING_STATE_TRAINED and trained.centroids.rows == nlist
            expected = await search(service)

            done = await service.Reshard(pb.ReshardRequest(collections=["moving"], shards=2, wait=True), CTX)
            (progress,) = done.collections
            assert len(service.shards) == 2 and (tmp_path / "shard-1").is_dir()  # a local group was added
            info = await service.DescribeCollection(describe, CTX)
            assert (info.config.placement.shards, info.config.placement.epoch) == (2, 1)
            owner = Placement(JUMP, 2, 1).owner(kept)
            assert [s.count for s in info.shards] == np.bincount(owner, minlength=2).tolist()  # each on its owner
            assert info.training_state == pb.TRAINING_STATE_TRAINED
            assert info.centroids.data == trained.centroids.data  # the new partitions got the same training
            np.testing.assert_array_equal(await search(service), expected)
            check(await get(service, ids), ids)
            again = await service.Reshard(pb.ReshardRequest(collections=["moving"], shards=2, wait=True), CTX)
            assert [p.phase for p in again.collections] == ["UNCHANGED"]
            return expected, progress

    expected, progress = asyncio.run(before_and_reshard())
    assert progress.phase == "DONE" and not progress.error
    assert (progress.from_shards, progress.to_shards, progress.from_epoch) == (1, 2, 0)
    assert progress.copied == kept.size  # every live point scanned once ...
    assert progress.moved == int((Placement(JUMP, 2, 1).owner(kept) == 1).sum())  # ... those group 1 owns moved

    async def after_a_restart() -> None:
        async with one.coordinator(data_dir=tmp_path) as service:  # told 1 group: it serves the 2 on disk
            assert len(service.shards) == 2
            np.testing.assert_array_equal(await search(service), expected)
            check(await get(service, ids), ids)
            listed = await service.shards.call(LIST_COLLECTIONS, service.shards.all(pb.ListCollectionsRequest()), 30)
            partitions = sorted(s.config.name for r in listed.results.values() for s in r.collections)
            assert partitions == ["moving@1", "moving@1"]  # the old placement's partition was dropped

    asyncio.run(after_a_restart())
