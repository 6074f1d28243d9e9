"""Which shard group stores an id: a collection's placement, versioned by epoch.

h = fmix64(uint64(id)), MurmurHash3's 64-bit finaliser: a bijection on 64-bit integers that spreads
consecutive ids evenly, stable across processes, versions and languages (unlike Python's hash()).

- MOD: group = h mod S. Epoch 0 of collections made before placements were recorded.
- JUMP: group = jump_consistent_hash(h, S) (Lamping & Veach, "A Fast, Minimal Memory, Consistent
  Hash Algorithm", 2014). Going from S to S + 1 groups moves exactly the ids the new group takes
  (1/(S+1) in expectation) and no other; going from S to S' < S moves only the ids of groups >= S'.

A collection's partition at epoch e is named `name` (e = 0) or `name@e` on the shards: '@' cannot
occur in a collection name, so the two placements of a reshard in progress are two partitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vecshard.v1 import types_pb2
from vecshard_server.common.hashing import fmix64

MOD, JUMP = "mod", "jump"
_FUNCTIONS = {types_pb2.PLACEMENT_FUNCTION_MOD: MOD, types_pb2.PLACEMENT_FUNCTION_JUMP: JUMP}
MAX_GROUPS = 1024  # shard groups a placement may use
_JUMP_MULT = np.uint64(2862933555777941757)


def jump_hash(keys: npt.NDArray[np.uint64], num_buckets: int) -> npt.NDArray[np.int64]:
    """Jump consistent hash of each 64-bit key into [0, num_buckets), vectorised (the reference C++
    loop, run on every key still jumping: about ln(num_buckets) + 1 rounds)."""
    key = keys.astype(np.uint64, copy=True)
    b = np.full(key.shape, -1, dtype=np.int64)
    j = np.zeros(key.shape, dtype=np.int64)
    live = np.arange(key.size)
    with np.errstate(over="ignore"):
        while live.size:
            b[live] = j[live]
            k = key[live] * _JUMP_MULT + np.uint64(1)
            key[live] = k
            j[live] = (
                (b[live] + 1).astype(np.float64) * (float(1 << 31) / ((k >> np.uint64(33)) + 1).astype(np.float64))
            ).astype(np.int64)
            live = live[j[live] < num_buckets]
    return b


@dataclass(frozen=True)
class Placement:
    """The function, group count and epoch of one placement of a collection."""

    function: str = MOD
    shards: int = 1
    epoch: int = 0

    @classmethod
    def from_proto(cls, p: types_pb2.Placement, default_shards: int = 0) -> Placement:
        """The placement a proto records (0 shards, as legacy configs have: `default_shards`)."""
        return cls(_FUNCTIONS.get(p.function, MOD), p.shards or default_shards, p.epoch)

    def to_proto(self) -> types_pb2.Placement:
        fn = types_pb2.PLACEMENT_FUNCTION_JUMP if self.function == JUMP else types_pb2.PLACEMENT_FUNCTION_MOD
        return types_pb2.Placement(function=fn, shards=self.shards, epoch=self.epoch)

    @staticmethod
    def valid(p: types_pb2.Placement) -> bool:
        """A known function (or unset) over at most MAX_GROUPS groups."""
        return (p.function == types_pb2.PLACEMENT_FUNCTION_UNSPECIFIED or p.function in _FUNCTIONS) and (
            p.shards <= MAX_GROUPS
        )

    def next(self, shards: int) -> Placement:
        """The placement a reshard to `shards` groups moves to (always JUMP: it moves the least)."""
        return Placement(JUMP, shards, self.epoch + 1)

    def owner(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The group index in [0, shards) of each id."""
        h = fmix64(np.asarray(ids, dtype=np.int64))
        if self.function == JUMP:
            return jump_hash(h, self.shards)
        return (h % np.uint64(self.shards)).astype(np.int64)

    def split(self, ids: npt.NDArray[np.int64]) -> list[npt.NDArray[np.intp]]:
        """For each group, the positions in `ids` of the ids it stores (in their original order)."""
        owner = self.owner(ids)
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.shards + 1))
        return [order[bounds[s] : bounds[s + 1]] for s in range(self.shards)]

    def describe(self) -> str:
        return f"{self.shards} groups by {self.function} (epoch {self.epoch})"


def shard_of(ids: npt.NDArray[np.int64], num_shards: int) -> npt.NDArray[np.int64]:
    """The group of each id in a collection created over `num_shards` groups (JUMP, epoch 0)."""
    return Placement(JUMP, num_shards).owner(ids)


def split_by_shard(ids: npt.NDArray[np.int64], num_shards: int) -> list[npt.NDArray[np.intp]]:
    """`Placement.split` of a collection created over `num_shards` groups."""
    return Placement(JUMP, num_shards).split(ids)


def physical_name(collection: str, epoch: int) -> str:
    """The name of a collection's partition at placement epoch `epoch` on the shards."""
    return collection if epoch == 0 else f"{collection}@{epoch}"


def parse_physical(name: str) -> tuple[str, int]:
    """(collection, epoch) of a partition name on the shards."""
    base, sep, epoch = name.partition("@")
    if not sep:
        return name, 0
    return base, int(epoch) if epoch.isdigit() else 0
