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
import dataclasses
import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2, vector_search_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.placement import Placement, physical_name
from vecshard_server.common.results import scroll_next
from vecshard_server.common.rpc import Server
from vecshard_server.common.search_values import ShardHits, ShardQuery
from vecshard_server.common.security import ApiKeys
from vecshard_server.common.spec import CollectionSpec, check_collection_count
from vecshard_server.coordinator import offload
from vecshard_server.coordinator.admission import (
    COPIES,
    add_cost,
    coordinator_admission,
    embed_cost,
    ids_cost,
    input_rows,
    search_cost,
)
from vecshard_server.coordinator.catalog import Catalog, Collection
from vecshard_server.coordinator.coalesce import Coalescer, Identity
from vecshard_server.coordinator.fanout import TOLERABLE, Fanout, ShardSet, ShardView, Unacknowledged
from vecshard_server.coordinator.groups import ShardGroup
from vecshard_server.coordinator.inputs import (
    check_search_cost,
    get_row_bytes,
    normalize_rows,
    refine_of,
    request_ids,
    request_vectors,
    rows_per_message,
    sample_row_bytes,
    search_chunk_rows,
    vectors_visited,
)
from vecshard_server.coordinator.local import LocalShards
from vecshard_server.coordinator.merge import merge_hits
from vecshard_server.coordinator.payload_inputs import check_filter, check_payloads
from vecshard_server.coordinator.reshard import LatencyAverage, Resharder
from vecshard_server.coordinator.shard_api import (
    ADD,
    COUNT,
    CREATE_COLLECTION,
    CREATE_PAYLOAD_INDEX,
    DROP_COLLECTION,
    DROP_PAYLOAD_INDEX,
    GET,
    REMOVE,
    ROLLBACK_ADD,
    SAMPLE,
    SCROLL,
    SEARCH,
    SET_PAYLOAD,
    CallMeta,
    Encoded,
    ShardApi,
    message_of,
)
from vecshard_server.coordinator.training import DEFAULT_SEED, Trainer, sample_quotas, shard_seed
from vecshard_server.embedding.registry import RegistryError
from vecshard_server.embedding.service import (
    Embeddings,
    LocalEmbeddings,
    RemoteEmbeddings,
    check_embed_inputs,
    check_embed_request,
    model_info,
)
from vecshard_server.shard.engine import assign_lists

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
        self.coalescer = Coalescer(self._coalesced_round)
        self._background: set[asyncio.Future[None]] = set()
        self.ready = False
        self.search_latency = LatencyAverage()  # a reshard's throttle
        self.resharder = Resharder(settings, self.catalog, self.shards, local, self.search_latency)

    # -- lifecycle ------------------------------------------------------------------------------

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

    # -- collections ----------------------------------------------------------------------------

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

    @rerouted
    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        coll = await self.catalog.get(request.name, lambda: self._timeout(context))
        return await self.catalog.describe(coll, self._timeout(context), request.include_centroids)

    def precheck(self, size: int) -> None:
        """Refuse a large request (its bytes not parsed yet) that cannot be admitted now: when the
        process is busy, refusing costs no parse of tens of megabytes (see rpc.LAZY_PARSE_BYTES)."""
        self.admission.check(COPIES * size, f"a request of {size:,} bytes")

    # -- data -----------------------------------------------------------------------------------

    @rerouted
    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if request.texts or request.images:  # per-request limits before anything is embedded or written
            check_embed_inputs(request.texts, request.images, self.settings)
        n = input_rows(request.vectors, len(request.texts), len(request.images), coll.spec.dim)
        check_payloads(request.payloads, len(request.ids) // 8, self.settings)
        with self.admission.admit(add_cost(request, coll.spec.dim), f"an Add of {n} vectors"):
            return await self._add(coll, request, context)

    async def _add(self, coll: Collection, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        id_bytes = request.ids
        heavy = len(id_bytes) + 4 * request.vectors.rows * request.vectors.cols > offload.INLINE_BYTES
        ids = await offload.run(heavy, request_ids, self.settings, id_bytes, unique=True)
        vectors, given = await request_vectors(
            self.embeddings,
            coll.spec,
            request.vectors,
            request.texts,
            request.images,
            request.model_fingerprint,
            types_pb2.INPUT_ROLE_PASSAGE,
            "vectors",
            self._timeout(context),
        )
        heavy = heavy or vectors.nbytes > offload.INLINE_BYTES
        routed = []  # (the placement a reshard fills takes the Add as an upsert: see below)
        for n, (view, place, spec) in enumerate(coll.writers):
            upsert = request.upsert or n > 0
            routed.append(
                (
                    view,
                    await offload.run(
                        heavy,
                        self._add_requests,
                        request,
                        spec,
                        place,
                        ids,
                        vectors,
                        given,
                        heavy and self.shards.remote,
                        upsert,
                    ),
                )
            )
        timeout = self._timeout(context)  # after embedding, which may have taken most of it
        # Every write carries a version (replicas keep the newest per id). A non-upsert Add is all or
        # nothing: shards commit only before their deadline, and a failure anywhere takes back, on
        # every group, exactly what this request wrote (its version). During a reshard the current
        # placement decides (ALREADY_EXISTS there refuses the Add); the new one then takes it as an
        # upsert of the same version.
        version = self.shards.clock.next()
        token = 0 if request.upsert else version

        async def commit() -> tuple[ShardView, Fanout[pb.AddResponse]]:
            done: list[tuple[ShardView, dict[int, Any]]] = []
            for n, (view, requests) in enumerate(routed):
                undo = _undo_add(token) if token and n == 0 else None  # (a group short of its quorum)
                out = await view.call(ADD, requests, timeout, fail_fast=False, version=version, unacknowledged=undo)
                done.append((view, requests))
                if n == 0:
                    # Concurrent Adds' replies arrive in any order: a group's count only grows by an Add
                    # (an older reply's smaller count once made a parallel upload report 4,644 of 5,000).
                    for s, resp in out.results.items():
                        coll.shard_counts[s] = max(coll.shard_counts[s], resp.count)
                    first = out
                if out.failures:
                    if token:
                        for v, reqs in done:
                            await self._rollback_add(coll, v, reqs, token, counted=v is coll.view)
                    return view, out
            return coll.view, first

        # Shielded: a caller that gives up (its deadline may pass before the shards' reserve-shortened
        # one) must not leave the fan-out or its rollback half done.
        view, out = await asyncio.shield(asyncio.ensure_future(commit()))
        if out.failures:
            raise view.first_error(out.failures)
        self.trainer.maybe_auto_train(coll)
        return pb.AddResponse(
            added=sum(r.added for r in out.results.values()),
            replaced=sum(r.replaced for r in out.results.values()),
            count=coll.count,
        )

    def _add_requests(
        self,
        request: pb.AddRequest,
        spec: CollectionSpec,
        placement: Placement,
        ids: wire.IdArray,
        vectors: wire.FloatArray,
        given: bool,
        encode: bool,
        upsert: bool,
    ) -> dict[int, pb.AddRequest | Encoded[pb.AddRequest]]:
        """Check the vectors and split the Add by shard (each part encoded here, when big)."""
        if vectors.shape[0] != ids.size:
            raise InvalidArgument(f"got {ids.size} ids for {vectors.shape[0]} vectors: send one id per vector")
        wire.check_vectors(vectors, spec.dim)
        if spec.metric.value == "cosine":
            vectors = normalize_rows(vectors, "vectors")
        parts = placement.split(ids)
        payloads: Any = request.payloads
        if spec.store_text and request.texts:
            payloads = [with_text(payloads[i] if payloads else None, t) for i, t in enumerate(request.texts)]
        requests: dict[int, pb.AddRequest] = {}
        for s, pos in enumerate(parts):
            same = spec.name == request.collection and upsert == request.upsert
            if pos.size == ids.size and given and spec.metric.value != "cosine" and same:
                requests = {s: request}  # everything on one shard: forward the bytes as they came
                break
            if pos.size:
                requests[s] = pb.AddRequest(
                    collection=spec.name,
                    ids=wire.pack_ids(ids[pos]),
                    vectors=wire.pack_matrix(vectors[pos]),
                    upsert=upsert,
                    payloads=[payloads[j] for j in pos.tolist()] if payloads else None,
                )
        return {s: Encoded.of(r) if encode else r for s, r in requests.items()}

    async def _rollback_add(
        self, coll: Collection, view: ShardView, requests: dict[int, Any], token: int, counted: bool = True
    ) -> None:
        """Take a failed non-upsert Add back out of every group it was sent to: only the ids whose last
        write is still this Add (a concurrent acknowledged upsert of the same id stays). A shard also
        remembers the token as rolled back, so the Add arriving there later is refused: the order of
        the two does not matter. Groups that cannot be reached now are retried in the background."""
        pending = {
            s: spb.RollbackAddRequest(collection=message_of(req).collection, write_token=token, ids=message_of(req).ids)
            for s, req in requests.items()
        }
        counts = coll.shard_counts if counted else [0] * len(view)
        if await self._rollback_round(view, counts, pending):
            retry = asyncio.ensure_future(self._rollback_retries(view, counts, pending))
            self._background.add(retry)
            retry.add_done_callback(self._background.discard)

    async def _rollback_round(
        self, view: ShardView, counts: list[int], pending: dict[int, spb.RollbackAddRequest]
    ) -> bool:
        """One RollbackAdd to each pending group; drops the groups that answered. True if any remain."""
        out = await view.call(ROLLBACK_ADD, pending, ROLLBACK_TIMEOUT_S, fail_fast=False)
        for s, resp in out.results.items():
            counts[s] = max(0, counts[s] - resp.removed)
            del pending[s]
        return bool(pending)

    async def _rollback_retries(
        self, view: ShardView, counts: list[int], pending: dict[int, spb.RollbackAddRequest]
    ) -> None:
        deadline = time.monotonic() + ROLLBACK_RETRY_S
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            if not await self._rollback_round(view, counts, pending):
                return
        names = ", ".join(self.shards.shards[s].name for s in pending)
        log.error(
            "rollback of a failed Add could not reach %s for %.0fs: ids of that Add may remain there; remove "
            "them or retry the Add with upsert",
            names,
            ROLLBACK_RETRY_S,
        )

    @rerouted
    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if request.HasField("filter"):
            if request.ids:
                raise InvalidArgument("send ids or a filter, not both")
            check_filter(request.filter, self.settings, write="Remove")
            if coll.next is not None:  # a reshard copies: remove the matching ids from both placements
                ids = await self._matching_ids(coll, request.filter, self._timeout(context))
                return await self._remove_ids_everywhere(coll, ids, context)
            requests = coll.view.all(pb.RemoveRequest(collection=coll.spec.name, filter=request.filter))
            return self._removed(
                coll, [await coll.view.call(REMOVE, requests, self._timeout(context), fail_fast=False)]
            )
        if not request.ids:
            raise InvalidArgument("ids is empty: send the ids to remove, or a filter")
        with self.admission.admit(ids_cost(len(request.ids)), f"a Remove of {len(request.ids) // 8} ids"):
            return await self._remove(coll, request, context)

    async def _remove(
        self, coll: Collection, request: pb.RemoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        id_bytes = request.ids
        ids = await offload.run(len(id_bytes) > offload.INLINE_BYTES // 8, self._remove_ids, id_bytes)
        return await self._remove_ids_everywhere(coll, ids, context)

    async def _remove_ids_everywhere(
        self, coll: Collection, ids: wire.IdArray, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        """Remove `ids` from every placement the collection is written to (a removal of an id a reshard
        has not copied yet leaves a tombstone, which the copy cannot overtake)."""
        version = self.shards.clock.next()  # (one version for both placements of a reshard)
        outs = await asyncio.gather(
            *(
                view.call(
                    REMOVE,
                    self._remove_requests(spec, place, ids),
                    self._timeout(context),
                    fail_fast=False,
                    version=version,
                )
                for view, place, spec in coll.writers
            )
        )
        return self._removed(coll, outs)

    def _removed(self, coll: Collection, outs: Sequence[Fanout[pb.RemoveResponse]]) -> pb.RemoveResponse:
        """The current placement's answer (during a reshard, the new one's must have succeeded too)."""
        removed = 0
        for s, resp in outs[0].results.items():
            coll.shard_counts[s] = max(0, coll.shard_counts[s] - resp.removed)
            removed += resp.removed
        for out in outs:
            if out.failures:
                raise self.shards.first_error(out.failures)
        return pb.RemoveResponse(removed=removed)

    def _remove_ids(self, id_bytes: bytes) -> wire.IdArray:
        return np.unique(request_ids(self.settings, id_bytes, unique=False))

    @staticmethod
    def _remove_requests(spec: CollectionSpec, placement: Placement, ids: wire.IdArray) -> dict[int, pb.RemoveRequest]:
        return {
            s: pb.RemoveRequest(collection=spec.name, ids=wire.pack_ids(ids[pos]))
            for s, pos in enumerate(placement.split(ids))
            if pos.size
        }

    @rerouted
    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        id_bytes = request.ids
        row_bytes = get_row_bytes(coll.spec.dim)
        with self.admission.admit(ids_cost(len(id_bytes), row_bytes), f"a Get of {len(id_bytes) // 8} ids"):
            heavy = len(id_bytes) // 8 * row_bytes > offload.INLINE_BYTES
            ids, parts, requests = await offload.run(heavy, self._get_requests, coll, id_bytes, request.with_payload)
            out = await coll.view.call(GET, requests, self._timeout(context))
            resp = await offload.run(heavy, self._get_response, coll, request.allow_missing, ids, parts, out.results)
            if request.with_payload.enable:
                self._check_reply(resp, "get fewer ids per call, or fewer payload fields")
            return resp

    def _get_requests(
        self, coll: Collection, id_bytes: bytes, with_payload: ppb.PayloadSelector
    ) -> tuple[wire.IdArray, list[npt.NDArray[np.intp]], dict[int, Encoded[pb.GetRequest]]]:
        ids = request_ids(self.settings, id_bytes, unique=False)
        limit = rows_per_message(self.settings, get_row_bytes(coll.spec.dim))
        if ids.size > limit:
            raise ResourceExhausted(
                f"{ids.size} vectors of dim {coll.spec.dim} would exceed the message limit: get at most "
                f"{limit} ids per call"
            )
        parts = coll.placement.split(ids)
        requests = {
            s: Encoded.of(
                pb.GetRequest(collection=coll.spec.name, ids=wire.pack_ids(ids[pos]), with_payload=with_payload)
            )
            for s, pos in enumerate(parts)
            if pos.size
        }
        return ids, parts, requests

    @staticmethod
    def _get_response(
        coll: Collection,
        allow_missing: bool,
        ids: wire.IdArray,
        parts: list[npt.NDArray[np.intp]],
        replies: dict[int, pb.GetResponse],
    ) -> pb.GetResponse:
        vectors = np.zeros((ids.size, coll.spec.dim), dtype=np.float32)
        found = np.zeros(ids.size, dtype=np.uint8)
        payloads: list[ppb.Payload] = []
        for s, resp in replies.items():
            pos = parts[s]
            rows = wire.unpack_matrix(resp.vectors)
            if rows.shape != (pos.size, coll.spec.dim) or len(resp.found) != pos.size:
                # Only a shard holding the collection with another config answers so (was INTERNAL).
                raise FailedPrecondition(
                    f"shard group {s} answered {rows.shape[0]} x {rows.shape[1]} vectors for {pos.size} ids of "
                    f"{coll.spec.name!r} (dim {coll.spec.dim}): it holds the collection with another config; "
                    "drop it (DropCollection reaches every shard) and create it again"
                )
            vectors[pos] = rows
            found[pos] = np.frombuffer(resp.found, dtype=np.uint8)
            if resp.payloads:
                payloads = payloads or [ppb.Payload() for _ in range(ids.size)]
                for j, p in zip(pos.tolist(), resp.payloads, strict=True):
                    payloads[j] = p
        if not allow_missing and not found.all():
            missing = ids[found == 0]
            raise NotFound(
                f"{missing.size} of the {ids.size} requested ids {'is' if missing.size == 1 else 'are'} not in "
                f"{coll.spec.name!r}: {missing[:5].tolist()}{' ...' if missing.size > 5 else ''}; "
                "set allow_missing to get a found mask instead"
            )
        return pb.GetResponse(vectors=wire.pack_matrix(vectors), found=found.tobytes(), payloads=payloads)

    @rerouted
    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        started = time.perf_counter()
        try:
            return await self._search(request, context)
        finally:
            self.search_latency.observe(time.perf_counter() - started)

    async def _search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        spec = coll.spec
        k = request.k
        if not 1 <= k <= self.settings.max_k:
            raise InvalidArgument(f"k must be between 1 and max_k={self.settings.max_k}, got {k}")
        if request.nprobe and not spec.is_ivf:
            raise InvalidArgument(f"nprobe applies to IVF collections; {spec.name!r} is FLAT: leave nprobe 0")
        refine = refine_of(request, spec, self.settings)
        if request.nprobe > spec.nlist:
            raise InvalidArgument(f"nprobe ({request.nprobe}) cannot exceed the collection's nlist ({spec.nlist})")
        if request.HasField("filter"):
            check_filter(request.filter, self.settings)
        with_payload = request.with_payload.enable
        # Cost limits and admission first, from the request's sizes: a refusal costs microseconds.
        if request.texts or request.images:
            check_embed_inputs(request.texts, request.images, self.settings)
        nq_sent = input_rows(request.queries, len(request.texts), len(request.images), spec.dim)
        per_query = vectors_visited(spec, coll.count, coll.trained, request.nprobe or spec.nprobe)
        check_search_cost(self.settings, spec, nq_sent, k * refine, per_query)
        with self.admission.admit(search_cost(request, spec.dim, nq_sent), f"a Search of {nq_sent} queries, k={k}"):
            queries, given = await request_vectors(
                self.embeddings,
                coll.spec,
                request.queries,
                request.texts,
                request.images,
                request.model_fingerprint,
                types_pb2.INPUT_ROLE_QUERY,
                "queries",
                self._timeout(context),
            )
            nq = queries.shape[0]
            if nq > self.settings.max_batch:
                raise ResourceExhausted(
                    f"{nq} queries in one request, over max_batch={self.settings.max_batch}: split it"
                )
            check_search_cost(self.settings, spec, nq, k * refine, per_query)
            heavy = queries.nbytes > offload.INLINE_BYTES
            rows = search_chunk_rows(self.settings, spec.dim, k * refine, per_query)
            if (
                self.settings.search_coalescing
                and nq <= COALESCE_ROWS
                and not with_payload
                and not request.HasField("filter")
            ):
                return await self._coalesced(coll, request, queries, refine, context)
            if nq <= rows:
                query = await offload.run(heavy, self._shard_query, request, spec, queries, refine)
                out = await self._search_shards(coll, query, request.allow_partial, context)
                heavy = nq * k * refine * len(out.results) > offload.INLINE_RESULTS
                merged = await offload.run(heavy, self._merge, out.results, k, spec.larger_is_better, with_payload)
                resp = await offload.run(heavy, self._reply, merged, len(coll.view), out)
                if with_payload:
                    self._check_reply(resp, "send fewer queries per call, a smaller k or fewer payload fields")
                return resp
            return await self._chunked_search(coll, request, queries, rows, context, refine)

    async def _coalesced(
        self,
        coll: Collection,
        request: pb.SearchRequest,
        queries: wire.FloatArray,
        refine: int,
        context: grpc.aio.ServicerContext,
    ) -> pb.SearchResponse:
        """A small plain search, sent to the shards with the concurrent ones of the same shape."""
        spec, k = coll.spec, request.k
        queries = self._checked_queries(request, spec, queries)  # (its own errors: before it joins a round)
        key = (Identity(coll), k, request.nprobe or spec.nprobe, refine, request.allow_partial)
        D, I, extra = await self.coalescer.search(key, queries, context)
        resp = pb.SearchResponse(
            nq=queries.shape[0],
            k=k,
            distances=D.tobytes(),
            ids=I.tobytes(),
            shards_total=extra["shards_total"],
            shards_ok=extra["shards_ok"],
        )
        resp.failed_shards.extend(extra["failed_shards"])
        return resp

    async def _coalesced_round(
        self,
        key: tuple[Identity, int, int, int, bool],
        queries: wire.FloatArray,
        contexts: list[grpc.aio.ServicerContext],
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], dict[str, Any]]:
        """One fan-out for a round of coalesced searches (the caller with the most time left sets
        the shards' deadline: a caller whose own deadline passes gets DEADLINE_EXCEEDED from gRPC)."""
        same, k, nprobe, refine, allow_partial = key
        coll: Collection = same.obj
        nq = queries.shape[0]
        context = max(contexts, key=lambda c: c.time_remaining() or float("inf"))
        out = await self._search_shards(
            coll, ShardQuery(coll.spec.name, queries, k, nprobe, refine), allow_partial, context
        )
        heavy = nq * k * refine * len(out.results) > offload.INLINE_RESULTS
        merged = await offload.run(heavy, self._merge, out.results, k, coll.spec.larger_is_better, False)
        failed = [self.shards.shards[s].name for s in sorted(out.failures)]
        extra = {"shards_total": len(coll.view), "shards_ok": len(out.results), "failed_shards": failed}
        return merged.distances, merged.ids, extra

    async def _search_shards(
        self, coll: Collection, query: ShardQuery, allow_partial: bool, context: grpc.aio.ServicerContext
    ) -> Fanout[ShardHits]:
        """One search fan-out (waiting out a training switch), its failures checked: only tolerable
        ones remain, and only with allow_partial."""
        spec = coll.spec
        for _ in range(3):  # a training switching between the shards' answers: settle, then again
            if spec.is_ivf and coll.epoch is None:
                await self.trainer.settle(coll, self._timeout(context))
            try:
                out = await coll.view.call(
                    SEARCH,
                    coll.view.all(query),
                    self._timeout(context),
                    fail_fast=not allow_partial,
                    train_epoch=coll.epoch if spec.is_ivf else None,
                )
            except Aborted:
                out = None
            if out is not None and not any(e.code() == grpc.StatusCode.ABORTED for e in out.failures.values()):
                break
            coll.epochs_stale = True  # settle asks the shards again
        else:
            raise Unavailable(f"the shards of {spec.name!r} are switching to a new training: retry shortly")
        if out.failures:
            for s, err in out.failures.items():
                if err.code() not in TOLERABLE:
                    raise self.shards.error(s, err)
            if not out.results:
                raise Unavailable(
                    "no shard answered: " + "; ".join(self.shards.error(s, e).details for s, e in out.failures.items())
                )
        return out

    async def _chunked_search(
        self,
        coll: Collection,
        request: pb.SearchRequest,
        queries: wire.FloatArray,
        rows: int,
        context: grpc.aio.ServicerContext,
        refine: int = 1,
    ) -> pb.SearchResponse:
        """A big Search as chunks of `rows` queries, search_chunk_parallel at a time: each chunk is a
        short faiss call on the shards, so other searches get in between (fair scheduling), and only
        a few chunks' replies are held at once. Same results as one call: queries are independent."""
        spec, k, nq = coll.spec, request.k, queries.shape[0]
        D = np.empty((nq, k), dtype=np.float32)
        I = np.empty((nq, k), dtype=np.int64)
        failed: set[int] = set()
        starts = iter(range(0, nq, rows))
        with_payload = request.with_payload.enable
        payloads: list[ppb.Payload] = [ppb.Payload() for _ in range(nq * k)] if with_payload else []
        plans: list[ppb.FilterPlan] = []

        # Checked (and normalised) as a whole, so errors name rows of the request, not of a chunk.
        whole = await offload.run(True, self._shard_query, request, spec, queries, refine)

        async def worker() -> None:
            for a in starts:
                b = min(nq, a + rows)
                query = dataclasses.replace(whole, queries=whole.queries[a:b])
                out = await self._search_shards(coll, query, request.allow_partial, context)
                failed.update(out.failures)
                heavy = (b - a) * k * refine * len(out.results) > offload.INLINE_RESULTS
                merged = await offload.run(heavy, self._merge, out.results, k, spec.larger_is_better, with_payload)
                D[a:b], I[a:b] = merged.distances, merged.ids
                if merged.payloads:
                    payloads[a * k : b * k] = merged.payloads
                plans.extend(merged.plans)

        workers = [asyncio.ensure_future(worker()) for _ in range(self.settings.search_chunk_parallel)]
        try:
            await asyncio.gather(*workers)
        except BaseException:  # one chunk failed (or the call was cancelled): stop the others
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        total = len(coll.view)
        merged = ShardHits(D, I, None, payloads, plans)
        resp = await offload.run(True, self._reply, merged, total, Fanout({}, {}), total - len(failed))
        resp.failed_shards.extend(self.shards.shards[s].name for s in sorted(failed))
        return resp

    def _checked_queries(
        self, request: pb.SearchRequest, spec: CollectionSpec, queries: wire.FloatArray
    ) -> wire.FloatArray:
        """The queries checked (dim, finite, the reply within the message limit), and normalised for COSINE."""
        nq, k = queries.shape[0], request.k
        wire.check_vectors(queries, spec.dim, "queries")
        if nq * k > self.settings.max_results:
            raise ResourceExhausted(
                f"nq * k = {nq * k} results would exceed the message limit ({self.settings.max_results} results): "
                "send fewer queries per call or a smaller k"
            )
        return normalize_rows(queries, "queries") if spec.metric.value == "cosine" else queries

    def _shard_query(
        self, request: pb.SearchRequest, spec: CollectionSpec, queries: wire.FloatArray, refine: int = 1
    ) -> ShardQuery:
        """Check the queries and make the query every shard gets (serialized here, off the loop when
        big, if any shard is remote)."""
        query = ShardQuery(
            collection=spec.name,
            queries=self._checked_queries(request, spec, queries),
            k=request.k,
            nprobe=request.nprobe or spec.nprobe,
            refine=refine,
            filter=request.filter if request.HasField("filter") else None,
            with_payload=request.with_payload if request.HasField("with_payload") else None,
        )
        if self.shards.remote:
            query.encoded()
        return query

    def _merge(self, results: dict[int, ShardHits], k: int, larger_is_better: bool, with_payload: bool) -> ShardHits:
        """The shards' hits merged into the global top-k (merge.merge_hits), each filter plan
        named after the group that ran it."""
        for s, hits in results.items():
            for plan in hits.plans:
                plan.shard = self.shards.shards[s].name
        return merge_hits(results, k, larger_is_better, with_payload)

    def _reply(
        self, merged: ShardHits, total: int, out: Fanout[ShardHits], answered: int | None = None
    ) -> pb.SearchResponse:
        """The Search reply, built once from the merged arrays."""
        resp = merged.to_proto()
        resp.shards_total = total
        resp.shards_ok = len(out.results) if answered is None else answered
        resp.failed_shards.extend(self.shards.shards[s].name for s in sorted(out.failures))
        return resp

    def _check_reply(self, reply: Any, fix: str) -> None:
        size = reply.ByteSize()
        if size > self.settings.max_message_bytes:
            raise ResourceExhausted(
                f"the reply would be {size:,} bytes with its payloads, over the message limit "
                f"({self.settings.max_message_bytes:,}): {fix}"
            )

    @rerouted
    async def Sample(self, request: pb.SampleRequest, context: grpc.aio.ServicerContext) -> pb.SampleResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        spec = coll.spec
        if request.max_points == 0:
            raise InvalidArgument("max_points must be at least 1")
        limit = rows_per_message(self.settings, sample_row_bytes(spec.dim))
        if request.max_points > limit:
            raise ResourceExhausted(
                f"{request.max_points} vectors of dim {spec.dim} would exceed the message limit: ask for at most "
                f"{limit}"
            )
        cost = COPIES * request.max_points * sample_row_bytes(spec.dim)
        with self.admission.admit(cost, f"a Sample of {request.max_points} vectors"):
            return await self._sample(coll, request, context)

    async def _sample(
        self, coll: Collection, request: pb.SampleRequest, context: grpc.aio.ServicerContext
    ) -> pb.SampleResponse:
        spec = coll.spec
        timeout = self._timeout(context)
        info = await self.catalog.describe(coll, timeout, include_centroids=True)
        counts = [s.count for s in info.shards]
        quotas = sample_quotas(counts, min(sum(counts), request.max_points)) if sum(counts) else [0] * len(counts)
        seed = request.seed or DEFAULT_SEED
        out = await coll.view.call(
            SAMPLE,
            {
                s: pb.SampleRequest(collection=spec.name, max_points=q, seed=shard_seed(seed, s))
                for s, q in enumerate(quotas)
                if q
            },
            timeout,
        )
        n = sum(quotas)
        nlist = info.centroids.rows if info.HasField("centroids") else 0
        heavy = n * sample_row_bytes(spec.dim) > offload.INLINE_BYTES or n * nlist * spec.dim > offload.INLINE_FLOPS
        return await offload.run(heavy, self._sample_response, spec, info, out.results)

    @staticmethod
    def _sample_response(
        spec: CollectionSpec, info: pb.CollectionInfo, results: dict[int, spb.ExportResponse]
    ) -> pb.SampleResponse:
        """The shards' samples in shard order, each vector with its shard and IVF list."""
        order = sorted(results)
        ids = np.concatenate([wire.unpack_ids(results[s].ids) for s in order] or [np.empty(0, np.int64)])
        vectors: wire.FloatArray = np.vstack(
            [wire.unpack_matrix(results[s].vectors) for s in order] or [np.empty((0, spec.dim), np.float32)]
        )
        shards = np.concatenate(
            [np.full(results[s].vectors.rows, s, np.int32) for s in order] or [np.empty(0, np.int32)]
        )
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

    # -- payloads -------------------------------------------------------------------------------

    @rerouted
    async def Count(self, request: pb.CountRequest, context: grpc.aio.ServicerContext) -> pb.CountResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if request.HasField("filter"):
            check_filter(request.filter, self.settings)
        out = await coll.view.call(COUNT, coll.view.all(request), self._timeout(context))
        resp = pb.CountResponse(count=sum(r.count for r in out.results.values()))
        for s in sorted(out.results):
            for plan in out.results[s].plans:
                plan.shard = self.shards.shards[s].name
                resp.plans.append(plan)
        if not request.HasField("filter"):
            for s, r in out.results.items():
                coll.shard_counts[s] = r.count
        return resp

    @rerouted
    async def Scroll(self, request: pb.ScrollRequest, context: grpc.aio.ServicerContext) -> pb.ScrollResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if request.HasField("filter"):
            check_filter(request.filter, self.settings)
        if request.start_id < 0:
            raise InvalidArgument(f"start_id must be >= 0 (ids are), got {request.start_id}")
        limit = request.limit or 100
        if limit > MAX_SCROLL:
            raise InvalidArgument(f"limit must be at most {MAX_SCROLL:,} points per page, got {limit:,}")
        shard_req = pb.ScrollRequest()
        shard_req.CopyFrom(request)
        shard_req.limit = limit
        out = await coll.view.call(SCROLL, coll.view.all(shard_req), self._timeout(context))
        return await offload.run(limit * coll.spec.dim > 1 << 16, self._scrolled, coll, request, limit, out.results)

    def _scrolled(
        self, coll: Collection, request: pb.ScrollRequest, limit: int, results: dict[int, pb.ScrollResponse]
    ) -> pb.ScrollResponse:
        """The first `limit` ids of the shards' pages. A shard's page that was cut short (by `limit` or
        by size) ends where the merged page may end: ids beyond the smallest such end wait for the
        next page, so no id is skipped."""
        ends = [int(np.frombuffer(r.ids, dtype=wire.I64)[-1]) for r in results.values() if not r.done and r.ids]
        horizon = min(ends) if ends else None
        rows: list[tuple[int, int, int]] = []  # (id, shard, position)
        for s, r in results.items():
            for j, i in enumerate(np.frombuffer(r.ids, dtype=wire.I64).tolist()):
                if horizon is None or i <= horizon:
                    rows.append((i, s, j))
        rows.sort()
        more = horizon is not None or len(rows) > limit
        rows = rows[:limit]
        ids = np.asarray([i for i, _, _ in rows], dtype=np.int64)
        start, done = scroll_next(ids, request.start_id, more)
        out = pb.ScrollResponse(ids=wire.pack_ids(ids), next_start_id=start, done=done)
        if request.with_payload.enable:
            out.payloads.extend(results[s].payloads[j] for _, s, j in rows)
        if request.with_vectors:
            mats = {s: wire.unpack_matrix(r.vectors) for s, r in results.items() if r.ids}
            x = np.stack([mats[s][j] for _, s, j in rows]) if rows else np.empty((0, coll.spec.dim), np.float32)
            out.vectors.CopyFrom(wire.pack_matrix(x))
        self._check_reply(out, "ask for a smaller limit or fewer payload fields")
        return out

    @rerouted
    async def SetPayload(
        self, request: pb.SetPayloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPayloadResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))  # NOT_FOUND first
        by_filter = request.HasField("filter")
        if by_filter == bool(request.ids):
            raise InvalidArgument("send exactly one of ids and filter: the points whose payload to write")
        if request.mode not in pb.SetPayloadMode.values():
            raise InvalidArgument(f"mode {request.mode} is not MERGE, OVERWRITE or DELETE_KEYS")
        if request.mode == pb.SET_PAYLOAD_MODE_DELETE_KEYS:
            if not request.keys or request.payload.fields:
                raise InvalidArgument("DELETE_KEYS takes the keys to delete in `keys`, and no payload")
            for key in request.keys:
                if not key or any(not part for part in key.split(".")):
                    raise InvalidArgument(f"keys: {key!r} is not a key or a dotted path")
        elif request.keys:
            raise InvalidArgument("keys are for DELETE_KEYS; MERGE and OVERWRITE take a payload")
        check_payloads([request.payload], 1, self.settings)
        if by_filter:
            check_filter(request.filter, self.settings, write="SetPayload")
        ids = None if by_filter else np.unique(request_ids(self.settings, request.ids, unique=False))

        def requests_of(view: ShardView, placement: Placement) -> dict[int, Any]:
            if ids is None:
                return view.all(request)
            requests = {}
            for s, pos in enumerate(placement.split(ids)):
                if pos.size:
                    part = pb.SetPayloadRequest()
                    part.CopyFrom(request)
                    part.ids = wire.pack_ids(ids[pos])
                    requests[s] = part
            return requests

        version = self.shards.clock.next()
        with self.admission.admit(ids_cost(len(request.ids)), "a SetPayload"):
            if coll.next is not None:
                # A reshard copies: a partial write on the new placement could land on a point not
                # copied yet (ignored there) or copied from before it. Write the current placement,
                # then copy the points it changed (whole, with their versions) to the new one.
                if ids is None:
                    ids = await self._matching_ids(coll, request.filter, self._timeout(context))
                out = await coll.view.call(
                    SET_PAYLOAD,
                    requests_of(coll.view, coll.placement),
                    self._timeout(context),
                    fail_fast=False,
                    version=version,
                )
                if out.failures:
                    raise self.shards.first_error(out.failures)
                await self.resharder.recopy(coll, ids, self._timeout(context))
                return pb.SetPayloadResponse(updated=sum(r.updated for r in out.results.values()))
            outs = await asyncio.gather(
                *(
                    view.call(
                        SET_PAYLOAD, requests_of(view, place), self._timeout(context), fail_fast=False, version=version
                    )
                    for view, place, _ in coll.writers
                )
            )
        for out in outs:
            if out.failures:
                raise self.shards.first_error(out.failures)
        return pb.SetPayloadResponse(updated=sum(r.updated for r in outs[0].results.values()))

    async def _matching_ids(self, coll: Collection, f: ppb.Filter, timeout: float) -> wire.IdArray:
        """Every id of the collection's current placement whose payload matches `f` (Scroll pages)."""
        found: list[wire.IdArray] = []
        for s in range(len(coll.view)):
            start = 0
            while True:
                req = pb.ScrollRequest(collection=coll.spec.name, filter=f, start_id=start, limit=MAX_SCROLL)
                page = (await coll.view.call(SCROLL, {s: req}, timeout)).results[s]
                found.append(wire.unpack_ids(page.ids))
                if page.done or not page.ids:
                    break
                start = page.next_start_id
        return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)

    @rerouted
    async def CreatePayloadIndex(
        self, request: pb.CreatePayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if not request.field or any(not part for part in request.field.split(".")):
            raise InvalidArgument(f"field must be a key or a dotted path like 'meta.lang', got {request.field!r}")
        if request.type not in (1, 2, 3, 4):
            raise InvalidArgument("type must be KEYWORD, INTEGER, FLOAT or BOOL")
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

    @rerouted
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

    # -- training -------------------------------------------------------------------------------

    async def Reshard(self, request: pb.ReshardRequest, context: grpc.aio.ServicerContext) -> pb.ReshardResponse:
        return await self.resharder.handle(request)

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


def with_text(payload: ppb.Payload | None, text: str) -> ppb.Payload:
    """The payload of a point added from `text` to a store_text collection: "text" set unless given."""
    out = ppb.Payload()
    if payload is not None:
        out.CopyFrom(payload)
    if "text" not in out.fields:
        out.fields["text"].string_value = text
    return out


def _undo_add(token: int) -> Unacknowledged:
    """What a non-upsert Add does with the replicas of a group that applied it when the group's
    write quorum was not reached: takes it back out of them (RollbackAdd of its version)."""

    async def undo(group: ShardGroup, request: Any, applied: list[ShardApi], timeout: float) -> None:
        message = message_of(request)
        rollback = spb.RollbackAddRequest(collection=message.collection, write_token=token, ids=message.ids)
        await asyncio.gather(*(r.rollback_add(rollback, CallMeta(timeout)) for r in applied), return_exceptions=True)

    return undo
