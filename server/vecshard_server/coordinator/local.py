"""Local shards: shard services in the coordinator's own process, called without gRPC.

As Qdrant's local and remote shards: a `LocalShard` implements the same `ShardApi` as a remote
replica, so the fan-out, merging, training and every write path run unchanged. A call goes
straight to the shard service's handler, wrapped in the same error mapping, readiness check,
metrics and tracing as a gRPC call (common.rpc.guarded), on the coordinator's event loop: no
serialization, no loopback hop, no second process. A search passes numpy arrays both ways
(`ShardQuery` in, `ShardHits` out). faiss releases the GIL, so shards still search in parallel on
their own thread pools.

Each local shard keeps its own data dir (WAL and snapshots), exactly as a shard process would: a
kill -9 of the one process loses nothing acknowledged. Replicas need separate processes to fail
independently, so local shards have one replica each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.rpc import guarded
from vecshard_server.common.search_values import ShardHits, ShardQuery
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.groups import ShardGroup
from vecshard_server.coordinator.shard_api import CallMeta, Encoded, message_of
from vecshard_server.shard.service import SERVICE_NAME, ShardService, maintain

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class LocalAbort(grpc.aio.AbortError):  # type: ignore[misc]
    """What `LocalContext.abort` raises: the handler's status, turned into an AioRpcError for the
    caller (an AbortError passes the handler's own error mapping untouched)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str]]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, tuple(trailing)


class LocalContext:
    """The part of grpc.aio.ServicerContext the shard handlers use."""

    def __init__(
        self, metadata: Sequence[tuple[str, str]], timeout: float | None, meta: CallMeta | None = None
    ) -> None:
        self.meta = meta or CallMeta(timeout)  # (what the metadata says, typed)
        self._metadata = tuple(metadata)
        self._deadline = time.monotonic() + timeout if timeout is not None else None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise LocalAbort(code, details, tuple(trailing_metadata or ()))

    def peer(self) -> str:
        return "local"


def _rpc_error(err: LocalAbort) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(err.code, grpc.aio.Metadata(), grpc.aio.Metadata(*err.trailing), details=err.details)


Handler = Callable[[Any, Any], Awaitable[Any]]


class LocalShard:
    """A shard service in this process, in a ShardGroup's place of a remote replica."""

    def __init__(self, address: str, service: ShardService) -> None:
        self.address = address
        self.service = service
        self.down_until = 0.0
        self._guarded: dict[Handler, Handler] = {}

    async def serving(self) -> bool:
        return bool(self.service.ready)

    async def close(self) -> None:
        """Nothing to close: LocalShards closes the services."""

    async def _call(
        self,
        handler: Callable[[Req, Any], Awaitable[Resp]],
        request: Req | Encoded[Req],
        meta: CallMeta,
        rpc: str = "",
    ) -> Resp:
        """The handler's reply, through the same guard as a gRPC call of the shard's `rpc` (by
        default the handler's name)."""
        wrapped = self._guarded.get(handler)
        if wrapped is None:
            method = f"/{SERVICE_NAME}/{rpc or handler.__name__}"
            wrapped = self._guarded[handler] = guarded(handler, method, lambda: bool(self.service.ready), None)
        context = LocalContext(meta.headers(), meta.timeout, meta)
        try:
            async with asyncio.timeout(meta.timeout):  # (no task of its own, unlike wait_for)
                reply: Resp = await wrapped(message_of(request), context)
        except LocalAbort as err:
            raise _rpc_error(err) from None
        except TimeoutError:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), details="Deadline Exceeded"
            ) from None
        return reply

    async def _search(self, query: ShardQuery, context: LocalContext) -> ShardHits:
        return await self.service.search(query, context.meta.train_epoch)

    async def search(self, query: ShardQuery, meta: CallMeta) -> ShardHits:
        return await self._call(self._search, query, meta, "Search")

    async def create_collection(self, request: types_pb2.CollectionConfig, meta: CallMeta) -> spb.ShardCollectionState:
        return await self._call(self.service.CreateCollection, request, meta)

    async def drop_collection(self, request: pb.DropCollectionRequest, meta: CallMeta) -> pb.DropCollectionResponse:
        return await self._call(self.service.DropCollection, request, meta)

    async def list_collections(self, request: pb.ListCollectionsRequest, meta: CallMeta) -> spb.ShardListResponse:
        return await self._call(self.service.ListCollections, request, meta)

    async def describe_collection(
        self, request: pb.DescribeCollectionRequest, meta: CallMeta
    ) -> spb.ShardCollectionState:
        return await self._call(self.service.DescribeCollection, request, meta)

    async def add(self, request: pb.AddRequest | Encoded[pb.AddRequest], meta: CallMeta) -> pb.AddResponse:
        return await self._call(self.service.Add, request, meta)

    async def remove(self, request: pb.RemoveRequest, meta: CallMeta) -> pb.RemoveResponse:
        return await self._call(self.service.Remove, request, meta)

    async def rollback_add(self, request: spb.RollbackAddRequest, meta: CallMeta) -> pb.RemoveResponse:
        return await self._call(self.service.RollbackAdd, request, meta)

    async def get(self, request: pb.GetRequest | Encoded[pb.GetRequest], meta: CallMeta) -> pb.GetResponse:
        return await self._call(self.service.Get, request, meta)

    async def sample(self, request: pb.SampleRequest | Encoded[pb.SampleRequest], meta: CallMeta) -> spb.ExportResponse:
        return await self._call(self.service.Sample, request, meta)

    async def export(
        self, request: spb.ExportRequest | Encoded[spb.ExportRequest], meta: CallMeta
    ) -> spb.ExportResponse:
        return await self._call(self.service.Export, request, meta)

    async def import_page(self, request: spb.ImportRequest, meta: CallMeta) -> spb.ShardCollectionState:
        return await self._call(self.service.Import, request, meta)

    async def install_quantizer(
        self, request: spb.InstallQuantizerRequest | Encoded[spb.InstallQuantizerRequest], meta: CallMeta
    ) -> spb.ShardCollectionState:
        return await self._call(self.service.InstallQuantizer, request, meta)

    async def resync(self, request: spb.ResyncRequest, meta: CallMeta) -> spb.ShardCollectionState:
        return await self._call(self.service.Resync, request, meta)

    async def set_payload(self, request: pb.SetPayloadRequest, meta: CallMeta) -> pb.SetPayloadResponse:
        return await self._call(self.service.SetPayload, request, meta)

    async def count(self, request: pb.CountRequest, meta: CallMeta) -> pb.CountResponse:
        return await self._call(self.service.Count, request, meta)

    async def scroll(self, request: pb.ScrollRequest, meta: CallMeta) -> pb.ScrollResponse:
        return await self._call(self.service.Scroll, request, meta)

    async def facet(self, request: pb.FacetRequest, meta: CallMeta) -> pb.FacetResponse:
        return await self._call(self.service.Facet, request, meta)

    async def keyword_stats(self, request: spb.KeywordStatsRequest, meta: CallMeta) -> spb.KeywordStatsResponse:
        return await self._call(self.service.KeywordStats, request, meta)

    async def keyword_search(self, request: spb.KeywordSearchRequest, meta: CallMeta) -> pb.SearchResponse:
        return await self._call(self.service.KeywordSearch, request, meta)

    async def update_vectors(
        self, request: pb.UpdateVectorsRequest | Encoded[pb.UpdateVectorsRequest], meta: CallMeta
    ) -> pb.UpdateVectorsResponse:
        return await self._call(self.service.UpdateVectors, message_of(request), meta)

    async def create_payload_index(
        self, request: pb.CreatePayloadIndexRequest, meta: CallMeta
    ) -> spb.ShardCollectionState:
        return await self._call(self.service.CreatePayloadIndex, request, meta)

    async def drop_payload_index(self, request: pb.DropPayloadIndexRequest, meta: CallMeta) -> spb.ShardCollectionState:
        return await self._call(self.service.DropPayloadIndex, request, meta)

    async def backup_partition(
        self, request: spb.BackupPartitionRequest, meta: CallMeta
    ) -> spb.BackupPartitionResponse:
        return await self._call(self.service.BackupPartition, request, meta)


class LocalShards:
    """The coordinator's in-process shard services: one per group, each with its own data dir
    (`data_dir/shard-i`, as `vecshard serve` lays them out; None: in memory), recovered at start,
    checkpointed in the background, snapshotted at stop."""

    def __init__(self, count: int, settings: Settings, data_dir: Path | None) -> None:
        self.settings = settings
        self.data_dir = data_dir
        # A reshard may have added groups since `count` was chosen: serve every group the data dir has.
        existing = [int(p.name[6:]) + 1 for p in data_dir.glob("shard-*") if p.name[6:].isdigit()] if data_dir else []
        count = max([count, *existing])
        self.services = [
            ShardService(settings, data_dir / f"shard-{i}" if data_dir is not None else None) for i in range(count)
        ]
        self.replicas = [LocalShard(f"local-shard-{i}", s) for i, s in enumerate(self.services)]
        self._loops: list[asyncio.Task[None]] = []

    async def grow(self, groups: int, shards: ShardSet) -> None:
        """Add local shard groups until `shards` (the coordinator's ShardSet) has `groups` (a reshard
        to more groups): each with its own data dir, kept across restarts (see __init__)."""
        while len(shards.shards) < groups:
            i = len(self.services)
            service = ShardService(self.settings, self.data_dir / f"shard-{i}" if self.data_dir is not None else None)
            await asyncio.to_thread(service.recover)
            replica = LocalShard(f"local-shard-{i}", service)
            self.services.append(service)
            self.replicas.append(replica)
            shards.shards.append(ShardGroup(len(shards.shards), [replica]))
            log.info("added local shard group %d (%s)", i, service.data_dir or "in memory")

    async def start(self) -> None:
        for s in self.services:
            await asyncio.to_thread(s.recover)
        self._loops.append(asyncio.create_task(maintain(self.services)))

    async def close(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for s in self.services:
            await asyncio.to_thread(s.close)
