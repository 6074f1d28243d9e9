"""Keyword (BM25) and hybrid searches at the coordinator.

A keyword search runs in two phases, as Elasticsearch's dfs_query_then_fetch does, so that every
shard scores with the whole collection's statistics and the result is the same on 1 or S shards:

1. KEYWORD_STATS to one replica of every group of the collection's current placement: each shard
   analyses the query texts with the TEXT index's analyzer and answers the terms with their document
   frequencies there, and its document and token counts. The coordinator sums them (every shard
   analyses alike: the terms must agree).
2. KEYWORD_SEARCH with the collection's numbers (documents, tokens, per-term df) to the groups that
   answered: each answers its top `depth` by BM25 (higher is better, ties by id), merged here as a
   dense search's lists are (merge.merge_hits), then paged (offset, score_threshold).

A hybrid search (queries or texts plus keywords) runs the dense leg (api/search.py) and the keyword
leg concurrently, each for `candidates` hits per query, with the same filter, and fuses them
(fusion.py). This module holds the request's checks (`plan_keywords`), the two phases
(`keyword_leg`) and the replies; it asks the shards only through the ShardView it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecshard import wire
from vecshard.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common import string_ids
from vecshard_server.common.config import Settings
from vecshard_server.common.results import pad_distance
from vecshard_server.common.search_values import ShardHits
from vecshard_server.coordinator import fusion, offload
from vecshard_server.coordinator.admission import RESULT_BYTES, RESULT_COPIES
from vecshard_server.coordinator.catalog import Collection
from vecshard_server.coordinator.fanout import TOLERABLE, Fanout, ShardView
from vecshard_server.coordinator.merge import merge_hits
from vecshard_server.coordinator.payload_inputs import check_filter
from vecshard_server.coordinator.search_plan import cut_page, present_hits
from vecshard_server.coordinator.shard_api import KEYWORD_SEARCH, KEYWORD_STATS

TEXT = ppb.PAYLOAD_INDEX_TYPE_TEXT
DEFAULT_CANDIDATES = 100  # hybrid: hits per leg at least (candidates 0: max(offset + k, this))
FUSIONS = {pb.FUSION_UNSPECIFIED: "rrf", pb.FUSION_RRF: "rrf", pb.FUSION_LINEAR: "linear"}
HYBRID_FIELDS = ("fusion", "rrf_k", "weights", "candidates")
CREATE_HINT = 'create one: create_payload_index(collection, field, "text") (CreatePayloadIndex with type TEXT)'


def index_types(coll: Collection) -> dict[str, set[int]]:
    """The payload indexes the catalog knows on the groups of the current placement: field -> types."""
    out: dict[str, set[int]] = {}
    for g in range(len(coll.view)):
        for f, t in coll.shard_indexes.get(g, ()):
            out.setdefault(f, set()).add(t)
    return out


def text_field(request: pb.SearchRequest, coll: Collection, final: bool) -> str | None:
    """The TEXT index a keyword search reads: keyword_field, or the collection's only one. None
    when the catalog cannot tell (it may be stale: refresh it, then ask again with `final`);
    with `final`, FAILED_PRECONDITION when the collection has no TEXT index and INVALID_ARGUMENT
    when keyword_field is not one (or is needed to choose among several)."""
    types = index_types(coll)
    texts = sorted(f for f, t in types.items() if TEXT in t)
    wanted = request.keyword_field
    if wanted and wanted in texts:
        return wanted
    if not wanted and len(texts) == 1:
        return texts[0]
    if not final:
        return None
    if not texts:
        raise FailedPrecondition(
            f"collection {coll.name!r} has no TEXT payload index to search by keyword: {CREATE_HINT}"
        )
    if not wanted:
        raise InvalidArgument(
            f"collection {coll.name!r} has several TEXT indexes ({', '.join(texts)}): name one with keyword_field"
        )
    other = f"a {_type_name(types[wanted])} index, not a TEXT one" if wanted in types else "not indexed"
    raise InvalidArgument(
        f"keyword_field {wanted!r} is {other}: keyword search reads a TEXT index; {coll.name!r} has "
        f"{', '.join(texts)} (or {CREATE_HINT})"
    )


def _type_name(types: set[int]) -> str:
    return "/".join(ppb.PayloadIndexType.Name(t).removeprefix("PAYLOAD_INDEX_TYPE_") for t in sorted(types))


def check_without_keywords(request: pb.SearchRequest) -> None:
    """A Search without keywords sets none of the keyword and hybrid options."""
    given = [f for f in ("keyword_field", *HYBRID_FIELDS) if getattr(request, f)]
    if given:
        raise InvalidArgument(
            f"{_options(given)} to keyword and hybrid searches: send keywords too, or leave them unset"
        )


def _options(names: list[str]) -> str:
    """'a applies' / 'a, b apply' (the options a message names)."""
    return f"{', '.join(names)} {'applies' if len(names) == 1 else 'apply'}"


def has_dense(request: pb.SearchRequest) -> bool:
    """Whether a Search carries a dense query (vectors, texts, images, stored points)."""
    r = request
    return bool(
        r.queries.rows or r.queries.data or r.texts or r.images or r.query_ids or r.query_string_ids
    ) or r.HasField("recommend")


@dataclass(frozen=True)
class KeywordPlan:
    """A checked keyword (or hybrid) Search: what the keyword leg asks of the shards and how the
    result is cut. `depth`: hits per query the leg produces (offset + k alone, candidates in a
    hybrid search)."""

    coll: Collection
    field: str
    texts: tuple[str, ...]
    k: int
    offset: int
    threshold: float | None
    depth: int
    filter: ppb.Filter | None
    with_payload: ppb.PayloadSelector | None
    with_vectors: bool
    allow_partial: bool
    cost: int
    hybrid: bool = False
    fusion_mode: str = "rrf"  # hybrid: "rrf" or "linear"
    rrf_k: int = fusion.RRF_K
    weights: tuple[float, float] = (1.0, 1.0)

    @property
    def string_ids(self) -> bool:
        return self.coll.spec.string_ids

    @property
    def wants_payloads(self) -> bool:
        return self.with_payload is not None and self.with_payload.enable

    @property
    def selector(self) -> ppb.PayloadSelector | None:
        """What payload the shards send with each hit (a string-id collection's strings too)."""
        if self.string_ids:
            return string_ids.selector(self.with_payload or ppb.PayloadSelector())
        return self.with_payload if self.wants_payloads else None

    @property
    def shard_payloads(self) -> bool:
        return self.wants_payloads or self.string_ids

    def describe(self) -> str:
        kind = "a hybrid Search" if self.hybrid else "a keyword Search"
        return f"{kind} of {len(self.texts)} keyword texts, k={self.k}"

    def texts_for(self, nq: int) -> list[str]:
        """The keyword text of each of nq queries: one for all, or one each."""
        if len(self.texts) == 1:
            return list(self.texts) * nq
        if len(self.texts) != nq:
            raise InvalidArgument(
                f"got {len(self.texts)} keyword texts for {nq} queries: send one for all of them, or one per query"
            )
        return list(self.texts)


def plan_keywords(request: pb.SearchRequest, coll: Collection, settings: Settings, field: str = "") -> KeywordPlan:
    """Every check of a keyword or hybrid Search that needs no shard (the dense leg of a hybrid one
    is checked by search_plan.plan_search); `field`: the TEXT index read (text_field)."""
    k, offset, hybrid = request.k, request.offset, has_dense(request)
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(f"k must be between 1 and max_k={settings.max_k}, got {k}")
    if k + offset > settings.max_k:
        raise InvalidArgument(
            f"offset + k = {offset + k} exceeds max_k={settings.max_k}: a page reaches at most max_k hits deep; "
            "send a smaller offset or k"
        )
    if request.group_by or request.group_size:
        raise InvalidArgument("group_by does not apply to keyword or hybrid searches: leave group_by empty")
    threshold = request.score_threshold if request.HasField("score_threshold") else None
    if threshold is not None and not math.isfinite(threshold):
        raise InvalidArgument(f"score_threshold must be a finite number, got {threshold}")
    texts = tuple(request.keywords)
    if len(texts) > settings.max_batch:
        raise ResourceExhausted(f"{len(texts)} keyword texts in one request, over max_batch={settings.max_batch}")
    for i, t in enumerate(texts):
        if len(t) > settings.max_text_chars:
            raise ResourceExhausted(
                f"keywords[{i}] has {len(t)} characters, over max_text_chars={settings.max_text_chars} "
                "(VECSHARD_MAX_TEXT_CHARS): send shorter keyword texts"
            )
    if request.HasField("filter"):
        check_filter(request.filter, settings)
    if hybrid:
        fused, rrf_k, weights, depth = _fusion(request, settings)
    else:
        _keyword_only(request)
        fused, rrf_k, weights, depth = "rrf", fusion.RRF_K, (1.0, 1.0), k + offset
    nq = len(texts) if not hybrid or len(texts) > 1 else 1
    if nq * depth > settings.max_search_results:
        raise ResourceExhausted(
            f"nq * k = {nq} * {depth} = {nq * depth} results, over max_search_results={settings.max_search_results} "
            "(VECSHARD_MAX_SEARCH_RESULTS): send fewer queries per call or a smaller k (or candidates)"
        )
    cost = RESULT_COPIES * RESULT_BYTES * nq * depth * max(1, len(coll.view)) + sum(len(t) for t in texts)
    return KeywordPlan(
        coll=coll,
        field=field,
        texts=texts,
        k=k,
        offset=offset,
        threshold=threshold,
        depth=depth,
        filter=request.filter if request.HasField("filter") else None,
        with_payload=request.with_payload if request.HasField("with_payload") else None,
        with_vectors=request.with_vectors,
        allow_partial=request.allow_partial,
        cost=cost,
        hybrid=hybrid,
        fusion_mode=fused,
        rrf_k=rrf_k,
        weights=weights,
    )


def _keyword_only(request: pb.SearchRequest) -> None:
    """What a keyword search without a dense query refuses: the options of a dense or hybrid one."""
    given = [f for f in HYBRID_FIELDS if getattr(request, f)]
    if given:
        raise InvalidArgument(
            f"{_options(given)} to hybrid searches (keywords with queries or texts): send a dense query too, "
            "or leave them unset"
        )
    if request.nprobe or request.refine_factor > 1:
        raise InvalidArgument("nprobe and refine_factor apply to the dense leg: a keyword search leaves them 0")


def _fusion(request: pb.SearchRequest, settings: Settings) -> tuple[str, int, tuple[float, float], int]:
    """A hybrid search's fusion, rank constant, weights and candidates per leg, checked."""
    fused = FUSIONS.get(request.fusion)
    if fused is None:
        raise InvalidArgument(f"fusion {request.fusion} is not one of FUSION_RRF (1) or FUSION_LINEAR (2)")
    if fused == "rrf" and request.weights:
        raise InvalidArgument("weights apply to fusion LINEAR; RRF fuses ranks (set rrf_k): leave weights empty")
    if fused == "linear" and request.rrf_k:
        raise InvalidArgument("rrf_k applies to fusion RRF; LINEAR fuses normalised scores (set weights): leave 0")
    weights = (1.0, 1.0)
    if request.weights:
        if len(request.weights) != 2:
            raise InvalidArgument(f"weights are (dense, keyword): send exactly 2 values, got {len(request.weights)}")
        wd, wk = (float(w) for w in request.weights)
        if not (math.isfinite(wd) and math.isfinite(wk) and wd >= 0 and wk >= 0):
            raise InvalidArgument(f"weights must be finite and >= 0, got ({wd}, {wk})")
        if wd == 0 and wk == 0:
            raise InvalidArgument("weights are both 0: every hit would score 0; give at least one leg a weight")
        weights = (wd, wk)
    need = request.offset + request.k
    if request.candidates > settings.max_k:
        raise InvalidArgument(f"candidates must be at most max_k={settings.max_k}, got {request.candidates}")
    depth = request.candidates or min(settings.max_k, max(need, DEFAULT_CANDIDATES))
    return fused, request.rrf_k or fusion.RRF_K, weights, depth


def dense_request(request: pb.SearchRequest, depth: int) -> pb.SearchRequest:
    """The dense leg of a hybrid search: the request's query, filter and hit options, for its best
    `depth` (no offset or threshold: those apply to the fused list)."""
    out = pb.SearchRequest()
    out.CopyFrom(request)
    for f in ("keywords", "keyword_field", "fusion", "rrf_k", "weights", "candidates", "score_threshold", "offset"):
        out.ClearField(f)
    out.k = depth
    return out


@dataclass(frozen=True)
class Stats:
    """The collection's keyword statistics for a search: documents, tokens, and per query text its
    terms with their document frequencies (summed over the groups)."""

    documents: int
    tokens: int
    queries: list[spb.QueryTerms]


def summed_stats(results: Mapping[int, spb.KeywordStatsResponse], n: int, view: ShardView) -> Stats:
    """The groups' KeywordStats answers summed: documents, tokens and each term's df."""
    documents = tokens = 0
    terms: list[list[str]] | None = None
    df: list[np.ndarray] = []
    for g in sorted(results):
        r = results[g]
        if len(r.queries) != n:
            raise FailedPrecondition(f"{view.shards[g].name} answered {len(r.queries)} keyword texts for {n}")
        mine = [list(q.terms) for q in r.queries]
        if terms is None:
            terms, df = mine, [np.zeros(len(t), np.uint64) for t in mine]
        elif mine != terms:
            raise FailedPrecondition(
                f"{view.shards[g].name} analyses the keyword texts into other terms than "
                f"{view.shards[min(results)].name}: its TEXT index has another analyzer; drop the index and create it "
                "again"
            )
        for i, q in enumerate(r.queries):
            df[i] += np.asarray(q.df, dtype=np.uint64)
        documents += r.documents
        tokens += r.tokens
    queries = [spb.QueryTerms(terms=t, df=d.tolist()) for t, d in zip(terms or [], df, strict=True)]
    return Stats(documents, tokens, queries)


def checked(out: Fanout[Any], view: ShardView) -> None:
    """A read fan-out's failures: only tolerable ones may remain (with allow_partial), and at
    least one group must have answered."""
    for s, err in out.failures.items():
        if err.code() not in TOLERABLE:
            raise view.error(s, err)
    if out.failures and not out.results:
        raise Unavailable("no shard answered: " + "; ".join(view.error(s, e).details for s, e in out.failures.items()))


async def keyword_leg(plan: KeywordPlan, texts: list[str], timeout: Callable[[], float]) -> tuple[ShardHits, set[int]]:
    """The keyword leg for these texts (one per query): the merged best `plan.depth` per query by
    BM25 over the collection's statistics, and the groups that failed (with allow_partial)."""
    view, nq = plan.coll.view, len(texts)
    unique = list(dict.fromkeys(texts))
    ask = spb.KeywordStatsRequest(collection=plan.coll.spec.name, field=plan.field, texts=unique)
    fail_fast = not plan.allow_partial
    first = await view.call(KEYWORD_STATS, view.all(ask), timeout(), fail_fast=fail_fast)
    checked(first, view)
    stats = summed_stats(first.results, len(unique), view)
    terms = dict(zip(unique, stats.queries, strict=True))
    queries = [terms[t] for t in texts]
    if not stats.documents or not any(q.terms for q in queries):
        return padding(nq, plan.depth, plan.shard_payloads, plan.with_vectors, plan.coll.spec.dim), set(first.failures)
    req = spb.KeywordSearchRequest(
        collection=plan.coll.spec.name,
        field=plan.field,
        queries=queries,
        documents=stats.documents,
        tokens=stats.tokens,
        k=plan.depth,
        with_vectors=plan.with_vectors,
    )
    if plan.filter is not None:
        req.filter.CopyFrom(plan.filter)
    selector = plan.selector
    if selector is not None:
        req.with_payload.CopyFrom(selector)
    second = await view.call(KEYWORD_SEARCH, {g: req for g in first.results}, timeout(), fail_fast=fail_fast)
    checked(second, view)
    heavy = nq * plan.depth * len(second.results) > offload.INLINE_RESULTS
    merged = await offload.run(heavy, _merged, second.results, nq, plan, view)
    return merged, set(first.failures) | set(second.failures)


def _merged(results: Mapping[int, pb.SearchResponse], nq: int, plan: KeywordPlan, view: ShardView) -> ShardHits:
    """The groups' KeywordSearch answers merged (higher is better, ties by id, deduplicated)."""
    hits = {}
    for g, resp in results.items():
        h = ShardHits.from_proto(resp, nq, plan.depth)
        for filter_plan in h.plans:
            filter_plan.shard = view.shards[g].name
        hits[g] = h
    return merge_hits(hits, plan.depth, True, plan.shard_payloads, plan.with_vectors)


def padding(nq: int, k: int, payloads: bool, vectors: bool, dim: int) -> ShardHits:
    """nq rows of k missing hits (higher is better)."""
    return ShardHits(
        np.full((nq, k), pad_distance(True), np.float32),
        np.full((nq, k), -1, np.int64),
        None,
        [ppb.Payload() for _ in range(nq * k)] if payloads else [],
        [],
        np.zeros((nq * k, dim), np.float32) if vectors else None,
    )


def keyword_reply(plan: KeywordPlan, merged: ShardHits) -> pb.SearchResponse:
    """A keyword search's reply: the merged hits paged (offset, score_threshold kept when >=)."""
    page = cut_page(merged, plan.offset, plan.k, plan.threshold, True)
    shown, keys = present_hits(page, plan.string_ids, plan.wants_payloads, plan.with_vectors, plan.coll.spec.dim)
    resp = shown.to_proto()
    if keys is not None:
        resp.string_ids.extend(keys)
    resp.higher_is_better = True
    return resp


def hybrid_reply(plan: KeywordPlan, dense: ShardHits, keyword: ShardHits, larger: bool) -> pb.SearchResponse:
    """A hybrid search's reply: both legs fused (fusion.py), paged, with each hit's payload and
    vector from the leg that found it and each leg's score and rank. `keyword` has one row per
    query, or one for all of them (a single keyword text)."""
    nq = dense.ids.shape[0]
    k_ids, k_scores = keyword.ids, keyword.distances
    if k_ids.shape[0] != nq:
        k_ids, k_scores = np.repeat(k_ids, nq, axis=0), np.repeat(k_scores, nq, axis=0)
    d_leg = fusion.Leg(dense.ids, dense.distances, larger)
    k_leg = fusion.Leg(k_ids, k_scores, True)
    depth = plan.offset + plan.k
    if plan.fusion_mode == "linear":
        fused = fusion.linear(d_leg, k_leg, plan.weights, depth)
    else:
        fused = fusion.rrf(d_leg, k_leg, plan.rrf_k, depth)
    page = fused.page(plan.offset, plan.k, plan.threshold)
    chosen = page.ids.reshape(-1).tolist()
    payloads: list[ppb.Payload] = []
    if plan.shard_payloads:
        by_id = {**_by_id(keyword.ids, keyword.payloads), **_by_id(dense.ids, dense.payloads)}
        empty = ppb.Payload()
        payloads = [by_id.get(i, empty) if i >= 0 else empty for i in chosen]
    vectors = None
    if plan.with_vectors:
        vectors = np.zeros((len(chosen), plan.coll.spec.dim), np.float32)
        rows = {**_by_id(keyword.ids, keyword.vectors), **_by_id(dense.ids, dense.vectors)}
        for j, i in enumerate(chosen):
            if i >= 0 and i in rows:
                vectors[j] = rows[i]
    hits = ShardHits(page.scores, page.ids, None, payloads, [*dense.plans, *keyword.plans], vectors)
    shown, keys = present_hits(hits, plan.string_ids, plan.wants_payloads, plan.with_vectors, plan.coll.spec.dim)
    resp = shown.to_proto()
    if keys is not None:
        resp.string_ids.extend(keys)
    resp.higher_is_better = True
    resp.dense_scores = page.dense_scores.astype(wire.F32, copy=False).tobytes()
    resp.dense_ranks = page.dense_ranks.astype("<i4", copy=False).tobytes()
    resp.keyword_scores = page.keyword_scores.astype(wire.F32, copy=False).tobytes()
    resp.keyword_ranks = page.keyword_ranks.astype("<i4", copy=False).tobytes()
    return resp


def _by_id(ids: np.ndarray, items: Iterable[Any] | None) -> dict[int, Any]:
    """Each hit's item (payload or vector row) by id (items aligned with ids, row major)."""
    if items is None:
        return {}
    return {i: x for i, x in zip(ids.reshape(-1).tolist(), items, strict=False) if i >= 0}
