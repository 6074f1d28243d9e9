"""`IdVersions`: a partition's map of id -> write version, copy-on-write in parts.

A snapshot must write the map as it was at the moment the index froze, while writes go on. A plain
dict would have to be copied under the partition's write lock: ~30 ms per million ids, during which
every search waits. Here the ids are spread over PARTS dicts; `freeze()` hands out the current
parts (a list of references: microseconds) and marks them shared, and a later write to a shared
part copies that part first (1/PARTS of the map, once per snapshot).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from typing import overload

import numpy as np
import numpy.typing as npt

PARTS = 64
_MASK = PARTS - 1


class IdVersions:
    """id -> version, with the dict operations the engine uses (ids are int64 >= 0)."""

    def __init__(self) -> None:
        self._parts: list[dict[int, int]] = [{} for _ in range(PARTS)]
        self._shared = [False] * PARTS
        self._len = 0

    @classmethod
    def from_arrays(cls, ids: npt.NDArray[np.int64], versions: npt.NDArray[np.int64]) -> IdVersions:
        out = cls()
        part = ids & _MASK
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(PARTS + 1))
        for p in range(PARTS):
            rows = order[bounds[p] : bounds[p + 1]]
            out._parts[p] = dict(zip(ids[rows].tolist(), versions[rows].tolist(), strict=True))
        out._len = int(ids.size)
        return out

    def _writable(self, p: int) -> dict[int, int]:
        if self._shared[p]:
            self._parts[p] = self._parts[p].copy()
            self._shared[p] = False
        return self._parts[p]

    def freeze(self) -> list[dict[int, int]]:
        """The map as it is now, as parts that later writes leave unchanged (read them, never write)."""
        self._shared = [True] * PARTS
        return list(self._parts)

    @overload
    def get(self, i: int) -> int | None: ...
    @overload
    def get(self, i: int, default: int) -> int: ...
    def get(self, i: int, default: int | None = None) -> int | None:
        return self._parts[i & _MASK].get(i, default)

    def __contains__(self, i: int) -> bool:
        return i in self._parts[i & _MASK]

    def __getitem__(self, i: int) -> int:
        return self._parts[i & _MASK][i]

    def __setitem__(self, i: int, version: int) -> None:
        part = self._writable(i & _MASK)
        n = len(part)
        part[i] = version
        self._len += len(part) - n

    def __delitem__(self, i: int) -> None:
        del self._writable(i & _MASK)[i]
        self._len -= 1

    def pop(self, i: int) -> None:
        """Remove `i` if present."""
        if i in self._parts[i & _MASK]:
            del self[i]

    def update(self, pairs: Iterable[tuple[int, int]]) -> None:
        for i, version in pairs:
            self[i] = version

    def _groups(self, ids: npt.NDArray[np.int64]) -> Iterator[tuple[int, npt.NDArray[np.intp]]]:
        """(part, positions in `ids` of the ids in that part) for each part `ids` touch."""
        part = ids & _MASK
        if ids.size <= 1 or (part == part[0]).all():
            yield (int(part[0]) if ids.size else 0), np.arange(ids.size)
            return
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(PARTS + 1))
        for p in range(PARTS):
            if bounds[p] < bounds[p + 1]:
                yield p, order[bounds[p] : bounds[p + 1]]

    def get_many(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The version of each id, -1 for ids not in the map (C-level lookups, part by part)."""
        out = np.full(ids.size, -1, dtype=np.int64)
        if not self._len:
            return out
        for p, rows in self._groups(ids):
            out[rows] = np.fromiter(map(self._parts[p].get, ids[rows].tolist(), itertools.repeat(-1)),
                                    dtype=np.int64, count=rows.size)  # fmt: skip
        return out

    def set_many(self, ids: npt.NDArray[np.int64], versions: npt.NDArray[np.int64]) -> None:
        for p, rows in self._groups(ids):
            part = self._writable(p)
            n = len(part)
            part.update(zip(ids[rows].tolist(), versions[rows].tolist(), strict=True))
            self._len += len(part) - n

    def delete_many(self, ids: npt.NDArray[np.int64]) -> None:
        """Remove those of `ids` that are in the map."""
        if not self._len:
            return
        for p, rows in self._groups(ids):
            part = self._writable(p)
            n = len(part)
            for i in ids[rows].tolist():
                part.pop(i, None)
            self._len -= n - len(part)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[int]:
        return itertools.chain.from_iterable(self._parts)

    def items(self) -> Iterator[tuple[int, int]]:
        return itertools.chain.from_iterable(p.items() for p in self._parts)


def pairs_of(parts: list[dict[int, int]]) -> npt.NDArray[np.int64]:
    """A 2 x n array of frozen parts: the ids, then their versions. Part by part, letting other
    threads run in between: reading a dict holds the GIL (~50 ns an id), and searches wait for it."""
    n = sum(len(p) for p in parts)
    out = np.empty((2, n), dtype=np.int64)
    at = 0
    for part in parts:
        m = len(part)
        out[0, at : at + m] = np.fromiter(part.keys(), dtype=np.int64, count=m)
        out[1, at : at + m] = np.fromiter(part.values(), dtype=np.int64, count=m)
        at += m
        time.sleep(0)  # (a GIL switch point)
    return out
