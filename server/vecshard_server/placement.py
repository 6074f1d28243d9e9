"""Which shard stores an id: shard = fmix64(uint64(id)) mod S.

fmix64 is MurmurHash3's 64-bit finaliser: a bijection on 64-bit integers that spreads consecutive
ids evenly. It is stable across processes, versions and languages (unlike Python's hash()), and
cheap to compute vectorised. Any client can reproduce it; the order of shards is the order the
coordinator was given them in.
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


def shard_of(ids: npt.NDArray[np.int64], num_shards: int) -> npt.NDArray[np.int64]:
    """The shard index in [0, num_shards) of each id."""
    return (fmix64(ids) % np.uint64(num_shards)).astype(np.int64)


def split_by_shard(ids: npt.NDArray[np.int64], num_shards: int) -> list[npt.NDArray[np.intp]]:
    """For each shard, the positions in `ids` of the ids it stores (in their original order)."""
    owner = shard_of(ids, num_shards)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(num_shards + 1))
    return [order[bounds[s] : bounds[s + 1]] for s in range(num_shards)]
