"""fmix64: MurmurHash3's 64-bit finaliser, vectorised.

A bijection on 64-bit integers that spreads consecutive ids evenly, stable across processes,
versions and languages (unlike Python's hash()). The coordinator places ids with it
(common/placement.py); shards fold it into partition digests (shard/engine.py).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


def fmix64(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """MurmurHash3 fmix64 of each id (as its two's-complement uint64)."""
    h = ids.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        h ^= h >> _S33
        h *= _C1
        h ^= h >> _S33
        h *= _C2
        h ^= h >> _S33
    return h
