"""A Search request checked into a plan, before anything is embedded or sent to a shard.

`plan_search` runs every check that the request's sizes allow (k, nprobe, refine, the filter, the
embedding inputs, the cost limits) and prices it for admission; `SearchPlan.query` then turns the
request's vectors (given or embedded) into the one `ShardQuery` every shard gets, checking what only
the vectors show (dimension, finiteness, the reply's size) and normalising COSINE queries. A
refused request costs microseconds and has touched nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from vecshard import wire
from vecshard.errors import InvalidArgument, ResourceExhausted
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.search_values import ShardQuery
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

    @property
    def width(self) -> int:
        """Results each shard answers per query."""
        return self.k * self.refine

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
        if nq * self.k > settings.max_results:
            raise ResourceExhausted(
                f"nq * k = {nq * self.k} results would exceed the message limit ({settings.max_results} results): "
                "send fewer queries per call or a smaller k"
            )
        if spec.metric.value == "cosine":
            queries = normalize_rows(queries, "queries")
        return ShardQuery(
            collection=spec.name,
            queries=queries,
            k=self.k,
            nprobe=self.nprobe,
            refine=self.refine,
            filter=request.filter if self.filtered else None,
            with_payload=request.with_payload if request.HasField("with_payload") else None,
        )


def plan_search(request: pb.SearchRequest, coll: Collection, settings: Settings, request_bytes: int = 0) -> SearchPlan:
    """Every check of a Search that its sizes allow, before its vectors are read or embedded.
    request_bytes: the request's size when it was large (rpc.request_bytes), else 0."""
    spec = coll.spec
    k = request.k
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(f"k must be between 1 and max_k={settings.max_k}, got {k}")
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
    check_search_cost(settings, spec, nq_sent, k * refine, per_query)
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
    )
