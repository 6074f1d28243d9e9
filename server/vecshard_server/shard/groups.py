"""Grouped searches on a partition (SearchRequest.group_by): each query's best k groups of hits by a
payload field's values, best group first (by its best hit), each with its best group_size hits.

Groups are what one pass over the hits in (distance, id) order makes: a hit joins the group of each
distinct value of its field (a list field: each distinct element), a value opens a group while fewer
than k are open (of two values opened by one hit, the smaller in payload_order first), and a group
takes hits until it holds group_size. Points without a scalar value of the field join no group.

The partition is searched among the points holding the field (and matching the filter) to a depth
that doubles until the row's k groups are full or every candidate was seen, all under one read
lock, so a shard's groups are exact for its data: the coordinator merges them (groups_merge.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.payload import key_parts
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.payload_order import Key, keys_of
from vecshard_server.common.search_values import Group, ShardHits, ShardQuery
from vecshard_server.shard.engine import ShardIndex
from vecshard_server.shard.lookups import project_keyed
from vecshard_server.shard.payloads import values_at
from vecshard_server.shard.points import Points

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
FIRST_DEPTH = 16  # hits per query of a grouped search's first pass, at least (2 * k * group_size)
GROUPED_RESULTS = 1 << 22  # hits held at once by a grouped search's pass (rows * depth), about


def group_filter(user: ppb.Filter | None, key: str) -> ppb.Filter:
    """The points a grouped search looks at: those holding the field (and matching the user's filter)."""
    f = ppb.Filter(must=[ppb.Condition(field=ppb.FieldCondition(key=key, exists=True))])
    if user is not None:
        f.must.append(ppb.Condition(filter=user))
    return f


def group_row(
    ids: list[int], keys: Callable[[int], list[Key]], k: int, size: int, exclude: int
) -> tuple[dict[Key, list[int]], bool]:
    """The groups of one row of hits (ids best first, -1 padding): value -> the positions of its hits,
    in the order the groups opened; and whether k groups of `size` hits each are full (later hits
    cannot change them)."""
    groups: dict[Key, list[int]] = {}
    full = 0
    for j, i in enumerate(ids):
        if i < 0:
            break
        if i == exclude:
            continue
        for key in keys(i):
            g = groups.get(key)
            if g is None:
                if len(groups) >= k:
                    continue
                g = groups[key] = []
            if len(g) < size:
                g.append(j)
                full += len(g) == size
        if full == k:
            return groups, True
    return groups, False


def grouped_search(part: ShardIndex, query: ShardQuery, exact_ratio: float) -> ShardHits:
    """This partition's best `query.k` groups per query, each of its best `query.group_size` hits
    (with payloads and vectors when asked for)."""
    path = key_parts(query.group_by, "group_by")
    f = group_filter(query.filter, query.group_by)
    nq, k, size = query.nq, query.k, query.group_size
    exclude = query.exclude.tolist() if query.exclude is not None else [-1] * nq
    found: list[list[tuple[Key, F32, I64]]] = [[] for _ in range(nq)]
    plans: list[ppb.FilterPlan] = []
    selector = query.with_payload if query.payloads_wanted else None
    with part.reading() as points:
        store = points.payloads
        cache: dict[int, list[Key]] = {}
        only = set(query.only) if query.only is not None else None

        def keys(i: int) -> list[Key]:
            got = cache.get(i)
            if got is None:
                payload = store.get(i)
                present, leaves = values_at(payload, path) if payload else (False, [])
                got = keys_of(leaves) if present else []
                cache[i] = got = [g for g in got if g in only] if only is not None else got
            return got

        searcher = points.searcher(ShardIndex._TIE_BUDGET)
        rows = np.arange(nq)
        depth = max(FIRST_DEPTH, 2 * k * size)
        last: ppb.FilterPlan | None = None
        while rows.size:
            step = max(1, GROUPED_RESULTS // depth)  # rows searched at once: bounded results in memory
            still: list[I64] = []
            for a in range(0, rows.size, step):
                chunk = rows[a : a + step]
                D, I, last = searcher.filtered(query.queries[chunk], depth, query.nprobe, f, exact_ratio)
                seen_all = depth >= last.matches
                done = np.zeros(chunk.size, dtype=bool)
                for r, row in enumerate(chunk.tolist()):
                    groups, complete = group_row(I[r].tolist(), keys, k, size, exclude[row])
                    if complete or seen_all:
                        found[row] = [(key, D[r, pos], I[r, pos]) for key, pos in groups.items()]
                        done[r] = True
                still.append(chunk[~done])
            rows = np.concatenate(still)
            depth = min(2 * depth, max(int(last.matches) if last is not None else 1, 1))
        if last is not None and query.filter is not None:
            plans.append(last)
        out = [[_group(points, key, d, i, selector, query.with_vectors) for key, d, i in row] for row in found]
    return ShardHits.grouped(out, plans)


def _group(points: Points, key: Key, d: F32, i: I64, selector: ppb.PayloadSelector | None, vectors: bool) -> Group:
    """A group's reply part: its hits with their payloads and vectors (if asked)."""
    payloads = [project_keyed(p, selector.fields) for p in points.payloads_of(i)] if selector is not None else []
    rows = points.get(i, False)[0] if vectors else None
    return Group(key, d.astype(wire.F32), i.astype(wire.I64), payloads, rows)
