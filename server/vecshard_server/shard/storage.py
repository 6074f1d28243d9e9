"""`Storage`: where a partition's vectors live, and how they are read back and searched raw.

It holds the partition's faiss CPU index (of a kind from `kinds`), with the centroids and codec it
was built from; for compressed kinds the exact floats in a `VectorStore`, by payload slot; the
accelerator copy of a trained index (`accel.SearchCopy`), kept exact by every write; and, while a
snapshot writes the main index to disk, the `Frozen` state that keeps that index unchanged:

Under the write lock (briefly) the main index stops changing: later writes go to a small delta index
of the same kind (a trained partition's delta is an IVF index over the same centroids, so a search of
it probes exactly the lists a search of the main index probes), and ids of the main index removed or
replaced meanwhile are masked (hidden from searches by an IDSelector, and from reads by id). Reads
consult both, merged by (distance, id). Once the main index is on disk the masks and the delta are
applied to it under the write lock (`thaw`): work proportional to the writes made during the
snapshot. Replacing the index (activating a training, adopting a peer's copy) during a snapshot simply
ends the frozen state: the new index holds everything.

A part of `engine.ShardIndex` by composition: the partition owns the lock, the ids' versions and the
payload store (shared with this object: every stored id has a payload slot, which records its IVF
list); every method here runs with the partition's lock held, as its docstring says. Nothing here
knows about versions, journals or snapshots' files.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vecshard.types import Metric
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.accel import Accelerator, SearchCopy
from vecshard_server.shard.kinds import (
    add_to_lists,
    assign,
    centroids_of,
    is_ivf,
    list_ids,
    new_flat,
    new_ivf,
    remove_from,
    stored_ids,
)
from vecshard_server.shard.payloads import PayloadStore
from vecshard_server.shard.vectors import VectorStore

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Search = Callable[[F32, int], tuple[F32, I64]]  # (queries, results per row) -> (D, I), faiss's contract

FILL_ROWS = 1 << 16  # rows per step when copying a snapshot's vectors into the vector store


@dataclasses.dataclass
class Frozen:
    """A partition's state while its main index is being written to disk (see the module's docstring)."""

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

    def holds(self, ids: I64) -> npt.NDArray[np.bool_]:
        """Which of `ids` are stored in the delta."""
        return np.fromiter((i in self.in_delta for i in ids.tolist()), dtype=bool, count=ids.size)


class Storage:
    """A partition's vectors: its faiss CPU index, exact floats and accelerator copy."""

    def __init__(
        self, spec: CollectionSpec, payloads: PayloadStore, raw: VectorStore | None, accelerator: Accelerator | None
    ) -> None:
        self.spec = spec
        self.payloads = payloads
        self.raw = raw  # compressed kinds: the exact vectors, by payload slot, on disk
        # GPU IVF serves L2 and inner product (COSINE is inner product here); L1 stays on the CPU, and
        # so do the compressed kinds for now (their GPU copies are not built or tested yet).
        self.accelerator = accelerator if spec.metric is not Metric.L1 and not spec.trained_codec else None
        self.copy: SearchCopy | None = None
        self._copy_lock = threading.Lock()
        self.index: Any = new_flat(spec)
        self.frozen: Frozen | None = None  # while a snapshot writes the index
        self.centroids: F32 | None = None
        self.codec = b""  # compressed kinds: the trained empty index (see kinds.train_state)

    @property
    def device(self) -> str:
        """Where trained searches run: the accelerator's name, or "cpu"."""
        return self.accelerator.name if self.accelerator is not None and self.centroids is not None else "cpu"

    # -- writes (the caller holds the write lock) ----------------------------------------------

    def store(self, ids: I64, vectors: F32) -> None:
        """Store new ids (their payload slots exist): the exact floats, the CPU index (the delta while
        frozen), the accelerator copy."""
        if self.raw is not None:
            self.raw.put(self.payloads.slots_of(ids), vectors)
        frozen = self.frozen
        target = self.index if frozen is None else frozen.delta
        if is_ivf(target):
            # As IndexIVF.add_with_ids does (assign, then add_core), keeping each vector's list: filtered
            # searches probe only lists holding matches, and the thaw moves a delta's vector to the
            # same list of the main index in one faiss call.
            x = np.ascontiguousarray(vectors, dtype=np.float32)
            xids = np.ascontiguousarray(ids, dtype=np.int64)
            lists = assign(target, x)
            add_to_lists(target, xids, x, lists)
            self.payloads.set_lists(xids, lists)
            if frozen is not None:
                stored = lists >= 0  # (a vector with no list, NaN say, is not stored: as in add_with_ids)
                frozen.in_delta.update(zip(xids[stored].tolist(), lists[stored].tolist(), strict=True))
        elif frozen is None:
            self.index.add_with_ids(vectors, ids)
        else:
            frozen.delta.add_with_ids(vectors, ids)
            frozen.in_delta.update(dict.fromkeys(ids.tolist(), -1))
        if self.copy is not None:
            self.copy.add(ids, vectors)
            self._drop_stale_copy()

    def unstore(self, ids: I64) -> None:
        """Remove stored ids from the CPU index (while frozen: from the delta, or masked in the main
        index) and from the accelerator copy."""
        frozen = self.frozen
        if frozen is None:
            remove_from(self.index, ids)
        else:
            new = frozen.holds(ids)
            if new.any():
                remove_from(frozen.delta, ids[new])
                for i in ids[new].tolist():
                    del frozen.in_delta[i]
            frozen.masked.update(ids[~new].tolist())
        if self.copy is not None:
            self.copy.remove(ids)  # their slots become tombstones; new vectors of the ids take new ones
            self._drop_stale_copy()

    def _drop_stale_copy(self) -> None:
        if self.copy is not None and self.copy.stale:
            self.copy = None  # rebuilt at the next search

    def replace(self, index: Any, centroids: F32, codec: bytes) -> None:
        """Serve from `index` (a training's, holding every write) from now on."""
        self.index = index
        self.relist()
        self.frozen = None  # the new index holds every write: a snapshot under way just writes the old one
        self.copy = None  # the next search copies the new IVF index to the accelerator
        self.centroids = centroids
        self.codec = codec

    def relist(self) -> None:
        """Record the IVF list of every stored id in its payload slot (after the index was replaced)."""
        if is_ivf(self.index):
            for lst, ids in list_ids(self.index):
                self.payloads.set_lists(ids, np.full(ids.size, lst, dtype=np.int64))

    # -- snapshots -----------------------------------------------------------------------------

    def freeze(self) -> Frozen:
        """Stop changing the main index: later writes go to a delta; the caller holds the write lock."""
        if self.frozen is not None:  # the thaw of the last snapshot failed (faiss ran out of memory?)
            self.thaw(self.frozen)
        delta = new_ivf(self.spec, self.centroids, self.codec) if self.centroids is not None else new_flat(self.spec)
        self.frozen = Frozen(delta, set(), {})
        return self.frozen

    def thaw(self, frozen: Frozen) -> None:
        """Fold the writes made while `frozen` into the main index; the caller holds the write lock.
        Nothing to do when the index was replaced meanwhile (that ended the frozen state)."""
        if self.frozen is not frozen:
            return
        if frozen.masked:
            remove_from(self.index, np.fromiter(frozen.masked, dtype=np.int64, count=len(frozen.masked)))
            frozen.masked.clear()  # (in case what follows fails: reads stay right, frozen or not)
        if frozen.in_delta:  # a few faiss calls, whatever nlist is (a thread waiting for the GIL pays per call)
            n = len(frozen.in_delta)
            ids = np.fromiter(frozen.in_delta, dtype=np.int64, count=n)
            raw = self.vectors(ids) if self.raw is not None else frozen.delta.reconstruct_batch(ids)
            x = np.ascontiguousarray(raw, dtype=np.float32)
            if is_ivf(self.index):  # each vector into the list the delta gave it
                add_to_lists(self.index, ids, x, np.fromiter(frozen.in_delta.values(), dtype=np.int64, count=n))
            else:
                self.index.add_with_ids(x, ids)
        self.frozen = None

    def adopt(self, index: Any, codec: bytes) -> I64:
        """Serve from `index`, read from a snapshot (with `codec`, compressed kinds); returns its ids."""
        self.codec = codec
        if is_ivf(index):
            if not self.spec.quantized:
                index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
            self.centroids = centroids_of(index)
        self.index = index
        return stored_ids(index)

    def fill(self, ids: I64, vectors: F32) -> None:
        """Copy a snapshot's exact floats of stored `ids` (memory-mapped) into the vector store, in chunks."""
        assert self.raw is not None
        slots = self.payloads.slots_of(ids)
        for a in range(0, ids.size, FILL_ROWS):
            self.raw.put(slots[a : a + FILL_ROWS], np.asarray(vectors[a : a + FILL_ROWS]))

    # -- reads (the caller holds a lock) -------------------------------------------------------

    def vectors(self, ids: I64) -> F32:
        """The vectors of stored `ids`, in order."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.raw is not None:
            return self.raw.rows(self.payloads.slots_of(ids))
        frozen = self.frozen
        if frozen is None or not frozen.in_delta:
            return np.asarray(self.index.reconstruct_batch(ids), dtype=np.float32)
        new = frozen.holds(ids)
        out = np.empty((ids.size, self.spec.dim), dtype=np.float32)
        if not new.all():
            out[~new] = self.index.reconstruct_batch(np.ascontiguousarray(ids[~new]))
        if new.any():
            out[new] = frozen.delta.reconstruct_batch(np.ascontiguousarray(ids[new]))
        return out

    def exact_rows(self, ids: I64) -> tuple[F32, npt.NDArray[np.bool_]]:
        """(rows, found): the exact floats of each of `ids` (-1 allowed) of a compressed kind, zeros
        where the id is -1 or not stored."""
        assert self.raw is not None
        slots = np.full(ids.size, -1, dtype=np.int64)
        ok = ids >= 0
        if ok.any():
            slots[ok] = self.payloads.slots_of(ids[ok])  # -1: not stored
        have = slots >= 0
        rows = np.zeros((ids.size, self.spec.dim), dtype=np.float32)
        if have.any():
            rows[have] = self.raw.rows(slots[have])
        return rows, have

    def flat_export(self) -> tuple[I64, F32] | None:
        """All (ids, vectors) of an unfrozen flat index, read straight from it; None otherwise."""
        if self.frozen is None and isinstance(self.index, faiss.IndexIDMap2):
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            vecs = self.index.index.reconstruct_n(0, self.index.ntotal)
            return ids, vecs
        return None

    def cpu_search(self, nprobe: int, only: Any = None) -> Search:
        """A search of the CPU index (faiss's contract: rows best first, -1 padding last; nprobe 0:
        untrained), restricted to the ids the IDSelector `only` accepts when given; the caller holds
        the read lock while it runs. While frozen: the main index without its masked ids, merged with
        the delta."""
        index, frozen = self.index, self.frozen

        def params(sel: Any = None) -> Any:  # a new object per call: IndexIDMap's search alters it
            kw = {"sel": sel} if sel is not None else {}
            if nprobe:
                return faiss.SearchParametersIVF(nprobe=nprobe, **kw)  # type: ignore[call-arg]
            return faiss.SearchParameters(**kw) if kw else None

        if frozen is None:
            if only is None and not isinstance(index, faiss.IndexIDMap):  # (IndexIVF only reads its params)
                fixed = params()
                return lambda q, fetch: index.search(q, fetch, params=fixed)
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

    def search_copy(self) -> SearchCopy | None:
        """The accelerator copy, (re)built from the CPU index when missing. While frozen the main
        index is not the partition's state: a missing copy waits for the thaw (the writes keep an
        existing copy exact, as always)."""
        if self.accelerator is None or self.copy is not None or self.frozen is not None:
            return self.copy
        with self._copy_lock:
            if self.copy is None:
                self.copy = SearchCopy(self.accelerator, self.index)
            return self.copy
