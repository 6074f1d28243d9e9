"""Facets: how many of a partition's points (those matching a filter) hold each value of a payload field.

A point counts once for each distinct value of the field (a list field: each distinct element; a
dotted path crossing lists: every value it reaches). Values are scalar keys (common.payload_order):
3 and 3.0 are one value; nulls, objects and empty lists count nowhere. A shard answers every value
of its partition, unsorted, so the coordinator's sums are exact.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vecshard.payload import key_parts
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.payload_order import Key, key_to_value, keys_of
from vecshard_server.shard.engine import ShardIndex
from vecshard_server.shard.payloads import values_at


def facet_counts(part: ShardIndex, key: str, f: ppb.Filter | None) -> Counter[Key]:
    """Points per value of field `key` among those matching `f` (every point when None)."""
    path = key_parts(key, "key")
    counts: Counter[Key] = Counter()
    with part.reading() as points:
        mask, _ = points.payloads.matching(f)
        _, payloads = points.payloads.freeze()  # (by slot; the dicts are never changed in place)
    for slot in np.flatnonzero(mask).tolist():
        payload = payloads[slot]
        if payload:
            present, leaves = values_at(payload, path)
            if present:
                counts.update(keys_of(leaves))
    return counts


def facet_reply(counts: Counter[Key]) -> pb.FacetResponse:
    """A shard's Facet reply: every value with its count, unsorted."""
    return pb.FacetResponse(counts=[pb.FacetCount(value=key_to_value(k), count=n) for k, n in counts.items()])
