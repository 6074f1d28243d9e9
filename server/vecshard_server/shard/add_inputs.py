"""What a shard makes of an AddRequest, live or replayed from its log: the ids, the vectors (None for
points without one), the payloads with each string id under the reserved key, and the AddRules.
One function for both, so a replay applies exactly what the live write applied."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import InvalidArgument
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.common.string_ids import KEY
from vecshard_server.shard.checks import check_add
from vecshard_server.shard.points import AddRules

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def payload_only(request: pb.AddRequest) -> bool:
    """An Add of points without a vector: payloads, and no vectors."""
    return not request.vectors.rows and not request.vectors.data and bool(request.payloads)


def keyed_payloads(payloads: Sequence[ppb.Payload], keys: Sequence[str], n: int) -> list[ppb.Payload]:
    """One payload per id, each holding its string id under KEY."""
    out = []
    for i in range(n):
        p = ppb.Payload()
        if payloads:
            p.CopyFrom(payloads[i])
        p.fields[KEY].string_value = keys[i]
        out.append(p)
    return out


def add_inputs(
    spec: CollectionSpec, request: pb.AddRequest, live: bool
) -> tuple[I64, F32 | None, Sequence[ppb.Payload] | None, AddRules]:
    """(ids, vectors or None, payloads or None, rules) of an Add to a partition of `spec`, checked
    (InvalidArgument). live: from a coordinator (string ids are checked against stored ones), else a
    replay of the log."""
    ids = wire.unpack_ids(request.ids)
    vectors: F32 | None = None
    if payload_only(request):
        wire.check_ids(ids)
        if len(request.payloads) != ids.size:
            raise InvalidArgument(f"got {ids.size} ids for {len(request.payloads)} payloads: one payload per id")
    else:
        vectors = wire.unpack_matrix(request.vectors)
        check_add(spec, ids, vectors)
    payloads: Sequence[ppb.Payload] | None = request.payloads or None
    if request.string_ids:
        if not spec.string_ids or len(request.string_ids) != ids.size:
            raise InvalidArgument(f"string_ids: one per id, and only for a string-id collection ({spec.name!r})")
        payloads = keyed_payloads(request.payloads, request.string_ids, ids.size)
    skip = request.on_conflict == pb.ON_CONFLICT_SKIP
    return ids, vectors, payloads, AddRules(skip=skip, check_keys=live and bool(request.string_ids))


def upserts(request: pb.AddRequest) -> bool:
    """Whether an Add replaces stored ids (upsert, or on_conflict REPLACE)."""
    return request.upsert or request.on_conflict == pb.ON_CONFLICT_REPLACE
