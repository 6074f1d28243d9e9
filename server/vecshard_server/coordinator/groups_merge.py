"""Grouped search results merged across shard groups, exactly as one index over all the data groups
its hits (shard/groups.py says how a pass over the hits makes groups).

Each group answers its best k groups per query (by their best hit), each with its best group_size
hits. A group among the global best k has its best hit on some shard, where fewer than k groups
rank above it (they rank above it globally too), so that shard reports it: the best k of all the
groups reported, each ranked by the best hit any shard reported for it, are the global best k
(ties by value, in payload_order). A group every answering shard reported has all of its best hits
in their replies (a shard reports a group whole: group_size hits, or every hit it has). The others
need a second round: the shards' best hits of exactly those groups (a match_any filter on their
values), per query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.payload_order import Key, key_to_value
from vecshard_server.common.search_values import Group, ShardHits

F32 = npt.NDArray[np.float32]


@dataclass
class Candidate:
    """A group some shard reported for a query: the best hit reported for it ((distance in the
    metric's direction as smaller-is-better, id)) and each reporting shard's part."""

    key: Key
    best: tuple[float, int]
    parts: dict[int, Group] = field(default_factory=dict)

    def rank(self) -> tuple[tuple[float, int], Key]:
        """Groups rank by their best hit, then by value."""
        return self.best, self.key


def _sign(larger_is_better: bool) -> float:
    return -1.0 if larger_is_better else 1.0


def top_groups(results: Mapping[int, ShardHits], row: int, k: int, larger_is_better: bool) -> list[Candidate]:
    """The best k groups of query `row` among those the shards reported, best first."""
    sign = _sign(larger_is_better)
    found: dict[Key, Candidate] = {}
    for s in sorted(results):
        groups = results[s].groups
        for g in groups[row] if groups is not None else []:
            if not g.ids.size:
                continue
            best = (sign * float(g.distances[0]), int(g.ids[0]))
            c = found.get(g.key)
            if c is None:
                c = found[g.key] = Candidate(g.key, best)
            elif best < c.best:
                c.best = best
            c.parts[s] = g
    return sorted(found.values(), key=Candidate.rank)[:k]


def merged_group(
    key: Key, parts: list[Group], size: int, larger_is_better: bool, threshold: float | None, dim: int
) -> Group:
    """One group's best `size` hits of the shards' parts (ties by id, an id once), those beyond the
    score threshold left out; payloads and vectors follow their hits."""
    sign = _sign(larger_is_better)
    hits: dict[int, tuple[float, int, int]] = {}  # id -> (key, part, position)
    for p, g in enumerate(parts):
        for j, (d, i) in enumerate(zip(g.distances.tolist(), g.ids.tolist(), strict=True)):
            if i >= 0 and (i not in hits or sign * d < hits[i][0]):
                hits[i] = (sign * d, p, j)
    if threshold is not None:
        hits = {i: h for i, h in hits.items() if h[0] <= sign * threshold}
    best = sorted(hits.items(), key=lambda e: (e[1][0], e[0]))[:size]
    ids = np.asarray([i for i, _ in best], dtype=np.int64)
    distances = np.asarray([parts[p].distances[j] for _, (_, p, j) in best], dtype=np.float32)
    payloads = [parts[p].payloads[j] for _, (_, p, j) in best] if any(g.payloads for g in parts) else []
    vectors = None
    if any(g.vectors is not None for g in parts):
        vectors = np.zeros((len(best), dim), dtype=np.float32)
        for n, (_, (_, p, j)) in enumerate(best):
            v = parts[p].vectors
            if v is not None:
                vectors[n] = v[j]
    return Group(key, distances, ids, payloads, vectors)


def restricted(user: ppb.Filter | None, key: str, values: list[Key]) -> ppb.Filter:
    """The points of these values of the group_by field (and of the user's filter)."""
    match = ppb.FieldCondition(key=key, match_any=ppb.ListValue(values=[key_to_value(v) for v in values]))
    out = ppb.Filter(must=[ppb.Condition(field=match)])
    if user is not None:
        out.must.append(ppb.Condition(filter=user))
    return out
