"""Scroll pages across groups: where a page starts (start_id or a cursor) and the groups' pages merged
into the public one, in id order or in an OrderBy field's order, exactly.

Every group answers its first `limit` points after the position, in the page's order (shard.lookups
in id order, shard.ordering by a field, each point's order key in its reply's next_cursor). The
merged page is the first `limit` of their union; a group's page that was cut short (by `limit`, or
by its reply's size) ends where the merged page may end: points beyond the earliest such end wait
for the next page. So while the data does not change no point is skipped or repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import InvalidArgument
from vecshard.payload import key_parts
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.payload_order import decode_keys, id_cursor, order_cursor, place, read_cursor
from vecshard_server.common.results import scroll_next


def _order(by: pb.OrderBy) -> str:
    return f"{by.key!r} {'descending' if by.descending else 'ascending'}"


def scroll_start(request: pb.ScrollRequest) -> int:
    """The id a page in id order starts at (start_id, or the cursor's), after checking that the cursor
    belongs to a scroll of the request's order (INVALID_ARGUMENT otherwise)."""
    by = request.order_by if request.order_by.key else None
    if request.HasField("order_by") and not request.order_by.key:
        raise InvalidArgument("order_by.key is empty: name the payload field to order by, or leave order_by unset")
    if by is not None:
        key_parts(by.key, "order_by.key")
    if not request.cursor:
        if by is not None and request.start_id:
            raise InvalidArgument(
                "start_id pages in id order: with order_by, go on with the previous page's next_cursor"
            )
        return request.start_id
    if request.start_id:
        raise InvalidArgument("send either start_id or cursor, not both")
    start, ordered = read_cursor(request.cursor)
    if by is None:
        if ordered is not None:
            raise InvalidArgument(
                f"cursor is from a scroll ordered by {ordered[0]!r}: send the same order_by, or start over without it"
            )
        assert start is not None
        return start
    if ordered is None:
        raise InvalidArgument("cursor is from a scroll in id order: send it without order_by, or start over")
    if (ordered[0], ordered[1]) != (by.key, by.descending):
        raise InvalidArgument(
            f"cursor is from a scroll ordered by {ordered[0]!r} {'descending' if ordered[1] else 'ascending'}, "
            f"not {_order(by)}: send the same order_by, or start over without a cursor"
        )
    return 0


@dataclass
class MergedPage:
    """The public page: its ids in order, where each came from ((group, position in its page)), and
    how to go on."""

    ids: npt.NDArray[np.int64]
    rows: list[tuple[int, int]]
    next_start_id: int
    done: bool
    cursor: bytes


def merge_pages(sent: pb.ScrollRequest, results: dict[int, pb.ScrollResponse]) -> MergedPage:
    """The first `sent.limit` points of the groups' pages, in the page's order."""
    by = sent.order_by if sent.order_by.key else None
    rows: list[tuple[Any, int, int]] = []  # (place, group, position)
    horizon: Any = None
    for s, r in results.items():
        ids = np.frombuffer(r.ids, dtype=wire.I64).tolist()
        if by is None:
            places: list[Any] = ids
        else:
            keys = decode_keys(r.next_cursor)
            if len(keys) != len(ids):
                raise InvalidArgument(f"a shard answered {len(keys)} order keys for {len(ids)} points")
            places = [place(k, i, by.descending) for k, i in zip(keys, ids, strict=True)]
        if not r.done and places and (horizon is None or places[-1] < horizon):
            horizon = places[-1]
        rows.extend((at, s, j) for j, at in enumerate(places))
    if horizon is not None:
        rows = [r for r in rows if not horizon < r[0]]
    rows.sort(key=lambda r: (r[0], r[1]))
    more = horizon is not None or len(rows) > sent.limit
    rows = rows[: sent.limit]
    ids = np.asarray([at if by is None else at[1] for at, _, _ in rows], dtype=np.int64)
    taken = [(s, j) for _, s, j in rows]
    if by is None:
        start, done = scroll_next(ids, sent.start_id, more)
        return MergedPage(ids, taken, start, done, id_cursor(start) if not done else b"")
    if not more or not rows:
        return MergedPage(ids, taken, 0, not more, b"")
    last = rows[-1][0]
    key = last[0].key if by.descending else last[0]
    return MergedPage(ids, taken, 0, False, order_cursor(by.key, by.descending, key, last[1]))
