"""Search copies of a shard's IVF index on an accelerator (faiss GPU); the CPU index stays the source
of truth for writes, reads by id, training and snapshots.

The faiss GPU facts this is designed around:
- GPU IVF supports L2 and inner product only: L1 collections (and untrained, flat ones) are served by
  the CPU index.
- GPU k-selection is limited to GPU_MAX_K = 2048: a larger k (plus over-fetch) uses the CPU index.
- GPU indexes have no remove_ids. A copy stores its own sequential ids ("slots") mapped to the user's
  ids: removing an id, replacing it (upsert) or re-adding it after a removal tombstones its old slot,
  and the new vector takes a new slot, so the copy stays exact without a rebuild. Dead slots are
  filtered out of over-fetched results (k + tombstones, capped at GPU_MAX_K; a row whose capped
  over-fetch held too many dead slots is answered by the CPU index). The copy is rebuilt from the CPU
  index once its tombstones pass MAX_TOMBSTONES, so every k up to GPU_MAX_K - MAX_TOMBSTONES is always
  served whole by the GPU.
- A StandardGpuResources object must not be used by two threads at once: every call on a device's
  copies (clone, add, search) holds that device's lock.
- GPU indexes cannot be written with write_index: snapshots come from the CPU index, so no
  index_gpu_to_cpu round trip is needed.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any, Protocol

import faiss
import numpy as np
import numpy.typing as npt

GPU_MAX_K = 2048
# A copy holding more dead slots is rebuilt: k + tombstones then fits GPU_MAX_K for every k up to 1024.
MAX_TOMBSTONES = GPU_MAX_K // 2
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class Accelerator(Protocol):
    name: str

    @property
    def lock(self) -> AbstractContextManager[Any]:
        """Held around every call on the copies this accelerator made (they share its resources)."""
        ...

    def clone(self, cpu_index: Any) -> Any: ...


class GpuAccelerator:
    """faiss GPU: one StandardGpuResources per process and device, reused by every copy, and one lock
    per device that serialises every use of it (faiss: a resources object is not thread-safe)."""

    _resources: dict[int, Any] = {}
    _locks: dict[int, threading.Lock] = {}
    _registry = threading.Lock()

    def __init__(self, device: int) -> None:
        self.device = device
        self.name = f"cuda:{device}"
        with self._registry:
            self.lock = self._locks.setdefault(device, threading.Lock())

    def clone(self, cpu_index: Any) -> Any:
        """A GPU copy of `cpu_index`; the caller holds self.lock."""
        with self._registry:
            res = self._resources.get(self.device)
            if res is None:
                res = self._resources[self.device] = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(res, self.device, cpu_index)


class CloneAccelerator:
    """A CPU copy through the same code path (slots, over-fetch, tombstones, rebuilds, the lock), for
    machines without a GPU: what the tests run here."""

    name = "cpu-clone"

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def clone(self, cpu_index: Any) -> Any:
        return faiss.clone_index(cpu_index)


def detect(device: str) -> Accelerator | None:
    """The accelerator for `device`: "auto" (a GPU when faiss sees one, else none), "cpu", "cuda:N",
    or "clone" (a CPU copy, for testing the accelerated path)."""
    gpus = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    if device == "cpu":
        return None
    if device == "auto":
        return GpuAccelerator(0) if gpus else None
    if device == "clone":
        return CloneAccelerator()
    if device.startswith("cuda:") and device[5:].isdigit():
        index = int(device[5:])
        if index >= gpus:
            raise ValueError(f"--device {device}: faiss sees {gpus} GPU(s) (is faiss-gpu installed?)")
        return GpuAccelerator(index)
    raise ValueError(f"--device must be auto, cpu or cuda:N, got {device!r}")


def _with_slot_ids(cpu_index: Any) -> tuple[Any, I64]:
    """(a CPU IndexIVFFlat holding `cpu_index`'s vectors under slot ids 0..n-1, the user id of each
    slot): the inverted lists' codes are copied as they are, list by list, without re-assignment."""
    quantizer = faiss.clone_index(cpu_index.quantizer)
    out = faiss.IndexIVFFlat(quantizer, cpu_index.d, cpu_index.nlist, cpu_index.metric_type)
    invlists = cpu_index.invlists
    target: Any = out.invlists  # typed Optional in faiss's stubs
    users: list[I64] = []
    start = 0
    for i in range(cpu_index.nlist):
        size = invlists.list_size(i)
        if not size:
            continue
        users.append(faiss.rev_swig_ptr(invlists.get_ids(i), size).astype(np.int64))
        slots = np.arange(start, start + size, dtype=np.int64)
        target.add_entries(i, size, faiss.swig_ptr(slots), invlists.get_codes(i))
        start += size
    out.ntotal = start
    return out, np.concatenate(users) if users else np.empty(0, np.int64)


class SearchCopy:
    """An accelerator copy of an IVF index under slot ids, with the map from slots to user ids and the
    dead (removed or replaced) slots. Mutated only under the shard's write lock, searched under its
    read lock; every call on the accelerator index holds the accelerator's lock."""

    def __init__(self, accelerator: Accelerator, cpu_index: Any) -> None:
        self._lock = accelerator.lock
        staged, users = _with_slot_ids(cpu_index)
        with self._lock:
            self.index = accelerator.clone(staged)
        del staged
        self._size = users.size
        self._users = users  # slot -> user id (capacity >= _size)
        self._dead = np.zeros(users.size, dtype=bool)  # slot -> tombstoned
        self._base_order = np.argsort(users, kind="stable")  # the cloned slots, by user id
        self._base_sorted = users[self._base_order]
        self._added: dict[int, int] = {}  # user id -> its live slot, for slots added after the clone
        self.tombstones = 0  # dead slots

    @property
    def stale(self) -> bool:
        """Too many dead slots: rebuild before k + tombstones can outgrow GPU_MAX_K."""
        return self.tombstones > MAX_TOMBSTONES

    def can_answer(self, k: int) -> bool:
        return k <= GPU_MAX_K

    def add(self, ids: I64, vectors: F32) -> None:
        """Store new vectors (ids not live in the copy: new, removed before, or just removed by an upsert)."""
        n = ids.size
        slots = np.arange(self._size, self._size + n, dtype=np.int64)
        with self._lock:
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), slots)
        need = self._size + n
        if need > self._users.size:
            cap = max(need, 2 * self._users.size, 1024)
            self._users = np.concatenate([self._users[: self._size], np.empty(cap - self._size, np.int64)])
            self._dead = np.concatenate([self._dead[: self._size], np.zeros(cap - self._size, bool)])
        self._users[self._size : need] = ids
        self._size = need
        self._added.update(zip(ids.tolist(), slots.tolist(), strict=True))

    def remove(self, ids: I64) -> None:
        """Tombstone the live slots of `ids` (ids that are live in the copy)."""
        ids = np.asarray(ids, dtype=np.int64)
        added = np.fromiter((self._added.pop(i, -1) for i in ids.tolist()), dtype=np.int64, count=ids.size)
        rest = ids[added < 0]
        pos = np.minimum(np.searchsorted(self._base_sorted, rest), max(self._base_sorted.size - 1, 0))
        base = self._base_order[pos[self._base_sorted[pos] == rest]] if self._base_sorted.size else added[:0]
        slots = np.concatenate([added[added >= 0], base])
        slots = np.unique(slots[~self._dead[slots]])
        self._dead[slots] = True
        self.tombstones += int(slots.size)

    def search(self, queries: F32, k: int, params: Any, pad: float) -> tuple[F32, I64, npt.NDArray[np.bool_]]:
        """(D, I, short): each row's best k live results in rank order, with user ids, padded like faiss;
        `short` marks the rows the copy cannot answer exactly (its over-fetch, capped at GPU_MAX_K,
        held too many dead slots): the caller answers those elsewhere."""
        fetch = min(k + self.tombstones, GPU_MAX_K)
        with self._lock:
            D, S = self.index.search(queries, fetch, params=params)
        found = S >= 0
        live = found.copy()
        live[found] = ~self._dead[S[found]]
        I = np.full(S.shape, -1, dtype=np.int64)
        I[live] = self._users[S[live]]
        if not self.tombstones:
            return D, I, np.zeros(D.shape[0], dtype=bool)
        order = np.argsort(~live, axis=1, kind="stable")[:, :k]  # live results first, in rank order
        D, I, kept = (np.take_along_axis(a, order, axis=1) for a in (D, I, live))
        # A row is exact when it holds k live results, or when the index had no more to give.
        short = ~kept[:, -1] & found[:, -1] if k else np.zeros(D.shape[0], dtype=bool)
        return np.where(kept, D, pad).astype(np.float32), I, short
