"""Stored points read by id from their groups: the Get RPC's fan-out and assembly, and the vectors of
stored points that searches by id and recommendations start from.

A string-id collection's ids are checked and hashed here (string_ids.hashes); each group gets the
hashes of its ids with the strings themselves, and answers an id stored under another string as
missing. Refused: string ids for an int-id collection, int ids for a string-id one (INVALID_ARGUMENT
naming the collection's id type).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import FailedPrecondition, NotFound, ResourceExhausted
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator.catalog import Collection
from vecshard_server.coordinator.id_inputs import request_ids_of
from vecshard_server.coordinator.inputs import get_row_bytes, rows_per_message
from vecshard_server.coordinator.shard_api import GET, Encoded

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def point_ids(
    settings: Settings, spec: CollectionSpec, packed: bytes, strings: Sequence[str], field: str
) -> tuple[I64, list[str] | None]:
    """(stored ids, the strings they hash or None) of a request's ids, as listed (see
    id_inputs.request_ids_of)."""
    rids = request_ids_of(settings, spec, packed, strings, unique=False, dedup=False, field=field)
    return rids.ids, rids.strings


@dataclass
class Points:
    """Stored points read by id, in request order: rows of missing ids are zeros (has_vector False)."""

    ids: I64
    keys: list[str] | None
    vectors: F32
    found: npt.NDArray[np.bool_]
    has_vector: npt.NDArray[np.bool_]
    payloads: list[ppb.Payload]

    def named(self, mask: npt.NDArray[np.bool_]) -> str:
        """The ids where mask is set, for a message (the first five)."""
        pos = np.flatnonzero(mask)
        shown = [self.keys[j] for j in pos[:5].tolist()] if self.keys is not None else self.ids[pos[:5]].tolist()
        return f"{shown}{' ...' if pos.size > 5 else ''}"


def get_requests(
    settings: Settings, coll: Collection, ids: I64, keys: list[str] | None, with_payload: ppb.PayloadSelector
) -> tuple[list[npt.NDArray[np.intp]], dict[int, Encoded[pb.GetRequest]]]:
    """Each group's part of the ids (positions) and its request."""
    limit = rows_per_message(settings, get_row_bytes(coll.spec.dim))
    if ids.size > limit:
        raise ResourceExhausted(
            f"{ids.size} vectors of dim {coll.spec.dim} would exceed the message limit: get at most {limit} ids "
            "per call"
        )
    parts = coll.placement.split(ids)
    requests = {}
    for s, pos in enumerate(parts):
        if pos.size:
            req = pb.GetRequest(collection=coll.spec.name, ids=wire.pack_ids(ids[pos]), with_payload=with_payload)
            if keys is not None:
                req.string_ids.extend(keys[j] for j in pos.tolist())
            requests[s] = Encoded.of(req)
    return parts, requests


def assemble(
    coll: Collection,
    ids: I64,
    keys: list[str] | None,
    parts: list[npt.NDArray[np.intp]],
    replies: dict[int, pb.GetResponse],
) -> Points:
    """The groups' Get replies put back in request order."""
    dim = coll.spec.dim
    vectors = np.zeros((ids.size, dim), dtype=np.float32)
    found = np.zeros(ids.size, dtype=bool)
    has = np.zeros(ids.size, dtype=bool)
    payloads: list[ppb.Payload] = []
    for s, resp in replies.items():
        pos = parts[s]
        rows = wire.unpack_matrix(resp.vectors)
        if rows.shape != (pos.size, dim) or len(resp.found) != pos.size:
            # Only a shard holding the collection with another config answers so (was INTERNAL).
            raise FailedPrecondition(
                f"shard group {s} answered {rows.shape[0]} x {rows.shape[1]} vectors for {pos.size} ids of "
                f"{coll.spec.name!r} (dim {dim}): it holds the collection with another config; "
                "drop it (DropCollection reaches every shard) and create it again"
            )
        vectors[pos] = rows
        found[pos] = np.frombuffer(resp.found, dtype=np.uint8) != 0
        # (a shard of an older version says nothing of vectors: every point it holds has one)
        has[pos] = np.frombuffer(resp.has_vector, dtype=np.uint8) != 0 if resp.has_vector else found[pos]
        if resp.payloads:
            payloads = payloads or [ppb.Payload() for _ in range(ids.size)]
            for j, p in zip(pos.tolist(), resp.payloads, strict=True):
                payloads[j] = p
    return Points(ids, keys, vectors, found, has, payloads)


def missing_error(coll: Collection, points: Points, hint: str) -> NotFound:
    missing = ~points.found
    n = int(np.count_nonzero(missing))
    return NotFound(
        f"{n} of the {points.ids.size} requested ids {'is' if n == 1 else 'are'} not in {coll.spec.name!r}: "
        f"{points.named(missing)}{hint}"
    )


def require_vectors(coll: Collection, points: Points, field: str) -> F32:
    """The points' vectors: NOT_FOUND when one is not stored, FAILED_PRECONDITION when one has none."""
    if not points.found.all():
        raise missing_error(coll, points, f" (in {field})")
    if not points.has_vector.all():
        raise FailedPrecondition(
            f"{field} names points of {coll.spec.name!r} stored without a vector: {points.named(~points.has_vector)}; "
            "give them one (UpdateVectors) or leave them out"
        )
    return points.vectors


async def fetch(
    settings: Settings,
    coll: Collection,
    ids: I64,
    keys: list[str] | None,
    timeout: float,
    with_payload: ppb.PayloadSelector | None = None,
) -> Points:
    """The stored points of `ids` (keys: their strings, string-id collections) from their groups."""
    parts, requests = get_requests(settings, coll, ids, keys, with_payload or ppb.PayloadSelector())
    out = await coll.view.call(GET, requests, timeout)
    return assemble(coll, ids, keys, parts, out.results)
