"""A Search request checked into a plan, before anything is embedded or sent to a shard.

`plan_search` runs every check that the request's sizes allow (k, nprobe, refine, the filter, the
embedding inputs, the cost limits) and prices it for admission; `SearchPlan.query` then turns the
request's vectors (given or embedded) into the one `ShardQuery` every shard gets, checking what only
the vectors show (dimension, finiteness, the reply's size) and normalising COSINE queries. A
refused request costs microseconds and has touched nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vecshard import wire
from vecshard.errors import InvalidArgument, ResourceExhausted
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.results import pad_distance
from vecshard_server.common.search_values import ShardHits, ShardQuery
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
from vecshard_server.embedding.service import check_embed_inputs


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

    @property
    def fetch(self) -> int:
        """Hits per query the shards and the merge produce: the page's and those it skips."""
        return self.k + self.offset

    @property
    def width(self) -> int:
        """Results each shard answers per query."""
        return self.fetch * self.refine

    def page(self, merged: ShardHits) -> ShardHits:
        """The merged top (offset + k) cut to the page asked for (columns offset .. offset + k - 1),
        with hits beyond the score threshold made padding (id -1; they come last: rows are best
        first)."""
        if not self.offset and self.threshold is None:
            return merged
        o, k, fetch = self.offset, self.k, self.fetch
        D, I = merged.distances[:, o : o + k].copy(), merged.ids[:, o : o + k].copy()
        payloads = [p for r in range(D.shape[0]) for p in merged.payloads[r * fetch + o : r * fetch + o + k]]
        if self.threshold is not None:
            larger = self.coll.spec.larger_is_better
            beyond = (D < self.threshold) if larger else (D > self.threshold)
            beyond &= I >= 0
            I[beyond] = -1
            D[beyond] = pad_distance(larger)
            if payloads:
                for j in np.flatnonzero(beyond.reshape(-1)).tolist():
                    payloads[j] = ppb.Payload()
        return ShardHits(D, I, None, payloads, merged.plans)

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
        return ShardQuery(
            collection=spec.name,
            queries=queries,
            k=self.fetch,
            nprobe=self.nprobe,
            refine=self.refine,
            filter=request.filter if self.filtered else None,
            with_payload=request.with_payload if request.HasField("with_payload") else None,
        )


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
    threshold = request.score_threshold if request.HasField("score_threshold") else None
    if threshold is not None and not math.isfinite(threshold):
        raise InvalidArgument(f"score_threshold must be a finite number, got {threshold}")
    if request.nprobe and not spec.is_ivf:
        raise InvalidArgument(f"nprobe applies to IVF collections; {spec.name!r} is FLAT: leave nprobe 0")
    refine = refine_of(request, spec, settings)
    if request.nprobe > spec.nlist:
        raise InvalidArgument(f"nprobe ({request.nprobe}) cannot exceed the collection's nlist ({spec.nlist})")
    filtered = request.HasField("filter")
    if filtered:
        check_filter(request.filter, settings)
    if request.texts or request.images:
        check_embed_inputs(request.texts, request.images, settings)
    nq_sent = input_rows(request.queries, len(request.texts), len(request.images), spec.dim, request_bytes)
    nprobe = request.nprobe or spec.nprobe
    per_query = vectors_visited(spec, coll.count, coll.trained, nprobe)
    check_search_cost(settings, spec, nq_sent, (k + offset) * refine, per_query)
    return SearchPlan(
        coll=coll,
        k=k,
        nprobe=nprobe,
        refine=refine,
        per_query=per_query,
        cost=search_cost(request, spec.dim, nq_sent, request_bytes),
        with_payload=request.with_payload.enable,
        filtered=filtered,
        allow_partial=request.allow_partial,
        nq_sent=nq_sent,
        offset=offset,
        threshold=threshold,
    )
