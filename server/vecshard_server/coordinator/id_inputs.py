"""The ids of a write request, as a collection's id type says: int ids packed in `ids`, or string
ids in `string_ids` (stored under their hashes, common/string_ids.py). Each write handler turns its
request's ids into (stored ids, their strings or None) here, and splits both by placement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vecshard import wire
from vecshard.errors import InvalidArgument, ResourceExhausted
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common import string_ids
from vecshard_server.common.config import Settings
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator.inputs import request_ids


@dataclass(frozen=True)
class RequestIds:
    """A request's ids as stored (int64: the ids, or the strings' hashes) and, for string ids, the strings."""

    ids: wire.IdArray
    strings: list[str] | None

    def part(self, pos: np.ndarray) -> RequestIds:
        """The ids at positions `pos` (a shard's share)."""
        return RequestIds(self.ids[pos], [self.strings[i] for i in pos.tolist()] if self.strings is not None else None)

    @property
    def size(self) -> int:
        return int(self.ids.size)


def id_kind(spec: CollectionSpec) -> str:
    return "string ids (send them in string_ids)" if spec.string_ids else "int ids (send them packed in ids)"


def request_ids_of(
    settings: Settings,
    spec: CollectionSpec,
    packed: bytes,
    strings: Sequence[str],
    *,
    unique: bool,
    dedup: bool = True,
    field: str = "ids",
) -> RequestIds:
    """The ids a request names, checked: ids of the collection's kind (else INVALID_ARGUMENT naming it),
    within max_batch, int ids >= 0, strings of 1 to 256 bytes of UTF-8. `unique`: each at most once
    (writes); else with `dedup` listed ids are deduplicated (Remove, SetPayload), without it they stay
    as listed, in order (Get, searches by id)."""
    if spec.string_ids:
        named = f"{field.removesuffix('ids')}string_ids" if field.endswith("ids") else f"{field}_string_ids"
        if packed:
            raise InvalidArgument(f"collection {spec.name!r} has {id_kind(spec)}, not int ids in {field}")
        if not strings:
            raise InvalidArgument(f"{named} is empty: send the string ids of collection {spec.name!r}")
        if len(strings) > settings.max_batch:
            raise ResourceExhausted(f"{len(strings)} ids in one request, over max_batch={settings.max_batch}: split it")
        listed = list(dict.fromkeys(strings)) if dedup and not unique else list(strings)
        hashes = string_ids.hashes(listed, spec.string_id_bits, named)
        if unique:
            string_ids.unique(listed, hashes, named)
        return RequestIds(hashes, listed)
    if strings:
        raise InvalidArgument(f"collection {spec.name!r} has {id_kind(spec)}, not string ids in {field}")
    ids = request_ids(settings, packed, unique=unique)
    return RequestIds(np.unique(ids) if dedup and not unique else ids, None)


def conflict_mode(request: pb.AddRequest) -> int:
    """The Add's OnConflict (upsert = REPLACE); INVALID_ARGUMENT for an unknown one or a contradiction."""
    mode = request.on_conflict
    if mode not in pb.OnConflict.values():
        raise InvalidArgument(f"on_conflict {mode} is not FAIL (1), SKIP (2) or REPLACE (3)")
    if request.upsert:
        if mode not in (pb.ON_CONFLICT_UNSPECIFIED, pb.ON_CONFLICT_REPLACE):
            raise InvalidArgument("upsert = true means on_conflict REPLACE: send one of them, not a contradiction")
        return int(pb.ON_CONFLICT_REPLACE)
    return int(mode or pb.ON_CONFLICT_FAIL)
