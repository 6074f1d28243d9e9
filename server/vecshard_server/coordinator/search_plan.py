"""A Search request checked into a plan, before anything is embedded or sent to a shard.

`plan_search` runs every check that the request's sizes allow (k, nprobe, refine, the filter, the
embedding inputs, the cost limits) and prices it for admission; `SearchPlan.query` then turns the
request's vectors (given or embedded) into the one `ShardQuery` every shard gets, checking what only
the vectors show (dimension, finiteness, the reply's size) and normalising COSINE queries. A
refused request costs microseconds and has touched nothing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import InvalidArgument, ResourceExhausted
from vecshard.payload import key_parts
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common import string_ids
from vecshard_server.common.config import Settings
from vecshard_server.common.results import pad_distance
from vecshard_server.common.search_values import ShardHits, ShardQuery
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator.admission import input_rows, search_cost
from vecshard_server.coordinator.catalog import Collection
from vecshard_server.coordinator.inputs import (
    check_search_cost,
    normalize_rows,
    refine_of,
    search_chunk_rows,
    vectors_visited,
)
from vecshard_server.coordinator.payload_inputs import check_filter
from vecshard_server.coordinator.stored import point_ids
from vecshard_server.embedding.service import check_embed_inputs

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
DEFAULT_GROUP_SIZE = 3  # hits per group when group_size is 0
STORED_COPIES = 3  # the stored points' vectors, held as the groups' replies, assembled, and as queries


@dataclass(frozen=True)
class SearchPlan:
    """A checked Search: what it asks of the shards and what it may cost."""

    coll: Collection
    k: int
    nprobe: int
    refine: int  # candidates per result (1: no re-ranking)
    per_query: int  # about how many stored vectors one query is compared with
    cost: int  # bytes admitted while it runs
    with_payload: bool
    filtered: bool
    allow_partial: bool
    nq_sent: int  # queries the request carries (by its sizes: before they are read)
    offset: int = 0  # best hits of each query skipped (paging)
    threshold: float | None = None  # score_threshold: hits beyond it become padding
    with_vectors: bool = False  # each hit's stored vector (the shards send it with the hit)
    string_ids: bool = False  # a string-id collection: hits' strings come from their payloads
    group_by: str = ""  # group the hits by this payload field (groups_merge.py)
    group_size: int = 0
    source: Source | None = None  # queries that are stored points (query_ids, recommend)
    filter: ppb.Filter | None = None  # the filter the shards get (the request's, with recommend's ids left out)

    @property
    def own(self) -> I64 | None:
        """query_ids: each query row's own point, left out of the row's hits."""
        return self.source.ids if self.source is not None and self.source.own else None

    @property
    def fetch(self) -> int:
        """Hits per query the shards and the merge produce: the page's, those it skips, and (a search
        by stored points, not grouped) one more for the point itself."""
        return self.k + self.offset + (1 if self.own is not None and not self.group_by else 0)

    @property
    def coalescable(self) -> bool:
        """A plain search, whose answer depends on nothing but its query rows (coalesce.py)."""
        plain = not (self.with_payload or self.filtered or self.with_vectors or self.string_ids)
        return plain and not self.group_by

    @property
    def shard_payloads(self) -> bool:
        """Whether the shards send payloads: asked for, or holding the hits' string ids."""
        return self.with_payload or self.string_ids

    @property
    def width(self) -> int:
        """Results each shard answers per query."""
        return self.fetch * self.refine

    def page(self, merged: ShardHits, rows: slice = slice(None)) -> ShardHits:
        """The merged top (offset + k) cut to the page asked for (columns offset .. offset + k - 1),
        with hits beyond the score threshold made padding (id -1; they come last: rows are best
        first). A search by stored points first leaves each row's own point out (`rows`: which of
        the request's queries the merged rows are)."""
        own = self.own
        if own is not None and not self.group_by:
            merged = _without_own(merged, own[rows])
        return cut_page(merged, self.offset, self.k, self.threshold, self.coll.spec.larger_is_better)

    def describe(self) -> str:
        return f"a Search of {self.nq_sent} queries, k={self.k}"

    def chunk_rows(self, settings: Settings) -> int:
        """Queries per chunk of a big search (each chunk a short faiss call on the shards)."""
        return search_chunk_rows(settings, self.coll.spec.dim, self.width, self.per_query)

    def query(self, request: pb.SearchRequest, queries: wire.FloatArray, settings: Settings) -> ShardQuery:
        """The query every shard gets: the vectors checked (count, dimension, finite, the reply
        within the message limit) and normalised for COSINE."""
        spec = self.coll.spec
        nq = queries.shape[0]
        if nq > settings.max_batch:
            raise ResourceExhausted(f"{nq} queries in one request, over max_batch={settings.max_batch}: split it")
        check_search_cost(settings, spec, nq, self.width, self.per_query)
        wire.check_vectors(queries, spec.dim, "queries")
        if nq * self.fetch > settings.max_results:
            raise ResourceExhausted(
                f"nq * (offset + k) = {nq * self.fetch} results would exceed the message limit "
                f"({settings.max_results} results): send fewer queries per call or a smaller k"
            )
        if spec.metric.value == "cosine":
            queries = normalize_rows(queries, "queries")
        selector = request.with_payload if request.HasField("with_payload") else None
        if self.string_ids:
            selector = string_ids.selector(selector or ppb.PayloadSelector())
        return ShardQuery(
            collection=spec.name,
            queries=queries,
            k=self.fetch,
            nprobe=self.nprobe,
            refine=self.refine,
            filter=self.filter,
            with_payload=selector,
            with_vectors=self.with_vectors,
            group_by=self.group_by,
            group_size=self.group_size,
            exclude=self.own if self.group_by else None,
        )

    def present(self, merged: ShardHits) -> tuple[ShardHits, list[str] | None]:
        """The page as the reply shows it: a string-id collection's hits with their strings (read from
        the payloads, which stay only when asked for), vectors of the collection's dim."""
        return present_hits(merged, self.string_ids, self.with_payload, self.with_vectors, self.coll.spec.dim)


@dataclass(frozen=True)
class Source:
    """Queries made from stored points, read by id before the search: query_ids (one query per
    point, `own`: each left out of its own hits) or a recommendation (one query from `positives`
    points, then the negative ones)."""

    ids: I64
    keys: list[str] | None  # their strings (string-id collections)
    positives: int
    own: bool

    def queries(self, coll: Collection, vectors: F32) -> F32:
        """The queries from the points' vectors: theirs (query_ids), or Qdrant's average vector
        avg(positive) + (avg(positive) - avg(negative)), or avg(positive) without negatives."""
        if self.own:
            return vectors
        pos = vectors[: self.positives].astype(np.float64).mean(axis=0)
        q = pos if self.positives == vectors.shape[0] else 2 * pos - vectors[self.positives :].mean(axis=0)
        if coll.spec.metric.value == "cosine" and not np.any(q):
            raise InvalidArgument(
                f"the recommendation's query vector is all zeros (the negatives cancel the positives) and "
                f"collection {coll.spec.name!r} is COSINE: change the positive or negative ids"
            )
        return np.ascontiguousarray(q[None, :], dtype=np.float32)


def _source(request: pb.SearchRequest, spec: CollectionSpec, settings: Settings) -> Source | None:
    """The stored points a Search's queries come from (None: it sends queries, texts or images)."""
    by_ids = bool(request.query_ids or request.query_string_ids)
    recommend = request.HasField("recommend")
    if not by_ids and not recommend:
        return None
    if request.queries.rows or request.queries.data or request.texts or request.images or (by_ids and recommend):
        raise InvalidArgument("send one of queries, texts, images, query_ids or recommend")
    if by_ids:
        ids, keys = point_ids(settings, spec, request.query_ids, request.query_string_ids, "query_ids")
        return Source(ids, keys, 0, True)
    r = request.recommend
    if not (r.positive or r.positive_string_ids):
        raise InvalidArgument("recommend needs at least one positive id")
    pos, pos_keys = point_ids(settings, spec, r.positive, r.positive_string_ids, "recommend.positive")
    neg: I64 = np.empty(0, np.int64)
    neg_keys: list[str] | None = [] if spec.string_ids else None
    if r.negative or r.negative_string_ids:
        neg, neg_keys = point_ids(settings, spec, r.negative, r.negative_string_ids, "recommend.negative")
    keys = pos_keys + neg_keys if pos_keys is not None and neg_keys is not None else None
    return Source(np.concatenate([pos, neg]), keys, pos.size, False)


def _shard_filter(request: pb.SearchRequest, source: Source | None) -> ppb.Filter | None:
    """The request's filter; a recommendation's points are left out of its hits (must_not has_id)."""
    f = request.filter if request.HasField("filter") else None
    if source is None or source.own:
        return f
    out = ppb.Filter(must_not=[ppb.Condition(has_id=wire.pack_ids(np.unique(source.ids)))])
    if f is not None:
        out.must.append(ppb.Condition(filter=f))
    return out


def _group_size(request: pb.SearchRequest, settings: Settings) -> int:
    """The checked group size of a grouped search (0: not grouped)."""
    if not request.group_by:
        if request.group_size:
            raise InvalidArgument("group_size applies with group_by: set group_by, or leave group_size 0")
        return 0
    key_parts(request.group_by, "group_by")
    if request.offset:
        raise InvalidArgument(
            "offset pages flat hits and does not apply with group_by: ask for more groups (a larger k) instead"
        )
    if request.refine_factor > 1:
        raise InvalidArgument("refine_factor does not apply with group_by (groups use the index's distances): leave 0")
    size = request.group_size or DEFAULT_GROUP_SIZE
    if request.k * size > settings.max_k:
        raise InvalidArgument(
            f"k * group_size = {request.k} * {size} = {request.k * size} hits, over max_k={settings.max_k}: "
            "ask for fewer groups or smaller ones"
        )
    return size


def plan_search(request: pb.SearchRequest, coll: Collection, settings: Settings, request_bytes: int = 0) -> SearchPlan:
    """Every check of a Search that its sizes allow, before its vectors are read or embedded.
    request_bytes: the request's size when it was large (rpc.request_bytes), else 0."""
    spec = coll.spec
    k, offset = request.k, request.offset
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(f"k must be between 1 and max_k={settings.max_k}, got {k}")
    if k + offset > settings.max_k:
        raise InvalidArgument(
            f"offset + k = {offset + k} exceeds max_k={settings.max_k}: a page reaches at most max_k hits deep; "
            "send a smaller offset or k"
        )
    group_size = _group_size(request, settings)
    threshold = request.score_threshold if request.HasField("score_threshold") else None
    if threshold is not None and not math.isfinite(threshold):
        raise InvalidArgument(f"score_threshold must be a finite number, got {threshold}")
    if request.nprobe and not spec.is_ivf:
        raise InvalidArgument(f"nprobe applies to IVF collections; {spec.name!r} is FLAT: leave nprobe 0")
    refine = 1 if group_size else refine_of(request, spec, settings)
    if request.nprobe > spec.nlist:
        raise InvalidArgument(f"nprobe ({request.nprobe}) cannot exceed the collection's nlist ({spec.nlist})")
    if request.HasField("filter"):
        check_filter(request.filter, settings)
    source = _source(request, spec, settings)
    if source is not None and source.own and not group_size and k + offset + 1 > settings.max_k:
        raise InvalidArgument(
            f"offset + k = {offset + k}: a search by stored points reaches one hit deeper (the point itself), at "
            f"most max_k={settings.max_k}; send a smaller offset or k"
        )
    if request.texts or request.images:
        check_embed_inputs(request.texts, request.images, settings)
    if source is not None:
        nq_sent = source.ids.size if source.own else 1
    else:
        nq_sent = input_rows(request.queries, len(request.texts), len(request.images), spec.dim, request_bytes)
    nprobe = request.nprobe or spec.nprobe
    per_query = vectors_visited(spec, coll.count, coll.trained, nprobe)
    width = k * group_size if group_size else (k + offset + (1 if source is not None and source.own else 0)) * refine
    check_search_cost(settings, spec, nq_sent, width, per_query)
    shard_filter = _shard_filter(request, source)
    return SearchPlan(
        coll=coll,
        k=k,
        nprobe=nprobe,
        refine=refine,
        per_query=per_query,
        cost=search_cost(request, spec.dim, nq_sent, request_bytes) * max(1, group_size)
        + (STORED_COPIES * 4 * spec.dim * source.ids.size if source is not None else 0),
        with_payload=request.with_payload.enable,
        filtered=shard_filter is not None,
        allow_partial=request.allow_partial,
        nq_sent=nq_sent,
        offset=offset,
        threshold=threshold,
        with_vectors=request.with_vectors,
        string_ids=spec.string_ids,
        group_by=request.group_by,
        group_size=group_size,
        source=source,
        filter=shard_filter,
    )


def cut_page(merged: ShardHits, offset: int, k: int, threshold: float | None, larger: bool) -> ShardHits:
    """Merged hits (the best offset + k per query) cut to the page asked for (columns offset ..
    offset + k - 1), with hits beyond the score threshold (in the `larger` direction: kept when >=
    it for scores, <= it for distances) made padding (id -1; they come last: rows are best first)."""
    if not offset and threshold is None:
        return merged
    o, width = offset, merged.ids.shape[1]
    D, I = merged.distances[:, o : o + k].copy(), merged.ids[:, o : o + k].copy()
    nq = D.shape[0]
    taken = np.add.outer(np.arange(nq) * width, np.arange(o, o + D.shape[1])).reshape(-1)
    payloads = [merged.payloads[j] for j in taken.tolist()] if merged.payloads else []
    vectors = merged.vectors[taken] if merged.vectors is not None else None
    if threshold is not None:
        beyond = (D < threshold) if larger else (D > threshold)
        beyond &= I >= 0
        I[beyond] = -1
        D[beyond] = pad_distance(larger)
        flat = np.flatnonzero(beyond.reshape(-1))
        if payloads:
            for j in flat.tolist():
                payloads[j] = ppb.Payload()
        if vectors is not None:
            vectors[flat] = 0
    return ShardHits(D, I, None, payloads, merged.plans, vectors)


def present_hits(
    merged: ShardHits, strings: bool, with_payload: bool, with_vectors: bool, dim: int
) -> tuple[ShardHits, list[str] | None]:
    """A page as the reply shows it: a string-id collection's hits with their strings (read from the
    payloads, which stay only when asked for; `strings`: a string-id collection), vectors of the
    collection's dim (zeros for padding)."""
    keys = None
    if strings:
        keys, payloads = string_ids.split(merged.payloads)
        merged = dataclasses.replace(merged, payloads=payloads if with_payload else [])
    if with_vectors:
        n = merged.ids.size
        if merged.vectors is None or merged.vectors.shape != (n, dim):
            merged = dataclasses.replace(merged, vectors=np.zeros((n, dim), dtype=np.float32))
    return merged, keys


def _without_own(merged: ShardHits, own: I64) -> ShardHits:
    """Each row without its own point (or, where the point is not among its hits, without its last
    column): a search for one hit more, less the point itself, is the search of all but the point."""
    I = merged.ids
    nq, w = I.shape
    hit = I == own[:, None]
    drop = np.where(hit.any(axis=1), hit.argmax(axis=1), w - 1)
    keep = np.ones((nq, w), dtype=bool)
    keep[np.arange(nq), drop] = False
    flat = np.flatnonzero(keep.reshape(-1))
    payloads = [merged.payloads[j] for j in flat.tolist()] if merged.payloads else []
    vectors = merged.vectors[flat] if merged.vectors is not None else None
    D = merged.distances[keep].reshape(nq, w - 1)
    return ShardHits(D, I[keep].reshape(nq, w - 1), None, payloads, merged.plans, vectors)
