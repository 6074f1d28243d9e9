"""The index engine: `ShardIndex`, one shard's partition of one collection.

The partition is a facade over parts it holds (composition: each part owns its state; the partition
hands them what they need, its lock included, per call), one concern per module:
- points.Points: what the partition holds, id by id: versions and tombstones (idmap), payloads
  (payloads.PayloadStore), vectors (storage) and their digest (digests); it applies writes, and
  writes says which part of a write applies (newest version wins); pages, which ids paged reads return.
- storage.Storage: the vectors: the faiss CPU index, compressed kinds' exact floats
  (vectors.VectorStore), the accelerator copy, and the frozen state that lets a snapshot write the
  index with no lock held.
- kinds: the faiss index kinds (IVF_FLAT, IVF_SQ8/SQFP16, IVF_PQ, HNSW coarse quantizer, codecs),
  their construction, training (k-means) and assignment.
- search.Searcher (made per search) and ranking: plain and filtered searches, refine distances,
  results ordered by (distance, id).
- training.Trainings: the active training of the shared quantizer and the one prepared beside it.
- snapshot: the snapshot files (format, checksums, atomic publication).
The partition itself owns the lock, the journal calls and its counters as a unit of replication
(lsn, writes, max_version, incarnation, ...), and its public methods are what the shard service,
the coordinator's local shards, the CLI and the tests call.

Thread safety: searches share a read lock; add/remove/swap take the write lock. faiss releases
the GIL, so the shard server runs these methods in worker threads. Snapshots (`save`) hold no lock
while the index is written (see storage.py).

The names other modules import from here (train_state, assign_lists, SnapshotCorrupt, ...) live in
the part modules and are re-exported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss  # re-exported (__all__): tests patch engine.faiss.write_index, which every module calls through
import numpy as np
import numpy.typing as npt

from vecshard.payload import PayloadDict, key_parts
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard import pages, snapshot
from vecshard_server.shard.accel import Accelerator
from vecshard_server.shard.digests import digest_of, row_hashes
from vecshard_server.shard.kinds import HNSW_M, assign_lists, faiss_metric, new_ivf, train_centroids, train_state
from vecshard_server.shard.locks import RWLock
from vecshard_server.shard.pages import Keep, Scanned
from vecshard_server.shard.partition_writes import PartitionWrites
from vecshard_server.shard.points import Export, Points, payload_index_kind, text_params
from vecshard_server.shard.search import refine_distances, search_work
from vecshard_server.shard.snapshot import SnapshotCorrupt
from vecshard_server.shard.storage import Frozen
from vecshard_server.shard.training import Prepared, Trainings

__all__ = [
    "HNSW_M",
    "F32",
    "I64",
    "IndexSettings",
    "Journal",
    "Prepared",
    "ShardIndex",
    "SnapshotCorrupt",
    "assign_lists",
    "faiss",
    "faiss_metric",
    "new_ivf",
    "row_hashes",
    "train_centroids",
    "train_state",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

# Called under the write lock once a write is known to succeed, before it is applied: logs it and
# returns its log sequence number.
Journal = Callable[[], int]

_digest_of = digest_of  # (the name tests import)


@dataclasses.dataclass(frozen=True)
class IndexSettings:
    """The shard process's settings for its partitions, given to each at construction."""

    filter_exact_ratio: float = 1.0  # Settings.filter_exact_ratio (see ShardIndex.search_filtered)
    scratch_dir: Path | None = None  # compressed kinds' vector files (None: the system's temp dir)


class ShardIndex(PartitionWrites):
    """One shard's partition of one collection."""

    _TIE_BUDGET = 1 << 22  # results per faiss call when searching again past a tie (see ranking.ranked)

    def __init__(
        self,
        spec: CollectionSpec,
        max_vectors: int,
        accelerator: Accelerator | None = None,
        settings: IndexSettings | None = None,
    ) -> None:
        self.spec = spec
        self.max_vectors = max_vectors
        self.settings = settings or IndexSettings()
        self._lock = RWLock()
        self._save_lock = threading.Lock()  # one snapshot at a time
        self._points = Points(spec, self.settings.scratch_dir, accelerator)
        self._storage = self._points.storage
        self._training = Trainings(spec)
        self.applied_lsn = 0  # the last logged write applied here
        self.snapshot_lsn = 0  # the last logged write in the snapshot on disk
        self.dropped = False  # set under the write lock by the collection's drop; later writes are refused
        self.writes = 0  # writes applied (see ShardCollectionState.writes)
        self.max_version = 0  # the newest write version applied
        self.incarnation = 0  # the version of the create that made this partition here (0: unknown)
        self.aborted: OrderedDict[int, None] = OrderedDict()  # Add versions RollbackAdd has seen

    def mark_dropped(self, journal: Journal | None = None) -> None:
        """Drop: once in-flight writes are done (they log before the drop), refuse every later one."""
        with self._lock.write():
            if journal is not None:
                journal()
            self.dropped = True

    @property
    def count(self) -> int:
        return self._points.count

    @property
    def tombstones(self) -> int:
        return len(self._points.tombs)

    @property
    def digest(self) -> int:
        """The sum of row_hashes over the stored pairs and of their payloads' hashes, mod 2^64."""
        return self._points.digest

    @property
    def trained(self) -> bool:
        return self._storage.centroids is not None

    @property
    def centroids(self) -> F32 | None:
        return self._storage.centroids

    @property
    def codec(self) -> bytes:
        return self._storage.codec

    @property
    def train_epoch(self) -> int:
        """The active training of the shared quantizer (0: untrained)."""
        return self._training.epoch

    @train_epoch.setter
    def train_epoch(self, epoch: int) -> None:
        self._training.epoch = epoch

    @property
    def train_id(self) -> int:
        return self._training.train_id

    @train_id.setter
    def train_id(self, train_id: int) -> None:
        self._training.train_id = train_id

    @property
    def _index(self) -> Any:
        """The faiss CPU index (the main one while a snapshot writes it)."""
        return self._storage.index

    @property
    def _frozen(self) -> Frozen | None:
        return self._storage.frozen

    @contextlib.contextmanager
    def reading(self) -> Iterator[Points]:
        """The partition's points under its read lock, for read-only parts that need more than the
        methods here (facets, ordered scrolls, grouped searches): they must not change them."""
        with self._lock.read():
            yield self._points

    def payloads_of(self, ids: I64) -> list[PayloadDict | None]:
        """The payload of each id (None when not stored); the caller holds a lock."""
        return self._points.payloads_of(ids)

    def count_matching(self, f: ppb.Filter | None) -> tuple[int, list[str]]:
        """(points matching f, fields read without an index)."""
        with self._lock.read():
            return self._points.count_matching(f)

    def scroll(
        self, f: ppb.Filter | None, start_id: int, limit: int, with_payload: bool, with_vectors: bool
    ) -> tuple[I64, list[PayloadDict | None], F32 | None, bool]:
        """The first `limit` matching ids >= start_id ascending, their payloads and vectors (if
        asked), and whether more match after them."""
        with self._lock.read():
            return self._points.scroll(f, start_id, limit, with_payload, with_vectors)

    @property
    def payload_indexes(self) -> list[tuple[str, int]]:
        return self._points.payload_indexes

    def payload_index_protos(self) -> list[ppb.PayloadIndex]:
        """The payload indexes as ShardCollectionState lists them (TEXT: params and counts). No lock, as
        `payload_indexes`: a describe does not wait for a long index build."""
        return self._points.index_protos()

    def create_payload_index(
        self, field: str, kind: int, journal: Journal | None = None, text: ppb.TextIndexParams | None = None
    ) -> bool:
        """Index a payload field (TEXT: analysed as `text` says); False when it already is, so."""
        kind_name = payload_index_kind(kind)  # InvalidArgument before the lock (and the log)
        key_parts(field, "field")
        params = text_params(kind_name, text)
        with self._lock.write():
            return self._points.create_index(field, kind_name, lambda: self._log(journal), params)

    def drop_payload_index(self, field: str, journal: Journal | None = None) -> None:
        with self._lock.write():
            self._points.drop_index(field, lambda: self._log(journal))

    # -- reads ----------------------------------------------------------------------------------
    def get(self, ids: I64, with_payload: bool = False) -> tuple[F32, npt.NDArray[np.bool_], list[PayloadDict | None]]:
        """(vectors, found, payloads if asked) for `ids` in order; rows of missing ids are zeros."""
        with self._lock.read():
            return self._points.get(ids, with_payload)

    @property
    def device(self) -> str:
        """Where trained searches run: the accelerator's name, or "cpu"."""
        return self._storage.device

    def search_work(self, nq: int, nprobe: int) -> int:
        """About how many multiply-adds a search of nq queries takes (vectors scanned x dim)."""
        return search_work(self.spec, self.count, self.trained, nq, nprobe)

    def search_now(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64] | None:
        """`search` on this thread, for tiny searches (a thread costs more than the work), if no write holds
        or waits for the lock and there is no accelerator copy to (re)build; None otherwise."""
        if self._storage.accelerator is not None:
            return None
        with self._lock.read_if_free() as free:
            return self._points.searcher(self._TIE_BUDGET).search(queries, k, nprobe) if free else None

    def search(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64]:
        """This shard's top-k of each query (exact while untrained), ordered by (distance in the metric's
        direction, id): of equal distances the smaller id comes first and wins the last places."""
        with self._lock.read():
            return self._points.searcher(self._TIE_BUDGET).search(queries, k, nprobe)

    def search_filtered(
        self, queries: F32, k: int, nprobe: int, f: ppb.Filter, with_payload: bool = False
    ) -> tuple[F32, I64, ppb.FilterPlan, list[PayloadDict | None]]:
        """This shard's top-k among the points matching `f`, as `search` orders them, with the plan
        that ran (see Searcher.filtered; settings.filter_exact_ratio weighs its choice of "exact") and
        (if asked) the hits' payloads. Never fewer than min(k, matches) hits per query."""
        with self._lock.read():
            searcher = self._points.searcher(self._TIE_BUDGET)
            D, I, plan = searcher.filtered(queries, k, nprobe, f, self.settings.filter_exact_ratio)
            return D, I, plan, self.payloads_of(I.reshape(-1)) if with_payload else []

    def search_with_payloads(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64, list[PayloadDict | None]]:
        """`search`, and the payload of each hit (None for a hit removed since)."""
        D, I = self.search(queries, k, nprobe)
        with self._lock.read():
            return D, I, self.payloads_of(I.reshape(-1))

    def refined(self, queries: F32, I: I64, wait: bool = True) -> F32 | None:
        """The exact distances of each query to its candidates `I` (nq x c, -1 padded; see
        search.refine_distances), the padding distance for -1 and ids removed since the search.
        wait=False: None if the partition cannot be read right now (a write holds or waits for the lock)."""
        assert self._storage.raw is not None  # (compressed kinds only)
        with self._lock.read() if wait else self._lock.read_if_free() as free:
            if free is False:
                return None
            rows, have = self._storage.exact_rows(I.reshape(-1))  # not found: removed since the search
        return refine_distances(self.spec, queries, I.shape, rows, have)

    def sample(self, max_points: int, seed: int) -> tuple[I64, F32]:
        """A uniform random sample (without replacement) of at most max_points stored (id, vector) pairs."""
        with self._lock.read():
            return self._points.sample(max_points, seed)

    def export_page(
        self,
        after_id: int,
        limit: int,
        tombstones: bool = True,
        keep: Keep | None = None,
        scanned: Scanned | None = None,
    ) -> Export:
        """The first `limit` entries with id > after_id, in ascending id order: (ids, vectors, versions)
        of the stored ones, (ids, versions) of the tombstones (none unless `tombstones`), and the
        payloads of the stored ones; `keep` and `scanned`: see pages.export_page (reshards)."""
        with self._lock.read():
            points = self._points
            tombs = points.tombs if tombstones else None
            return points.entries(pages.export_page(points.versions, tombs, after_id, limit, keep, scanned))

    def export_ids(self, ids: I64) -> Export:
        """`export_page`'s entries of exactly `ids` (ascending, distinct): those stored, and those
        removed (their tombstones); ids never seen here are left out."""
        with self._lock.read():
            return self._points.entries(pages.entries_of(ids, self._points.versions, self._points.tombs))

    def _export(self) -> tuple[I64, F32]:
        """All (ids, vectors); the caller holds a lock."""
        return self._points.export()

    # -- training -------------------------------------------------------------------------------
    @property
    def prepared_epoch(self) -> int:
        return self._training.prepared_epoch

    def prepared_centroids(self, epoch: int, train_id: int) -> F32:
        """The centroids of the prepared (or active) training (epoch, train_id); FailedPrecondition if none."""
        return self._training.centroids(epoch, train_id, self._storage.centroids)

    def prepared_codec(self, epoch: int, train_id: int) -> bytes:
        """The codec of the prepared (or active) training (epoch, train_id)."""
        return self._training.codec(epoch, train_id, self._storage.centroids, self._storage.codec)

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
        """Build an IVF index over `centroids` (and `codec`) beside the serving one, for training (epoch,
        train_id), replaying the writes made meanwhile (see training.py). decide: refuse if any training
        of this epoch or later is active or prepared here."""
        self._training.prepare(self._lock, self._export, centroids, epoch, train_id, decide, codec)

    def activate_quantizer(self, epoch: int, train_id: int, journal: Journal | None = None) -> None:
        """Switch searches to the prepared index of (epoch, train_id): the writes made since it was
        prepared are replayed on it first, under the write lock. A no-op if already active."""
        with self._lock.write():
            self._training.activate(epoch, train_id, self._storage, lambda: self._log(journal))

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: Path, purge_before: int = 0) -> None:
        """Write the partition to `directory` atomically, with the lsn it covers and checksums (see
        snapshot.py); tombstones of versions below `purge_before` are forgotten first. Searches and
        writes go on meanwhile: the index is written with no lock held (see storage.py)."""
        with self._save_lock:
            if purge_before and self._points.tombs:
                self.purge_tombstones(purge_before)
            tmp = snapshot.fresh_dir(directory)
            with self._lock.write():
                index, frozen = self._storage.index, self._storage.freeze()
                epoch = {name: getattr(self, name) for name in snapshot.EPOCH_FIELDS}
                state = self._points.snapshot_state(self.applied_lsn, epoch)
            try:
                snapshot.write_index(index, tmp)  # `index` does not change meanwhile
            finally:
                with self._lock.write():
                    self._storage.thaw(frozen)
            snapshot.write_rest(directory, tmp, state, self._storage.raw, self._release_free)
            self.snapshot_lsn = state.lsn

    def _release_free(self) -> None:
        with self._lock.write():
            self._points.payloads.release_free()

    @classmethod
    def load(
        cls,
        directory: Path,
        max_vectors: int,
        accelerator: Accelerator | None = None,
        settings: IndexSettings | None = None,
    ) -> ShardIndex:
        """Load a snapshot; SnapshotCorrupt when it does not match its checksum or count."""
        meta, spec = snapshot.read_meta(directory)
        index, codec = snapshot.read_index(directory, meta, spec)
        shard = cls(spec, max_vectors, accelerator, settings)
        shard._points.load(directory, meta, index, codec)
        if shard.count != meta["count"]:
            raise SnapshotCorrupt(f"snapshot {directory} holds {shard.count} ids, meta.json says {meta['count']}")
        shard.applied_lsn = shard.snapshot_lsn = int(meta.get("lsn", 0))
        # Snapshots from before training epochs: a trained one counts as epoch 1.
        defaults = {"train_epoch": 1 if shard.trained else 0}
        for name in snapshot.EPOCH_FIELDS:  # train_epoch, train_id, writes, max_version, incarnation
            setattr(shard, name, int(meta.get(name, defaults.get(name, 0))))
        return shard
