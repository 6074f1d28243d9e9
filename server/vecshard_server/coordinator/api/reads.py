"""Get, Count, Scroll and Sample: reads of stored points, gathered from every group."""

from __future__ import annotations

import logging

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import InvalidArgument, ResourceExhausted
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common import string_ids
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator import offload
from vecshard_server.coordinator.admission import COPIES, ids_cost
from vecshard_server.coordinator.api.base import Family
from vecshard_server.coordinator.catalog import Collection
from vecshard_server.coordinator.inputs import get_row_bytes, rows_per_message, sample_row_bytes
from vecshard_server.coordinator.payload_inputs import check_filter
from vecshard_server.coordinator.scroll_pages import merge_pages, scroll_start
from vecshard_server.coordinator.shard_api import COUNT, GET, SAMPLE, SCROLL
from vecshard_server.coordinator.stored import assemble, get_requests, missing_error, point_ids
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
        n = len(request.ids) // 8 or len(request.string_ids)
        row_bytes = get_row_bytes(coll.spec.dim)
        with self.admission.admit(ids_cost(8 * n, row_bytes), f"a Get of {n} ids"):
            heavy = n * row_bytes > offload.INLINE_BYTES
            ids, keys = await offload.run(
                heavy, point_ids, self.settings, coll.spec, request.ids, request.string_ids, "ids"
            )
            parts, requests = await offload.run(
                heavy, get_requests, self.settings, coll, ids, keys, request.with_payload
            )
            out = await coll.view.call(GET, requests, self._timeout(context))
            points = await offload.run(heavy, assemble, coll, ids, keys, parts, out.results)
            if not request.allow_missing and not points.found.all():
                raise missing_error(coll, points, "; set allow_missing to get a found mask instead")
            payloads = string_ids.split(points.payloads)[1] if keys is not None else points.payloads
            resp = pb.GetResponse(
                vectors=wire.pack_matrix(points.vectors),
                found=points.found.astype(np.uint8).tobytes(),
                payloads=payloads,
                has_vector=points.has_vector.astype(np.uint8).tobytes(),
            )
            if request.with_payload.enable:
                self._check_reply(resp, "get fewer ids per call, or fewer payload fields")
            return resp

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
        shard_req.start_id = scroll_start(request)
        if not request.order_by.key:
            shard_req.ClearField("order_by")
            shard_req.cursor = b""
        if coll.spec.string_ids:
            shard_req.with_payload.CopyFrom(string_ids.selector(request.with_payload))
        out = await coll.view.call(SCROLL, coll.view.all(shard_req), self._timeout(context))
        heavy = limit * coll.spec.dim > 1 << 16
        return await offload.run(heavy, self._scrolled, coll, shard_req, request, out.results)

    def _scrolled(
        self, coll: Collection, sent: pb.ScrollRequest, request: pb.ScrollRequest, results: dict[int, pb.ScrollResponse]
    ) -> pb.ScrollResponse:
        """The shards' pages merged (scroll_pages.merge_pages) into the reply, its string ids read from
        the payloads and the payloads dropped unless asked for."""
        page = merge_pages(sent, results)
        rows = page.rows
        out = pb.ScrollResponse(
            ids=wire.pack_ids(page.ids), next_start_id=page.next_start_id, done=page.done, next_cursor=page.cursor
        )
        payloads = [results[s].payloads[j] for s, j in rows] if sent.with_payload.enable else []
        if coll.spec.string_ids:
            keys, payloads = string_ids.split(payloads)
            out.string_ids.extend(keys)
        if request.with_payload.enable:
            out.payloads.extend(payloads)
        if request.with_vectors:
            mats = {s: wire.unpack_matrix(r.vectors) for s, r in results.items() if r.ids}
            x = np.stack([mats[s][j] for s, j in rows]) if rows else np.empty((0, coll.spec.dim), np.float32)
            out.vectors.CopyFrom(wire.pack_matrix(x))
            has = {s: np.frombuffer(r.has_vector, dtype=np.uint8) for s, r in results.items() if r.has_vector}
            out.has_vector = bytes(int(has[s][j]) if s in has else 1 for s, j in rows)
        self._check_reply(out, "ask for a smaller limit or fewer payload fields")
        return out
