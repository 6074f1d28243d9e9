"""The coordinator's RPC handlers: the public `vecshard.v1.VectorSearch` API over a set of shards.

Each handler checks its request completely before any shard is written (inputs.py), places ids on
shards (placement.py), fans calls out with the caller's remaining deadline (fanout.py) and merges
top-k (merge.py). Collections come from the catalog (catalog.py), rebuilt from the shards at start
and on a miss, so the coordinator keeps no state of its own; training.py trains the one coarse
quantizer that all shards of an IVF collection share.

The event loop also answers health checks, so each handler's heavy part (checking, packing and
unpacking big matrices, merging, assigning lists) is a plain method run through offload.py: on a
worker thread once the request passes a small size, inline below it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any

import grpc

from vecshard.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from vecshard.v1 import types_pb2, vector_search_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.rpc import Server
from vecshard_server.common.security import ApiKeys
from vecshard_server.coordinator.admission import (
    COPIES,
    coordinator_admission,
    embed_cost,
)
from vecshard_server.coordinator.api.base import Core, shard_timeout
from vecshard_server.coordinator.api.cluster import Cluster
from vecshard_server.coordinator.api.collections import Collections
from vecshard_server.coordinator.api.facets import Facets
from vecshard_server.coordinator.api.reads import Reads
from vecshard_server.coordinator.api.search import Searches
from vecshard_server.coordinator.api.vector_updates import VectorUpdates
from vecshard_server.coordinator.api.writes import Writes
from vecshard_server.coordinator.backup.service import Backups
from vecshard_server.coordinator.catalog import Catalog
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.jobs import Jobs
from vecshard_server.coordinator.local import LocalShards
from vecshard_server.coordinator.reshard import LatencyAverage, Resharder
from vecshard_server.coordinator.training import Trainer
from vecshard_server.embedding.registry import RegistryError
from vecshard_server.embedding.service import (
    Embeddings,
    LocalEmbeddings,
    RemoteEmbeddings,
    check_embed_request,
)

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VectorSearch"].full_name

MAX_SCROLL = 10_000  # points per Scroll page
ROLLBACK_TIMEOUT_S = 5.0  # one RollbackAdd round
COALESCE_ROWS = 16  # searches of at most this many queries share fan-outs with concurrent ones
ROLLBACK_RETRY_S = 120.0  # unreachable groups are retried in the background this long


REROUTES = 3  # a request racing a reshard's steps is re-routed (catalog refreshed) and retried this often


def rerouted(handler: Any) -> Any:
    """Retry a collection's request on the collection's new route when a reshard moved it meanwhile:
    a shard fenced the write (ABORTED) or no longer holds the partition (NOT_FOUND), and the refreshed
    catalog routes the collection differently. Never answered from a mix of two placements: each
    try reads one placement whole."""

    @functools.wraps(handler)
    async def call(self: CoordinatorService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        for attempt in range(REROUTES + 1):
            name = getattr(request, "collection", "") or getattr(request, "name", "")
            before = self.catalog.collections.get(name)
            route = before and (before.spec.name, before.next, before.view.known_epoch)
            try:
                return await handler(self, request, context)
            except (Aborted, NotFound) as err:
                if attempt == REROUTES or before is None:
                    raise
                if (
                    isinstance(err, NotFound)
                    and "does not exist on this shard" not in err.details
                    and ("was dropped" not in err.details)
                ):
                    raise
                await self.catalog.refresh(self._timeout(context))
                after = self.catalog.collections.get(name)
                if after is None or (after.spec.name, after.next, after.view.known_epoch) == route:
                    raise
                log.info("%s of %s re-routed: the collection's placement changed meanwhile", handler.__name__, name)
        raise AssertionError("unreachable")

    return call


def fenced(handler: Any) -> Any:
    """Run a write inside its collection's backup write fence (backup/fence.py): it waits while a
    backup's cut holds the collection, and a cut waits for it."""

    @functools.wraps(handler)
    async def call(self: CoordinatorService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self.backups.fence.writing(request.collection):
            return await handler(self, request, context)

    return call


class CoordinatorService(vector_search_pb2_grpc.VectorSearchServicer):
    def __init__(
        self, settings: Settings, shard_addresses: list[str], embeddings: Embeddings, local: LocalShards | None = None
    ) -> None:
        self.settings = settings
        self.embeddings = embeddings
        self.local = local
        self.shards = ShardSet(shard_addresses, settings, local.replicas if local is not None else ())
        self.catalog = Catalog(self.shards)
        self.trainer = Trainer(self.catalog, settings)
        self.admission = coordinator_admission(settings)  # the bound on work in flight (docs/limits.md)
        self._background: set[asyncio.Future[None]] = set()
        self.ready = False
        self.search_latency = LatencyAverage()  # a reshard's throttle
        self.resharder = Resharder(settings, self.catalog, self.shards, local, self.search_latency)
        core = Core(settings, self.shards, self.catalog, self.trainer, self.admission, embeddings, self._background)
        self.collections = Collections(core)
        self.writes = Writes(core, self.resharder)
        self.reads = Reads(core)
        self.vector_updates = VectorUpdates(core)
        self.searches = Searches(core, self.search_latency)
        self.facets = Facets(core)
        self.jobs = Jobs()
        self.cluster = Cluster(core, self.resharder, self.jobs, local)
        self.backups = Backups(settings, self.catalog, self.shards, self.jobs, local)

    async def start(self, wait_s: float = 60.0) -> None:
        """Start the local shards (if any: recovering their data) and wait (bounded) for the remote
        ones to report SERVING, then load the catalog from them."""
        if self.local is not None:
            await self.local.start()
        for task in (
            self.shards.replication.repair(),
            self.shards.replication.anti_entropy(self.settings.anti_entropy_s),
        ):
            self._background.add(asyncio.ensure_future(task))
        missing = await self.shards.wait_serving(wait_s)
        self.ready = True
        if missing:
            log.warning("shards not serving yet: %s; the catalog loads when they are", ", ".join(missing))
            return
        try:
            await self.catalog.refresh(self.settings.shard_timeout_s)
        except Unavailable as err:
            log.warning("catalog not loaded yet: %s", err.details)
        log.info("catalog: %d collections from %d shards", len(self.catalog.collections), len(self.shards))

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for coll in self.catalog.collections.values():
            if coll.auto_train is not None:
                coll.auto_train.cancel()
        await self.shards.close()
        if self.local is not None:
            await self.local.close()  # (snapshots every local shard)
        await self.embeddings.close()

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return shard_timeout(self.settings, context)

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        return await self.collections.CreateCollection(request, context)

    async def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropCollectionResponse:
        return await self.collections.DropCollection(request, context)

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        return await self.collections.ListCollections(request, context)

    @rerouted
    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        return await self.collections.DescribeCollection(request, context)

    def precheck(self, size: int) -> None:
        """Refuse a large request (its bytes not parsed yet) that cannot be admitted now: when the
        process is busy, refusing costs no parse of tens of megabytes (see rpc.LAZY_PARSE_BYTES)."""
        self.admission.check(COPIES * size, f"a request of {size:,} bytes")

    @fenced
    @rerouted
    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        return await self.writes.Add(request, context)

    @fenced
    @rerouted
    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        return await self.writes.Remove(request, context)

    @fenced
    @rerouted
    async def UpdateVectors(
        self, request: pb.UpdateVectorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateVectorsResponse:
        return await self.vector_updates.UpdateVectors(request, context)

    @rerouted
    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        return await self.reads.Get(request, context)

    @rerouted
    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        return await self.searches.Search(request, context)

    @rerouted
    async def Sample(self, request: pb.SampleRequest, context: grpc.aio.ServicerContext) -> pb.SampleResponse:
        return await self.reads.Sample(request, context)

    @rerouted
    async def Count(self, request: pb.CountRequest, context: grpc.aio.ServicerContext) -> pb.CountResponse:
        return await self.reads.Count(request, context)

    @rerouted
    async def Scroll(self, request: pb.ScrollRequest, context: grpc.aio.ServicerContext) -> pb.ScrollResponse:
        return await self.reads.Scroll(request, context)

    @rerouted
    async def Facet(self, request: pb.FacetRequest, context: grpc.aio.ServicerContext) -> pb.FacetResponse:
        return await self.facets.Facet(request, context)

    @fenced
    @rerouted
    async def SetPayload(
        self, request: pb.SetPayloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPayloadResponse:
        return await self.writes.SetPayload(request, context)

    @fenced
    @rerouted
    async def CreatePayloadIndex(
        self, request: pb.CreatePayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        return await self.collections.CreatePayloadIndex(request, context)

    @fenced
    @rerouted
    async def DropPayloadIndex(
        self, request: pb.DropPayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        return await self.collections.DropPayloadIndex(request, context)

    async def Embed(
        self, request: types_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.EmbedResponse:
        check_embed_request(request, self.settings)  # per-request limits (the embedding side checks again)
        n = len(request.texts) + len(request.images)
        with self.admission.admit(embed_cost(request), f"an Embed of {n} inputs"):
            return await self.embeddings.embed(request, self._timeout(context))

    async def ListModels(
        self, request: types_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.ListModelsResponse:
        return await self.embeddings.list_models(request, self._timeout(context))

    async def DescribeCluster(
        self, request: pb.DescribeClusterRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClusterInfo:
        return await self.cluster.describe(self._timeout(context))

    async def Reshard(self, request: pb.ReshardRequest, context: grpc.aio.ServicerContext) -> pb.ReshardResponse:
        return await self.resharder.handle(request)

    async def CreateBackup(
        self, request: pb.CreateBackupRequest, context: grpc.aio.ServicerContext
    ) -> pb.BackupProgress:
        return await self.backups.create(request)

    async def RestoreBackup(
        self, request: pb.RestoreBackupRequest, context: grpc.aio.ServicerContext
    ) -> pb.BackupProgress:
        return await self.backups.restore(request)

    async def BackupStatus(
        self, request: pb.BackupStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.BackupProgress:
        return await self.backups.status(request)

    async def ListBackups(
        self, request: pb.ListBackupsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBackupsResponse:
        return await self.backups.list(request)

    async def DescribeBackup(
        self, request: pb.DescribeBackupRequest, context: grpc.aio.ServicerContext
    ) -> pb.BackupInfo:
        return await self.backups.describe(request)

    async def VerifyBackup(
        self, request: pb.VerifyBackupRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyBackupResponse:
        return await self.backups.verify(request)

    async def DeleteBackup(
        self, request: pb.DeleteBackupRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteBackupResponse:
        return await self.backups.delete(request)

    async def Train(self, request: pb.TrainRequest, context: grpc.aio.ServicerContext) -> pb.CollectionInfo:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if not coll.spec.is_ivf:
            raise FailedPrecondition(f"collection {coll.spec.name!r} is FLAT: only IVF_FLAT collections are trained")
        if coll.reshard_phase:
            raise FailedPrecondition(
                f"collection {coll.name!r} is being resharded: train it when the reshard is done (or aborted)"
            )
        if 0 < request.max_training_points < coll.spec.nlist:
            raise InvalidArgument(
                f"max_training_points ({request.max_training_points}) is below nlist ({coll.spec.nlist}): k-means "
                f"needs a point per centroid; send at least {coll.spec.nlist} ({39 * coll.spec.nlist} recommended), "
                "or 0 for the default"
            )
        # Shielded: a caller that gives up must not leave the shards half switched.
        training = asyncio.ensure_future(self.trainer.train(coll, request.max_training_points, request.seed))
        await asyncio.shield(training)
        return await self.catalog.describe(coll, self._timeout(context))


async def serve_coordinator(
    settings: Settings,
    host: str,
    port: int,
    shard_addresses: list[str],
    port_file: Path | None = None,
    exit_with_parent: bool = False,
    local_shards: int = 0,
    data_dir: Path | None = None,
) -> None:
    """Serve the public API over remote shards (their addresses) and/or `local_shards` shard
    services in this process (data in data_dir/shard-i)."""
    embeddings: Embeddings
    if settings.embedder:
        embeddings = RemoteEmbeddings(settings.embedder, settings)
    else:
        try:
            embeddings = LocalEmbeddings.from_file(settings.models_file, settings)
        except RegistryError as err:
            raise SystemExit(f"vecshard coordinator: {err}") from None
    local = LocalShards(local_shards, settings, data_dir) if local_shards else None
    service = CoordinatorService(settings, shard_addresses, embeddings, local)
    api_keys = ApiKeys.load(settings.api_keys_file) if settings.api_keys_file else None
    server = Server(settings, [SERVICE_NAME])
    server.add_service(
        service, SERVICE_NAME, lambda: service.ready, api_keys.check if api_keys else None, service.precheck
    )
    bound = server.bind(host, port)

    async def ready() -> None:
        await service.start()
        local_note = [f"{local_shards} in this process (data in {data_dir or 'memory'})"] if local_shards else []
        names = [*shard_addresses, *local_note]
        log.info(
            "coordinator listening on %s:%d over %d shards: %s", host, bound, len(service.shards), ", ".join(names)
        )

    await server.run(ready=ready, on_stop=service.close, port_file=port_file, exit_with_parent=exit_with_parent)
