"""CreateCollection, DropCollection, ListCollections, DescribeCollection and the payload
indexes: the catalog's side of the API."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math

import grpc

from vecshard.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.placement import physical_name
from vecshard_server.common.spec import CollectionSpec, check_collection_count
from vecshard_server.coordinator.api.base import Family
from vecshard_server.coordinator.payload_inputs import check_keys
from vecshard_server.coordinator.shard_api import (
    CREATE_COLLECTION,
    CREATE_PAYLOAD_INDEX,
    DROP_COLLECTION,
    DROP_PAYLOAD_INDEX,
)
from vecshard_server.embedding.service import (
    model_info,
)

log = logging.getLogger(__name__)

MAX_SCROLL = 10_000  # points per Scroll page
ROLLBACK_TIMEOUT_S = 5.0  # one RollbackAdd round
COALESCE_ROWS = 16  # searches of at most this many queries share fan-outs with concurrent ones
ROLLBACK_RETRY_S = 120.0  # unreachable groups are retried in the background this long


def check_index_type(request: pb.CreatePayloadIndexRequest) -> None:
    """A known index type; TextIndexParams only for TEXT, with k1 >= 0 and b in [0, 1] (the shards
    check the stemmer and stopword languages, all alike, so a bad one is refused by every group)."""
    if request.type not in (1, 2, 3, 4, 5, ppb.PAYLOAD_INDEX_TYPE_TEXT):
        raise InvalidArgument("type must be KEYWORD, INTEGER, FLOAT, BOOL, DATETIME or TEXT")
    if request.type != ppb.PAYLOAD_INDEX_TYPE_TEXT:
        if request.HasField("text"):
            raise InvalidArgument("text (the analyzer and BM25 parameters) applies to TEXT indexes: leave it unset")
        return
    params = request.text
    if params.HasField("k1") and not (math.isfinite(params.k1) and params.k1 >= 0):
        raise InvalidArgument(
            f"text.k1 must be a finite number >= 0 (BM25 term saturation; 1.2 by default), got {params.k1}"
        )
    if params.HasField("b") and not 0 <= params.b <= 1:
        raise InvalidArgument(
            f"text.b must be between 0 and 1 (BM25 length normalisation; 0.75 by default), got {params.b}"
        )


class Collections(Family):
    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        timeout = self._timeout(context)
        spec = CollectionSpec.validate(await self._bind_model(request.config, timeout), self.settings)
        placement = self.catalog.creation_placement()
        spec = dataclasses.replace(
            spec, placement_function=placement.function, placement_shards=placement.shards, placement_epoch=0
        )
        async with self.catalog.lock:  # no refresh can interleave and drop what this creates
            await self.catalog.refresh_locked(timeout)
            if spec.name in self.catalog.collections:
                raise AlreadyExists(f"collection {spec.name!r} already exists: drop it first or choose another name")
            check_collection_count(len(self.catalog.collections), self.settings)
            # The create's version names this incarnation of the collection on the shards: replicas
            # that disagree (one missed a drop and the create after it) keep the newer one.
            out = await self.shards.call(CREATE_COLLECTION, self.shards.all(spec.to_proto()), timeout, fail_fast=False)
            if out.failures:
                if out.results:  # undo, so a retry starts clean
                    await self.shards.call(
                        DROP_COLLECTION,
                        {i: pb.DropCollectionRequest(name=spec.name) for i in out.results},
                        timeout,
                        fail_fast=False,
                    )
                raise self.shards.first_error(out.failures)
            coll = self.catalog.new(spec)
            self.catalog.collections[spec.name] = coll
        log.info("created collection %s: %s", spec.name, spec)
        return self.catalog.info(coll, out.results)

    async def _bind_model(self, config: types_pb2.CollectionConfig, timeout: float) -> types_pb2.CollectionConfig:
        """Fill in dim, metric and fingerprint from the collection's embedding model, if any."""
        cfg = types_pb2.CollectionConfig()
        cfg.CopyFrom(config)
        cfg.model_fingerprint = ""
        if not cfg.embedding_model:
            return cfg
        info = await model_info(self.embeddings, cfg.embedding_model, timeout)
        if cfg.dim == 0:
            cfg.dim = info.dim
        elif cfg.dim != info.dim:
            raise InvalidArgument(
                f"dim {cfg.dim} differs from the dimension of model {info.name!r} ({info.dim}): "
                f"leave dim 0 or set {info.dim}"
            )
        if cfg.metric == types_pb2.METRIC_UNSPECIFIED:
            cfg.metric = types_pb2.METRIC_COSINE
        cfg.model_fingerprint = info.fingerprint
        return cfg

    async def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropCollectionResponse:
        coll = await self.catalog.get(
            request.name, lambda: self._timeout(context), if_missing="nothing to drop", conflict_ok=True
        )
        async with self.catalog.lock:
            # Every placement's partition (a reshard in progress has two), on every group.
            newest = physical_name(coll.name, coll.view.known_epoch)  # (a reshard's, even one being aborted)
            for name in sorted({coll.spec.name, newest}):
                out = await self.shards.call(
                    DROP_COLLECTION,
                    self.shards.all(pb.DropCollectionRequest(name=name)),
                    self._timeout(context),
                    fail_fast=False,
                )
                if out.failures:
                    raise self.shards.first_error(out.failures)
            if coll.auto_train is not None:
                coll.auto_train.cancel()
            self.catalog.collections.pop(request.name, None)
        log.info("dropped collection %s", request.name)
        return pb.DropCollectionResponse()

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        lists = await self.catalog.refresh(self._timeout(context))
        del lists  # refresh already copied counts and training flags into the catalog
        return pb.ListCollectionsResponse(
            collections=[self.catalog.info(self.catalog.collections[n], {}) for n in sorted(self.catalog.collections)]
        )

    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        coll = await self.catalog.get(request.name, lambda: self._timeout(context))
        return await self.catalog.describe(coll, self._timeout(context), request.include_centroids)

    async def CreatePayloadIndex(
        self, request: pb.CreatePayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        check_keys([request.field], "field")
        check_index_type(request)
        outs = await asyncio.gather(
            *(
                view.call(CREATE_PAYLOAD_INDEX, view.all(request), self._timeout(context), fail_fast=False)
                for view, _, _ in coll.writers
            )
        )
        for out in outs:
            if out.failures:
                raise self.shards.first_error(out.failures)
        return self.catalog.info(coll, outs[0].results)

    async def DropPayloadIndex(
        self, request: pb.DropPayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if not any(f == request.field for indexes in coll.shard_indexes.values() for f, _ in indexes):
            await self.catalog.describe(coll, self._timeout(context))
        if not any(f == request.field for indexes in coll.shard_indexes.values() for f, _ in indexes):
            raise NotFound(f"collection {coll.spec.name!r} has no payload index on {request.field!r}")
        outs = await asyncio.gather(
            *(
                view.call(DROP_PAYLOAD_INDEX, view.all(request), self._timeout(context), fail_fast=False)
                for view, _, _ in coll.writers
            )
        )
        for out in outs:
            failures = {s: e for s, e in out.failures.items() if e.code() != grpc.StatusCode.NOT_FOUND}
            if failures:
                raise self.shards.first_error(failures)
        return await self.catalog.describe(coll, self._timeout(context))
