"""A grouped Search run across the shard groups (SearchRequest.group_by): the shards' best groups per
query, the global best k of them, a second round for the groups some shard did not report (per
query, restricted to exactly those groups' values), and the reply (groups_merge.py is why this is
exact)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import numpy as np

from vecshard import wire
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common import string_ids
from vecshard_server.common.payload_order import Key
from vecshard_server.common.search_values import Group, ShardHits, ShardQuery
from vecshard_server.coordinator.fanout import Fanout
from vecshard_server.coordinator.groups_merge import Candidate, merged_group, restricted, top_groups
from vecshard_server.coordinator.search_plan import SearchPlan

SearchShards = Callable[[ShardQuery], Awaitable[Fanout[ShardHits]]]
SECOND_ROUNDS = 8  # queries whose second round runs at once


async def grouped_search(
    plan: SearchPlan, query: ShardQuery, search: SearchShards
) -> tuple[pb.SearchResponse, set[int]]:
    """The reply's groups, and the shard groups that did not answer (with allow_partial)."""
    out = await search(query)
    failed = set(out.failures)
    answered = set(out.results)
    larger = plan.coll.spec.larger_is_better
    rows = [top_groups(out.results, r, plan.k, larger) for r in range(query.nq)]
    gate = asyncio.Semaphore(SECOND_ROUNDS)

    async def complete(r: int, partial: list[Candidate]) -> None:
        missing = [c.key for c in partial if set(c.parts) != answered]
        if not missing:
            return
        second = dataclasses.replace(
            query,
            queries=query.queries[r : r + 1],
            k=len(missing),
            filter=restricted(plan.filter, plan.group_by, missing),
            only=tuple(missing),
            exclude=query.exclude[r : r + 1] if query.exclude is not None else None,
        )
        async with gate:
            again = await search(second)
        failed.update(again.failures)
        parts: dict[Key, dict[int, Group]] = {}
        for s, hits in again.results.items():
            for g in hits.groups[0] if hits.groups else []:
                parts.setdefault(g.key, {})[s] = g
        for c in partial:
            if c.key in parts:
                c.parts = parts[c.key]

    await asyncio.gather(*(complete(r, partial) for r, partial in enumerate(rows)))
    resp = pb.SearchResponse(nq=query.nq, k=plan.k, plans=[p for h in out.results.values() for p in h.plans])
    for partial in rows:
        groups = resp.groups.add()
        for c in partial:
            g = merged_group(c.key, list(c.parts.values()), plan.group_size, larger, plan.threshold, plan.coll.spec.dim)
            if g.ids.size:
                groups.groups.append(_hit_group(plan, g))
    return resp, failed


def _hit_group(plan: SearchPlan, g: Group) -> pb.HitGroup:
    """A merged group as the reply shows it (string ids from the payloads, payloads only if asked)."""
    out = g.to_proto()
    if plan.string_ids:
        keys, payloads = string_ids.split(g.payloads)
        out.string_ids.extend(keys)
        del out.payloads[:]
        if plan.with_payload:
            out.payloads.extend(payloads)
    if plan.with_vectors and g.vectors is None:
        out.vectors.CopyFrom(wire.pack_matrix(np.zeros((g.ids.size, plan.coll.spec.dim), dtype=np.float32)))
    return out
