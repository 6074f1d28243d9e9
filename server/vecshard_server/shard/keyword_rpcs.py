"""The shard's keyword search RPCs: the two phases of a BM25 search over a TEXT payload index, as
Elasticsearch's dfs_query_then_fetch runs them.

KeywordStats analyses each query text with the index's analyzer and answers the terms with their
document frequencies here, and this partition's documents and tokens; the coordinator sums them over
the shard groups into the collection's statistics. KeywordSearch scores with those statistics, so
every shard scores as one index over the whole collection would, and answers its top k (ties by id),
padded as Search is (ids -1, scores -FLT_MAX). Both read the partition under its read lock, on the
read pool.
"""

from __future__ import annotations

import grpc
import numpy as np

from vecshard.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.results import pad_distance
from vecshard_server.common.search_values import ShardHits
from vecshard_server.shard.checks import check_reply_rows
from vecshard_server.shard.core import ShardCore
from vecshard_server.shard.engine import ShardIndex
from vecshard_server.shard.lookups import project_keyed
from vecshard_server.shard.payloads import PayloadStore
from vecshard_server.shard.text_index import TextIndex


def text_index_of(store: PayloadStore, field: str, collection: str) -> TextIndex:
    """The TEXT index of `field` ("": the collection's only one). FailedPrecondition when there is
    none; InvalidArgument when `field` has none, or "" names none of several."""
    texts = store.texts
    if not texts:
        raise FailedPrecondition(
            f"collection {collection!r} has no text index: create one with "
            f'create_payload_index({collection!r}, field, "text") before searching by keywords'
        )
    if not field:
        if len(texts) > 1:
            raise InvalidArgument(
                f"collection {collection!r} has text indexes on {', '.join(sorted(texts))}: name one as keyword_field"
            )
        return next(iter(texts.values()))
    index = texts.get(field)
    if index is None:
        raise InvalidArgument(
            f"field {field!r} of collection {collection!r} has no text index (its text indexes: "
            f"{', '.join(sorted(texts))}): name one of those as keyword_field, or create one on {field!r}"
        )
    return index


def keyword_stats(part: ShardIndex, field: str, texts: list[str]) -> spb.KeywordStatsResponse:
    """The first phase here: each text's terms (analysed, in order, repeats kept) with their document
    frequencies, and the partition's documents and tokens."""
    with part.reading() as points:
        index = text_index_of(points.payloads, field, part.spec.name)
        queries = []
        for text in texts:
            terms = index.analyzer.analyze(text)
            queries.append(spb.QueryTerms(terms=terms, df=index.stats(terms)[2]))
        return spb.KeywordStatsResponse(
            field=index.field, documents=index.documents, tokens=index.tokens, queries=queries
        )


def check_keyword_search(settings: Settings, part: ShardIndex, request: spb.KeywordSearchRequest) -> None:
    """Refuse what cannot be answered: k out of range, a reply over the limits, terms and frequencies
    that do not line up."""
    k, nq = request.k, len(request.queries)
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(f"k must be between 1 and max_k={settings.max_k}, got {k}")
    if nq * k > settings.max_results:
        raise ResourceExhausted(
            f"nq * k = {nq * k} results would exceed the message limit ({settings.max_results} results): send "
            "fewer queries per call or a smaller k"
        )
    if request.with_vectors:
        dim = part.spec.dim
        check_reply_rows(settings, nq * k, 4 * dim + 12, dim, "ask for at most {limit} hits with vectors")
    for i, q in enumerate(request.queries):
        if len(q.df) != len(q.terms):
            raise InvalidArgument(f"queries[{i}] has {len(q.terms)} terms but {len(q.df)} df: one df per term")


def keyword_search(part: ShardIndex, request: spb.KeywordSearchRequest) -> ShardHits:
    """The second phase here: each query's top k by BM25 with the request's statistics, among the
    points matching its filter, with payloads and vectors when asked."""
    nq, k = len(request.queries), int(request.k)
    f = request.filter if request.HasField("filter") else None
    D = np.full((nq, k), pad_distance(True), dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    with part.reading() as points:
        store = points.payloads
        index = text_index_of(store, request.field, part.spec.name)
        mask, unindexed = store.matching(f)
        ids = store.ids_by_slot()
        for row, q in enumerate(request.queries):
            scores, hits = index.score(list(q.terms), list(q.df), request.documents, request.tokens, k, mask, ids)
            D[row, : hits.size], I[row, : hits.size] = scores, hits
        selector = request.with_payload
        payloads = points.payloads_of(I.reshape(-1)) if selector.enable else []
        vectors = points.get(I.reshape(-1), False)[0] if request.with_vectors else None
    plans = []
    if f is not None:
        matches = int(np.count_nonzero(mask))
        plans.append(ppb.FilterPlan(plan="exact" if matches else "none", matches=matches, unindexed_fields=unindexed))
    wanted = [project_keyed(p, selector.fields) for p in payloads]
    return ShardHits(D, I, None, wanted, plans, vectors)


class KeywordRpcs(ShardCore):
    async def KeywordStats(
        self, request: spb.KeywordStatsRequest, context: grpc.aio.ServicerContext
    ) -> spb.KeywordStatsResponse:
        """Each text analysed by the field's TEXT index, with its terms' document frequencies here."""
        part = self._get(request.collection)
        return await self._run(self._reads, keyword_stats, part, request.field, list(request.texts))

    async def KeywordSearch(
        self, request: spb.KeywordSearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        """Each query's top k here by BM25 with the collection's statistics (higher is better)."""
        part = self._get(request.collection)
        check_keyword_search(self.settings, part, request)
        hits = await self._run(self._reads, keyword_search, part, request)
        reply = hits.to_proto()
        reply.higher_is_better = True
        return reply
