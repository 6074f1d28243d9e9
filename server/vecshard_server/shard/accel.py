"""Search copies of a shard's IVF index on an accelerator (faiss GPU); the CPU index stays the source
of truth for writes, reads by id, training and snapshots.

The faiss GPU facts this is designed around:
- GPU IVF supports L2 and inner product only: L1 collections (and untrained, flat ones) are served by
  the CPU index.
- GPU k-selection is limited to GPU_MAX_K = 2048: a larger k (plus over-fetch) uses the CPU index.
- GPU indexes have no remove_ids: removed ids become tombstones filtered out of over-fetched results
  (k + tombstones, exact as long as that fits GPU_MAX_K); the copy is rebuilt from the CPU index when
  tombstones pile up, or when an upsert replaces a stored id.
- GPU indexes cannot be written with write_index: snapshots come from the CPU index, so no
  index_gpu_to_cpu round trip is needed.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import faiss
import numpy as np
import numpy.typing as npt

GPU_MAX_K = 2048
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class Accelerator(Protocol):
    name: str

    def clone(self, cpu_index: Any) -> Any: ...


class GpuAccelerator:
    """faiss GPU: one StandardGpuResources per process and device, reused by every copy."""

    _resources: dict[int, Any] = {}
    _lock = threading.Lock()

    def __init__(self, device: int) -> None:
        self.device = device
        self.name = f"cuda:{device}"

    def clone(self, cpu_index: Any) -> Any:
        with self._lock:
            res = self._resources.get(self.device)
            if res is None:
                res = self._resources[self.device] = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(res, self.device, cpu_index)


class CloneAccelerator:
    """A CPU copy through the same code path (over-fetch, tombstones, rebuilds), for machines
    without a GPU: what the tests run here."""

    name = "cpu-clone"

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


class SearchCopy:
    """An accelerator copy of an IVF index plus the ids removed since it was made."""

    def __init__(self, accelerator: Accelerator, cpu_index: Any) -> None:
        self.index = accelerator.clone(cpu_index)
        self.tombstones: set[int] = set()

    def can_answer(self, k: int) -> bool:
        return k + len(self.tombstones) <= GPU_MAX_K

    def add(self, ids: I64, vectors: F32) -> None:
        self.index.add_with_ids(vectors, ids)

    def search(self, queries: F32, k: int, params: Any, pad: float) -> tuple[F32, I64]:
        fetch = k + len(self.tombstones)
        D, I = self.index.search(queries, fetch, params=params)
        if not self.tombstones:
            return D, I
        keep = ~np.isin(I, np.fromiter(self.tombstones, dtype=np.int64, count=len(self.tombstones)))
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept results first, in rank order
        D, I, kept = (np.take_along_axis(a, order, axis=1) for a in (D, I, keep))
        return np.where(kept, D, pad).astype(np.float32), np.where(kept, I, -1)
