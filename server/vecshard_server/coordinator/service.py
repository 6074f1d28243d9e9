"""The coordinator: serves the public `vecshard.v1.VectorSearch` API over a set of shards.

It validates every request completely before any shard is written, places ids on shards
(placement.py), fans calls out with the caller's remaining deadline (fanout.py), merges top-k
(merge.py), and trains the one coarse quantizer that all shards of an IVF collection share.
Its catalog is rebuilt from the shards at start and on a miss, so it keeps no state of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2, vector_search_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.rpc import Server, guard
from vecshard_server.common.security import ApiKeys
from vecshard_server.common.spec import CollectionSpec, check_collection_count, check_name
from vecshard_server.coordinator.fanout import TOLERABLE, ShardSet
from vecshard_server.coordinator.merge import merge_topk
from vecshard_server.coordinator.placement import split_by_shard
from vecshard_server.embedding.registry import RegistryError
from vecshard_server.embedding.service import Embeddings, LocalEmbeddings, RemoteEmbeddings, model_info
from vecshard_server.shard.engine import assign_lists, train_centroids

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VectorSearch"].full_name
DEFAULT_SEED = 1234
_REFRESH_MIN_INTERVAL_S = 0.5


@dataclass
class Collection:
    """What the coordinator remembers of a collection (all of it recoverable from the shards)."""

    spec: CollectionSpec
    shard_counts: list[int]
    shard_trained: list[bool]
    training: bool = False
    train_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    auto_train: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return sum(self.shard_counts)

    @property
    def trained(self) -> bool:
        return all(self.shard_trained)


def normalize_rows(x: wire.FloatArray, field: str) -> wire.FloatArray:
    """Unit-normalise rows for COSINE; a zero row has no direction and is refused."""
    norms = np.linalg.norm(x, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise InvalidArgument(f"{field} rows {zero[:5].tolist()} are zero vectors: COSINE needs a non-zero vector")
    return np.ascontiguousarray(x / norms[:, None], dtype=np.float32)


class CoordinatorService(vector_search_pb2_grpc.VectorSearchServicer):
    def __init__(self, settings: Settings, shard_addresses: list[str], embeddings: Embeddings) -> None:
        self.settings = settings
        self.embeddings = embeddings
        self.shards = ShardSet(shard_addresses, settings)
        self.collections: dict[str, Collection] = {}
        self._catalog_lock = asyncio.Lock()
        self._last_refresh = 0.0
        self.ready = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, wait_s: float = 60.0) -> None:
        """Wait (bounded) for the shards to report SERVING, then load the catalog from them."""
        missing = await self.shards.wait_serving(wait_s)
        self.ready = True
        if missing:
            log.warning("shards not serving yet: %s; the catalog loads when they are", ", ".join(missing))
            return
        try:
            await self._refresh(self.settings.shard_timeout_s)
        except Unavailable as err:
            log.warning("catalog not loaded yet: %s", err.details)
        log.info("catalog: %d collections from %d shards", len(self.collections), len(self.shards))

    async def close(self) -> None:
        for coll in self.collections.values():
            if coll.auto_train is not None:
                coll.auto_train.cancel()
        await self.shards.close()
        await self.embeddings.close()

    # -- helpers --------------------------------------------------------------------------------

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        """The shards' deadline: the caller's remaining time less a small reserve, so a late shard
        times out while the coordinator can still answer (with partial results, or naming it)."""
        remaining = context.time_remaining()
        if remaining is None:
            return self.settings.shard_timeout_s
        if remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed before the shards were asked")
        return float(remaining) - min(0.05, 0.1 * float(remaining))

    async def _refresh(self, timeout: float) -> list[spb.ShardListResponse]:
        """Rebuild the catalog from every shard's list (a collection exists if any shard has it)."""
        out = await self.shards.call("ListCollections", self.shards.all(pb.ListCollectionsRequest()), timeout)
        lists = [out.results[i] for i in range(len(self.shards))]
        seen: dict[str, Collection] = {}
        for i, resp in enumerate(lists):
            for state in resp.collections:
                name = state.config.name
                coll = seen.get(name)
                if coll is None:
                    existing = self.collections.get(name)
                    coll = Collection(
                        spec=CollectionSpec.from_proto(state.config),
                        shard_counts=[0] * len(self.shards),
                        shard_trained=[False] * len(self.shards),
                    )
                    if existing is not None and existing.spec == coll.spec:
                        existing.shard_counts = coll.shard_counts
                        existing.shard_trained = coll.shard_trained
                        coll = existing
                    seen[name] = coll
                coll.shard_counts[i] = state.count
                coll.shard_trained[i] = state.trained
        self.collections = seen
        self._last_refresh = time.monotonic()
        return lists

    async def _collection(self, name: str, context: grpc.aio.ServicerContext) -> Collection:
        check_name(name)
        coll = self.collections.get(name)
        if coll is None and time.monotonic() - self._last_refresh > _REFRESH_MIN_INTERVAL_S:
            await self._refresh(self._timeout(context))  # created by another coordinator?
            coll = self.collections.get(name)
        if coll is None:
            raise NotFound(f"collection {name!r} does not exist: create it first (ListCollections shows what exists)")
        return coll

    def _info(self, coll: Collection, states: dict[int, spb.ShardCollectionState]) -> pb.CollectionInfo:
        for i, st in states.items():
            coll.shard_counts[i] = st.count
            coll.shard_trained[i] = st.trained
        if not coll.spec.is_ivf:
            state = pb.TRAINING_STATE_NOT_APPLICABLE
        elif coll.training:
            state = pb.TRAINING_STATE_TRAINING
        elif coll.trained:
            state = pb.TRAINING_STATE_TRAINED
        else:
            state = pb.TRAINING_STATE_UNTRAINED
        info = pb.CollectionInfo(config=coll.spec.to_proto(), count=coll.count, training_state=state)
        for s in self.shards.shards:
            info.shards.add(name=s.name, count=coll.shard_counts[s.index], trained=coll.shard_trained[s.index])
        return info

    async def _describe(self, coll: Collection, timeout: float, include_centroids: bool = False) -> pb.CollectionInfo:
        requests = {
            s.index: pb.DescribeCollectionRequest(
                name=coll.spec.name, include_centroids=include_centroids and s.index == 0
            )
            for s in self.shards.shards
        }
        out = await self.shards.call("DescribeCollection", requests, timeout)
        info = self._info(coll, out.results)
        if include_centroids and out.results[0].HasField("centroids"):
            info.centroids.CopyFrom(out.results[0].centroids)
        return info

    def _rows_per_message(self, dim: int) -> int:
        return max(1, (self.settings.max_message_bytes - 64 * 1024) // (4 * dim + 1))

    def _ids(self, data: bytes, *, unique: bool) -> np.ndarray:
        ids = wire.unpack_ids(data)
        if ids.size > self.settings.max_batch:
            raise ResourceExhausted(
                f"{ids.size} ids in one request, over max_batch={self.settings.max_batch}: split it"
            )
        if unique:
            wire.check_ids(ids)
        elif ids.size == 0:
            raise InvalidArgument("ids is empty: send at least one id")
        elif (ids < 0).any():
            raise InvalidArgument(f"ids must be >= 0; got {ids[ids < 0][:5].tolist()}")
        return ids

    # -- collections ----------------------------------------------------------------------------

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        timeout = self._timeout(context)
        spec = CollectionSpec.validate(await self._bind_model(request.config, timeout), self.settings)
        async with self._catalog_lock:
            await self._refresh(timeout)
            if spec.name in self.collections:
                raise AlreadyExists(f"collection {spec.name!r} already exists: drop it first or choose another name")
            check_collection_count(len(self.collections), self.settings)
            out = await self.shards.call("CreateCollection", self.shards.all(spec.to_proto()), timeout, fail_fast=False)
            if out.failures:
                if out.results:  # undo, so a retry starts clean
                    await self.shards.call(
                        "DropCollection",
                        {i: pb.DropCollectionRequest(name=spec.name) for i in out.results},
                        timeout,
                        fail_fast=False,
                    )
                raise self.shards.first_error(out.failures)
            coll = Collection(spec, [0] * len(self.shards), [False] * len(self.shards))
            self.collections[spec.name] = coll
        log.info("created collection %s: %s", spec.name, spec)
        return self._info(coll, out.results)

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
        coll = await self._collection(request.name, context)
        async with self._catalog_lock:
            out = await self.shards.call(
                "DropCollection", self.shards.all(request), self._timeout(context), fail_fast=False
            )
            if out.failures:
                raise self.shards.first_error(out.failures)
            if coll.auto_train is not None:
                coll.auto_train.cancel()
            self.collections.pop(request.name, None)
        log.info("dropped collection %s", request.name)
        return pb.DropCollectionResponse()

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        lists = await self._refresh(self._timeout(context))
        del lists  # _refresh already copied counts and training flags into the catalog
        return pb.ListCollectionsResponse(
            collections=[self._info(self.collections[n], {}) for n in sorted(self.collections)]
        )

    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        coll = await self._collection(request.name, context)
        return await self._describe(coll, self._timeout(context), request.include_centroids)

    # -- data -----------------------------------------------------------------------------------

    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        coll = await self._collection(request.collection, context)
        spec = coll.spec
        ids = self._ids(request.ids, unique=True)
        timeout = self._timeout(context)
        vectors, given = await self._vectors(
            coll, request.vectors, request.texts, request.images, request.model_fingerprint,
            types_pb2.INPUT_ROLE_PASSAGE, "vectors", timeout,
        )  # fmt: skip
        if vectors.shape[0] != ids.size:
            raise InvalidArgument(f"got {ids.size} ids for {vectors.shape[0]} vectors: send one id per vector")
        wire.check_vectors(vectors, spec.dim)
        if spec.metric.value == "cosine":
            vectors = normalize_rows(vectors, "vectors")
        parts = split_by_shard(ids, len(self.shards))
        requests: dict[int, pb.AddRequest] = {}
        for s, pos in enumerate(parts):
            if pos.size == ids.size and given and spec.metric.value != "cosine":
                requests = {s: request}  # everything on one shard: forward the bytes as they came
                break
            if pos.size:
                requests[s] = pb.AddRequest(
                    collection=spec.name,
                    ids=wire.pack_ids(ids[pos]),
                    vectors=wire.pack_matrix(vectors[pos]),
                    upsert=request.upsert,
                )
        out = await self.shards.call("Add", requests, timeout, fail_fast=False)
        for s, resp in out.results.items():
            coll.shard_counts[s] = resp.count
        if out.failures:
            if not request.upsert and out.results:
                await self._rollback_add(coll, {s: requests[s].ids for s in out.results}, timeout)
            raise self.shards.first_error(out.failures)
        self._maybe_auto_train(coll)
        return pb.AddResponse(
            added=sum(r.added for r in out.results.values()),
            replaced=sum(r.replaced for r in out.results.values()),
            count=coll.count,
        )

    async def _rollback_add(self, coll: Collection, ids_by_shard: dict[int, bytes], timeout: float) -> None:
        """Remove what a failed non-upsert Add wrote: those ids were new on their shards."""
        requests = {s: pb.RemoveRequest(collection=coll.spec.name, ids=b) for s, b in ids_by_shard.items()}
        out = await self.shards.call("Remove", requests, max(timeout, 5.0), fail_fast=False)
        for s, resp in out.results.items():
            coll.shard_counts[s] -= resp.removed
        for s, err in out.failures.items():
            log.error("rollback of a failed Add on %s failed: %s", self.shards.shards[s].name, err.details())

    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        coll = await self._collection(request.collection, context)
        ids = np.unique(self._ids(request.ids, unique=False))
        parts = split_by_shard(ids, len(self.shards))
        requests = {
            s: pb.RemoveRequest(collection=coll.spec.name, ids=wire.pack_ids(ids[pos]))
            for s, pos in enumerate(parts)
            if pos.size
        }
        out = await self.shards.call("Remove", requests, self._timeout(context), fail_fast=False)
        removed = 0
        for s, resp in out.results.items():
            coll.shard_counts[s] = max(0, coll.shard_counts[s] - resp.removed)
            removed += resp.removed
        if out.failures:
            raise self.shards.first_error(out.failures)
        return pb.RemoveResponse(removed=removed)

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        coll = await self._collection(request.collection, context)
        ids = self._ids(request.ids, unique=False)
        if ids.size > self._rows_per_message(coll.spec.dim):
            raise ResourceExhausted(
                f"{ids.size} vectors of dim {coll.spec.dim} would exceed the message limit: get at most "
                f"{self._rows_per_message(coll.spec.dim)} ids per call"
            )
        parts = split_by_shard(ids, len(self.shards))
        requests = {
            s: pb.GetRequest(collection=coll.spec.name, ids=wire.pack_ids(ids[pos]))
            for s, pos in enumerate(parts)
            if pos.size
        }
        out = await self.shards.call("Get", requests, self._timeout(context))
        vectors = np.zeros((ids.size, coll.spec.dim), dtype=np.float32)
        found = np.zeros(ids.size, dtype=np.uint8)
        for s, resp in out.results.items():
            pos = parts[s]
            vectors[pos] = wire.unpack_matrix(resp.vectors)
            found[pos] = np.frombuffer(resp.found, dtype=np.uint8)
        if not request.allow_missing and not found.all():
            missing = ids[found == 0]
            raise NotFound(
                f"{missing.size} ids are not stored in {coll.spec.name!r}: {missing[:5].tolist()}"
                f"{' ...' if missing.size > 5 else ''}; set allow_missing to get a found mask instead"
            )
        return pb.GetResponse(vectors=wire.pack_matrix(vectors), found=found.tobytes())

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        coll = await self._collection(request.collection, context)
        spec = coll.spec
        k = request.k
        if not 1 <= k <= self.settings.max_k:
            raise InvalidArgument(f"k must be between 1 and max_k={self.settings.max_k}, got {k}")
        if request.nprobe and not spec.is_ivf:
            raise InvalidArgument(f"nprobe applies to IVF_FLAT collections; {spec.name!r} is FLAT: leave nprobe 0")
        if request.nprobe > spec.nlist:
            raise InvalidArgument(f"nprobe ({request.nprobe}) cannot exceed the collection's nlist ({spec.nlist})")
        queries, given = await self._vectors(
            coll, request.queries, request.texts, request.images, request.model_fingerprint,
            types_pb2.INPUT_ROLE_QUERY, "queries", self._timeout(context),
        )  # fmt: skip
        nq = queries.shape[0]
        if nq > self.settings.max_batch:
            raise ResourceExhausted(f"{nq} queries in one request, over max_batch={self.settings.max_batch}: split it")
        wire.check_vectors(queries, spec.dim, "queries")
        if nq * k > self.settings.max_results:
            raise ResourceExhausted(
                f"nq * k = {nq * k} results would exceed the message limit ({self.settings.max_results} results): "
                "send fewer queries per call or a smaller k"
            )
        allow_partial = request.allow_partial
        shard_req = request  # forwarded as received unless the queries must change
        if spec.metric.value == "cosine":
            queries = normalize_rows(queries, "queries")
        if spec.metric.value == "cosine" or not given:
            shard_req = pb.SearchRequest(collection=spec.name, queries=wire.pack_matrix(queries), k=k)
        shard_req.nprobe = request.nprobe or spec.nprobe
        shard_req.allow_partial = False
        out = await self.shards.call(
            "Search", self.shards.all(shard_req), self._timeout(context), fail_fast=not allow_partial
        )
        if out.failures:
            for s, err in out.failures.items():
                if err.code() not in TOLERABLE:
                    raise self.shards.error(s, err)
            if not out.results:
                raise Unavailable(
                    "no shard answered: " + "; ".join(self.shards.error(s, e).details for s, e in out.failures.items())
                )
        order = sorted(out.results)
        D, I = merge_topk(
            [np.frombuffer(out.results[s].distances, dtype=wire.F32).reshape(nq, k) for s in order],
            [np.frombuffer(out.results[s].ids, dtype=wire.I64).reshape(nq, k) for s in order],
            k,
            spec.larger_is_better,
        )
        return pb.SearchResponse(
            nq=nq,
            k=k,
            distances=D.tobytes(),
            ids=I.tobytes(),
            shards_total=len(self.shards),
            shards_ok=len(out.results),
            failed_shards=[self.shards.shards[s].name for s in sorted(out.failures)],
        )

    async def _vectors(
        self,
        coll: Collection,
        matrix: types_pb2.FloatMatrix,
        texts: Sequence[str],
        images: Sequence[bytes],
        fingerprint: str,
        role: types_pb2.InputRole,
        field: str,
        timeout: float,
    ) -> tuple[wire.FloatArray, bool]:
        """The request's vectors, and whether they were given as such (else embedded by the model)."""
        spec = coll.spec
        given = bool(matrix.rows or matrix.data)
        sources = [n for n, present in ((field, given), ("texts", bool(texts)), ("images", bool(images))) if present]
        if len(sources) > 1:
            raise InvalidArgument(f"send one of {field}, texts or images, not {' and '.join(sources)}")
        if texts or images:
            if not spec.embedding_model:
                raise FailedPrecondition(
                    f"collection {spec.name!r} has no embedding model: send {field}, or create the collection "
                    "with embedding_model to send texts or images"
                )
            embed = types_pb2.EmbedRequest(model=spec.embedding_model, texts=texts, images=images, role=role)
            resp = await self.embeddings.embed(embed, timeout)
            if resp.model.fingerprint != spec.model_fingerprint:
                raise FailedPrecondition(
                    f"model {spec.embedding_model!r} now has fingerprint {resp.model.fingerprint!r} but collection "
                    f"{spec.name!r} was built with {spec.model_fingerprint!r}: its vectors would not be comparable; "
                    "restore that model or re-create the collection"
                )
            return wire.unpack_matrix(resp.vectors, field), False
        if fingerprint and fingerprint != spec.model_fingerprint:
            bound = f"is bound to {spec.model_fingerprint!r}" if spec.model_fingerprint else "has no embedding model"
            raise FailedPrecondition(
                f"{field} come from model {fingerprint!r} but collection {spec.name!r} {bound}: embed them with "
                "the collection's model (or send texts/images and let the server embed them)"
            )
        return wire.unpack_matrix(matrix, field), given

    async def Sample(self, request: pb.SampleRequest, context: grpc.aio.ServicerContext) -> pb.SampleResponse:
        coll = await self._collection(request.collection, context)
        spec = coll.spec
        if request.max_points == 0:
            raise InvalidArgument("max_points must be at least 1")
        if request.max_points > self._rows_per_message(spec.dim):
            raise ResourceExhausted(
                f"{request.max_points} vectors of dim {spec.dim} would exceed the message limit: ask for at most "
                f"{self._rows_per_message(spec.dim)}"
            )
        timeout = self._timeout(context)
        info = await self._describe(coll, timeout, include_centroids=True)
        counts = [s.count for s in info.shards]
        quotas = _quotas(counts, min(sum(counts), request.max_points)) if sum(counts) else [0] * len(counts)
        seed = request.seed or DEFAULT_SEED
        out = await self.shards.call(
            "Sample",
            {s: pb.SampleRequest(collection=spec.name, max_points=q, seed=seed + s) for s, q in enumerate(quotas) if q},
            timeout,
        )
        order = sorted(out.results)
        ids = np.concatenate([wire.unpack_ids(out.results[s].ids) for s in order] or [np.empty(0, np.int64)])
        vectors: wire.FloatArray = np.vstack(
            [wire.unpack_matrix(out.results[s].vectors) for s in order] or [np.empty((0, spec.dim), np.float32)]
        )
        shards = np.concatenate([np.full(wire.unpack_ids(out.results[s].ids).size, s, np.int32) for s in order]
                                or [np.empty(0, np.int32)])  # fmt: skip
        lists = np.full(ids.size, -1, dtype=np.int32)
        if info.HasField("centroids") and info.centroids.rows and ids.size:
            lists = assign_lists(spec, wire.unpack_matrix(info.centroids, "centroids"), vectors)
        return pb.SampleResponse(
            ids=wire.pack_ids(ids),
            vectors=wire.pack_matrix(vectors),
            shards=shards.astype("<i4").tobytes(),
            lists=lists.astype("<i4").tobytes(),
        )

    # -- embedding ------------------------------------------------------------------------------

    async def Embed(
        self, request: types_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.EmbedResponse:
        return await self.embeddings.embed(request, self._timeout(context))

    async def ListModels(
        self, request: types_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.ListModelsResponse:
        return await self.embeddings.list_models(request, self._timeout(context))

    # -- training -------------------------------------------------------------------------------

    async def Train(self, request: pb.TrainRequest, context: grpc.aio.ServicerContext) -> pb.CollectionInfo:
        coll = await self._collection(request.collection, context)
        if not coll.spec.is_ivf:
            raise FailedPrecondition(f"collection {coll.spec.name!r} is FLAT: only IVF_FLAT collections are trained")
        # Shielded: a caller that gives up must not leave the shards half switched.
        training = asyncio.ensure_future(self._train(coll, request.max_training_points, request.seed))
        await asyncio.shield(training)
        return await self._describe(coll, self._timeout(context))

    def _maybe_auto_train(self, coll: Collection) -> None:
        spec = coll.spec
        if (
            spec.is_ivf
            and not coll.trained
            and not coll.training
            and coll.count >= spec.train_threshold
            and (coll.auto_train is None or coll.auto_train.done())
        ):
            coll.auto_train = asyncio.create_task(self._auto_train(coll))

    async def _auto_train(self, coll: Collection) -> None:
        try:
            if not coll.trained:
                await self._train(coll, 0, 0)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # retried at the next Add; the collection keeps answering exactly
            log.warning("automatic training of %s failed: %s", coll.spec.name, err)

    async def _train(self, coll: Collection, max_points: int, seed: int) -> None:
        spec = coll.spec
        seed = seed or DEFAULT_SEED
        timeout = self.settings.train_timeout_s
        async with coll.train_lock:
            coll.training = True
            started = time.perf_counter()
            try:
                info = await self._describe(coll, timeout)
                counts = [s.count for s in info.shards]
                total = sum(counts)
                if total < spec.nlist:
                    raise FailedPrecondition(
                        f"collection {spec.name!r} holds {total} vectors but nlist={spec.nlist} needs at least "
                        f"{spec.nlist} to train ({39 * spec.nlist} recommended): add more vectors first"
                    )
                n = min(total, max_points or 256 * spec.nlist)
                quotas = [min(q, self._rows_per_message(spec.dim)) for q in _quotas(counts, n)]
                out = await self.shards.call(
                    "Sample",
                    {
                        s: pb.SampleRequest(collection=spec.name, max_points=q, seed=seed + s)
                        for s, q in enumerate(quotas)
                        if q
                    },
                    timeout,
                )
                sample = np.vstack([wire.unpack_matrix(out.results[s].vectors, "sample") for s in sorted(out.results)])
                centroids = await asyncio.to_thread(train_centroids, sample, spec, seed)
                install = spb.InstallQuantizerRequest(collection=spec.name, centroids=wire.pack_matrix(centroids))
                done = await self.shards.call("InstallQuantizer", self.shards.all(install), timeout)
                self._info(coll, done.results)
                log.info(
                    "trained %s: %d centroids from %d of %d vectors in %.2fs",
                    spec.name,
                    spec.nlist,
                    sample.shape[0],
                    total,
                    time.perf_counter() - started,
                )
            finally:
                coll.training = False


def _quotas(counts: list[int], n: int) -> list[int]:
    """Split a sample of n points over shards in proportion to their counts (largest remainder)."""
    total = sum(counts)
    exact = [c * n / total for c in counts]
    quotas = [int(e) for e in exact]
    for i in sorted(range(len(counts)), key=lambda i: exact[i] - quotas[i], reverse=True)[: n - sum(quotas)]:
        quotas[i] += 1
    return [min(q, c) for q, c in zip(quotas, counts, strict=True)]


async def serve_coordinator(
    settings: Settings,
    host: str,
    port: int,
    shard_addresses: list[str],
    port_file: Path | None = None,
    exit_with_parent: bool = False,
) -> None:
    embeddings: Embeddings
    if settings.embedder:
        embeddings = RemoteEmbeddings(settings.embedder, settings)
    else:
        try:
            embeddings = LocalEmbeddings.from_file(settings.models_file, settings)
        except RegistryError as err:
            raise SystemExit(f"vecshard coordinator: {err}") from None
    service = CoordinatorService(settings, shard_addresses, embeddings)
    api_keys = ApiKeys.load(settings.api_keys_file) if settings.api_keys_file else None
    server = Server(settings, [SERVICE_NAME])
    vector_search_pb2_grpc.add_VectorSearchServicer_to_server(
        guard(service, SERVICE_NAME, lambda: service.ready, api_keys.check if api_keys else None), server.server
    )
    bound = server.bind(host, port)

    async def ready() -> None:
        await service.start()
        log.info(
            "coordinator listening on %s:%d over %d shards: %s",
            host,
            bound,
            len(shard_addresses),
            ", ".join(shard_addresses),
        )

    await server.run(ready=ready, on_stop=service.close, port_file=port_file, exit_with_parent=exit_with_parent)
