"""`Points`: what a partition holds, id by id, kept consistent with itself.

Per stored id: its version (`idmap.IdVersions`), its payload slot and payload (`PayloadStore`) and
its vector (`storage.Storage`); per removed id its tombstone version; and the digest over all of it
(`digests`, plus the payload hashes). Every write here updates all of them together, so whatever
reads them under the partition's lock sees one consistent state.

A part of `engine.ShardIndex` by composition: the partition owns the lock, the journal (the log
record of a write is appended between deciding what applies, `admit` / `removals` / `writable`, and
applying it) and the counters of the partition as a unit (lsn, writes, max_version, ...). Every method
here runs with the partition's lock held (the write lock for those that change anything).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from vecshard.payload import PayloadDict
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.common.string_ids import KEY
from vecshard_server.shard import pages, snapshot
from vecshard_server.shard.accel import Accelerator
from vecshard_server.shard.analysis import filled, params_from_json, params_to_json
from vecshard_server.shard.digests import MASK, digest_of
from vecshard_server.shard.idmap import IdVersions
from vecshard_server.shard.payloads import EMPTY, INDEX_TYPES, PayloadStore, encode
from vecshard_server.shard.search import Searcher
from vecshard_server.shard.storage import Storage
from vecshard_server.shard.vectors import VectorStore
from vecshard_server.shard.writes import add_skips, edited, removals

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Decoded = list[tuple[PayloadDict, bytes]]  # payloads with their canonical bytes (payloads.decode)
# Export entries: (ids, vectors, versions) of stored points, (ids, versions) of tombstones, the payloads
Export = tuple[I64, F32, I64, I64, I64, list[PayloadDict | None]]


def payload_index_kind(kind: int) -> str:
    """The payload index kind of a PayloadIndexType; InvalidArgument if it is none."""
    if kind not in INDEX_TYPES:
        raise InvalidArgument(f"payload index type {kind} is not one of KEYWORD, INTEGER, FLOAT, BOOL, DATETIME, TEXT")
    return INDEX_TYPES[kind]


def text_params(kind: str, text: ppb.TextIndexParams | None) -> ppb.TextIndexParams | None:
    """A TEXT index's params filled (InvalidArgument: unknown languages, k1 or b out of range); None
    for the other kinds, which take none."""
    if kind == "text":
        return filled(text)
    if text is not None and text.ByteSize():
        raise InvalidArgument(f"text parameters apply to TEXT indexes only, not to a {kind.upper()} index")
    return None


@dataclasses.dataclass(frozen=True)
class AddRules:
    """How an Add treats its ids besides the version rules: skip those stored (on_conflict SKIP), rows
    without a vector (payload-only points), and whether the string ids in its payloads must match
    those stored under the same ids (an Add from a client; a copy from a peer is trusted)."""

    skip: bool = False
    vectorless: npt.NDArray[np.bool_] | None = None
    check_keys: bool = False


@dataclasses.dataclass
class AddBatch:
    """The part of an Add that applies (see `Points.admit`)."""

    ids: I64
    vectors: F32
    versions: I64
    present: I64  # those of `ids` stored now (replaced by the Add)
    payloads: Decoded | None
    vectorless: npt.NDArray[np.bool_] | None = None  # rows without a vector (payload-only points)
    skipped: int = 0  # ids left as they were by an Add that skips stored ids

    @property
    def new(self) -> int:
        return int(self.ids.size - self.present.size)


# A vectorless point's contribution to the digest is that of this row (no stored vector is NaN).
def _vectorless_rows(n: int, dim: int) -> F32:
    return np.full((n, dim), np.nan, dtype=np.float32)


class Points:
    """The ids' versions and tombstones, payloads and vectors of a partition, and their digest."""

    def __init__(self, spec: CollectionSpec, scratch_dir: Path | None, accelerator: Accelerator | None) -> None:
        self.spec = spec
        self.versions = IdVersions()  # stored ids; an id is in at most one of these two
        self.tombs = IdVersions()  # removed ids (tombstones)
        self.payloads = PayloadStore()  # every stored id has a slot here (an empty payload at least)
        raw = VectorStore(spec.dim, scratch_dir) if spec.quantized else None
        self.storage = Storage(spec, self.payloads, raw, accelerator)
        self.digest = 0  # sum of row_hashes over the stored pairs and of their payloads' hashes, mod 2^64

    @property
    def count(self) -> int:
        return len(self.versions)

    # -- writes (the caller holds the write lock) ----------------------------------------------

    def admit(
        self,
        ids: I64,
        vectors: F32,
        version: int | I64,
        upsert: bool,
        decoded: Decoded | None,
        limit: int,
        rules: AddRules | None = None,
    ) -> AddBatch | None:
        """The part of an Add at `version` (one, or one per id) that applies (None: nothing does); see
        `writes.add_skips` (it raises AlreadyExists). ResourceExhausted when the partition would hold
        more than `limit` points (max_vectors_per_shard). `rules`: skip stored ids, rows without a
        vector, string ids to check against the stored ones (a hash collision: FailedPrecondition)."""
        rules = rules or AddRules()
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        versions = np.broadcast_to(np.asarray(version, dtype=np.int64), ids.shape)
        held = self.versions.get_many(ids)  # -1: not stored
        stored = held >= 0
        if rules.check_keys and decoded is not None:
            self._check_keys(ids[stored], [d for d, k in zip(decoded, stored.tolist(), strict=True) if k])
        shown_as = None
        if decoded is not None and self.spec.string_ids:
            keys = {i: d.get(KEY, "") for i, (d, _) in zip(ids.tolist(), decoded, strict=True)}
            shown_as = lambda some: [repr(keys.get(i, i)) for i in some.tolist()]  # noqa: E731
        skip = add_skips(self.spec.name, ids, versions, held, upsert or rules.skip, self.tombs, shown_as)
        skipped = 0
        if rules.skip:  # stored from another write: left as it is
            again = stored & (versions > 0) & (held == versions)
            skipped = int(np.count_nonzero(stored & ~again))
            skip |= stored
        vectorless = rules.vectorless
        if skip.any():
            keep = ~skip
            ids, vectors, versions, stored = ids[keep], vectors[keep], versions[keep], stored[keep]
            vectorless = vectorless[keep] if vectorless is not None else None
            if decoded is not None:
                decoded = [d for d, k in zip(decoded, keep.tolist(), strict=True) if k]
        if not ids.size:
            return AddBatch(ids, vectors, versions, ids, None, None, skipped) if skipped else None
        batch = AddBatch(ids, vectors, versions, ids[stored], decoded, vectorless, skipped)
        if self.count + batch.new > limit:
            raise ResourceExhausted(
                f"collection {self.spec.name!r} would hold {self.count + batch.new} vectors on this shard, over "
                f"max_vectors_per_shard={limit}: add shards or raise VECSHARD_MAX_VECTORS_PER_SHARD"
            )
        return batch

    def _check_keys(self, stored: I64, incoming: list[tuple[PayloadDict, bytes]]) -> None:
        """FailedPrecondition when a stored id holds another string id than the one added under it."""
        for i, (payload, _) in zip(stored.tolist(), incoming, strict=True):
            have = (self.payloads.get(i) or EMPTY).get(KEY)
            new = payload.get(KEY)
            if have is not None and new is not None and have != new:
                raise FailedPrecondition(
                    f"string id {new!r} cannot be stored in collection {self.spec.name!r}: its 64-bit hash is held "
                    f"by the stored id {have!r} (a hash collision); store it under another id"
                )

    def _digest_rows(self, ids: I64) -> int:
        """The digest part of stored ids' (id, vector) pairs (a vectorless point counts as a NaN row)."""
        if not self.payloads.vectorless:
            return digest_of(ids, self.storage.vectors(ids))
        has = self.payloads.has_vector(ids)
        out = digest_of(ids[has], self.storage.vectors(ids[has])) if has.any() else 0
        if not has.all():
            out += digest_of(ids[~has], _vectorless_rows(int(np.count_nonzero(~has)), self.spec.dim))
        return out & MASK

    def put(self, batch: AddBatch) -> None:
        """Store an admitted Add: its points (replacing those present) with their payloads and versions."""
        ids, vectors, present, storage = batch.ids, batch.vectors, batch.present, self.storage
        if present.size:
            self.digest = (self.digest - self._digest_rows(present)) & MASK
            with_vector = present[self.payloads.has_vector(present)] if self.payloads.vectorless else present
            if with_vector.size:
                storage.unstore(with_vector)
            if storage.raw is not None:
                # New slots (new rows) for replaced points: a snapshot may be reading their old rows.
                self.digest = (self.digest + self.payloads.drop(present.tolist())) & MASK
        decoded = batch.payloads if batch.payloads is not None else [(EMPTY, b"")] * ids.size
        change = self.payloads.put(ids.tolist(), decoded)
        less = batch.vectorless
        if less is not None and less.any():
            self.payloads.set_has_vector(ids[less], False)
            self.payloads.set_has_vector(ids[~less], True)
            if not less.all():
                storage.store(ids[~less], vectors[~less])
            rows = vectors.copy()
            rows[less] = np.nan
            self.digest = (self.digest + digest_of(ids, rows) + change) & MASK
        else:
            self.payloads.set_has_vector(ids, True)
            storage.store(ids, vectors)  # after put: it records each id's IVF list in its payload slot
            self.digest = (self.digest + digest_of(ids, vectors) + change) & MASK
        self.versions.set_many(ids, batch.versions)
        self.tombs.delete_many(ids)

    def vector_update(
        self, ids: I64, vectors: F32, keys: Sequence[str] | None, version: int, limit: int
    ) -> AddBatch | None:
        """The Add an UpdateVectors at `version` makes (None: nothing to write): the stored ids among
        `ids` (whose string id is `keys`' one, when given) not held at this version or a newer one,
        with their new vectors and the payloads they have."""
        if keys is not None:
            keep = self.keyed(ids, keys)
            ids, vectors = ids[keep], vectors[keep]
        writable = np.isin(ids, self.writable(ids, version))
        ids, vectors = ids[writable], vectors[writable]
        if not ids.size:
            return None
        decoded = [(p, encode(p)) if p else (EMPTY, b"") for p in self.payloads_of(ids)]
        batch = self.admit(ids, vectors, version, True, decoded, limit)
        return batch if batch is not None and batch.ids.size else None

    def keyed(self, ids: I64, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Which of `ids` are not stored under another string id than its key (a request naming a string
        whose hash another stored string holds names no stored point)."""
        keep = np.ones(ids.size, dtype=bool)
        for n, (i, key) in enumerate(zip(ids.tolist(), keys, strict=True)):
            payload = self.payloads.get(i)
            if payload is not None and payload.get(KEY, key) != key:
                keep[n] = False
        return keep

    def removals(self, ids: I64, version: int | I64, rollback: bool) -> tuple[list[int], list[tuple[int, int]]]:
        """(the stored ids a Remove takes away, the tombstones it leaves): see `writes.removals`."""
        return removals(ids, version, rollback, self.versions, self.tombs)

    def drop(self, gone: list[int], marks: list[tuple[int, int]]) -> I64:
        """Remove the stored ids `gone` and leave the tombstones `marks`; returns the ids removed."""
        present = np.asarray(gone, dtype=np.int64)
        if present.size:
            self.digest = (self.digest - self._digest_rows(present)) & MASK
            with_vector = present[self.payloads.has_vector(present)] if self.payloads.vectorless else present
            if with_vector.size:
                self.storage.unstore(with_vector)
            for i in gone:
                del self.versions[i]
            self.digest = (self.digest + self.payloads.drop(gone)) & MASK
        self.tombs.update(marks)
        return present

    def purge_tombstones(self, older_than: int) -> int:
        """Forget tombstones of versions below `older_than`; returns how many."""
        ids, versions = self.tombs.arrays()
        old = ids[versions < older_than]
        self.tombs.delete_many(old)
        return int(old.size)

    def resolve(self, ids: I64 | None, f: ppb.Filter | None) -> I64:
        """`ids`, or when None the ids of the points matching `f`."""
        return np.ascontiguousarray(self.payloads.matching_ids(f) if ids is None else ids, dtype=np.int64)

    def writable(self, ids: I64, version: int) -> I64:
        """Those of `ids` stored at a version older than `version` (any, for version 0)."""
        held = self.versions.get_many(ids)
        todo = held >= 0
        if version:
            todo &= held < version
        return ids[todo]

    def edit_payloads(self, ids: I64, mode: int, patch: PayloadDict, keys: Sequence[str], version: int) -> None:
        """Write the payloads of stored `ids` (as `writes.edited` says) at `version` (0: unversioned)."""
        out = []
        for i in ids.tolist():
            old = self.payloads.get(i) or EMPTY
            new = edited(old, mode, patch, keys)
            if KEY in old and new.get(KEY) != old[KEY]:  # a point's string id is not part of its payload
                new = {**new, KEY: old[KEY]}
            out.append((new, encode(new)))
        self.digest = (self.digest + self.payloads.put(ids.tolist(), out)) & MASK
        if version:
            self.versions.set_many(ids, np.full(ids.size, version, dtype=np.int64))

    def create_index(
        self, field: str, kind: str, log: Callable[[], None], params: ppb.TextIndexParams | None = None
    ) -> bool:
        """Index a payload field by `kind` (TEXT: with `params`) after `log`, the journal, unless it is
        indexed so already (False) or otherwise (AlreadyExists, nothing logged)."""
        if not self.payloads.needs_index(field, kind, params):
            return False
        log()
        return self.payloads.create_index(field, kind, params)

    def drop_index(self, field: str, log: Callable[[], None]) -> None:
        """Drop the index of a payload field (after `log`, the journal, if there is one)."""
        if field in self.payloads.index_kinds():
            log()
        self.payloads.drop_index(field)

    # -- reads (the caller holds a lock) -------------------------------------------------------

    def payloads_of(self, ids: I64) -> list[PayloadDict | None]:
        """The payload of each id (None when not stored)."""
        get = self.payloads.get
        return [get(i) if i >= 0 else None for i in ids.tolist()]

    def vectors_of(self, ids: I64) -> F32:
        """The vectors of stored `ids`, in order (zeros for points without a vector)."""
        if not ids.size:
            return np.empty((0, self.spec.dim), dtype=np.float32)
        if not self.payloads.vectorless:
            return self.storage.vectors(ids)
        has = self.payloads.has_vector(ids)
        out = np.zeros((ids.size, self.spec.dim), dtype=np.float32)
        if has.any():
            out[has] = self.storage.vectors(ids[has])
        return out

    def get(self, ids: I64, with_payload: bool) -> tuple[F32, npt.NDArray[np.bool_], list[PayloadDict | None]]:
        """(vectors, found, payloads if asked) for `ids` in order; rows of missing ids (and of points
        without a vector: payloads.has_vector says which) are zeros."""
        found = np.fromiter((i in self.versions for i in ids.tolist()), dtype=bool, count=ids.size)
        out = np.zeros((ids.size, self.spec.dim), dtype=np.float32)
        if found.any():
            out[found] = self.vectors_of(ids[found])
        return out, found, self.payloads_of(ids) if with_payload else []

    def count_matching(self, f: ppb.Filter | None) -> tuple[int, list[str]]:
        """(points matching f, fields read without an index)."""
        if f is None:
            return self.count, []
        mask, unindexed = self.payloads.matching(f)
        return int(mask.sum()), unindexed

    def scroll(
        self, f: ppb.Filter | None, start_id: int, limit: int, with_payload: bool, with_vectors: bool
    ) -> tuple[I64, list[PayloadDict | None], F32 | None, bool]:
        """See ShardIndex.scroll."""
        ids, more = pages.scroll_ids(self.payloads.matching_ids(f), start_id, limit)
        payloads = self.payloads_of(ids) if with_payload else []
        vectors = self.vectors_of(ids) if with_vectors and ids.size else None
        return ids, payloads, vectors, more

    def entries(self, found: pages.Entries) -> Export:
        """Export entries (see `pages`) with the stored ones' vectors and payloads, as ShardIndex.export_page."""
        live, versions, dead, dead_versions = found
        vectors = self.vectors_of(live)
        if self.payloads.vectorless:  # rows of points without a vector: NaN (no stored vector is)
            vectors[~self.payloads.has_vector(live)] = np.nan
        return live, vectors, versions, dead, dead_versions, self.payloads_of(live)

    def sample(self, max_points: int, seed: int) -> tuple[I64, F32]:
        """A uniform random sample (without replacement) of at most max_points stored (id, vector) pairs."""
        chosen = pages.sample_ids(self.versions, max_points, seed)
        if self.payloads.vectorless:  # (a sample of the points with a vector, a little smaller)
            chosen = chosen[self.payloads.has_vector(chosen)]
        return chosen, self.vectors_of(chosen)

    def export(self) -> tuple[I64, F32]:
        """All (ids, vectors)."""
        whole = self.storage.flat_export()
        if whole is not None:
            return whole
        ids = np.array(self.versions.arrays()[0])
        if self.payloads.vectorless:
            ids = ids[self.payloads.has_vector(ids)]
        return ids, self.vectors_of(ids)

    def searcher(self, tie_budget: int) -> Searcher:
        """A search over the points as they are; the caller holds the read lock while it runs."""
        return Searcher(self.spec, self.storage, self.payloads, self.count - self.payloads.vectorless, tie_budget)

    @property
    def payload_indexes(self) -> list[tuple[str, int]]:
        """(field, PayloadIndexType) of each indexed payload field."""
        kinds = {v: k for k, v in INDEX_TYPES.items()}
        return sorted((f, kinds[kind]) for f, kind in self.payloads.index_kinds().items())

    def index_records(self) -> list[list[Any]]:
        """[field, PayloadIndexType] of each indexed field, and a TEXT index's params as JSON third
        (a snapshot's payload_indexes)."""
        texts = self.payloads.texts
        return [[f, t, params_to_json(texts[f].params)] if f in texts else [f, t] for f, t in self.payload_indexes]

    def index_protos(self) -> list[ppb.PayloadIndex]:
        """Each payload index as ShardCollectionState lists it: a TEXT one with its params and counts."""
        out = []
        texts = dict(self.payloads.texts)
        for field, kind in self.payload_indexes:
            index = ppb.PayloadIndex(field=field, type=kind)  # type: ignore[arg-type]
            text = texts.get(field)
            if text is not None:
                index.text.CopyFrom(text.params)
                index.text_stats.CopyFrom(text.stats_proto())
            out.append(index)
        return out

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot_state(self, lsn: int, epoch: dict[str, int]) -> snapshot.SnapshotState:
        """What a snapshot covering `lsn` writes besides the index (`epoch`: meta.json's last fields);
        under the write lock. The payload store holds freed slots back until `release_free`."""
        head = {
            "config": snapshot.spec_to_json(self.spec),
            "trained": self.storage.centroids is not None,
            "count": self.count,
            "lsn": lsn,
            "digest": self.digest,
        }
        versions, tombs = self.versions.freeze(), self.tombs.freeze()  # copy-on-write: no copy here
        payloads = self.payloads.freeze()  # payload dicts are never changed in place
        if self.storage.raw is not None:
            self.payloads.hold_free()  # the rows of the frozen slots stay as they are
        codec = self.storage.codec if self.spec.trained_codec else None
        vectorless = self.payloads.ids_of(~self.payloads.with_vector(self.payloads.slots))
        return snapshot.SnapshotState(
            versions, tombs, payloads, codec, head, self.index_records(), epoch, lsn, vectorless.copy()
        )

    def load(self, directory: Path, meta: dict[str, Any], index: Any, codec: bytes) -> None:
        """Hold what the snapshot in `directory` holds (its meta.json, index and codec already read)."""
        ids = self.storage.adopt(index, codec)
        vectorless = snapshot.read_vectorless(directory, meta)
        every = np.concatenate([ids, vectorless]) if vectorless.size else ids
        self.versions, self.tombs = snapshot.read_versions(directory, meta, every)
        with_payload = snapshot.read_payloads(directory, meta, self.versions)
        empty = (EMPTY, b"")
        self.payloads.put(every.tolist(), [with_payload.get(i, empty) for i in every.tolist()])
        self.payloads.set_has_vector(vectorless, False)
        if self.storage.raw is not None:
            self.storage.fill(*snapshot.read_vectors(directory, meta, ids, self.spec.dim))
        for field, kind, *text in meta.get("payload_indexes", []):
            self.payloads.create_index(field, INDEX_TYPES[kind], params_from_json(text[0]) if text else None)
        self.storage.relist()
        self.digest = int(meta["digest"]) if "digest" in meta else digest_of(*self.export())
