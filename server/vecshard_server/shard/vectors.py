"""`VectorStore`: the float vectors of a compressed partition, in a memory-mapped scratch file.

IVF_SQ8, IVF_SQFP16 and IVF_PQ keep only codes in the faiss index; Get, replication (Export),
digests, snapshots and refine need the exact floats. They live here, one row per payload slot
(`PayloadStore` gives every stored id a slot), in an unlinked file under the shard's data dir:
the kernel pages rows in and out, so the process's resident memory does not grow with them.

Rows are only ever written for a slot's new occupant, and while a snapshot reads the rows of its
frozen slots the payload store holds freed slots back (`PayloadStore.hold_free`), so those rows do
not change under it. The file is scratch: snapshots copy the live rows into `vectors.npy`.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

_MIN_ROWS = 1024


class VectorStore:
    """float32 rows by slot, growing by doubling (the file is extended, then mapped again)."""

    def __init__(self, dim: int, directory: Path | None = None) -> None:
        self.dim = dim
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=directory, prefix="vectors-")  # unlinked: gone with the process
        self._rows = 0
        self._map: np.memmap | None = None
        self._grow_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._rows

    def _ensure(self, rows: int) -> np.memmap:
        with self._grow_lock:
            if self._map is None or rows > self._rows:
                cap = max(rows, 2 * self._rows, _MIN_ROWS)
                os.ftruncate(self._file.fileno(), cap * self.dim * 4)
                # A new mapping: readers holding the old one keep a valid view of the same pages.
                self._map = np.memmap(self._file, dtype=np.float32, mode="r+", shape=(cap, self.dim))
                self._rows = cap
            return self._map

    def put(self, slots: I64, vectors: F32) -> None:
        """Write each vector to its slot's row (the caller holds the partition's write lock)."""
        if not len(slots):
            return
        m = self._ensure(int(np.max(slots)) + 1)
        m[np.asarray(slots, dtype=np.int64)] = np.asarray(vectors, dtype=np.float32)

    def rows(self, slots: I64) -> F32:
        """A copy of the rows of `slots` (all valid slots)."""
        m = self._map
        if m is None or not len(slots):
            return np.empty((len(slots), self.dim), dtype=np.float32)
        # (take on the plain ndarray view: memmap's own indexing costs a subclass round trip)
        return np.take(m.view(np.ndarray), np.asarray(slots, dtype=np.int64), axis=0)

    def close(self) -> None:
        self._map = None
        self._file.close()
