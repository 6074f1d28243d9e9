"""Which shard stores an id: shard = fmix64(uint64(id)) mod S.

fmix64 is MurmurHash3's 64-bit finaliser: a bijection on 64-bit integers that spreads consecutive
ids evenly. It is stable across processes, versions and languages (unlike Python's hash()), and
cheap to compute vectorised. Any client can reproduce it; the order of shards is the order the
coordinator was given them in.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vecshard_server.common.hashing import fmix64


def shard_of(ids: npt.NDArray[np.int64], num_shards: int) -> npt.NDArray[np.int64]:
    """The shard index in [0, num_shards) of each id."""
    return (fmix64(ids) % np.uint64(num_shards)).astype(np.int64)


def split_by_shard(ids: npt.NDArray[np.int64], num_shards: int) -> list[npt.NDArray[np.intp]]:
    """For each shard, the positions in `ids` of the ids it stores (in their original order)."""
    owner = shard_of(ids, num_shards)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(num_shards + 1))
    return [order[bounds[s] : bounds[s + 1]] for s in range(num_shards)]
