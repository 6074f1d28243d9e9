"""A partition's reads of given points and of id-ordered pages, as the Get and Scroll handlers answer
them: under one read lock, with whether each point has a vector, and string ids checked.

A string-id collection keeps each point's string id in its payload under the reserved key
`string_ids.KEY`; `project_keyed` returns it with the payload when the coordinator's selector names
it (string_ids.selector), and a Get naming a string whose hash another string holds finds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vecshard.payload import PayloadDict
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.string_ids import KEY
from vecshard_server.shard.engine import ShardIndex
from vecshard_server.shard.pages import scroll_ids
from vecshard_server.shard.payloads import project

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


def project_keyed(payload: PayloadDict | None, fields: Sequence[str]) -> ppb.Payload:
    """The payload (only `fields` when given) as a proto, with the point's string id under KEY when
    the selector asks for the whole payload or names KEY."""
    if not payload:
        return ppb.Payload()
    key = payload.get(KEY)
    if key is None:
        return project(payload, fields)
    rest = {k: v for k, v in payload.items() if k != KEY}
    user = [f for f in fields if f != KEY]
    out = project(rest, user) if user or not fields else ppb.Payload()
    out.fields[KEY].string_value = key
    return out


def get_points(
    part: ShardIndex, ids: I64, keys: Sequence[str] | None, with_payload: bool
) -> tuple[F32, Mask, list[PayloadDict | None], Mask]:
    """(vectors, found, payloads if asked, has_vector) of `ids`, in order; an id whose stored string
    id is not its key (`keys`: one per id, string-id collections) is not found (zeros, no payload)."""
    with part.reading() as points:
        vectors, found, payloads = points.get(ids, with_payload or keys is not None)
        has = points.payloads.has_vector(ids)
    if keys is not None:
        other = np.fromiter(
            (p is not None and p.get(KEY, k) != k for p, k in zip(payloads, keys, strict=True)),
            dtype=bool,
            count=ids.size,
        )
        if other.any():
            found, has = found & ~other, has & ~other
            vectors[other] = 0
            payloads = [None if o else p for p, o in zip(payloads, other.tolist(), strict=True)]
        if not with_payload:
            payloads = []
    return vectors, found, payloads, has & found


def scroll_page(
    part: ShardIndex, f: ppb.Filter | None, start_id: int, limit: int, with_payload: bool, with_vectors: bool
) -> tuple[I64, list[PayloadDict | None], F32 | None, Mask, bool]:
    """The first `limit` matching ids >= start_id ascending, their payloads and vectors (if asked),
    whether each has a vector, and whether more match after them."""
    with part.reading() as points:
        ids, more = scroll_ids(points.payloads.matching_ids(f), start_id, limit)
        payloads = points.payloads_of(ids) if with_payload else []
        vectors = points.vectors_of(ids) if with_vectors else None
        has = points.payloads.has_vector(ids)
    return ids, payloads, vectors, has, more
