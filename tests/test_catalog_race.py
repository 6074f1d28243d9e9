"""An acknowledged CreateCollection or DropCollection is never undone by a catalog refresh.

A coordinator refreshes its catalog from the shards' ListCollections, e.g. when a request names a
collection it does not know. Such a refresh used to replace the catalog wholesale without the
catalog's lock: one that listed the shards before a create reached them and finished after the
create was acknowledged dropped the new collection again (a Search right after CreateCollection
got NOT_FOUND for up to 0.5 s), and one finishing after a drop brought the dropped collection back.

A real 2-shard cluster and an in-process CoordinatorService, whose next ListCollections fan-out
holds its (stale) answer for DELAY_S, make the interleaving deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest

from vecshard import wire
from vecshard.errors import NotFound
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.config import Settings
from vecshard_server.coordinator.service import CoordinatorService
from vecshard_server.coordinator.shard_api import LIST_COLLECTIONS
from vecshard_server.embedding.service import LocalEmbeddings

DELAY_S = 1.0
DIM = 4


class Context:
    """What the handlers use of grpc.aio.ServicerContext: a call without a deadline."""

    def time_remaining(self) -> float | None:
        return None


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(shards=2, log_level="WARNING") as c:
        yield c


def slow_next_listing(service: CoordinatorService) -> asyncio.Event:
    """Make the service's next ListCollections fan-out hold the shards' answer for DELAY_S before
    handing it to the catalog; the returned event is set once it has that answer."""
    real = service.shards.call
    listed = asyncio.Event()

    async def call(method: Any, requests: Any, timeout: float, **kwargs: Any) -> Any:
        out = await real(method, requests, timeout, **kwargs)
        if method is LIST_COLLECTIONS and not listed.is_set():
            listed.set()
            await asyncio.sleep(DELAY_S)
        return out

    service.shards.call = call  # type: ignore[method-assign]
    return listed


def create_request(name: str) -> pb.CreateCollectionRequest:
    return pb.CreateCollectionRequest(
        config=types_pb2.CollectionConfig(
            name=name, dim=DIM, metric=types_pb2.METRIC_L2, index_type=types_pb2.INDEX_TYPE_FLAT
        )
    )


def search_request(name: str) -> pb.SearchRequest:
    return pb.SearchRequest(collection=name, queries=wire.pack_matrix(np.zeros((1, DIM), np.float32)), k=1)


def run(cluster: LocalCluster, scenario: Callable[[CoordinatorService], Awaitable[None]]) -> None:
    async def main() -> None:
        settings = Settings()
        service = CoordinatorService(settings, cluster.shard_addresses, LocalEmbeddings.from_file(None, settings))
        await service.start()
        try:
            await scenario(service)
        finally:
            await service.close()

    asyncio.run(main())


async def start_stale_refresh(service: CoordinatorService) -> asyncio.Future[Any]:
    """A lookup miss whose refresh has listed the shards and is about to be held for DELAY_S."""
    listed = slow_next_listing(service)
    miss = asyncio.ensure_future(
        service.DescribeCollection(pb.DescribeCollectionRequest(name="race_nobody"), Context())
    )
    await listed.wait()
    return miss


def test_a_refresh_listed_before_a_create_does_not_undo_it(cluster: LocalCluster) -> None:
    async def scenario(service: CoordinatorService) -> None:
        ctx = Context()
        miss = await start_stale_refresh(service)
        await service.CreateCollection(create_request("race_new"), ctx)
        with pytest.raises(NotFound):
            await miss
        # The older refresh has finished: the acknowledged collection is still there.
        resp = await service.Search(search_request("race_new"), ctx)
        assert resp.nq == 1 and resp.shards_ok == 2
        assert "race_new" in service.catalog.collections
        await service.DropCollection(pb.DropCollectionRequest(name="race_new"), ctx)

    run(cluster, scenario)


def test_a_refresh_listed_before_a_drop_does_not_bring_it_back(cluster: LocalCluster) -> None:
    async def scenario(service: CoordinatorService) -> None:
        ctx = Context()
        await service.CreateCollection(create_request("race_gone"), ctx)
        miss = await start_stale_refresh(service)
        await service.DropCollection(pb.DropCollectionRequest(name="race_gone"), ctx)
        with pytest.raises(NotFound):
            await miss
        assert "race_gone" not in service.catalog.collections
        with pytest.raises(NotFound):
            await service.Search(search_request("race_gone"), ctx)

    run(cluster, scenario)


def test_concurrent_misses_share_one_refresh(cluster: LocalCluster) -> None:
    async def scenario(service: CoordinatorService) -> None:
        listings = 0
        real = service.shards.call

        async def call(method: Any, requests: Any, timeout: float, **kwargs: Any) -> Any:
            nonlocal listings
            if method is LIST_COLLECTIONS:
                listings += 1
                await asyncio.sleep(0.2)
            return await real(method, requests, timeout, **kwargs)

        service.shards.call = call  # type: ignore[method-assign]
        ctx = Context()
        misses = [service.DescribeCollection(pb.DescribeCollectionRequest(name=f"race_none{i}"), ctx) for i in range(8)]
        outcomes = await asyncio.gather(*misses, return_exceptions=True)
        assert all(isinstance(o, NotFound) for o in outcomes), outcomes
        # Misses noticed while the first refresh was listing share one more (it may have missed them).
        assert listings == 2

    run(cluster, scenario)
