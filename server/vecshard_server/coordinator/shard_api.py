"""The coordinator's typed interface to one shard replica, and the operations it fans out.

`ShardApi` is what the coordinator holds for every replica of every shard group. Two classes
implement it: `remote.RemoteShard` (a shard process, over gRPC) and `local.LocalShard` (a shard
service in this process, called directly: no protobuf on the search path, no loopback hop). The
fan-out (fanout.py) calls replicas only through an `Op`: the ShardApi method it runs, and how the
fan-out treats it (a write goes to every replica of a group, a read to one; which writes carry a
version or the placement epoch). So a call can be followed from a handler to the shard by a type
checker, and nothing is dispatched by a method name.

What travels with a call besides its request (deadline, write version, the training and placement
epochs the coordinator expects) is a `CallMeta`, passed explicitly: a remote shard gets it as gRPC
metadata, a local one as the same metadata on its handler's context.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.observability import REQUEST_ID, REQUEST_ID_HEADER, trace_headers
from vecshard_server.common.rpc import PLACEMENT_EPOCH_HEADER, TRAIN_EPOCH_HEADER, WRITE_TOKEN_HEADER
from vecshard_server.common.search_values import ShardHits, ShardQuery

M = TypeVar("M")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class Encoded(Generic[M]):
    """A request already serialized (on a worker thread, when it is big): a remote shard sends these
    bytes as they are, to every shard the request goes to; a local one uses the message."""

    message: M
    data: bytes

    @classmethod
    def of(cls, message: M) -> Encoded[M]:
        return cls(message, message.SerializeToString())  # type: ignore[attr-defined]


def message_of(request: M | Encoded[M]) -> M:
    return request.message if isinstance(request, Encoded) else request


@dataclass(frozen=True)
class CallMeta:
    """A shard call's deadline and the values the shard checks besides the request.

    version: the write's version (replicas keep the newest per id; a non-upsert Add's version is
        also its rollback token). train_epoch: the training a Search expects. placement_epoch: the
        newest placement the coordinator knows for a routed write (a shard fencing a reshard
        refuses writes from coordinators that do not know it).
    """

    timeout: float | None
    version: int = 0
    train_epoch: int | None = None
    placement_epoch: int | None = None

    def with_timeout(self, timeout: float | None) -> CallMeta:
        return replace(self, timeout=timeout)

    def headers(self, internal: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        """As gRPC metadata (with the request id and trace context of the calling request)."""
        md = [*trace_headers(), *internal]
        if REQUEST_ID.get():
            md.append((REQUEST_ID_HEADER, REQUEST_ID.get()))
        if self.version:
            md.append((WRITE_TOKEN_HEADER, str(self.version)))
        if self.train_epoch is not None:
            md.append((TRAIN_EPOCH_HEADER, str(self.train_epoch)))
        if self.placement_epoch is not None:
            md.append((PLACEMENT_EPOCH_HEADER, str(self.placement_epoch)))
        return md


class ShardApi(Protocol):
    """One replica of a shard group. Every method raises `grpc.aio.AioRpcError` for a refusal or a
    failure (the shard's status and message), whichever implementation answers."""

    address: str
    down_until: float  # monotonic time until which it counts as down (answered UNAVAILABLE)

    async def serving(self) -> bool: ...
    async def close(self) -> None: ...

    async def create_collection(
        self, request: types_pb2.CollectionConfig, meta: CallMeta
    ) -> spb.ShardCollectionState: ...
    async def drop_collection(self, request: pb.DropCollectionRequest, meta: CallMeta) -> pb.DropCollectionResponse: ...
    async def list_collections(self, request: pb.ListCollectionsRequest, meta: CallMeta) -> spb.ShardListResponse: ...
    async def describe_collection(
        self, request: pb.DescribeCollectionRequest, meta: CallMeta
    ) -> spb.ShardCollectionState: ...
    async def add(self, request: pb.AddRequest | Encoded[pb.AddRequest], meta: CallMeta) -> pb.AddResponse: ...
    async def remove(self, request: pb.RemoveRequest, meta: CallMeta) -> pb.RemoveResponse: ...
    async def rollback_add(self, request: spb.RollbackAddRequest, meta: CallMeta) -> pb.RemoveResponse: ...
    async def get(self, request: pb.GetRequest | Encoded[pb.GetRequest], meta: CallMeta) -> pb.GetResponse: ...
    async def search(self, query: ShardQuery, meta: CallMeta) -> ShardHits: ...
    async def sample(
        self, request: pb.SampleRequest | Encoded[pb.SampleRequest], meta: CallMeta
    ) -> spb.ExportResponse: ...
    async def export(
        self, request: spb.ExportRequest | Encoded[spb.ExportRequest], meta: CallMeta
    ) -> spb.ExportResponse: ...
    async def import_page(self, request: spb.ImportRequest, meta: CallMeta) -> spb.ShardCollectionState: ...
    async def install_quantizer(
        self, request: spb.InstallQuantizerRequest | Encoded[spb.InstallQuantizerRequest], meta: CallMeta
    ) -> spb.ShardCollectionState: ...
    async def resync(self, request: spb.ResyncRequest, meta: CallMeta) -> spb.ShardCollectionState: ...
    async def set_payload(self, request: pb.SetPayloadRequest, meta: CallMeta) -> pb.SetPayloadResponse: ...
    async def count(self, request: pb.CountRequest, meta: CallMeta) -> pb.CountResponse: ...
    async def scroll(self, request: pb.ScrollRequest, meta: CallMeta) -> pb.ScrollResponse: ...
    async def facet(self, request: pb.FacetRequest, meta: CallMeta) -> pb.FacetResponse: ...
    async def keyword_stats(self, request: spb.KeywordStatsRequest, meta: CallMeta) -> spb.KeywordStatsResponse: ...
    async def keyword_search(self, request: spb.KeywordSearchRequest, meta: CallMeta) -> pb.SearchResponse: ...
    async def update_vectors(
        self, request: pb.UpdateVectorsRequest | Encoded[pb.UpdateVectorsRequest], meta: CallMeta
    ) -> pb.UpdateVectorsResponse: ...
    async def create_payload_index(
        self, request: pb.CreatePayloadIndexRequest, meta: CallMeta
    ) -> spb.ShardCollectionState: ...
    async def drop_payload_index(
        self, request: pb.DropPayloadIndexRequest, meta: CallMeta
    ) -> spb.ShardCollectionState: ...
    async def backup_partition(
        self, request: spb.BackupPartitionRequest, meta: CallMeta
    ) -> spb.BackupPartitionResponse: ...


@dataclass(frozen=True)
class Op(Generic[Req, Resp]):
    """One shard operation as the fan-out runs it.

    write: sent to every replica of a group, acknowledged by a write quorum (else: one replica,
        hedged). versioned: carries the write's version. routed: carries the placement epoch (the
        writes a shard fences during a reshard). resync_when_cancelled: a write whose caller gave up
        with the replicas' outcomes unknown leaves them to be resynced (not a rollback, which is
        retried until it lands). name: for metrics, traces and logs.
    """

    name: str
    call: Callable[[ShardApi, Req, CallMeta], Awaitable[Resp]]
    write: bool = False
    versioned: bool = False
    routed: bool = False
    resync_when_cancelled: bool = True


CREATE_COLLECTION: Op[types_pb2.CollectionConfig, spb.ShardCollectionState] = Op(
    "CreateCollection", lambda s, r, m: s.create_collection(r, m), write=True, versioned=True
)
DROP_COLLECTION: Op[pb.DropCollectionRequest, pb.DropCollectionResponse] = Op(
    "DropCollection", lambda s, r, m: s.drop_collection(r, m), write=True, versioned=True
)
LIST_COLLECTIONS: Op[pb.ListCollectionsRequest, spb.ShardListResponse] = Op(
    "ListCollections", lambda s, r, m: s.list_collections(r, m)
)
DESCRIBE_COLLECTION: Op[pb.DescribeCollectionRequest, spb.ShardCollectionState] = Op(
    "DescribeCollection", lambda s, r, m: s.describe_collection(r, m)
)
ADD: Op[pb.AddRequest | Encoded[pb.AddRequest], pb.AddResponse] = Op(
    "Add", lambda s, r, m: s.add(r, m), write=True, versioned=True, routed=True
)
REMOVE: Op[pb.RemoveRequest, pb.RemoveResponse] = Op(
    "Remove", lambda s, r, m: s.remove(r, m), write=True, versioned=True, routed=True
)
ROLLBACK_ADD: Op[spb.RollbackAddRequest, pb.RemoveResponse] = Op(
    "RollbackAdd", lambda s, r, m: s.rollback_add(r, m), write=True, resync_when_cancelled=False
)
GET: Op[pb.GetRequest | Encoded[pb.GetRequest], pb.GetResponse] = Op("Get", lambda s, r, m: s.get(r, m))
SEARCH: Op[ShardQuery, ShardHits] = Op("Search", lambda s, r, m: s.search(r, m))
SAMPLE: Op[pb.SampleRequest | Encoded[pb.SampleRequest], spb.ExportResponse] = Op(
    "Sample", lambda s, r, m: s.sample(r, m)
)
EXPORT: Op[spb.ExportRequest | Encoded[spb.ExportRequest], spb.ExportResponse] = Op(
    "Export", lambda s, r, m: s.export(r, m)
)
IMPORT: Op[spb.ImportRequest, spb.ShardCollectionState] = Op("Import", lambda s, r, m: s.import_page(r, m), write=True)
INSTALL_QUANTIZER: Op[spb.InstallQuantizerRequest | Encoded[spb.InstallQuantizerRequest], spb.ShardCollectionState] = (
    Op("InstallQuantizer", lambda s, r, m: s.install_quantizer(r, m), write=True)
)
SET_PAYLOAD: Op[pb.SetPayloadRequest, pb.SetPayloadResponse] = Op(
    "SetPayload", lambda s, r, m: s.set_payload(r, m), write=True, versioned=True, routed=True
)
COUNT: Op[pb.CountRequest, pb.CountResponse] = Op("Count", lambda s, r, m: s.count(r, m))
SCROLL: Op[pb.ScrollRequest, pb.ScrollResponse] = Op("Scroll", lambda s, r, m: s.scroll(r, m))
FACET: Op[pb.FacetRequest, pb.FacetResponse] = Op("Facet", lambda s, r, m: s.facet(r, m))
KEYWORD_STATS: Op[spb.KeywordStatsRequest, spb.KeywordStatsResponse] = Op(
    "KeywordStats", lambda s, r, m: s.keyword_stats(r, m)
)
KEYWORD_SEARCH: Op[spb.KeywordSearchRequest, pb.SearchResponse] = Op(
    "KeywordSearch", lambda s, r, m: s.keyword_search(r, m)
)
UPDATE_VECTORS: Op[pb.UpdateVectorsRequest | Encoded[pb.UpdateVectorsRequest], pb.UpdateVectorsResponse] = Op(
    "UpdateVectors", lambda s, r, m: s.update_vectors(r, m), write=True, versioned=True, routed=True
)
CREATE_PAYLOAD_INDEX: Op[pb.CreatePayloadIndexRequest, spb.ShardCollectionState] = Op(
    "CreatePayloadIndex", lambda s, r, m: s.create_payload_index(r, m), write=True
)
DROP_PAYLOAD_INDEX: Op[pb.DropPayloadIndexRequest, spb.ShardCollectionState] = Op(
    "DropPayloadIndex", lambda s, r, m: s.drop_payload_index(r, m), write=True
)
BACKUP_PARTITION: Op[spb.BackupPartitionRequest, spb.BackupPartitionResponse] = Op(
    "BackupPartition", lambda s, r, m: s.backup_partition(r, m)
)
