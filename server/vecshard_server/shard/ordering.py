"""Scroll pages ordered by a payload field (OrderBy): a partition's first `limit` points after a
cursor position, in the order of their values, ties by id.

A point's place is the key (common.payload_order) of its field's smallest value (ascending) or
largest (descending); a point without a scalar value of the field is left out. Where the field has a
DATETIME payload index, strings that are RFC 3339 date-times with an offset order as the instants
they name (after numbers, before other strings). Each shard answers its first `limit` after the
cursor with their keys, so the coordinator's merge of them is exact; the keys are computed from a
copy of the payloads taken under the read lock, so writers wait only for the copy.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard.payload import PayloadDict, datetime_micros, key_parts
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.payload_order import DATETIME, STRING, Key, keys_of, place
from vecshard_server.shard.engine import ShardIndex
from vecshard_server.shard.payloads import values_at

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass
class OrderedPage:
    """A shard's ordered page: ids in order with their keys, payloads (if asked), vectors (if asked),
    whether each has a vector, and whether more points follow."""

    ids: I64
    keys: list[Key]
    payloads: list[PayloadDict | None]
    vectors: F32 | None
    has_vector: npt.NDArray[np.bool_]
    more: bool


def _date(key: Key) -> Key:
    if key[0] == STRING:
        micros = datetime_micros(key[1])
        if micros is not None:
            return (DATETIME, micros)
    return key


def ordered_page(
    part: ShardIndex,
    f: ppb.Filter | None,
    key: str,
    descending: bool,
    after: tuple[Key, int] | None,
    limit: int,
    with_payload: bool,
    with_vectors: bool,
) -> OrderedPage:
    """The first `limit` points matching `f` after `after` (a (key, id) position; None: from the
    start) in the order of field `key`'s values."""
    path = key_parts(key, "order_by.key")
    with part.reading() as points:
        store = points.payloads
        mask, _ = store.matching(f)
        slot_ids, payloads = store.freeze()  # (payload dicts are never changed in place)
        index = store.indexes.get(key)
        dates = index is not None and index.kind == "datetime"
    bound = place(*after, descending) if after is not None else None
    rows: list[tuple[tuple[Any, int], int, Key]] = []
    for slot in np.flatnonzero(mask).tolist():
        payload = payloads[slot]
        if not payload:
            continue
        present, leaves = values_at(payload, path)
        keys = keys_of(leaves) if present else []
        if not keys:
            continue
        if dates:
            keys = [_date(k) for k in keys]
        k = max(keys) if descending else min(keys)
        at = place(k, int(slot_ids[slot]), descending)
        if bound is None or bound < at:
            rows.append((at, slot, k))
    chosen = heapq.nsmallest(limit + 1, rows, key=lambda r: r[0])
    more = len(chosen) > limit
    chosen = chosen[:limit]
    ids = np.fromiter((at[1] for at, _, _ in chosen), dtype=np.int64, count=len(chosen))
    with part.reading() as points:
        has = points.payloads.has_vector(ids)
        vectors = points.get(ids, False)[0] if with_vectors else None
    return OrderedPage(
        ids=ids,
        keys=[k for _, _, k in chosen],
        payloads=[payloads[slot] for _, slot, _ in chosen] if with_payload else [],
        vectors=vectors,
        has_vector=has,
        more=more,
    )
