"""Which part of a write applies to a partition, and what a payload write makes of a payload.

Per id the newest version wins (see vecshard_server.common.versions): an Add of an id stored at a
newer version, or removed at one at least as new, stores nothing; a Remove leaves a tombstone at its
version. Pure functions over the partition's version maps (`idmap.IdVersions`); the partition
(`engine.ShardIndex`) applies what they decide under its write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard.errors import AlreadyExists
from vecshard.payload import PayloadDict, key_parts
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.shard.idmap import IdVersions

I64 = npt.NDArray[np.int64]


def add_skips(
    name: str,
    ids: I64,
    versions: I64,
    held: I64,
    upsert: bool,
    tombs: IdVersions,
    shown_as: Callable[[I64], list[str]] | None = None,
) -> npt.NDArray[np.bool_]:
    """The ids of an Add (at `versions`, 0: unversioned) to leave as they are, given the version each is
    `held` at (-1: not stored): those stored at this very version (this write again: a retry, a
    replay), with upsert those stored at a newer one, and those removed at a version at least as new.
    Without upsert AlreadyExists when an id is stored from another write."""
    stored = held >= 0
    versioned = versions > 0
    again = stored & versioned & (held == versions)  # this very write again
    newer = stored & versioned & (held > versions)  # a newer write of the id
    if upsert:
        skip = again | newer
    else:
        conflicts = ids[stored & ~again]
        if conflicts.size:
            shown = ", ".join(shown_as(conflicts[:5]) if shown_as is not None else map(str, conflicts[:5].tolist()))
            raise AlreadyExists(
                f"ids already stored in collection {name!r}: {shown}{' ...' if conflicts.size > 5 else ''}; pass "
                "on_conflict=replace (upsert=true) to replace them, or on_conflict=skip to keep them"
            )
        skip = again
    if tombs:  # removed (or this Add rolled back) at a version at least as new
        skip |= ~stored & versioned & (tombs.get_many(ids) >= versions)
    out: npt.NDArray[np.bool_] = skip
    return out


def removals(
    ids: I64, version: int | I64, rollback: bool, stored: IdVersions, tombs: IdVersions
) -> tuple[list[int], list[tuple[int, int]]]:
    """(the stored ids a Remove at `version` takes away, the (id, version) tombstones it leaves): a
    stored id goes unless stored at a newer version (at equal versions the removal wins; unversioned,
    it goes); rollback: only ids stored at exactly `version` go. A tombstone is left for every id (absent
    ones included) whose tombstone is older, so an older write of it arriving later stores nothing."""
    wanted: dict[int, int] = {}  # an id listed twice: its newest version
    versions = np.broadcast_to(np.asarray(version, dtype=np.int64), ids.shape)
    for i, v in zip(ids.tolist(), versions.tolist(), strict=True):
        wanted[i] = max(v, wanted.get(i, v))
    gone: list[int] = []
    marks: list[tuple[int, int]] = []
    for i, v in wanted.items():
        held = stored.get(i)
        if held is not None:
            if not v or held == v or (held < v and not rollback):
                gone.append(i)
                if v:
                    marks.append((i, v))
        elif v and tombs.get(i, 0) < v:
            marks.append((i, v))
    return gone, marks


def edited(old: PayloadDict, mode: int, patch: PayloadDict, keys: Sequence[str]) -> PayloadDict:
    """The payload a SetPayload makes of `old`: OVERWRITE replaces it with patch, DELETE_KEYS removes
    `keys`, MERGE sets patch's top-level keys."""
    if mode == pb.SET_PAYLOAD_MODE_OVERWRITE:
        return dict(patch)
    if mode == pb.SET_PAYLOAD_MODE_DELETE_KEYS:
        return without_keys(old, keys)
    return {**old, **patch}


def without_keys(payload: PayloadDict, keys: Sequence[str]) -> PayloadDict:
    """A copy of payload without the (dotted) keys; the nested objects on a key's path are copied."""
    out = dict(payload)
    for key in keys:
        parts = key_parts(key, "keys")
        node: dict[str, Any] = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                break
            node[part] = node = dict(child)
        else:
            node.pop(parts[-1], None)
    return out
