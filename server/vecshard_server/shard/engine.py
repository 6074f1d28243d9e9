"""The index engine: every faiss call of vecshard lives in this module.

A `ShardIndex` is one shard's partition of one collection:
- untrained (FLAT collections always, IVF_FLAT until trained): `IndexIDMap2(IndexFlat)`, exact;
- trained: `IndexIVFFlat` over the centroids the coordinator trained once for all shards, with a
  hashtable direct map so vectors can be read back and removed by id;
- IVF_SQ8 / IVF_SQFP16 / IVF_PQ: the compressed IVF index the coordinator trained (centroids and
  codec, shipped as an empty serialized faiss index), without a direct map; the exact floats live in
  a memory-mapped `VectorStore` (Get, Export, digests, snapshots and refine read them there).
COSINE collections hold unit vectors in an inner-product index (the coordinator normalises).

Thread safety: searches share a read lock; add/remove/swap take the write lock. faiss releases
the GIL, so the shard server runs these methods in worker threads.

Snapshots (`save`) hold no lock while the index is written: the partition is "frozen" for that
time. Under the write lock (briefly) the state to write is recorded and the main index stops
changing: later writes go to a small delta index of the same kind (a trained partition's delta is
an IVF index over the same centroids, so a search of it probes exactly the lists a search of the
main index probes), and ids of the main index removed or replaced meanwhile are masked (hidden from
searches by an IDSelector, and from reads by id). Reads consult both, merged by (distance, id). Once
the main index is on disk the masks and the delta are applied to it under the write lock: work
proportional to the writes made during the snapshot. Replacing the index (activating a training,
adopting a peer's copy) during a snapshot simply ends the frozen state: the new index holds everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss  # its bundled type stubs are incomplete (no DirectMap, no SearchParameters kwargs)
import numpy as np
import numpy.typing as npt

from vecshard.errors import AlreadyExists, FailedPrecondition, InvalidArgument, ResourceExhausted
from vecshard.payload import PayloadDict
from vecshard.types import IndexType, Metric
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.hashing import fmix64
from vecshard_server.common.results import FLT_MAX
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.accel import Accelerator, SearchCopy
from vecshard_server.shard.idmap import IdVersions, pairs_of
from vecshard_server.shard.locks import RWLock
from vecshard_server.shard.payloads import EMPTY, INDEX_TYPES, PayloadStore, decode, encode, payload_from_blob
from vecshard_server.shard.vectors import VectorStore

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Called under the write lock once a write is known to succeed, before it is applied: logs it and
# returns its log sequence number.
Journal = Callable[[], int]


_MASK = (1 << 64) - 1


def row_hashes(ids: I64, vectors: F32) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each (id, vector) pair; their sum (mod 2^64) is a partition's digest."""
    words = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32).astype(np.uint64)
    weights = fmix64(np.arange(1, words.shape[1] + 1, dtype=np.int64))
    with np.errstate(over="ignore"):
        mixed = (words * weights).sum(axis=1, dtype=np.uint64)
    return fmix64((mixed ^ fmix64(np.asarray(ids, dtype=np.int64))).view(np.int64))


def _without_keys(payload: PayloadDict, keys: Sequence[str]) -> PayloadDict:
    """A copy of payload without the (dotted) keys; the nested objects on a key's path are copied."""
    out = dict(payload)
    for key in keys:
        parts = key.split(".")
        node: dict[str, Any] = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                break
            node[part] = node = dict(child)
        else:
            node.pop(parts[-1], None)
    return out


def _digest_of(ids: I64, vectors: F32) -> int:
    return int(row_hashes(ids, vectors).sum(dtype=np.uint64)) if len(ids) else 0


class SnapshotCorrupt(RuntimeError):
    """A snapshot on disk does not match its recorded checksum or contents."""


_FAISS_METRIC = {
    Metric.L2: faiss.METRIC_L2,
    Metric.INNER_PRODUCT: faiss.METRIC_INNER_PRODUCT,
    Metric.COSINE: faiss.METRIC_INNER_PRODUCT,
    Metric.L1: faiss.METRIC_L1,
}


def faiss_metric(metric: Metric) -> int:
    return int(_FAISS_METRIC[metric])


def new_ivf(spec: CollectionSpec, centroids: F32, codec: bytes = b"") -> Any:
    """An empty IVF index of the collection's kind whose coarse quantizer holds exactly `centroids`
    (already trained); compressed kinds are built from `codec` (see `train_state`). InvalidArgument
    when the codec is not such an index."""
    if spec.trained_codec:
        ivf = _from_codec(spec, centroids, codec)
        if not spec.quantized:  # IVF_FLAT over an HNSW quantizer: read back and removed by id, as below
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        return ivf
    m = faiss_metric(spec.metric)
    quantizer = faiss.IndexFlat(spec.dim, m)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    ivf = faiss.IndexIVFFlat(quantizer, spec.dim, spec.nlist, m)
    assert ivf.is_trained
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    return ivf


def _untrained_ivf(spec: CollectionSpec) -> Any:
    """An untrained IVF index of the collection's kind and coarse quantizer."""
    m = faiss_metric(spec.metric)
    quantizer = faiss.IndexHNSWFlat(spec.dim, HNSW_M, m) if spec.hnsw_quantizer else faiss.IndexFlat(spec.dim, m)
    kind = spec.index_type
    ivf: Any
    if kind is IndexType.IVF_PQ:
        ivf = faiss.IndexIVFPQ(quantizer, spec.dim, spec.nlist, spec.pq_m, spec.pq_nbits, m)
    elif kind is IndexType.IVF_SQ8 or kind is IndexType.IVF_SQFP16:
        qtype = faiss.ScalarQuantizer.QT_8bit if kind is IndexType.IVF_SQ8 else faiss.ScalarQuantizer.QT_fp16
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, spec.dim, spec.nlist, qtype, m)
    else:
        ivf = faiss.IndexIVFFlat(quantizer, spec.dim, spec.nlist, m)
    return ivf


HNSW_M = 32  # neighbours per node of an HNSW coarse quantizer (faiss's IVF65536_HNSW32)


def _faiss_class(kind: IndexType) -> Any:
    if kind is IndexType.IVF_PQ:
        return faiss.IndexIVFPQ
    if kind is IndexType.IVF_SQ8 or kind is IndexType.IVF_SQFP16:
        return faiss.IndexIVFScalarQuantizer
    return faiss.IndexIVFFlat


def _from_codec(spec: CollectionSpec, centroids: F32, codec: bytes) -> Any:
    name = spec.index_type.name
    try:
        if not codec:
            raise ValueError("it is empty")
        ivf: Any = faiss.deserialize_index(np.frombuffer(codec, dtype=np.uint8))
    except (RuntimeError, ValueError) as err:
        raise InvalidArgument(
            f"the codec of a {name} collection must be a serialized empty trained faiss "
            f"index: {str(err).splitlines()[0][:200]}"
        ) from None
    want = _faiss_class(spec.index_type)
    sq = {IndexType.IVF_SQ8: faiss.ScalarQuantizer.QT_8bit, IndexType.IVF_SQFP16: faiss.ScalarQuantizer.QT_fp16}
    if (
        type(ivf) is not want
        or ivf.d != spec.dim
        or ivf.nlist != spec.nlist
        or ivf.ntotal != 0
        or not ivf.is_trained
        or ivf.metric_type != faiss_metric(spec.metric)
        or (spec.index_type is IndexType.IVF_PQ and (ivf.pq.M, ivf.pq.nbits) != (spec.pq_m, spec.pq_nbits))
        or (spec.index_type in sq and ivf.sq.qtype != sq[spec.index_type])
    ):
        raise InvalidArgument(
            f"the codec is a {type(ivf).__name__} (d={ivf.d}, nlist={getattr(ivf, 'nlist', '?')}, ntotal={ivf.ntotal}) "
            f"but collection {spec.name!r} needs an empty trained {want.__name__} of its dim, nlist and metric"
        )
    hnsw = isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSWFlat)
    if hnsw != spec.hnsw_quantizer:
        raise InvalidArgument(
            f"the codec's coarse quantizer is {'HNSW' if hnsw else 'flat'}, the collection's is "
            f"{'HNSW' if spec.hnsw_quantizer else 'flat'}"
        )
    held = np.asarray(ivf.quantizer.reconstruct_n(0, spec.nlist), dtype=np.float32)
    if not np.array_equal(held, np.asarray(centroids, dtype=np.float32)):
        raise InvalidArgument("the codec's coarse quantizer does not hold the centroids sent with it")
    return ivf


def train_state(x: F32, spec: CollectionSpec, seed: int) -> tuple[F32, bytes]:
    """Train the index exactly as faiss's `IndexIVF*.train` does: (centroids, codec). The codec is
    the trained empty index serialized by faiss (b"" for IVF_FLAT over a flat quantizer, whose state
    is the centroids). k-means assigns with a flat index (on the GPU when faiss sees one), also for
    an HNSW quantizer, which gets its graph over the final centroids."""
    ivf = _untrained_ivf(spec)
    ivf.clustering_index = _clustering_index(spec)
    ivf.cp.seed = int(seed) & 0x7FFFFFFF
    # The caller already sampled; keep faiss from sub-sampling again.
    ivf.cp.max_points_per_centroid = max(256, -(-x.shape[0] // spec.nlist))
    if spec.index_type is IndexType.IVF_PQ:
        ivf.pq.cp.seed = int(seed) & 0x7FFFFFFF
    ivf.train(np.ascontiguousarray(x, dtype=np.float32))
    centroids = np.asarray(ivf.quantizer.reconstruct_n(0, spec.nlist), dtype=np.float32)
    return centroids, faiss.serialize_index(ivf).tobytes() if spec.trained_codec else b""


def _clustering_index(spec: CollectionSpec) -> Any:
    flat = faiss.IndexFlat(spec.dim, faiss_metric(spec.metric))
    try:
        if faiss.get_num_gpus() > 0:
            return faiss.index_cpu_to_all_gpus(flat)
    except (AttributeError, RuntimeError) as err:  # a CPU build, or no usable device
        log.info("k-means on the CPU: %s", err)
    return flat


def train_centroids(x: F32, spec: CollectionSpec, seed: int) -> F32:
    """Train the coarse quantizer exactly as `IndexIVFFlat.train` does and return its centroids."""
    return train_state(x, spec, seed)[0]


def assign_lists(spec: CollectionSpec, centroids: F32, x: F32) -> npt.NDArray[np.int32]:
    """The IVF list of each vector: its nearest centroid under the collection's metric."""
    quantizer = faiss.IndexFlat(spec.dim, faiss_metric(spec.metric))
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, lists = quantizer.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    out: npt.NDArray[np.int32] = lists[:, 0].astype(np.int32)
    return out


def _ivf_ids(ivf: Any) -> I64:
    invlists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(ivf.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


@dataclasses.dataclass
class _Frozen:
    """A partition's state while its main index is being written to disk (see `save`)."""

    delta: Any  # the writes since the freeze: an index of the main index's kind
    masked: set[int]  # ids of the main index removed or replaced since the freeze (hidden there)
    # The ids stored in `delta`, each with its IVF list (-1 for a flat delta), in the order written.
    in_delta: dict[int, int]
    # The IDSelector hiding `masked` (which only grows): (its size when built, Not, Batch); the
    # Batch is kept referenced while the Not points to it.
    selector: tuple[int, Any, Any] | None = None

    def hide_masked(self) -> tuple[int, Any, Any] | None:
        """(size, selector of the ids not masked, its inner Batch), None when nothing is masked;
        the caller holds a lock (searches may build it concurrently: either copy will do)."""
        if not self.masked:
            return None
        cached = self.selector
        if cached is None or cached[0] != len(self.masked):
            ids = np.fromiter(self.masked, dtype=np.int64, count=len(self.masked))
            # A hashed set (its bloom filter uses the low id bits: ids sharing them only cost a set lookup).
            batch = faiss.IDSelectorBatch(ids.size, faiss.swig_ptr(ids))
            cached = self.selector = (ids.size, faiss.IDSelectorNot(batch), batch)
        return cached


@dataclasses.dataclass
class Prepared:
    """A training's index, built and kept up to date beside the serving one until activation."""

    epoch: int
    train_id: int
    centroids: F32
    index: Any
    codec: bytes = b""


class ShardIndex:
    """One shard's partition of one collection."""

    def __init__(self, spec: CollectionSpec, max_vectors: int, accelerator: Accelerator | None = None) -> None:
        self.spec = spec
        self.max_vectors = max_vectors
        # GPU IVF serves L2 and inner product (COSINE is inner product here); L1 stays on the CPU, and
        # so do the compressed kinds for now (their GPU copies are not built or tested yet).
        self._accelerator = accelerator if spec.metric is not Metric.L1 and not spec.trained_codec else None
        self._copy: SearchCopy | None = None
        self._copy_lock = threading.Lock()
        self._lock = RWLock()
        self._install_lock = threading.Lock()
        self._save_lock = threading.Lock()  # one snapshot at a time
        # Per id, the version of its last write: stored ids in _versions, removed ones (tombstones)
        # in _tombs; an id is in at most one of them. See vecshard_server.common.versions.
        self._versions = IdVersions()
        self._tombs = IdVersions()
        self._payloads = PayloadStore()  # every stored id has a slot here (an empty payload at least)
        self._index: Any = self._new_flat()
        self._frozen: _Frozen | None = None  # while a snapshot writes the index (see `save`)
        self._centroids: F32 | None = None
        self._codec = b""  # compressed kinds: the trained empty index (see train_state)
        # Compressed kinds: the exact vectors, by payload slot, on disk.
        self._raw = VectorStore(spec.dim, self.scratch_dir) if spec.quantized else None
        # While a quantizer is being installed: the writes to replay on the new index.
        self._pending: list[tuple[str, I64, F32 | None]] | None = None
        self.digest = 0  # sum of row_hashes over the stored pairs, mod 2^64
        self.applied_lsn = 0  # the last logged write applied here
        self.snapshot_lsn = 0  # the last logged write in the snapshot on disk
        self.dropped = False  # set under the write lock by the collection's drop; later writes are refused
        self.writes = 0  # writes applied (see ShardCollectionState.writes)
        self.max_version = 0  # the newest write version applied
        self.incarnation = 0  # the version of the create that made this partition here (0: unknown)
        self.aborted: OrderedDict[int, None] = OrderedDict()  # Add versions RollbackAdd has seen
        self.train_epoch = 0  # the active training of the shared quantizer (0: untrained)
        self.train_id = 0
        self._prepared: Prepared | None = None

    def mark_dropped(self, journal: Journal | None = None) -> None:
        """Drop: once in-flight writes are done (they log before the drop), refuse every later one."""
        with self._lock.write():
            if journal is not None:
                journal()
            self.dropped = True

    @property
    def count(self) -> int:
        return len(self._versions)

    @property
    def tombstones(self) -> int:
        return len(self._tombs)

    @property
    def trained(self) -> bool:
        return self._centroids is not None

    @property
    def centroids(self) -> F32 | None:
        return self._centroids

    @property
    def codec(self) -> bytes:
        return self._codec

    # The shard's data dir (None: the system's temp dir), for compressed kinds' vector files; set
    # by the shard process.
    scratch_dir: Path | None = None

    # -- writes ---------------------------------------------------------------------------------

    def add(
        self,
        ids: I64,
        vectors: F32,
        upsert: bool,
        journal: Journal | None = None,
        version: int | I64 = 0,
        payloads: Sequence[ppb.Payload] | None = None,
    ) -> tuple[int, int]:
        """Add (or with upsert, replace) points written at `version` (one for all ids, or one per id;
        0: unversioned, as in logs of older versions: applied as it comes). Returns (added, replaced).
        `payloads`: none, or one per id (a point's payload is replaced with its vector).

        Per id the newest version wins: an id stored at a newer version, or removed at one at least
        as new, is left as it is; an id stored at this very version is this write again (a retry,
        a replay) and left alone. Without upsert the whole write is refused (AlreadyExists) when an
        id is stored from another write. All or nothing otherwise.
        """
        decoded = decode(payloads) if payloads else None  # outside the lock
        with self._lock.write():
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            versions = np.broadcast_to(np.asarray(version, dtype=np.int64), ids.shape)
            held = self._versions.get_many(ids)  # -1: not stored
            stored = held >= 0
            versioned = versions > 0
            again = stored & versioned & (held == versions)  # this very write again
            newer = stored & versioned & (held > versions)  # a newer write of the id
            if upsert:
                skip = again | newer
            else:
                conflicts = ids[stored & ~again]
                if conflicts.size:
                    shown = ", ".join(map(str, conflicts[:5].tolist()))
                    raise AlreadyExists(
                        f"ids already stored in collection {self.spec.name!r}: {shown}"
                        f"{' ...' if conflicts.size > 5 else ''}; pass upsert=true to replace them"
                    )
                skip = again
            if self._tombs:  # removed (or this Add rolled back) at a version at least as new
                skip |= ~stored & versioned & (self._tombs.get_many(ids) >= versions)
            if skip.any():
                keep = ~skip
                ids, vectors, versions, stored = ids[keep], vectors[keep], versions[keep], stored[keep]
                if decoded is not None:
                    decoded = [d for d, k in zip(decoded, keep.tolist(), strict=True) if k]
            if not ids.size:
                return 0, 0
            present = ids[stored]
            new = ids.size - present.size
            if self.count + new > self.max_vectors:
                raise ResourceExhausted(
                    f"collection {self.spec.name!r} would hold {self.count + new} vectors on this shard, over "
                    f"max_vectors_per_shard={self.max_vectors}: add shards or raise VECSHARD_MAX_VECTORS_PER_SHARD"
                )
            if journal is not None:
                self.applied_lsn = journal()
            if present.size:
                old_ids = present
                self.digest = (self.digest - _digest_of(old_ids, self._vectors(old_ids))) & _MASK
                self._unstore(old_ids)
                if self._copy is not None:
                    self._copy.remove(old_ids)  # their old slots become tombstones; the new vectors take new ones
            if self._raw is not None and present.size:
                # New slots (new rows) for replaced points: a snapshot may be reading their old rows.
                self.digest = (self.digest + self._payloads.drop(present.tolist())) & _MASK
            change = self._payloads.put(ids.tolist(), decoded if decoded is not None else [(EMPTY, b"")] * ids.size)
            if self._raw is not None:
                self._raw.put(self._payloads.slots_of(ids), vectors)
            self._store(ids, vectors)  # after put: it records each id's IVF list in its payload slot
            if self._copy is not None:
                self._copy.add(ids, vectors)
                if self._copy.stale:
                    self._copy = None  # rebuilt at the next search
            self.digest = (self.digest + _digest_of(ids, vectors)) & _MASK
            self.digest = (self.digest + change) & _MASK
            self._versions.set_many(ids, versions)
            self._tombs.delete_many(ids)
            self.max_version = max(self.max_version, int(versions.max()))
            self.writes += 1
            if self._pending is not None:
                self._pending.append(("add", ids, vectors))
            return new, int(present.size)

    def remove(self, ids: I64, journal: Journal | None = None, version: int | I64 = 0, rollback: bool = False) -> int:
        """Remove ids at `version` (one for all, or one per id; 0: unversioned, applied as it comes):
        a stored id goes unless stored at a newer version (at equal versions the removal wins); the
        removal leaves a tombstone at `version`, absent ids included, so an older write of them
        arriving later (from a peer, say) stores nothing. rollback: take back the Add of `version`:
        only ids stored at exactly that version go, and ids stored at an older one stay as they are.
        Returns how many stored ids were removed."""
        with self._lock.write():
            return self._remove_locked(ids, journal, version, rollback)

    def remove_matching(self, f: ppb.Filter, journal: Journal | None, version: int, resolved: list[I64]) -> int:
        """Remove the points matching `f` (as `remove`, at `version`); the ids are appended to
        `resolved` before `journal` runs, for the log record."""
        with self._lock.write():
            ids = self._payloads.matching_ids(f)
            resolved.append(ids)
            if not ids.size:
                return 0
            return self._remove_locked(ids, journal, version, False)

    def _remove_locked(self, ids: I64, journal: Journal | None, version: int | I64, rollback: bool) -> int:
        wanted: dict[int, int] = {}  # an id listed twice: its newest version
        for i, v in zip(
            ids.tolist(), np.broadcast_to(np.asarray(version, dtype=np.int64), ids.shape).tolist(), strict=True
        ):
            wanted[i] = max(v, wanted.get(i, v))
        stored, tombs = self._versions, self._tombs
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
        if not gone and not marks:
            return 0
        if journal is not None:
            self.applied_lsn = journal()
        present = np.asarray(gone, dtype=np.int64)
        if present.size:
            self.digest = (self.digest - _digest_of(present, self._vectors(present))) & _MASK
            self._unstore(present)
            for i in gone:
                del stored[i]
            self.digest = (self.digest + self._payloads.drop(gone)) & _MASK
            if self._copy is not None:
                self._copy.remove(present)
                if self._copy.stale:
                    self._copy = None  # rebuilt at the next search
            if self._pending is not None:
                self._pending.append(("remove", present, None))
        tombs.update(marks)
        if marks:
            self.max_version = max(self.max_version, max(v for _, v in marks))
        self.writes += 1
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
            ids, versions = self._tombs.arrays()
            old = ids[versions < older_than]
            self._tombs.delete_many(old)
            return int(old.size)

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
    ) -> int:
        """Write the payloads of the stored points among `ids` (or matching `f`) at `version`: MERGE
        sets patch's top-level keys, OVERWRITE replaces the payload with patch, DELETE_KEYS removes
        `keys`. A point held at this version or a newer one is left as it is. The ids the write
        resolved to are appended to `resolved` before `journal` runs. Returns how many were written."""
        with self._lock.write():
            if ids is None:
                ids = self._payloads.matching_ids(f)
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            resolved.append(ids)
            held = self._versions.get_many(ids)
            todo = held >= 0
            if version:
                todo &= held < version
            ids = ids[todo]
            if not ids.size:
                return 0
            if journal is not None:
                self.applied_lsn = journal()
            out = []
            for i in ids.tolist():
                old = self._payloads.get(i) or EMPTY
                if mode == pb.SET_PAYLOAD_MODE_OVERWRITE:
                    new = dict(patch)
                elif mode == pb.SET_PAYLOAD_MODE_DELETE_KEYS:
                    new = _without_keys(old, keys)
                else:
                    new = {**old, **patch}
                out.append((new, encode(new)))
            self.digest = (self.digest + self._payloads.put(ids.tolist(), out)) & _MASK
            if version:
                self._versions.set_many(ids, np.full(ids.size, version, dtype=np.int64))
                self.max_version = max(self.max_version, version)
            self.writes += 1
            return int(ids.size)

    def payloads_of(self, ids: I64) -> list[PayloadDict | None]:
        """The payload of each id (None when not stored); the caller holds a lock."""
        get = self._payloads.get
        return [get(i) if i >= 0 else None for i in ids.tolist()]

    def count_matching(self, f: ppb.Filter | None) -> tuple[int, list[str]]:
        """(points matching f, fields read without an index)."""
        with self._lock.read():
            if f is None:
                return self.count, []
            mask, unindexed = self._payloads.matching(f)
            return int(mask.sum()), unindexed

    def scroll(
        self, f: ppb.Filter | None, start_id: int, limit: int, with_payload: bool, with_vectors: bool
    ) -> tuple[I64, list[PayloadDict | None], F32 | None, bool]:
        """The first `limit` matching ids >= start_id ascending, their payloads and vectors (if
        asked), and whether more match after them."""
        with self._lock.read():
            ids = self._payloads.matching_ids(f)
            ids = ids[ids >= start_id]
            more = ids.size > limit
            if more:  # the `limit` smallest, without sorting them all
                ids = np.partition(ids, limit - 1)[:limit]
            ids = np.ascontiguousarray(np.sort(ids))
            payloads = self.payloads_of(ids) if with_payload else []
            vectors = self._vectors(ids) if with_vectors and ids.size else None
            return ids, payloads, vectors, bool(more)

    @property
    def payload_indexes(self) -> list[tuple[str, int]]:
        kinds = {v: k for k, v in INDEX_TYPES.items()}
        return sorted((f, kinds[i.kind]) for f, i in self._payloads.indexes.items())

    def create_payload_index(self, field: str, kind: int, journal: Journal | None = None) -> bool:
        """Index a payload field; False when it already is, with this kind."""
        if kind not in INDEX_TYPES:
            raise InvalidArgument(f"payload index type {kind} is not one of KEYWORD, INTEGER, FLOAT, BOOL")
        with self._lock.write():
            have = self._payloads.indexes.get(field)
            if have is not None and have.kind == INDEX_TYPES[kind]:
                return False
            if have is None and journal is not None:
                self.applied_lsn = journal()
            return self._payloads.create_index(field, INDEX_TYPES[kind])

    def drop_payload_index(self, field: str, journal: Journal | None = None) -> None:
        with self._lock.write():
            if field in self._payloads.indexes and journal is not None:
                self.applied_lsn = journal()
            self._payloads.drop_index(field)

    def _store(self, ids: I64, vectors: F32) -> None:
        """Add new ids to the CPU index (to the delta while frozen); the caller holds the write lock."""
        frozen = self._frozen
        target = self._index if frozen is None else frozen.delta
        if isinstance(target, faiss.IndexIVF):
            # As IndexIVF.add_with_ids does (assign, then add_core), keeping each vector's list: filtered
            # searches probe only lists holding matches, and the thaw moves a delta's vector to the
            # same list of the main index in one faiss call.
            x = np.ascontiguousarray(vectors, dtype=np.float32)
            xids = np.ascontiguousarray(ids, dtype=np.int64)
            lists = np.ascontiguousarray(target.quantizer.assign(x, 1)[:, 0], dtype=np.int64)
            target.add_core(xids.size, faiss.swig_ptr(x), faiss.swig_ptr(xids), faiss.swig_ptr(lists))
            self._payloads.set_lists(xids, lists)
            if frozen is not None:
                stored = lists >= 0  # (a vector with no list, NaN say, is not stored: as in add_with_ids)
                frozen.in_delta.update(zip(xids[stored].tolist(), lists[stored].tolist(), strict=True))
        elif frozen is None:
            self._index.add_with_ids(vectors, ids)
        else:
            frozen.delta.add_with_ids(vectors, ids)
            frozen.in_delta.update(dict.fromkeys(ids.tolist(), -1))

    def _unstore(self, ids: I64) -> None:
        """Remove stored ids from the CPU index (while frozen: from the delta, or masked in the main
        index); the caller holds the write lock."""
        frozen = self._frozen
        if frozen is None:
            self._remove_from(self._index, ids)
            return
        new = np.fromiter((i in frozen.in_delta for i in ids.tolist()), dtype=bool, count=ids.size)
        if new.any():
            self._remove_from(frozen.delta, ids[new])
            for i in ids[new].tolist():
                del frozen.in_delta[i]
        frozen.masked.update(ids[~new].tolist())

    def _vectors(self, ids: I64) -> F32:
        """The vectors of stored `ids`, in order; the caller holds a lock."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self._raw is not None:
            return self._raw.rows(self._payloads.slots_of(ids))
        frozen = self._frozen
        if frozen is None or not frozen.in_delta:
            return np.asarray(self._index.reconstruct_batch(ids), dtype=np.float32)
        new = np.fromiter((i in frozen.in_delta for i in ids.tolist()), dtype=bool, count=ids.size)
        out = np.empty((ids.size, self.spec.dim), dtype=np.float32)
        if not new.all():
            out[~new] = self._index.reconstruct_batch(np.ascontiguousarray(ids[~new]))
        if new.any():
            out[new] = frozen.delta.reconstruct_batch(np.ascontiguousarray(ids[new]))
        return out

    @staticmethod
    def _remove_from(index: Any, ids: I64) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if isinstance(index, faiss.IndexIVF) and index.direct_map.type == faiss.DirectMap.Hashtable:  # type: ignore[attr-defined]
            # The hashtable direct map only accepts an IDSelectorArray.
            index.remove_ids(faiss.IDSelectorArray(ids.size, faiss.swig_ptr(ids)))
        else:
            index.remove_ids(ids)  # IDSelectorBatch: hashed lookups over the id map

    # -- reads ----------------------------------------------------------------------------------

    def get(self, ids: I64, with_payload: bool = False) -> tuple[F32, npt.NDArray[np.bool_], list[PayloadDict | None]]:
        """(vectors, found, payloads if asked) for `ids` in order; rows of missing ids are zeros."""
        with self._lock.read():
            found = np.fromiter((i in self._versions for i in ids.tolist()), dtype=bool, count=ids.size)
            out = np.zeros((ids.size, self.spec.dim), dtype=np.float32)
            if found.any():
                out[found] = self._vectors(ids[found])
            return out, found, self.payloads_of(ids) if with_payload else []

    @property
    def device(self) -> str:
        """Where trained searches run: the accelerator's name, or "cpu"."""
        return self._accelerator.name if self._accelerator is not None and self.trained else "cpu"

    def search_work(self, nq: int, nprobe: int) -> int:
        """About how many multiply-adds a search of nq queries takes (vectors scanned x dim)."""
        if not self.trained:
            return nq * self.count * self.spec.dim
        probe = max(1, min(nprobe or self.spec.nprobe, self.spec.nlist))
        return nq * (self.count * probe // max(1, self.spec.nlist) + self.spec.nlist) * self.spec.dim

    def search_now(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64] | None:
        """`search`, on this thread, if the partition is free to read right now (no write holds or
        waits for the lock) and has no accelerator copy to (re)build; None otherwise. For tiny
        searches, where handing the work to a thread costs more than the work."""
        if self._accelerator is not None:
            return None
        with self._lock.read_if_free() as free:
            return self._search_locked(queries, k, nprobe) if free else None

    def search(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64]:
        """This shard's top-k of each query (exact while untrained), ordered by (distance in the metric's
        direction, id): of equal distances the smaller id comes first and wins the last places."""
        with self._lock.read():
            return self._search_locked(queries, k, nprobe)

    def _search_locked(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64]:
        """`search` with the read lock held."""
        if not self.trained:
            return self._ranked(queries, k, self._cpu_search(0))
        probe = max(1, min(nprobe or self.spec.nprobe, self.spec.nlist))
        params = faiss.SearchParametersIVF(nprobe=probe)  # type: ignore[call-arg]
        copy = self._search_copy()
        cpu = self._cpu_search(probe)
        pad = float(-FLT_MAX if self.spec.larger_is_better else FLT_MAX)

        def run(q: F32, fetch: int) -> tuple[F32, I64]:
            if copy is None or not copy.can_answer(fetch):
                return cpu(q, fetch)
            D, I, short = copy.search(q, fetch, params, pad)
            if short.any():  # too many tombstones among these rows' results for the copy
                D[short], I[short] = cpu(q[short], fetch)
            return D, I

        return self._ranked(queries, k, run)

    def search_filtered(
        self, queries: F32, k: int, nprobe: int, f: ppb.Filter, with_payload: bool = False
    ) -> tuple[F32, I64, ppb.FilterPlan, list[PayloadDict | None]]:
        """This shard's top-k among the points matching `f`, as `search` orders them, with the plan
        that ran and (if asked) the hits' payloads. Never fewer than min(k, matches) hits per query.

        Plans: "exact" computes distances to every match (recall 1.0) when that costs no more than
        the IVF search would scan; otherwise an IVF search at nprobe whose candidates are filtered
        ("ivf-postfilter": matches are common, so k / pass-rate candidates hold k of them), or
        restricted to the matches by an IDSelector ("ivf-filtered"); rows still short of hits probe
        twice as many lists, up to nlist (where the search is exhaustive over the matches).
        Untrained partitions: "exact", or "flat-filtered" (the whole partition, restricted)."""
        with self._lock.read():
            mask, unindexed = self._payloads.matching(f)
            m, n, nq = int(np.count_nonzero(mask)), self.count, queries.shape[0]
            plan = ppb.FilterPlan(matches=m, unindexed_fields=unindexed)
            pad = float(-FLT_MAX if self.spec.larger_is_better else FLT_MAX)
            D = np.full((nq, k), pad, dtype=np.float32)
            I = np.full((nq, k), -1, dtype=np.int64)
            if m == 0:
                plan.plan = "none"
            elif not self.trained:
                if 4 * m <= n:
                    D, I = self._exact_among(queries, k, mask)
                    plan.plan = "exact"
                else:
                    D, I = self._ranked(queries, k, self._cpu_search(0, self._selector(mask)), n=m)
                    plan.plan = "flat-filtered"
            else:
                probe = max(1, min(nprobe or self.spec.nprobe, self.spec.nlist))
                if m * self.spec.nlist <= n * probe * self.filter_exact_ratio:
                    D, I = self._exact_among(queries, k, mask)
                    plan.plan = "exact"
                else:
                    D, I, plan.nprobe, plan.plan = self._ivf_filtered(queries, k, probe, m, mask)
            payloads = self.payloads_of(I.reshape(-1)) if with_payload else []
            return D, I, plan, payloads

    def search_with_payloads(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64, list[PayloadDict | None]]:
        """`search`, and the payload of each hit (None for a hit removed since)."""
        D, I = self.search(queries, k, nprobe)
        with self._lock.read():
            return D, I, self.payloads_of(I.reshape(-1))

    def refined(self, queries: F32, I: I64, wait: bool = True) -> F32 | None:
        """The exact float distances (in the metric of the index: squared L2, or inner product) of
        each query to its candidates `I` (nq x c, -1 padded), as faiss's IndexRefineFlat computes them
        to re-rank; the padding distance for -1 and for ids removed since the search. wait=False:
        None if the partition cannot be read right now (a write holds or waits for the lock)."""
        assert self._raw is not None  # (compressed kinds only)
        pad = np.float32(-FLT_MAX if self.spec.larger_is_better else FLT_MAX)
        nq, c = I.shape
        flat = I.reshape(-1)
        slots = np.full(flat.size, -1, dtype=np.int64)
        with self._lock.read() if wait else self._lock.read_if_free() as free:
            if free is False:
                return None
            ok = flat >= 0
            if ok.any():
                slots[ok] = self._payloads.slots_of(flat[ok])  # -1: removed since the search
            have = slots >= 0
            rows = np.zeros((flat.size, self.spec.dim), dtype=np.float32)
            if have.any():
                rows[have] = self._raw.rows(slots[have])
        V = rows.reshape(nq, c, self.spec.dim)
        Q = np.asarray(queries, dtype=np.float32)
        if self.spec.larger_is_better:
            d = np.einsum("qcd,qd->qc", V, Q)
        else:
            V -= Q[:, None, :]  # (in place: no second candidates-sized array)
            d = np.einsum("qcd,qcd->qc", V, V)
        return np.where(have.reshape(nq, c), d, pad).astype(np.float32)

    def _exact_among(self, queries: F32, k: int, mask: npt.NDArray[np.bool_]) -> tuple[F32, I64]:
        """Exact top-k over the vectors of the points where `mask` (over payload slots) is set; the
        caller holds a lock."""
        members = np.ascontiguousarray(self._payloads.ids_of(mask))
        flat = faiss.IndexFlat(self.spec.dim, faiss_metric(self.spec.metric))
        flat.add(np.ascontiguousarray(self._vectors(members), dtype=np.float32))

        def search(q: F32, fetch: int) -> tuple[F32, I64]:
            D, I = flat.search(q, fetch)
            return D, np.where(I >= 0, members[np.maximum(I, 0)], -1)

        return self._ranked(queries, k, search, n=members.size)

    def _selector(self, mask: npt.NDArray[np.bool_]) -> Any:
        """An IDSelector accepting exactly the points where `mask` is set: a bitmap indexed by id when the ids
        are small enough (a millisecond to build for a million ids), else a hashed set of them (or of
        the rest, when smaller)."""
        members = np.ascontiguousarray(self._payloads.ids_of(mask))
        top = int(members.max()) + 1 if members.size else 0
        if top <= self._BITMAP_IDS:
            bits = np.zeros(top, dtype=bool)
            bits[members] = True
            bitmap = np.packbits(bits, bitorder="little")
            bitmap_sel = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))  # n: bytes, not bits
            bitmap_sel.referenced = bitmap  # type: ignore[attr-defined]  # kept alive with the selector
            return bitmap_sel
        if 2 * members.size <= self.count:
            batch = faiss.IDSelectorBatch(members.size, faiss.swig_ptr(members))
            batch.referenced = members  # type: ignore[attr-defined]  # kept alive with the selector
            return batch
        rest = np.ascontiguousarray(self._payloads.ids_of(~mask))
        batch = faiss.IDSelectorBatch(rest.size, faiss.swig_ptr(rest))
        batch.referenced = rest  # type: ignore[attr-defined]
        sel = faiss.IDSelectorNot(batch)
        sel.referenced = batch  # type: ignore[attr-defined]
        return sel

    def _ivf_filtered(
        self, queries: F32, k: int, probe: int, m: int, mask: npt.NDArray[np.bool_]
    ) -> tuple[F32, I64, int, str]:
        """(D, I, the largest nprobe used, plan) of a trained partition's filtered search."""
        n, nq, nlist = self.count, queries.shape[0], self.spec.nlist
        need = min(k, m)
        pad = float(-FLT_MAX if self.spec.larger_is_better else FLT_MAX)
        D = np.full((nq, k), pad, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)
        rows = np.arange(nq)
        plan = "ivf-filtered"
        fetch = min(n, -(-k * n // m) * 3 // 2 + 16)
        counts = self._payloads.list_counts(mask, nlist)
        # the `probe` nearest lists holding matches, and more until they hold the share of the
        # matches an unfiltered search scans of all points (and at least k)
        target = max(need, -(-m * probe // nlist))
        likely = rows
        if self._frozen is None:  # filtering candidates pays where the nearest lists hold their share
            _, near = self._index.quantizer.search(np.ascontiguousarray(queries, dtype=np.float32), probe)
            likely = np.flatnonzero(counts[np.maximum(near, 0)].sum(axis=1) >= target)
        if likely.size and likely.size * fetch <= self._POSTFILTER_RESULTS:
            plan = "ivf-postfilter"
            cD, cI = self._cpu_search(probe)(queries[likely], fetch)
            ok = self._payloads.contains(cI.reshape(-1), mask).reshape(cI.shape) & (cI >= 0)
            order = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # passing candidates first, best first
            pD, pI = np.take_along_axis(cD, order, axis=1), np.take_along_axis(cI, order, axis=1)
            passed = np.take_along_axis(ok, order, axis=1)
            pD, pI = np.where(passed, pD, pad), np.where(passed, pI, -1)
            D[likely], I[likely] = self._ordered(np.ascontiguousarray(pD), np.ascontiguousarray(pI), k)
            short = np.zeros(nq, dtype=bool)
            short[likely[ok.sum(axis=1) < need]] = True
            short[np.setdiff1d(rows, likely)] = True
            rows = np.flatnonzero(short)
        used = probe
        if rows.size:
            plan = "ivf-filtered"
            sel = self._selector(mask)
            if self._frozen is None:  # probe the nearest lists holding matches, as many as it takes
                search, width = self._search_lists_with_matches(probe, target, counts, sel)
                D[rows], I[rows] = self._ranked(queries[rows], k, search, n=m)
                used = width[0]
            else:  # while a snapshot is written: twice the lists until every row has its hits
                while rows.size:
                    used = probe
                    rD, rI = self._ranked(queries[rows], k, self._cpu_search(probe, sel), n=m)
                    done = ((rI >= 0).sum(axis=1) >= need) | (probe >= nlist)
                    D[rows[done]], I[rows[done]] = rD[done], rI[done]
                    rows = rows[~done]
                    probe = min(nlist, 2 * probe)
        return D, I, used, plan

    def _search_lists_with_matches(
        self, probe: int, target: int, counts: npt.NDArray[np.int64], sel: Any
    ) -> tuple[Callable[[F32, int], tuple[F32, I64]], list[int]]:
        """A search (for `_ranked`) of each query's lists holding matches (counts per list), restricted
        by `sel`: the `probe` nearest of them; further ones until they hold `target` matches; and
        every one whose centroid is as close to the nearest of them as an unfiltered search's
        `probe`-th centroid is to its first (the same width of shell, moved out to where the matches
        begin: when they begin far away, many lists lie at about the same distance). Also a cell
        holding the most lists any call probed. The caller holds the read lock."""
        index = self._index
        nlist = index.nlist
        holding = counts > 0
        width = [0]
        sign = -1.0 if self.spec.larger_is_better else 1.0  # coarse distances as "smaller is nearer"

        def search(q: F32, fetch: int) -> tuple[F32, I64]:
            q = np.ascontiguousarray(q, dtype=np.float32)
            coarse_d, order = index.quantizer.search(q, nlist)  # every list, nearest first
            has = holding[order]
            rank = np.cumsum(has, axis=1)
            before = np.cumsum(counts[order], axis=1) - counts[order]  # matches in the nearer lists
            near = sign * coarse_d.astype(np.float64)
            shell = near[:, min(probe, nlist) - 1] - near[:, 0]
            first = np.take_along_axis(near, np.argmax(has, axis=1)[:, None], axis=1)[:, 0]
            take = has & ((rank <= probe) | (before < target) | (near <= (first + shell)[:, None]))
            w = max(1, int(take.sum(axis=1).max()))
            width[0] = max(width[0], w)
            pos = np.argsort(~take, axis=1, kind="stable")[:, :w]  # the taken lists, nearest first
            assign = np.where(np.take_along_axis(take, pos, axis=1), np.take_along_axis(order, pos, axis=1), -1)
            assign = np.ascontiguousarray(assign, dtype=np.int64)
            dis = np.ascontiguousarray(np.take_along_axis(coarse_d, pos, axis=1), dtype=np.float32)
            n = q.shape[0]
            D = np.empty((n, fetch), dtype=np.float32)
            I = np.empty((n, fetch), dtype=np.int64)
            params = faiss.SearchParametersIVF(nprobe=w, sel=sel)  # type: ignore[call-arg]
            index.search_preassigned_c(
                n,
                faiss.swig_ptr(q),
                fetch,
                faiss.swig_ptr(assign),
                faiss.swig_ptr(dis),
                faiss.swig_ptr(D),
                faiss.swig_ptr(I),
                False,
                params,
            )
            return D, I

        return search, width

    # Settings.filter_exact_ratio, set by the shard process (one setting for all its partitions).
    filter_exact_ratio = 1.0
    _POSTFILTER_RESULTS = 1 << 16  # candidates per request filtered by lookup before an IDSelector pays
    _BITMAP_IDS = 1 << 27  # ids below this get a bitmap IDSelector (16 MiB at most)

    def _cpu_search(self, nprobe: int, only: Any = None) -> Callable[[F32, int], tuple[F32, I64]]:
        """A search of the CPU index (faiss's contract: rows best first, -1 padding last; nprobe 0:
        untrained), restricted to the ids the IDSelector `only` accepts when given; the caller holds
        the read lock while it runs. While frozen: the main index without its masked ids, merged with
        the delta."""
        index, frozen = self._index, self._frozen

        def params(sel: Any = None) -> Any:  # a new object per call: IndexIDMap's search alters it
            kw = {"sel": sel} if sel is not None else {}
            if nprobe:
                return faiss.SearchParametersIVF(nprobe=nprobe, **kw)  # type: ignore[call-arg]
            return faiss.SearchParameters(**kw) if kw else None

        if frozen is None:
            return lambda q, fetch: index.search(q, fetch, params=params(only))
        hide = frozen.hide_masked()
        delta = frozen.delta
        larger = self.spec.larger_is_better
        main_sel = only if hide is None else hide[1] if only is None else faiss.IDSelectorAnd(only, hide[1])

        def merged(q: F32, fetch: int) -> tuple[F32, I64]:
            D, I = index.search(q, fetch, params=params(main_sel))
            if not delta.ntotal:
                return D, I
            dD, dI = delta.search(q, fetch, params=params(only))
            D, I = np.hstack([D, dD]), np.hstack([I, dI])
            key = np.where(I >= 0, -D if larger else D, np.inf)
            order = np.argsort(key, axis=1, kind="stable")[:, :fetch]
            return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)

        return merged

    def _ranked(
        self, queries: F32, k: int, search: Callable[[F32, int], tuple[F32, I64]], fetch: int = 0, n: int = -1
    ) -> tuple[F32, I64]:
        """The top-k of `search` (faiss's contract: rows best first, -1 padding last) with ties broken
        by the smaller id. faiss keeps whichever tied ids it met first at the k boundary, so it is asked
        for k + 1: rows whose (k+1)-th result ties the k-th are searched again with twice the results
        (at most the number stored, in chunks of rows holding at most _TIE_BUDGET results) until their
        whole tie group is in; then rows are sorted by (distance, id) and cut to k. Without a tie at
        the boundary that is one faiss call."""
        n = self.count if n < 0 else n
        if k < 1 or k >= n:  # all stored vectors fit in k: no tie can cross the boundary
            return self._ordered(*search(queries, k), k)
        fetch = fetch or k + 1
        D, I = search(queries, fetch)
        more = (I[:, -1] >= 0) & (D[:, -1] == D[:, k - 1]) if fetch < n else np.zeros(len(I), dtype=bool)
        out_d, out_i = self._ordered(D, I, k)
        del D, I
        rows = np.flatnonzero(more)
        fetch = min(2 * fetch, n)
        step = max(1, self._TIE_BUDGET // fetch)
        for start in range(0, rows.size, step):
            chunk = rows[start : start + step]
            out_d[chunk], out_i[chunk] = self._ranked(queries[chunk], k, search, fetch, n)
        return out_d, out_i

    _TIE_BUDGET = 1 << 22  # results per faiss call when searching again past a tie

    def _ordered(self, D: F32, I: I64, k: int) -> tuple[F32, I64]:
        """Rows (sorted by distance) re-sorted by (distance in the metric's direction, id), cut to k."""
        tied = ((D[:, 1:] == D[:, :-1]) & (I[:, 1:] >= 0)).any(axis=1)
        if tied.any():
            d, i = D[tied], I[tied]
            key = np.where(i >= 0, -d if self.spec.larger_is_better else d, np.inf)
            order = np.lexsort((np.where(i >= 0, i, np.iinfo(np.int64).max), key), axis=1)
            D, I = D.copy(), I.copy()
            D[tied], I[tied] = np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)
        return np.ascontiguousarray(D[:, :k]), np.ascontiguousarray(I[:, :k])

    def _search_copy(self) -> SearchCopy | None:
        """The accelerator copy, (re)built from the CPU index when missing; the caller holds a lock.
        While frozen the main index is not the partition's state: a missing copy waits for the thaw
        (the writes keep an existing copy exact, as always)."""
        if self._accelerator is None or self._copy is not None or self._frozen is not None:
            return self._copy
        with self._copy_lock:
            if self._copy is None:
                self._copy = SearchCopy(self._accelerator, self._index)
            return self._copy

    def sample(self, max_points: int, seed: int) -> tuple[I64, F32]:
        """A uniform random sample (without replacement) of at most max_points stored (id, vector) pairs."""
        with self._lock.read():
            ids = self._versions.arrays()[0]  # ascending
            rng = np.random.default_rng(seed)
            n = min(max_points, ids.size)
            chosen = np.sort(rng.choice(ids, size=n, replace=False)) if n < ids.size else ids.copy()
            if not chosen.size:
                return chosen, np.empty((0, self.spec.dim), dtype=np.float32)
            return chosen, self._vectors(chosen)

    def export_page(
        self,
        after_id: int,
        limit: int,
        tombstones: bool = True,
        keep: Callable[[I64], npt.NDArray[np.bool_]] | None = None,
        scanned: list[tuple[int, bool]] | None = None,
    ) -> tuple[I64, F32, I64, I64, I64, list[PayloadDict | None]]:
        """The first `limit` entries with id > after_id, in ascending id order: (ids, vectors, versions)
        of the stored ones, (ids, versions) of the tombstones (none unless `tombstones`), and the
        payloads of the stored ones.

        keep: of those entries, only the ids it accepts (a reshard's pages: the ids of one group under
        the new placement); `scanned` then receives (the highest id scanned, whether the scan reached
        the end)."""
        with self._lock.read():
            # Sorted (id, version) arrays: a binary search to after_id, a slice of `limit`.
            live, versions = self._versions.arrays()
            dead, dead_versions = self._tombs.arrays() if tombstones else (np.empty(0, np.int64),) * 2
            a, b = np.searchsorted(live, after_id, side="right"), np.searchsorted(dead, after_id, side="right")
            live, versions = live[a : a + limit], versions[a : a + limit]
            dead, dead_versions = dead[b : b + limit], dead_versions[b : b + limit]
            if live.size + dead.size > limit:
                cut = np.partition(np.concatenate([live, dead]), limit - 1)[limit - 1]
                keep_live, keep_dead = live <= cut, dead <= cut
                live, versions = live[keep_live], versions[keep_live]
                dead, dead_versions = dead[keep_dead], dead_versions[keep_dead]
            live, versions = np.array(live), np.array(versions)  # (copies: the arrays may be the map's own)
            dead, dead_versions = np.array(dead), np.array(dead_versions)
            if keep is not None:
                seen = live.size + dead.size
                last = max(int(live[-1]) if live.size else after_id, int(dead[-1]) if dead.size else after_id)
                if scanned is not None:
                    scanned.append((last, seen < limit))
                mine, mine_dead = keep(live), keep(dead)
                live, versions = live[mine], versions[mine]
                dead, dead_versions = dead[mine_dead], dead_versions[mine_dead]
            vectors = self._vectors(live) if live.size else np.empty((0, self.spec.dim), dtype=np.float32)
            return live, vectors, versions, dead, dead_versions, self.payloads_of(live)

    def export_ids(self, ids: I64) -> tuple[I64, F32, I64, I64, I64, list[PayloadDict | None]]:
        """`export_page`'s entries of exactly `ids` (ascending, distinct): those stored, and those
        removed (their tombstones); ids never seen here are left out."""
        with self._lock.read():
            ids = np.unique(ids)
            stored = [(i, v) for i in ids.tolist() if (v := self._versions.get(i)) is not None]
            dead = [(i, v) for i in ids.tolist() if i not in self._versions and (v := self._tombs.get(i, 0))]
            live = np.array([i for i, _ in stored], dtype=np.int64)
            versions = np.array([v for _, v in stored], dtype=np.int64)
            vectors = self._vectors(live) if live.size else np.empty((0, self.spec.dim), dtype=np.float32)
            return (
                live,
                vectors,
                versions,
                np.array([i for i, _ in dead], dtype=np.int64),
                np.array([v for _, v in dead], dtype=np.int64),
                self.payloads_of(live),
            )

    def _export(self) -> tuple[I64, F32]:
        """All (ids, vectors); the caller holds a lock."""
        if self._frozen is None and isinstance(self._index, faiss.IndexIDMap2):
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            vecs = self._index.index.reconstruct_n(0, self._index.ntotal)
            return ids, vecs
        ids = np.array(self._versions.arrays()[0])
        return ids, self._vectors(ids) if ids.size else np.empty((0, self.spec.dim), np.float32)

    # -- training -------------------------------------------------------------------------------

    @property
    def prepared_epoch(self) -> int:
        return self._prepared.epoch if self._prepared is not None else 0

    def prepared_centroids(self, epoch: int, train_id: int) -> F32:
        """The centroids of the prepared training (epoch, train_id); FailedPrecondition if none."""
        p = self._prepared
        if p is None or (p.epoch, p.train_id) != (epoch, train_id):
            if (epoch, train_id) == (self.train_epoch, self.train_id) and self._centroids is not None:
                return self._centroids
            raise FailedPrecondition(
                f"collection {self.spec.name!r} has no training prepared for epoch {epoch} here (it was "
                "superseded, or this shard restarted since): install it again"
            )
        return p.centroids

    def prepared_codec(self, epoch: int, train_id: int) -> bytes:
        """The codec of the prepared (or active) training (epoch, train_id)."""
        self.prepared_centroids(epoch, train_id)  # raises unless it is prepared or active
        p = self._prepared
        return p.codec if p is not None and (p.epoch, p.train_id) == (epoch, train_id) else self._codec

    def install_quantizer(
        self, centroids: F32, journal: Journal | None = None, epoch: int = 0, train_id: int = 0, codec: bytes = b""
    ) -> None:
        """Prepare and activate in one step (replay, repairs): see `prepare_quantizer`."""
        epoch = epoch or self.train_epoch + 1
        self.prepare_quantizer(centroids, epoch, train_id, codec=codec)
        self.activate_quantizer(epoch, train_id, journal)

    def prepare_quantizer(
        self, centroids: F32, epoch: int, train_id: int, decide: bool = False, codec: bytes = b""
    ) -> None:
        """Build an IVF index over `centroids` (and, compressed kinds, `codec`) beside the serving
        one, for training (epoch, train_id).

        Adds and removes keep going to the serving index while the new one is built; they are
        recorded and replayed on the new index, now and again at activation, so it misses nothing.
        decide: refuse if any training of this epoch or later is active or prepared here.
        """
        if not self.spec.is_ivf:
            raise FailedPrecondition(f"collection {self.spec.name!r} is FLAT: it has no quantizer to install")
        if centroids.shape != (self.spec.nlist, self.spec.dim):
            raise InvalidArgument(
                f"centroids must be nlist x dim = {self.spec.nlist} x {self.spec.dim}, got {centroids.shape}"
            )
        new_ivf(self.spec, centroids, codec)  # check the codec before anything changes
        if not self._install_lock.acquire(blocking=False):
            raise FailedPrecondition(f"a quantizer install is already running for {self.spec.name!r}: retry later")
        try:
            with self._lock.write():
                p = self._prepared
                if (epoch, train_id) == (self.train_epoch, self.train_id) or (
                    p is not None and (p.epoch, p.train_id) == (epoch, train_id)
                ):
                    return  # already active or prepared: a retried request
                if epoch <= self.train_epoch:
                    raise FailedPrecondition(
                        f"collection {self.spec.name!r} is already trained at epoch {self.train_epoch}: the "
                        f"training of epoch {epoch} was superseded"
                    )
                if p is not None and (p.epoch > epoch or (decide and p.epoch == epoch)):
                    raise FailedPrecondition(
                        f"another training of collection {self.spec.name!r} (epoch {p.epoch}) is being installed"
                    )
                ids, vecs = self._export()
                self._pending = []
                self._prepared = None
            try:
                new = new_ivf(self.spec, centroids, codec)
                if ids.size:
                    new.add_with_ids(vecs, ids)
                with self._lock.write():
                    self._replay_pending(new)
                    self._pending = []  # keep recording until activation
                    self._prepared = Prepared(epoch, train_id, np.array(centroids, dtype=np.float32), new, codec)
            except BaseException:
                self._pending = None
                raise
        finally:
            self._install_lock.release()

    def activate_quantizer(self, epoch: int, train_id: int, journal: Journal | None = None) -> None:
        """Switch searches to the prepared index of (epoch, train_id): the writes made since it was
        prepared are replayed on it first, under the write lock. A no-op if already active."""
        with self._lock.write():
            if (epoch, train_id) == (self.train_epoch, self.train_id) and self._centroids is not None:
                return
            p = self._prepared
            self.prepared_centroids(epoch, train_id)  # raises unless exactly this training is prepared
            assert p is not None
            if journal is not None:
                self.applied_lsn = journal()
            self._replay_pending(p.index)
            self._index = p.index
            self._relist()
            self._frozen = None  # the new index holds every write: a snapshot under way just writes the old one
            self._copy = None  # the next search copies the new IVF index to the accelerator
            self._centroids = p.centroids
            self._codec = p.codec
            self.train_epoch, self.train_id = epoch, train_id
            self._pending = None
            self._prepared = None

    def _relist(self) -> None:
        """Record the IVF list of every stored id (after the index was replaced); the caller holds the
        write lock."""
        index = self._index
        if not isinstance(index, faiss.IndexIVF):
            return
        invlists: Any = index.invlists
        for lst in range(index.nlist):
            size = invlists.list_size(lst)
            if size:
                ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size).astype(np.int64)
                self._payloads.set_lists(ids, np.full(size, lst, dtype=np.int64))

    def _replay_pending(self, new: Any) -> None:
        """Apply the writes recorded since the export to `new`; the caller holds the write lock."""
        for op, op_ids, op_vecs in self._pending or []:
            self._remove_from(new, op_ids)
            if op == "add":
                new.add_with_ids(op_vecs, op_ids)
        self._pending = []

    # -- persistence ----------------------------------------------------------------------------

    def save(self, directory: Path, purge_before: int = 0) -> None:
        """Write the partition to `directory` atomically, with the lsn it covers and a checksum;
        tombstones of versions below `purge_before` are forgotten first.

        Searches and writes go on meanwhile: the state to write is frozen under the write lock (a
        moment), the index is written with no lock held, and the writes made meanwhile are folded
        back into it under the write lock (see the module's docstring).
        """
        with self._save_lock:
            if purge_before and self._tombs:
                self.purge_tombstones(purge_before)
            tmp = directory.with_name(directory.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            with self._lock.write():
                index, frozen = self._index, self._freeze()
                versions, tombs = self._versions.freeze(), self._tombs.freeze()  # copy-on-write: no copy here
                payloads = self._payloads.freeze()  # payload dicts are never changed in place
                codec = self._codec
                if self._raw is not None:
                    self._payloads.hold_free()  # the rows of the frozen slots stay as they are
                payload_indexes = self.payload_indexes
                lsn = self.applied_lsn
                meta: dict[str, Any] = {
                    "config": _spec_to_json(self.spec),
                    "trained": self.trained,
                    "count": self.count,
                    "lsn": lsn,
                    "digest": self.digest,
                }
                epoch = {
                    "train_epoch": self.train_epoch,
                    "train_id": self.train_id,
                    "writes": self.writes,
                    "max_version": self.max_version,
                    "incarnation": self.incarnation,
                }
            try:
                faiss.write_index(index, str(tmp / "index.faiss"))  # `index` does not change meanwhile
            finally:
                with self._lock.write():
                    self._thaw(frozen)
            np.save(tmp / "versions.npy", pairs_of(versions))
            np.save(tmp / "tombstones.npy", pairs_of(tombs))
            np.save(tmp / "payloads.npy", _pack_payloads(*payloads))
            names = ["versions", "tombstones", "payloads"]
            if self._raw is not None:
                try:
                    self._save_vectors(tmp, payloads[0])
                finally:
                    with self._lock.write():
                        self._payloads.release_free()
                names += ["vectors", "vector_ids"]
            if self.spec.trained_codec:
                (tmp / "codec.faiss").write_bytes(codec)
                meta["codec_sha256"] = _sha256(tmp / "codec.faiss")
            sums = {f"{name}_sha256": _sha256(tmp / f"{name}.npy") for name in names}
            meta["payload_indexes"] = payload_indexes
            self._publish(directory, tmp, {**meta, "sha256": _sha256(tmp / "index.faiss"), **sums, **epoch})
            self.snapshot_lsn = lsn

    _SAVE_ROWS = 1 << 16

    def _save_vectors(self, tmp: Path, ids_by_slot: I64) -> None:
        """vectors.npy and vector_ids.npy: the frozen slots' rows (held unchanged meanwhile), in
        chunks, never all in memory."""
        assert self._raw is not None
        slots = np.flatnonzero(ids_by_slot >= 0)
        np.save(tmp / "vector_ids.npy", ids_by_slot[slots])
        out = np.lib.format.open_memmap(
            tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(slots.size, self.spec.dim)
        )
        for a in range(0, slots.size, self._SAVE_ROWS):
            out[a : a + self._SAVE_ROWS] = self._raw.rows(slots[a : a + self._SAVE_ROWS])
        out.flush()
        del out

    def _new_flat(self) -> Any:
        return faiss.IndexIDMap2(faiss.IndexFlat(self.spec.dim, faiss_metric(self.spec.metric)))

    def _freeze(self) -> _Frozen:
        """Stop changing the main index: later writes go to a delta; the caller holds the write lock."""
        if self._frozen is not None:  # the thaw of the last snapshot failed (faiss ran out of memory?)
            self._thaw(self._frozen)
        delta = new_ivf(self.spec, self._centroids, self._codec) if self._centroids is not None else self._new_flat()
        self._frozen = _Frozen(delta, set(), {})
        return self._frozen

    def _thaw(self, frozen: _Frozen) -> None:
        """Fold the writes made while `frozen` into the main index; the caller holds the write lock.
        Nothing to do when the index was replaced meanwhile (that ended the frozen state)."""
        if self._frozen is not frozen:
            return
        if frozen.masked:
            self._remove_from(self._index, np.fromiter(frozen.masked, dtype=np.int64, count=len(frozen.masked)))
            frozen.masked.clear()  # (in case what follows fails: reads stay right, frozen or not)
        if frozen.in_delta:  # a few faiss calls, whatever nlist is (a thread waiting for the GIL pays per call)
            n = len(frozen.in_delta)
            ids = np.fromiter(frozen.in_delta, dtype=np.int64, count=n)
            raw = self._vectors(ids) if self._raw is not None else frozen.delta.reconstruct_batch(ids)
            x = np.ascontiguousarray(raw, dtype=np.float32)
            if isinstance(self._index, faiss.IndexIVF):  # each vector into the list the delta gave it
                lists = np.fromiter(frozen.in_delta.values(), dtype=np.int64, count=n)
                self._index.add_core(n, faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
            else:
                self._index.add_with_ids(x, ids)
        self._frozen = None

    @staticmethod
    def _publish(directory: Path, tmp: Path, meta: dict[str, Any]) -> None:
        """Write meta.json into `tmp`, fsync it all and rename it to `directory` atomically."""
        meta["meta_sha256"] = _meta_checksum(meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
        fd = os.open(directory.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, directory: Path, max_vectors: int, accelerator: Accelerator | None = None) -> ShardIndex:
        """Load a snapshot; SnapshotCorrupt when it does not match its checksum or count."""
        try:
            meta = json.loads((directory / "meta.json").read_text())
            if "meta_sha256" in meta and meta["meta_sha256"] != _meta_checksum(meta):
                raise ValueError("its content does not match its own checksum (meta_sha256)")
            if "meta_sha256" not in meta and ("train_epoch" in meta or "train_id" in meta):
                # Written by a version that always checksums: a damaged key must not turn the check off.
                raise ValueError("its checksum (meta_sha256) is missing")
            spec = _spec_from_json(meta["config"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise SnapshotCorrupt(
                f"{directory}/meta.json is damaged ({err}): refusing to start, since it could hide acknowledged "
                "writes. Restore the shard's data dir from a backup, or delete this replica's data dir so it "
                "catches up from its peers."
            ) from None
        index_path = directory / "index.faiss"
        if not index_path.exists() or _sha256(index_path) != meta.get("sha256"):
            raise SnapshotCorrupt(
                f"{index_path} does not match the checksum in meta.json: refusing to start. Restore the shard's "
                "data dir from a backup or a replica."
            )
        shard = cls(spec, max_vectors, accelerator)
        index = faiss.read_index(str(index_path))
        if spec.trained_codec:
            codec_path = directory / "codec.faiss"
            if not codec_path.exists() or _sha256(codec_path) != meta.get("codec_sha256"):
                raise SnapshotCorrupt(f"{codec_path} does not match the checksum in meta.json: refusing to start")
            shard._codec = codec_path.read_bytes()
        if isinstance(index, faiss.IndexIVF):
            if not spec.quantized:
                index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
            shard._centroids = np.asarray(index.quantizer.reconstruct_n(0, index.nlist), dtype=np.float32)
            ids = _ivf_ids(index)
        else:
            ids = faiss.vector_to_array(index.id_map).astype(np.int64)  # type: ignore[attr-defined]
        shard._index = index
        if "versions_sha256" in meta:
            live, dead = (_load_pairs(directory, name, meta) for name in ("versions", "tombstones"))
            if not np.array_equal(np.sort(live[0]), np.sort(ids)):
                raise SnapshotCorrupt(
                    f"{directory}/versions.npy does not list the ids of index.faiss: refusing to start. Restore the "
                    "shard's data dir from a backup, or delete this replica's data dir so it catches up from its peers."
                )
            shard._versions = IdVersions.from_arrays(live[0], live[1])
            shard._tombs = IdVersions.from_arrays(dead[0], dead[1])
        else:  # written before versions: every id at version 0 (older than any versioned write)
            shard._versions = IdVersions.from_arrays(ids, np.zeros(ids.size, dtype=np.int64))
        with_payload: dict[int, tuple[PayloadDict, bytes]] = {}
        if "payloads_sha256" in meta:
            for i, blob in _unpack_payloads(directory, meta):
                with_payload[i] = (payload_from_blob(blob), blob)
            if not set(with_payload) <= set(shard._versions):
                raise SnapshotCorrupt(
                    f"{directory}/payloads.npy lists ids that index.faiss does not hold: refusing to start"
                )
        empty = (EMPTY, b"")
        shard._payloads.put(ids.tolist(), [with_payload.get(i, empty) for i in ids.tolist()])
        if shard._raw is not None:
            shard._load_vectors(directory, meta, ids)
        for field, kind in meta.get("payload_indexes", []):
            shard._payloads.create_index(field, INDEX_TYPES[kind])
        shard._relist()
        shard.digest = int(meta["digest"]) if "digest" in meta else _digest_of(*shard._export())
        if shard.count != meta["count"]:
            raise SnapshotCorrupt(f"snapshot {directory} holds {shard.count} ids, meta.json says {meta['count']}")
        shard.max_version = int(meta.get("max_version", 0))
        shard.incarnation = int(meta.get("incarnation", 0))
        shard.applied_lsn = shard.snapshot_lsn = int(meta.get("lsn", 0))
        # Snapshots from before training epochs: a trained one counts as epoch 1.
        shard.train_epoch = int(meta.get("train_epoch", 1 if shard.trained else 0))
        shard.train_id = int(meta.get("train_id", 0))
        shard.writes = int(meta.get("writes", 0))
        return shard

    def _load_vectors(self, directory: Path, meta: dict[str, Any], ids: I64) -> None:
        """Fill the vector store from vectors.npy (memory-mapped, in chunks)."""
        assert self._raw is not None
        for name in ("vectors", "vector_ids"):
            if _sha256(directory / f"{name}.npy") != meta.get(f"{name}_sha256"):
                raise SnapshotCorrupt(
                    f"{directory}/{name}.npy does not match the checksum in meta.json: refusing to "
                    "start. Restore the shard's data dir from a backup or a replica."
                )
        vids = np.load(directory / "vector_ids.npy")
        vecs = np.load(directory / "vectors.npy", mmap_mode="r")
        if vecs.shape != (vids.size, self.spec.dim) or not np.array_equal(np.sort(vids), np.sort(ids)):
            raise SnapshotCorrupt(
                f"{directory}/vectors.npy does not hold the vectors of index.faiss: refusing to start"
            )
        slots = self._payloads.slots_of(vids)
        for a in range(0, vids.size, self._SAVE_ROWS):
            self._raw.put(slots[a : a + self._SAVE_ROWS], np.asarray(vecs[a : a + self._SAVE_ROWS]))


def _load_pairs(directory: Path, name: str, meta: dict[str, Any]) -> I64:
    path = directory / f"{name}.npy"
    if not path.exists() or _sha256(path) != meta.get(f"{name}_sha256"):
        raise SnapshotCorrupt(
            f"{path} does not match the checksum in meta.json: refusing to start. Restore the shard's data dir "
            "from a backup, or delete this replica's data dir so it catches up from its peers."
        )
    try:
        pairs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SnapshotCorrupt(f"{path} cannot be read ({err}): refusing to start") from None
    if pairs.dtype != np.int64 or pairs.ndim != 2 or pairs.shape[0] != 2:
        raise SnapshotCorrupt(f"{path} holds a {pairs.dtype} array of shape {pairs.shape}, not 2 x n int64")
    out: I64 = pairs
    return out


def _pack_payloads(ids: I64, payloads: list[PayloadDict | None]) -> npt.NDArray[np.uint8]:
    """Non-empty payloads as one uint8 array: n, then n (id, length) int64 pairs, then the canonical
    bytes of each payload in that order."""
    pairs = [(int(i), encode(p)) for i, p in zip(ids.tolist(), payloads, strict=True) if p]
    head = np.array([len(pairs)] + [x for i, b in pairs for x in (i, len(b))], dtype="<i8")
    return np.frombuffer(head.tobytes() + b"".join(b for _, b in pairs), dtype=np.uint8)


def _unpack_payloads(directory: Path, meta: dict[str, Any]) -> list[tuple[int, bytes]]:
    path = directory / "payloads.npy"
    if not path.exists() or _sha256(path) != meta.get("payloads_sha256"):
        raise SnapshotCorrupt(
            f"{path} does not match the checksum in meta.json: refusing to start. Restore the shard's data dir "
            "from a backup, or delete this replica's data dir so it catches up from its peers."
        )
    try:
        raw = np.load(path, allow_pickle=False).tobytes()
        n = int(np.frombuffer(raw[:8], dtype="<i8")[0])
        head = np.frombuffer(raw[8 : 8 + 16 * n], dtype="<i8").reshape(n, 2)
        out, at = [], 8 + 16 * n
        for i, size in head.tolist():
            out.append((i, raw[at : at + size]))
            at += size
        if at != len(raw):
            raise ValueError(f"{len(raw) - at} bytes left over")
    except (OSError, ValueError, IndexError) as err:
        raise SnapshotCorrupt(f"{path} cannot be read ({err}): refusing to start") from None
    return out


def _meta_checksum(meta: dict[str, Any]) -> str:
    """SHA-256 of meta.json's content (without this field), so a damaged lsn or count is caught."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _spec_to_json(spec: CollectionSpec) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    d["metric"], d["index_type"] = spec.metric.value, spec.index_type.value
    return d


def _spec_from_json(d: dict[str, Any]) -> CollectionSpec:
    return CollectionSpec(**{**d, "metric": Metric(d["metric"]), "index_type": IndexType(d["index_type"])})
