"""The shard worker: serves `vecshard.v1.Shard` over one faiss partition of every collection."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import AlreadyExists, NotFound
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc, types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.config import Settings
from vecshard_server.engine import ShardIndex
from vecshard_server.rpc import Server, guard
from vecshard_server.spec import CollectionSpec, check_name

log = logging.getLogger(__name__)

SERVICE_NAME = spb.DESCRIPTOR.services_by_name["Shard"].full_name


class ShardService(shard_pb2_grpc.ShardServicer):
    """Holds this shard's partitions; faiss work runs in worker threads (faiss releases the GIL)."""

    def __init__(self, settings: Settings, data_dir: Path | None) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.collections: dict[str, ShardIndex] = {}
        self._catalog_lock = asyncio.Lock()

    # -- persistence ----------------------------------------------------------------------------

    def _collection_dir(self, name: str) -> Path | None:
        return self.data_dir / "collections" / name if self.data_dir else None

    def load(self) -> None:
        """Load every partition snapshot under the data dir."""
        if not self.data_dir:
            return
        root = self.data_dir / "collections"
        for d in sorted(root.glob("*")) if root.exists() else []:
            if d.is_dir() and (d / "meta.json").exists() and not d.name.endswith((".tmp", ".old")):
                part = ShardIndex.load(d, self.settings.max_vectors_per_shard)
                self.collections[part.spec.name] = part
                log.info("loaded collection %s: %d vectors, trained=%s", part.spec.name, part.count, part.trained)

    def save(self) -> None:
        """Snapshot every partition (on graceful shutdown)."""
        for name, part in self.collections.items():
            path = self._collection_dir(name)
            if path is not None:
                part.save(path)
                log.info("saved collection %s (%d vectors) to %s", name, part.count, path)

    # -- helpers --------------------------------------------------------------------------------

    def _get(self, name: str) -> ShardIndex:
        part = self.collections.get(name)
        if part is None:
            raise NotFound(f"collection {name!r} does not exist on this shard")
        return part

    @staticmethod
    def _state(part: ShardIndex, include_centroids: bool = False) -> spb.ShardCollectionState:
        state = spb.ShardCollectionState(config=part.spec.to_proto(), count=part.count, trained=part.trained)
        centroids = part.centroids
        if include_centroids and centroids is not None:
            state.centroids.CopyFrom(wire.pack_matrix(centroids))
        return state

    # -- RPCs -----------------------------------------------------------------------------------

    async def CreateCollection(
        self, request: types_pb2.CollectionConfig, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        spec = CollectionSpec.from_proto(request)
        check_name(spec.name)
        async with self._catalog_lock:
            existing = self.collections.get(spec.name)
            if existing is not None:
                if existing.spec != spec:
                    raise AlreadyExists(f"collection {spec.name!r} exists on this shard with another config")
                return self._state(existing)
            part = ShardIndex(spec, self.settings.max_vectors_per_shard)
            self.collections[spec.name] = part
            path = self._collection_dir(spec.name)
            if path is not None:
                await asyncio.to_thread(part.save, path)
            return self._state(part)

    async def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropCollectionResponse:
        async with self._catalog_lock:
            self.collections.pop(request.name, None)
            path = self._collection_dir(request.name)
            if path is not None:
                await asyncio.to_thread(shutil.rmtree, path, True)
        return pb.DropCollectionResponse()

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardListResponse:
        return spb.ShardListResponse(collections=[self._state(p) for p in list(self.collections.values())])

    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        return self._state(self._get(request.name), request.include_centroids)

    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        part = self._get(request.collection)
        ids = wire.unpack_ids(request.ids)
        vectors = wire.unpack_matrix(request.vectors)
        added, replaced = await asyncio.to_thread(part.add, ids, vectors, request.upsert)
        return pb.AddResponse(added=added, replaced=replaced, count=part.count)

    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        part = self._get(request.collection)
        removed = await asyncio.to_thread(part.remove, wire.unpack_ids(request.ids))
        return pb.RemoveResponse(removed=removed)

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        part = self._get(request.collection)
        vectors, found = await asyncio.to_thread(part.get, wire.unpack_ids(request.ids))
        return pb.GetResponse(vectors=wire.pack_matrix(vectors), found=found.astype(np.uint8).tobytes())

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        part = self._get(request.collection)
        queries = wire.unpack_matrix(request.queries, "queries")
        D, I = await asyncio.to_thread(part.search, queries, request.k, request.nprobe)
        return pb.SearchResponse(
            nq=queries.shape[0],
            k=request.k,
            distances=D.astype(wire.F32, copy=False).tobytes(),
            ids=I.astype(wire.I64, copy=False).tobytes(),
        )

    async def Sample(self, request: spb.SampleRequest, context: grpc.aio.ServicerContext) -> types_pb2.FloatMatrix:
        part = self._get(request.collection)
        x = await asyncio.to_thread(part.sample, request.max_points, request.seed)
        return wire.pack_matrix(x)

    async def InstallQuantizer(
        self, request: spb.InstallQuantizerRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        centroids = wire.unpack_matrix(request.centroids, "centroids")
        await asyncio.to_thread(part.install_quantizer, centroids)
        log.info(
            "collection %s: installed %d centroids, %d vectors re-indexed", part.spec.name, part.spec.nlist, part.count
        )
        return self._state(part)


async def serve_shard(
    settings: Settings,
    host: str,
    port: int,
    data_dir: Path | None,
    name: str = "shard",
    port_file: Path | None = None,
    exit_with_parent: bool = False,
) -> None:
    service = ShardService(settings, data_dir)
    server = Server(settings, [SERVICE_NAME])
    shard_pb2_grpc.add_ShardServicer_to_server(guard(service, SERVICE_NAME), server.server)
    bound = server.bind(host, port)

    async def ready() -> None:
        await asyncio.to_thread(service.load)
        log.info("%s listening on %s:%d (data dir %s)", name, host, bound, data_dir or "none: in memory")

    async def on_stop() -> None:
        await asyncio.to_thread(service.save)

    await server.run(ready=ready, on_stop=on_stop, port_file=port_file, exit_with_parent=exit_with_parent)
