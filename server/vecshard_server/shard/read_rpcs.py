"""The internal Shard RPCs that read: searches (numpy in and out: `search` is what an in-process
coordinator calls), gets, counts, scrolls, samples and export pages."""

from __future__ import annotations

import logging
from typing import TypeVar

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import (
    Aborted,
    InvalidArgument,
    ResourceExhausted,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.payload_order import Key, encode_keys, read_cursor
from vecshard_server.common.placement import Placement
from vecshard_server.common.process import rss_bytes, uptime_s
from vecshard_server.common.results import scroll_next
from vecshard_server.common.rpc import TRAIN_EPOCH_HEADER, header_int
from vecshard_server.common.search_values import ShardHits, ShardQuery
from vecshard_server.shard.checks import (
    INLINE_REFINE,
    _without_removed,
    check_reply_rows,
    check_search,
    rows_that_fit,
)
from vecshard_server.shard.core import ShardCore
from vecshard_server.shard.engine import ShardIndex
from vecshard_server.shard.facets import facet_counts, facet_reply
from vecshard_server.shard.groups import grouped_search
from vecshard_server.shard.lookups import get_points, project_keyed, scroll_page
from vecshard_server.shard.ordering import ordered_page
from vecshard_server.shard.payloads import project

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReadRpcs(ShardCore):
    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardListResponse:
        return spb.ShardListResponse(
            collections=[self._state(p) for p in list(self.collections.values())],
            dropped=dict(self.dropped),
            rss_bytes=rss_bytes(),
            uptime_s=uptime_s(),
        )

    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        return self._state(self._get(request.name), request.include_centroids)

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        part = self._get(request.collection)
        ids = wire.unpack_ids(request.ids)
        dim = part.spec.dim
        check_reply_rows(self.settings, ids.size, 4 * dim + 1, dim, "get at most {limit} ids per call")
        with_payload = request.with_payload.enable
        keys = list(request.string_ids) if request.string_ids else None
        if keys is not None and len(keys) != ids.size:
            raise InvalidArgument(f"string_ids: one per id ({ids.size}), got {len(keys)}")
        vectors, found, payloads, has = await self._run(self._reads, get_points, part, ids, keys, with_payload)
        return pb.GetResponse(
            vectors=wire.pack_matrix(vectors),
            found=found.astype(np.uint8).tobytes(),
            payloads=[project_keyed(p, request.with_payload.fields) for p in payloads],
            has_vector=has.astype(np.uint8).tobytes(),
        )

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        expected = header_int(context.invocation_metadata(), TRAIN_EPOCH_HEADER) if context is not None else None
        return (await self.search(ShardQuery.from_proto(request), expected)).to_proto()

    async def search(self, query: ShardQuery, train_epoch: int | None = None) -> ShardHits:
        """This shard's best k (k * refine with refine) for each query, as numpy arrays.

        train_epoch: the training the caller expects (None: any); a shard at another one refuses
        (ABORTED), so one search never merges results of two quantizers.
        """
        part = self._get(query.collection)
        if train_epoch is not None and train_epoch != part.train_epoch:
            raise Aborted(
                f"collection {part.spec.name!r} is at training epoch {part.train_epoch} on this shard, the coordinator "
                f"expected {train_epoch}: a training is being switched; retry"
            )
        queries, refine = query.queries, query.refine
        if refine > 1 and not part.spec.quantized:
            raise InvalidArgument(
                f"refine_factor applies to compressed IVF kinds; {part.spec.name!r} is "
                f"{part.spec.index_type.name}: leave it 0"
            )
        k = query.k * refine  # refine: the candidates, each with its exact distance too
        check_search(self.settings, part.spec, queries, k)  # before batching: one bad query failed all
        if query.group_by:
            if query.group_size < 1 or k * query.group_size > self.settings.max_k:
                raise InvalidArgument(f"group_size must be 1 to max_k / k, got {query.group_size}")
            return await self._run(self._reads, grouped_search, part, query, part.settings.filter_exact_ratio)
        if query.filter is not None or query.payloads_wanted or query.with_vectors:
            return await self._run(self._reads, self._search_filtered, part, query, k)
        D, I = await self._search_plain(part, queries, k, query.nprobe)
        exact = None
        if refine > 1:
            exact = part.refined(queries, I, wait=False) if I.size <= INLINE_REFINE else None  # small: here
            if exact is None:
                exact = await self._run(self._reads, part.refined, queries, I)
            assert exact is not None  # (waiting for the lock, refined always answers)
            I = _without_removed(I, exact, part)
        return ShardHits(D.astype(wire.F32, copy=False), I.astype(wire.I64, copy=False), exact)

    async def _search_plain(
        self, part: ShardIndex, queries: np.ndarray, k: int, nprobe: int
    ) -> tuple[np.ndarray, np.ndarray]:
        batcher = self._batcher(part) if self.settings.search_batching else None
        if (batcher is None or not batcher.busy) and (
            part.search_work(queries.shape[0], nprobe) <= self.settings.inline_search_work
        ):  # tiny, and no other search running: here, not via a thread
            now = part.search_now(queries, k, nprobe)
            if now is not None:
                return now
        if batcher is not None:
            return await batcher.search(queries, k, nprobe)
        return await self._run(self._reads, part.search, queries, k, nprobe)

    @staticmethod
    def _search_filtered(part: ShardIndex, query: ShardQuery, k: int) -> ShardHits:
        queries = query.queries
        plans = []
        if query.filter is not None:
            D, I, plan, payloads = part.search_filtered(queries, k, query.nprobe, query.filter, query.payloads_wanted)
            plans.append(plan)
        elif query.payloads_wanted:
            D, I, payloads = part.search_with_payloads(queries, k, query.nprobe)
        else:
            (D, I), payloads = part.search(queries, k, query.nprobe), []
        selector = query.with_payload
        wanted = (
            [project_keyed(p, selector.fields) for p in payloads] if selector is not None and selector.enable else []
        )
        exact = None
        if k > query.k:
            exact = part.refined(queries, I)
            assert exact is not None
            I = _without_removed(I, exact, part)
        vectors = None
        if query.with_vectors:  # (a hit removed since the search: zeros, as padding)
            with part.reading() as points:
                vectors = points.get(I.reshape(-1), False)[0]
        D, I = D.astype(wire.F32, copy=False), I.astype(wire.I64, copy=False)
        return ShardHits(D, I, exact, wanted, plans, vectors)

    def _fitting(self, payloads: list[ppb.Payload], row_bytes: int) -> int:
        """How many leading rows (each row_bytes plus its payload) fit in one reply: all of them
        without payloads (the rows were already checked), else at least 1."""
        sizes = np.fromiter((p.ByteSize() for p in payloads), dtype=np.int64, count=len(payloads))
        if not sizes.any():
            return len(payloads)
        budget = rows_that_fit(self.settings, row_bytes) * row_bytes
        return max(1, int(np.searchsorted(np.cumsum(sizes + row_bytes + 8), budget, side="right")))

    async def Count(self, request: pb.CountRequest, context: grpc.aio.ServicerContext) -> pb.CountResponse:
        part = self._get(request.collection)
        f = request.filter if request.HasField("filter") else None
        count, unindexed = await self._run(self._reads, part.count_matching, f)
        plans = [ppb.FilterPlan(plan="count", matches=count, unindexed_fields=unindexed)] if f is not None else []
        return pb.CountResponse(count=count, plans=plans)

    async def Scroll(self, request: pb.ScrollRequest, context: grpc.aio.ServicerContext) -> pb.ScrollResponse:
        """A page in id order from start_id, or with order_by in the field's order after the cursor
        (its next_cursor then holds each point's order key: payload_order.encode_keys)."""
        part = self._get(request.collection)
        f = request.filter if request.HasField("filter") else None
        limit = request.limit or 100
        dim = part.spec.dim
        row = 16 + (4 * dim if request.with_vectors else 0)
        check_reply_rows(self.settings, limit, row, dim, "scroll with a limit of at most {limit}")
        payload, vectors_wanted = request.with_payload.enable, request.with_vectors
        keys: list[Key] | None = None
        if request.order_by.key:
            after = None
            if request.cursor:
                _, ordered = read_cursor(request.cursor)
                if ordered is None:
                    raise InvalidArgument("an ordered scroll's cursor is one of an ordered scroll")
                after = (ordered[2], ordered[3])
            by = request.order_by
            page = await self._run(
                self._reads, ordered_page, part, f, by.key, by.descending, after, limit, payload, vectors_wanted
            )
            ids, payloads, vectors, has, more, keys = (
                page.ids,
                page.payloads,
                page.vectors,
                page.has_vector,
                page.more,
                page.keys,
            )
        else:
            ids, payloads, vectors, has, more = await self._run(
                self._reads, scroll_page, part, f, request.start_id, limit, payload, vectors_wanted
            )
        encoded = [project_keyed(p, request.with_payload.fields) for p in payloads]
        keep = self._fitting(encoded, row)
        if encoded and keep < ids.size:
            ids, encoded, has, more = ids[:keep], encoded[:keep], has[:keep], True
            vectors = vectors[:keep] if vectors is not None else None
            keys = keys[:keep] if keys is not None else None
        start, done = scroll_next(ids, request.start_id, more) if keys is None else (0, not more)
        out = pb.ScrollResponse(ids=wire.pack_ids(ids), payloads=encoded, next_start_id=start, done=done)
        if vectors is not None:
            out.vectors.CopyFrom(wire.pack_matrix(vectors))
            out.has_vector = has.astype(np.uint8).tobytes()
        if keys is not None:
            out.next_cursor = encode_keys(keys)
        return out

    async def Facet(self, request: pb.FacetRequest, context: grpc.aio.ServicerContext) -> pb.FacetResponse:
        """Every value of the field in this partition (among the points matching the filter) with
        its count, unsorted (the coordinator sums and sorts)."""
        part = self._get(request.collection)
        f = request.filter if request.HasField("filter") else None
        counts = await self._run(self._reads, facet_counts, part, request.key, f)
        reply = facet_reply(counts)
        if reply.ByteSize() > self.settings.max_message_bytes - 64 * 1024:
            raise ResourceExhausted(
                f"field {request.key!r} has {len(counts):,} distinct values on one shard, too many to count in one "
                "reply: facet a field with fewer distinct values, or a filter matching fewer points"
            )
        return reply

    async def Sample(self, request: pb.SampleRequest, context: grpc.aio.ServicerContext) -> spb.ExportResponse:
        part = self._get(request.collection)
        dim = part.spec.dim
        check_reply_rows(
            self.settings,
            min(request.max_points, part.count),
            4 * dim + 8,
            dim,
            "ask for at most {limit} points per call",
        )
        ids, x = await self._run(self._reads, part.sample, request.max_points, request.seed)
        return spb.ExportResponse(ids=wire.pack_ids(ids), vectors=wire.pack_matrix(x))

    async def Export(self, request: spb.ExportRequest, context: grpc.aio.ServicerContext) -> spb.ExportResponse:
        part = self._get(request.collection)
        fit = rows_that_fit(self.settings, 4 * part.spec.dim + 16)
        limit = max(1, min(request.limit, fit + 1))  # one more than fits tells a page that would not
        keep = None
        scanned: list[tuple[int, bool]] = []
        if request.HasField("owned_by"):
            placement = Placement.from_proto(request.owned_by, 1)
            if request.owner >= placement.shards:
                raise InvalidArgument(f"owner {request.owner} is not a group of a placement over {placement.shards}")
            owner = int(request.owner)

            def keep(ids: np.ndarray) -> np.ndarray:
                mine: np.ndarray = placement.owner(ids) == owner
                return mine

        if request.ids:  # exactly these ids' entries (a reshard re-copying points a write changed)
            wanted = wire.unpack_ids(request.ids)
            check_reply_rows(
                self.settings, wanted.size, 4 * part.spec.dim + 16, part.spec.dim, "export at most {limit} ids per call"
            )
            ids, vectors, versions, dead, dead_versions, payloads = await self._run(
                self._reads, part.export_ids, wanted
            )
        else:
            ids, vectors, versions, dead, dead_versions, payloads = await self._run(
                self._reads, part.export_page, request.after_id, limit, request.include_tombstones, keep, scanned
            )
        check_reply_rows(
            self.settings,
            ids.size + dead.size,
            4 * part.spec.dim + 16,
            part.spec.dim,
            "send a limit of at most {limit} per page",
        )
        encoded = [project(p, ()) for p in payloads]
        keep_n = self._fitting(encoded, 4 * part.spec.dim + 16)
        keep_all = keep_n == ids.size
        if not keep_all:  # the page ends before the first payload that does not fit
            last = ids[keep_n - 1]
            ids, vectors, versions, encoded = ids[:keep_n], vectors[:keep_n], versions[:keep_n], encoded[:keep_n]
            dead_keep = dead <= last
            dead, dead_versions = dead[dead_keep], dead_versions[dead_keep]
        less = np.isnan(vectors[:, 0]) if ids.size and vectors.shape[1] else np.zeros(ids.size, dtype=bool)
        if less.any():  # points without a vector (their rows NaN here): zeros, and marked
            vectors = np.where(less[:, None], np.float32(0), vectors)
        return spb.ExportResponse(
            vectorless=less.astype(np.uint8).tobytes() if less.any() else b"",
            ids=wire.pack_ids(ids),
            vectors=wire.pack_matrix(vectors),
            versions=wire.pack_ids(versions),
            tombstone_ids=wire.pack_ids(dead),
            tombstone_versions=wire.pack_ids(dead_versions),
            payloads=encoded,
            scanned_to=scanned[0][0]
            if scanned and keep_all
            else int(max(ids[-1] if ids.size else -1, dead[-1] if dead.size else -1)),
            complete=bool(scanned and scanned[0][1] and keep_all),
        )
