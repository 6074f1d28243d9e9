"""Partition digests: a 64-bit hash per stored (id, vector) pair, summed mod 2^64.

A sum is order-free and updated per write (add a pair's hash, subtract it when the pair goes), so
replicas holding the same points have the same digest whatever order their writes came in. Payloads
add their own hashes (`payloads.payload_hash`, folded in by the `PayloadStore`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vecshard_server.common.hashing import fmix64

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

MASK = (1 << 64) - 1


def row_hashes(ids: I64, vectors: F32) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each (id, vector) pair; their sum (mod 2^64) is a partition's digest."""
    words = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32).astype(np.uint64)
    weights = fmix64(np.arange(1, words.shape[1] + 1, dtype=np.int64))
    with np.errstate(over="ignore"):
        mixed = (words * weights).sum(axis=1, dtype=np.uint64)
    return fmix64((mixed ^ fmix64(np.asarray(ids, dtype=np.int64))).view(np.int64))


def digest_of(ids: I64, vectors: F32) -> int:
    """The sum of `row_hashes` (mod 2^64); 0 for no pairs."""
    return int(row_hashes(ids, vectors).sum(dtype=np.uint64)) if len(ids) else 0
