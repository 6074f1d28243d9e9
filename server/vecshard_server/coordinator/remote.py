"""A shard replica in another process: `ShardApi` over the internal `vecshard.v1.Shard` gRPC service.

Requests go out as bytes serialized once (an `Encoded` request, or a search's `ShardQuery.encoded`,
is sent as it is to every shard); replies come back as bytes and are parsed here, on a worker
thread when big (parsing a large reply takes tens of milliseconds: too long for the event loop).
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc, types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.search_values import ShardHits, ShardQuery
from vecshard_server.common.security import internal_metadata, shard_channel
from vecshard_server.coordinator import offload
from vecshard_server.coordinator.shard_api import CallMeta, Encoded

R = TypeVar("R")


class _BytesChannel:
    """A channel whose stubs send and receive bytes: the generated stub's methods (their paths) with
    the (de)serialization left to RemoteShard, which does it once, and off the loop when big."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        registered = kwargs.get("_registered_method", False)
        return self._channel.unary_unary(method, None, None, _registered_method=registered)


def _hits(data: bytes, nq: int, width: int) -> ShardHits:
    return ShardHits.from_proto(pb.SearchResponse.FromString(data), nq, width)


class RemoteShard:
    """One shard process, reached over a gRPC channel (reconnecting within a second of its return)."""

    def __init__(self, address: str, settings: Settings) -> None:
        self.address = address
        self.down_until = 0.0
        # gRPC's default reconnect backoff grows to 120 s: a replica back up must be used at once.
        options = [
            *settings.grpc_options(),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self.channel = shard_channel(address, settings, options)
        self._internal = internal_metadata(settings)
        self._raw = shard_pb2_grpc.ShardStub(_BytesChannel(self.channel))

    async def serving(self) -> bool:
        try:
            resp = await health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=2.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self.channel.close()

    async def _bytes(self, method: Any, data: bytes, meta: CallMeta) -> bytes:
        reply: bytes = await method(data, timeout=meta.timeout, metadata=meta.headers(self._internal) or None)
        return reply

    async def _call(self, method: Any, request: Any, reply: type[R], meta: CallMeta) -> R:
        data = request.data if isinstance(request, Encoded) else request.SerializeToString()
        out = await self._bytes(method, data, meta)
        parse: Any = reply.FromString  # type: ignore[attr-defined]
        parsed: R = await offload.run(len(out) > offload.INLINE_BYTES, parse, out)
        return parsed

    async def search(self, query: ShardQuery, meta: CallMeta) -> ShardHits:
        data = await offload.run(query.queries.nbytes > offload.INLINE_BYTES, query.encoded)
        out = await self._bytes(self._raw.Search, data, meta)
        return await offload.run(len(out) > offload.INLINE_BYTES, _hits, out, query.nq, query.k * query.refine)

    async def create_collection(self, request: types_pb2.CollectionConfig, meta: CallMeta) -> spb.ShardCollectionState:
        return await self._call(self._raw.CreateCollection, request, spb.ShardCollectionState, meta)

    async def drop_collection(self, request: pb.DropCollectionRequest, meta: CallMeta) -> pb.DropCollectionResponse:
        return await self._call(self._raw.DropCollection, request, pb.DropCollectionResponse, meta)

    async def list_collections(self, request: pb.ListCollectionsRequest, meta: CallMeta) -> spb.ShardListResponse:
        return await self._call(self._raw.ListCollections, request, spb.ShardListResponse, meta)

    async def describe_collection(
        self, request: pb.DescribeCollectionRequest, meta: CallMeta
    ) -> spb.ShardCollectionState:
        return await self._call(self._raw.DescribeCollection, request, spb.ShardCollectionState, meta)

    async def add(self, request: pb.AddRequest | Encoded[pb.AddRequest], meta: CallMeta) -> pb.AddResponse:
        return await self._call(self._raw.Add, request, pb.AddResponse, meta)

    async def remove(self, request: pb.RemoveRequest, meta: CallMeta) -> pb.RemoveResponse:
        return await self._call(self._raw.Remove, request, pb.RemoveResponse, meta)

    async def rollback_add(self, request: spb.RollbackAddRequest, meta: CallMeta) -> pb.RemoveResponse:
        return await self._call(self._raw.RollbackAdd, request, pb.RemoveResponse, meta)

    async def get(self, request: pb.GetRequest | Encoded[pb.GetRequest], meta: CallMeta) -> pb.GetResponse:
        return await self._call(self._raw.Get, request, pb.GetResponse, meta)

    async def sample(self, request: pb.SampleRequest | Encoded[pb.SampleRequest], meta: CallMeta) -> spb.ExportResponse:
        return await self._call(self._raw.Sample, request, spb.ExportResponse, meta)

    async def export(
        self, request: spb.ExportRequest | Encoded[spb.ExportRequest], meta: CallMeta
    ) -> spb.ExportResponse:
        return await self._call(self._raw.Export, request, spb.ExportResponse, meta)

    async def import_page(self, request: spb.ImportRequest, meta: CallMeta) -> spb.ShardCollectionState:
        return await self._call(self._raw.Import, request, spb.ShardCollectionState, meta)

    async def install_quantizer(
        self, request: spb.InstallQuantizerRequest | Encoded[spb.InstallQuantizerRequest], meta: CallMeta
    ) -> spb.ShardCollectionState:
        return await self._call(self._raw.InstallQuantizer, request, spb.ShardCollectionState, meta)

    async def resync(self, request: spb.ResyncRequest, meta: CallMeta) -> spb.ShardCollectionState:
        return await self._call(self._raw.Resync, request, spb.ShardCollectionState, meta)

    async def set_payload(self, request: pb.SetPayloadRequest, meta: CallMeta) -> pb.SetPayloadResponse:
        return await self._call(self._raw.SetPayload, request, pb.SetPayloadResponse, meta)

    async def count(self, request: pb.CountRequest, meta: CallMeta) -> pb.CountResponse:
        return await self._call(self._raw.Count, request, pb.CountResponse, meta)

    async def scroll(self, request: pb.ScrollRequest, meta: CallMeta) -> pb.ScrollResponse:
        return await self._call(self._raw.Scroll, request, pb.ScrollResponse, meta)

    async def facet(self, request: pb.FacetRequest, meta: CallMeta) -> pb.FacetResponse:
        return await self._call(self._raw.Facet, request, pb.FacetResponse, meta)

    async def keyword_stats(self, request: spb.KeywordStatsRequest, meta: CallMeta) -> spb.KeywordStatsResponse:
        return await self._call(self._raw.KeywordStats, request, spb.KeywordStatsResponse, meta)

    async def keyword_search(self, request: spb.KeywordSearchRequest, meta: CallMeta) -> pb.SearchResponse:
        return await self._call(self._raw.KeywordSearch, request, pb.SearchResponse, meta)

    async def update_vectors(
        self, request: pb.UpdateVectorsRequest | Encoded[pb.UpdateVectorsRequest], meta: CallMeta
    ) -> pb.UpdateVectorsResponse:
        return await self._call(self._raw.UpdateVectors, request, pb.UpdateVectorsResponse, meta)

    async def create_payload_index(
        self, request: pb.CreatePayloadIndexRequest, meta: CallMeta
    ) -> spb.ShardCollectionState:
        return await self._call(self._raw.CreatePayloadIndex, request, spb.ShardCollectionState, meta)

    async def drop_payload_index(self, request: pb.DropPayloadIndexRequest, meta: CallMeta) -> spb.ShardCollectionState:
        return await self._call(self._raw.DropPayloadIndex, request, spb.ShardCollectionState, meta)

    async def backup_partition(
        self, request: spb.BackupPartitionRequest, meta: CallMeta
    ) -> spb.BackupPartitionResponse:
        return await self._call(self._raw.BackupPartition, request, spb.BackupPartitionResponse, meta)
