"""Search: a request checked into the query every shard gets, fanned out with the caller's
deadline, merged (merge.py) and answered; small searches share fan-outs (coalesce.py), big
ones run in chunks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import (
    Aborted,
    Unavailable,
)
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.rpc import request_bytes
from vecshard_server.common.search_values import ShardHits, ShardQuery
from vecshard_server.coordinator import keyword, offload, stored
from vecshard_server.coordinator.api.base import Core, Family
from vecshard_server.coordinator.catalog import Collection
from vecshard_server.coordinator.coalesce import Coalescer, Identity
from vecshard_server.coordinator.fanout import TOLERABLE, Fanout
from vecshard_server.coordinator.grouped import grouped_search
from vecshard_server.coordinator.inputs import (
    request_vectors,
)
from vecshard_server.coordinator.merge import merge_hits
from vecshard_server.coordinator.reshard import LatencyAverage
from vecshard_server.coordinator.search_plan import SearchPlan, plan_search
from vecshard_server.coordinator.shard_api import (
    SEARCH,
)

log = logging.getLogger(__name__)

MAX_SCROLL = 10_000  # points per Scroll page
ROLLBACK_TIMEOUT_S = 5.0  # one RollbackAdd round
COALESCE_ROWS = 16  # searches of at most this many queries share fan-outs with concurrent ones
ROLLBACK_RETRY_S = 120.0  # unreachable groups are retried in the background this long


class Searches(Family):
    def __init__(self, core: Core, search_latency: LatencyAverage) -> None:
        super().__init__(core)
        self.search_latency = search_latency
        self.coalescer = Coalescer(self._coalesced_round)

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        started = time.perf_counter()
        try:
            return await self._search(request, context)
        finally:
            self.search_latency.observe(time.perf_counter() - started)

    async def _search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        """Checked into a plan, admitted, its queries embedded (texts, images) and checked, then run;
        one with keywords is a keyword or hybrid search (keyword.py)."""
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        size = request_bytes(context)
        if request.keywords:
            return await self._keyword_search(request, coll, context, size)
        keyword.check_without_keywords(request)
        plan = plan_search(request, coll, self.settings, size)
        with self.admission.admit(plan.cost, plan.describe()):
            query = await self._dense_query(plan, request, context, size)
            if plan.group_by:
                resp = await self._grouped(plan, query, context)
            else:
                resp = await self._run(plan, query, context)
        resp.higher_is_better = coll.spec.larger_is_better
        return resp

    async def _dense_query(
        self, plan: SearchPlan, request: pb.SearchRequest, context: grpc.aio.ServicerContext, size: int
    ) -> ShardQuery:
        """The query every shard gets: the request's vectors, its texts or images embedded, or the
        vectors of the stored points it names, checked (SearchPlan.query)."""
        coll = plan.coll
        source = plan.source
        if source is not None:  # the vectors of stored points
            points = await stored.fetch(self.settings, coll, source.ids, source.keys, self._timeout(context))
            field = "query_ids" if source.own else "recommend"
            queries = source.queries(coll, stored.require_vectors(coll, points, field))
        else:
            queries, _ = await request_vectors(
                self.embeddings,
                coll.spec,
                request.queries,
                request.texts,
                request.images,
                request.model_fingerprint,
                types_pb2.INPUT_ROLE_QUERY,
                "queries",
                self._timeout(context),
                size,
            )
        return await offload.run(queries.nbytes > offload.INLINE_BYTES, plan.query, request, queries, self.settings)

    async def _keyword_search(
        self, request: pb.SearchRequest, coll: Collection, context: grpc.aio.ServicerContext, size: int
    ) -> pb.SearchResponse:
        """A keyword search (BM25, two phases), or a hybrid one when the request has a dense query."""
        kplan = keyword.plan_keywords(request, coll, self.settings)  # (bad input first, then state)
        field = keyword.text_field(request, coll, final=False)
        if field is None:  # (the catalog may not know an index made through another coordinator yet)
            await self.catalog.describe(coll, self._timeout(context))
            field = keyword.text_field(request, coll, final=True)
        assert field is not None
        kplan = dataclasses.replace(kplan, field=field)
        if kplan.hybrid:
            resp, failed = await self._hybrid(request, kplan, context, size)
        else:
            with self.admission.admit(kplan.cost, kplan.describe()):
                hits, failed = await keyword.keyword_leg(kplan, list(kplan.texts), lambda: self._timeout(context))
                heavy = hits.ids.size > offload.INLINE_RESULTS
                resp = await offload.run(heavy, keyword.keyword_reply, kplan, hits)
        resp.shards_total = len(coll.view)
        resp.shards_ok = resp.shards_total - len(failed)
        resp.failed_shards.extend(self.shards.shards[s].name for s in sorted(failed))
        if kplan.wants_payloads or kplan.with_vectors or kplan.string_ids:
            self._check_reply(resp, "send fewer queries per call, a smaller k or fewer payload fields")
        return resp

    async def _hybrid(
        self, request: pb.SearchRequest, kplan: keyword.KeywordPlan, context: grpc.aio.ServicerContext, size: int
    ) -> tuple[pb.SearchResponse, set[int]]:
        """The dense and keyword legs run concurrently (candidates hits each, the same filter), then
        fused (fusion.py); the groups that failed either leg (allow_partial)."""
        coll = kplan.coll
        dense_request = keyword.dense_request(request, kplan.depth)
        plan = plan_search(dense_request, coll, self.settings, size)
        if not size:  # (a small request's queries are counted exactly before they are read)
            kplan.texts_for(plan.nq_sent)
        with self.admission.admit(plan.cost + kplan.cost, kplan.describe()):
            texts = list(kplan.texts)  # (one text for every query is searched once)
            leg = asyncio.ensure_future(keyword.keyword_leg(kplan, texts, lambda: self._timeout(context)))
            try:
                query = await self._dense_query(plan, dense_request, context, size)
                kplan.texts_for(query.nq)  # (one keyword text, or one per query)
                out = await self._search_shards(coll, query, plan.allow_partial, context)
                heavy = query.nq * plan.width * len(out.results) > offload.INLINE_RESULTS
                dense = await offload.run(heavy, self._merge, out.results, plan)
                hits, failed = await leg
            finally:
                leg.cancel()
                await asyncio.gather(leg, return_exceptions=True)
            larger = coll.spec.larger_is_better
            resp = await offload.run(heavy, keyword.hybrid_reply, kplan, dense, hits, larger)
        return resp, failed | set(out.failures)

    async def _grouped(
        self, plan: SearchPlan, query: ShardQuery, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        """A grouped search (grouped.py), its reply checked for size."""

        async def search(q: ShardQuery) -> Fanout[ShardHits]:
            out = await self._search_shards(plan.coll, q, plan.allow_partial, context)
            for s, hits in out.results.items():
                for filter_plan in hits.plans:
                    filter_plan.shard = self.shards.shards[s].name
            return out

        resp, failed = await grouped_search(plan, query, search)
        resp.shards_total = len(plan.coll.view)
        resp.shards_ok = resp.shards_total - len(failed)
        resp.failed_shards.extend(self.shards.shards[s].name for s in sorted(failed))
        self._check_reply(resp, "send fewer queries per call, fewer or smaller groups, or fewer payload fields")
        return resp

    async def _run(self, plan: SearchPlan, query: ShardQuery, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        """A small plain search joins concurrent ones (coalesce.py); a big one runs in chunks."""
        nq, coll = query.nq, plan.coll
        if self.settings.search_coalescing and nq <= COALESCE_ROWS and plan.coalescable:
            return await self._coalesced(plan, query, context)
        if nq > plan.chunk_rows(self.settings):
            return await self._chunked_search(plan, query, context)
        if query.queries.nbytes > offload.INLINE_BYTES and self.shards.remote:
            await offload.run(True, query.encoded)  # (once for every remote shard, off the loop)
        out = await self._search_shards(coll, query, plan.allow_partial, context)
        heavy = nq * plan.width * len(out.results) > offload.INLINE_RESULTS
        merged = await offload.run(heavy, self._merge, out.results, plan)
        resp = await offload.run(heavy, self._reply, plan, merged, len(coll.view), out)
        if plan.with_payload or plan.with_vectors or plan.string_ids:
            self._check_reply(resp, "send fewer queries per call, a smaller k or fewer payload fields")
        return resp

    async def _coalesced(
        self, plan: SearchPlan, query: ShardQuery, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        """A small plain search, sent to the shards with the concurrent ones of the same shape."""
        key = (Identity(plan.coll), plan.fetch, plan.nprobe, plan.refine, plan.allow_partial)
        D, I, extra = await self.coalescer.search(key, query.queries, context)
        page = plan.page(ShardHits(D, I))
        D, I = page.distances, page.ids
        resp = pb.SearchResponse(
            nq=query.nq,
            k=plan.k,
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
        merged = await offload.run(heavy, merge_hits, out.results, k, coll.spec.larger_is_better)
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
        self, plan: SearchPlan, whole: ShardQuery, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        """A big Search as chunks of plan.chunk_rows queries, search_chunk_parallel at a time: each
        chunk is a short faiss call on the shards, so other searches get in between (fair
        scheduling), and only a few chunks' replies are held at once. Same results as one call:
        queries are independent (and were checked as a whole, so errors name rows of the request)."""
        coll, nq, rows = plan.coll, whole.nq, plan.chunk_rows(self.settings)
        failed: set[int] = set()
        starts = iter(range(0, nq, rows))
        pages: dict[int, ShardHits] = {}

        async def worker() -> None:
            for a in starts:
                b = min(nq, a + rows)
                query = dataclasses.replace(whole, queries=whole.queries[a:b])
                out = await self._search_shards(coll, query, plan.allow_partial, context)
                failed.update(out.failures)
                heavy = (b - a) * plan.width * len(out.results) > offload.INLINE_RESULTS
                pages[a] = await offload.run(heavy, self._merge, out.results, plan, slice(a, b))

        workers = [asyncio.ensure_future(worker()) for _ in range(self.settings.search_chunk_parallel)]
        try:
            await asyncio.gather(*workers)
        except BaseException:  # one chunk failed (or the call was cancelled): stop the others
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        total = len(coll.view)
        merged = await offload.run(True, _joined, [pages[a] for a in sorted(pages)])
        resp = await offload.run(True, self._reply, plan, merged, total, Fanout({}, {}), total - len(failed))
        resp.failed_shards.extend(self.shards.shards[s].name for s in sorted(failed))
        return resp

    def _merge(self, results: dict[int, ShardHits], plan: SearchPlan, rows: slice = slice(None)) -> ShardHits:
        """The shards' hits merged into the global top (offset + k) (merge.merge_hits), cut to the
        plan's page and score threshold, each filter plan named after the group that ran it (`rows`:
        which of the request's queries these are)."""
        for s, hits in results.items():
            for filter_plan in hits.plans:
                filter_plan.shard = self.shards.shards[s].name
        larger = plan.coll.spec.larger_is_better
        merged = merge_hits(results, plan.fetch, larger, plan.shard_payloads, plan.with_vectors)
        return plan.page(merged, rows)

    def _reply(
        self, plan: SearchPlan, merged: ShardHits, total: int, out: Fanout[ShardHits], answered: int | None = None
    ) -> pb.SearchResponse:
        """The Search reply, built once from the merged arrays."""
        shown, keys = plan.present(merged)
        resp = shown.to_proto()
        if keys is not None:
            resp.string_ids.extend(keys)
        resp.shards_total = total
        resp.shards_ok = len(out.results) if answered is None else answered
        resp.failed_shards.extend(self.shards.shards[s].name for s in sorted(out.failures))
        return resp


def _joined(pages: list[ShardHits]) -> ShardHits:
    """The pages of a chunked search's chunks, in query order, as one."""
    vectors = [p.vectors for p in pages if p.vectors is not None]
    return ShardHits(
        np.vstack([p.distances for p in pages]),
        np.vstack([p.ids for p in pages]),
        None,
        [x for p in pages for x in p.payloads],
        [x for p in pages for x in p.plans],
        np.vstack(vectors) if len(vectors) == len(pages) else None,
    )
