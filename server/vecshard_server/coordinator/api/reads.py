"""Get, Count, Scroll and Sample: reads of stored points, gathered from every group."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.results import scroll_next
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator import offload
from vecshard_server.coordinator.admission import (
    COPIES,
    ids_cost,
)
from vecshard_server.coordinator.api.base import Family
from vecshard_server.coordinator.catalog import Collection
from vecshard_server.coordinator.inputs import (
    get_row_bytes,
    request_ids,
    rows_per_message,
    sample_row_bytes,
)
from vecshard_server.coordinator.payload_inputs import check_filter
from vecshard_server.coordinator.shard_api import (
    COUNT,
    GET,
    SAMPLE,
    SCROLL,
    Encoded,
)
from vecshard_server.coordinator.training import DEFAULT_SEED, sample_quotas, shard_seed
from vecshard_server.shard.engine import assign_lists

log = logging.getLogger(__name__)

MAX_SCROLL = 10_000  # points per Scroll page
ROLLBACK_TIMEOUT_S = 5.0  # one RollbackAdd round
COALESCE_ROWS = 16  # searches of at most this many queries share fan-outs with concurrent ones
ROLLBACK_RETRY_S = 120.0  # unreachable groups are retried in the background this long


class Reads(Family):
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
