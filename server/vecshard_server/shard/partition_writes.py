"""The point writes of a partition (`engine.ShardIndex`): Add, UpdateVectors, Remove and payload
writes, each deciding under the write lock what applies (points.Points), journaling it, then
applying it. A mixin of ShardIndex, which owns the state named below."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from vecshard.payload import PayloadDict
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.locks import RWLock
from vecshard_server.shard.payloads import decode
from vecshard_server.shard.points import AddBatch, AddRules, Points
from vecshard_server.shard.training import Trainings

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Journal = Callable[[], int]


class PartitionWrites:
    """Point writes; the partition (ShardIndex) provides these."""

    spec: CollectionSpec
    max_vectors: int
    aborted: OrderedDict[int, None]
    _lock: RWLock
    _points: Points
    _training: Trainings
    applied_lsn: int
    max_version: int
    writes: int

    def _log(self, journal: Journal | None) -> None:
        """Log a write that is known to apply; under the write lock."""
        if journal is not None:
            self.applied_lsn = journal()

    def _wrote(self, version: int) -> None:
        """Count a write applied at `version` (0: unversioned)."""
        self.max_version = max(self.max_version, version)
        self.writes += 1

    # -- writes ---------------------------------------------------------------------------------
    def add(
        self,
        ids: I64,
        vectors: F32 | None,
        upsert: bool,
        journal: Journal | None = None,
        version: int | I64 = 0,
        payloads: Sequence[ppb.Payload] | None = None,
        rules: AddRules | None = None,
    ) -> tuple[int, int, int]:
        """Add (or with upsert, replace) points written at `version` (one for all ids, or one per id;
        0: unversioned, as in logs of older versions: applied as it comes). Returns (added, replaced,
        skipped). `payloads`: none, or one per id (a point's payload is replaced with its vector).
        `vectors` None: points without a vector (payload-only); `rules`: see points.AddRules.

        Per id the newest version wins (see writes.add_skips); without upsert the whole write is refused
        (AlreadyExists) when an id is stored from another write. All or nothing otherwise."""
        decoded = decode(payloads) if payloads else None  # outside the lock
        if vectors is None:
            vectors = np.zeros((ids.size, self.spec.dim), dtype=np.float32)
            rules = dataclasses.replace(rules or AddRules(), vectorless=np.ones(ids.size, dtype=bool))
        with self._lock.write():
            batch = self._points.admit(ids, vectors, version, upsert, decoded, self.max_vectors, rules)
            if batch is None or not batch.ids.size:
                return 0, 0, batch.skipped if batch is not None else 0
            self._log(journal)
            self._points.put(batch)
            self._wrote(int(batch.versions.max()))
            self._record_add(batch)
            return batch.new, int(batch.present.size), batch.skipped

    def _record_add(self, batch: AddBatch) -> None:
        """Tell a training in progress what an Add changed (a vector replaced by none: a removal)."""
        less = batch.vectorless
        if less is None or not less.any():
            self._training.record("add", batch.ids, batch.vectors)
            return
        self._training.record("remove", batch.present, None)
        if not less.all():
            self._training.record("add", batch.ids[~less], batch.vectors[~less])

    def update_vectors(
        self, ids: I64, vectors: F32, keys: Sequence[str] | None, journal: Journal | None, version: int
    ) -> int:
        """Set the vectors of stored `ids` (those whose string id is `keys`' one, when given), keeping
        their payloads, at `version`: a point held at this version or a newer one is left as it is.
        Returns how many were set."""
        with self._lock.write():
            batch = self._points.vector_update(ids, vectors, keys, version, self.max_vectors)
            if batch is None:
                return 0
            self._log(journal)
            self._points.put(batch)
            self._wrote(version)
            self._training.record("add", batch.ids, batch.vectors)
            return int(batch.ids.size)

    def remove(
        self,
        ids: I64,
        journal: Journal | None = None,
        version: int | I64 = 0,
        rollback: bool = False,
        keys: Sequence[str] | None = None,
    ) -> int:
        """Remove ids at `version` (one for all, or one per id; 0: unversioned), leaving tombstones, as
        writes.removals says; rollback: take back the Add of `version`. `keys`: the string id of each
        (an id stored under another string is left alone). Returns how many were stored."""
        with self._lock.write():
            if keys is not None:
                keep = self._points.keyed(ids, keys)
                ids = ids[keep]
                version = version[keep] if isinstance(version, np.ndarray) else version
            return self._remove_locked(ids, journal, version, rollback)

    def remove_matching(self, f: ppb.Filter, journal: Journal | None, version: int, resolved: list[I64]) -> int:
        """Remove the points matching `f` (as `remove`, at `version`); the ids are appended to
        `resolved` before `journal` runs, for the log record."""
        with self._lock.write():
            ids = self._points.resolve(None, f)
            resolved.append(ids)
            if not ids.size:
                return 0
            return self._remove_locked(ids, journal, version, False)

    def _remove_locked(self, ids: I64, journal: Journal | None, version: int | I64, rollback: bool) -> int:
        gone, marks = self._points.removals(ids, version, rollback)
        if not gone and not marks:
            return 0
        self._log(journal)
        present = self._points.drop(gone, marks)
        if present.size:
            self._training.record("remove", present, None)
        self._wrote(max((v for _, v in marks), default=0))
        return int(present.size)

    def forget_add(self, version: int, keep: int) -> None:
        """Remember that the Add of `version` was rolled back (the last `keep` such Adds)."""
        with self._lock.write():
            self.aborted[version] = None
            while len(self.aborted) > keep:
                self.aborted.popitem(last=False)

    def purge_tombstones(self, older_than: int) -> int:
        """Forget tombstones of versions below `older_than`; returns how many."""
        with self._lock.write():
            return self._points.purge_tombstones(older_than)

    # -- payloads -------------------------------------------------------------------------------
    def set_payload(
        self,
        ids: I64 | None,
        f: ppb.Filter | None,
        mode: int,
        patch: PayloadDict,
        keys: Sequence[str],
        journal: Journal | None,
        version: int,
        resolved: list[I64],
        string_ids: Sequence[str] | None = None,
    ) -> int:
        """Write the payloads of the stored points among `ids` (or matching `f`) at `version`, as
        `mode` says (see writes.edited); a point held at this version or a newer one is left as it is.
        The ids the write resolved to are appended to `resolved` before `journal` runs. Returns how many
        were written."""
        with self._lock.write():
            ids = self._points.resolve(ids, f)
            if string_ids is not None:
                ids = ids[self._points.keyed(ids, string_ids)]
            resolved.append(ids)
            ids = self._points.writable(ids, version)
            if not ids.size:
                return 0
            self._log(journal)
            self._points.edit_payloads(ids, mode, patch, keys, version)
            self._wrote(version)
            return int(ids.size)
