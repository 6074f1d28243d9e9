"""Facet: the points per value of a payload field, counted by every group and summed exactly.

Each group answers every value of its partition with its count (shard/facets.py); the coordinator
adds them up and returns the `limit` most common, ties by value (payload_order: numbers by value,
then strings by code point, then bools).
"""

from __future__ import annotations

import heapq
from collections import Counter

import grpc

from vecshard.errors import FailedPrecondition, InvalidArgument
from vecshard.payload import key_parts
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.payload_order import Key, key_to_value, value_key
from vecshard_server.coordinator import offload
from vecshard_server.coordinator.api.base import Family
from vecshard_server.coordinator.payload_inputs import check_filter
from vecshard_server.coordinator.shard_api import FACET

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
INLINE_COUNTS = 10_000  # values merged on the event loop; more: on a worker thread


def top_counts(replies: list[pb.FacetResponse], limit: int) -> pb.FacetResponse:
    """The groups' counts summed per value, the `limit` most common first, ties by value."""
    counts: Counter[Key] = Counter()
    for reply in replies:
        for c in reply.counts:
            key = value_key(c.value)
            if key is None:
                raise FailedPrecondition("a shard answered a facet value that is no scalar")
            counts[key] += c.count
    best = heapq.nsmallest(limit, counts.items(), key=lambda e: (-e[1], e[0]))
    return pb.FacetResponse(counts=[pb.FacetCount(value=key_to_value(k), count=n) for k, n in best])


class Facets(Family):
    async def Facet(self, request: pb.FacetRequest, context: grpc.aio.ServicerContext) -> pb.FacetResponse:
        """The `limit` most common values of the field among the points matching the filter."""
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        key_parts(request.key, "key")
        limit = request.limit or DEFAULT_LIMIT
        if limit > MAX_LIMIT:
            raise InvalidArgument(f"limit must be 1 to {MAX_LIMIT:,} values (0 = {DEFAULT_LIMIT}), got {limit:,}")
        sent = pb.FacetRequest(collection=request.collection, key=request.key)
        if request.HasField("filter"):
            check_filter(request.filter, self.settings)
            sent.filter.CopyFrom(request.filter)
        out = await coll.view.call(FACET, coll.view.all(sent), self._timeout(context))
        replies = [out.results[s] for s in sorted(out.results)]
        heavy = sum(len(r.counts) for r in replies) > INLINE_COUNTS
        return await offload.run(heavy, top_counts, replies, limit)
