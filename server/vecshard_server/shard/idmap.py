"""`I64Map` (and `IdVersions`, a partition's map of id -> write version): int64 -> int64 in numpy.

A shard holds ~10M ids per process, so the map holds no Python object per id. It is an immutable
sorted base (two int64 arrays: keys and values, ~16 bytes an id) plus a small overlay dict of the
writes since the base was built (a deletion is an entry holding `_GONE`). When the overlay outgrows
max(min_overlay, len / ratio) entries, it is merged into NEW base arrays (vectorized: searchsorted
and one masked copy), so a write costs a dict store plus an amortized ~ratio array elements moved.

A snapshot must write the map as it was at the moment the index froze, while writes go on:
`freeze()` hands out the current base arrays and overlay dict by reference (microseconds) and marks
the overlay shared; the next write copies the overlay first (it is at most 1/ratio of the map). The
base arrays are never written after they are built (they are read-only numpy arrays).
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Self, overload

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

_GONE = -(1 << 63)  # an overlay value: the key was deleted (values must be above these two)
_ABSENT = _GONE + 1  # (internal) no overlay entry
_CHUNK = 1 << 16  # ids per step when iterating, and between GIL switch points in pairs_of


def _frozen_array(a: I64) -> I64:
    a.flags.writeable = False
    return a


_EMPTY = _frozen_array(np.empty(0, dtype=np.int64))


class Frozen(NamedTuple):
    """A map as it was at freeze(): never written after (read it, never write it)."""

    keys: I64  # the base, sorted
    values: I64
    overlay: dict[int, int]  # id -> value, or _GONE


def _dedup_last(keys: I64, values: I64) -> tuple[I64, I64]:
    """keys sorted ascending and unique; for a key given several times, its last value."""
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    if k.size > 1:
        last = np.empty(k.size, dtype=bool)
        np.not_equal(k[1:], k[:-1], out=last[:-1])
        last[-1] = True
        if not last.all():
            k, v = k[last], v[last]
    return k, v


def _overlay_arrays(over: dict[int, int]) -> tuple[I64, I64]:
    """The overlay as (keys ascending, values) arrays."""
    n = len(over)
    k = np.fromiter(over.keys(), dtype=np.int64, count=n)
    v = np.fromiter(over.values(), dtype=np.int64, count=n)
    order = np.argsort(k)
    return k[order], v[order]


def _merge(bk: I64, bv: I64, k: I64, v: I64, pause: bool = False) -> tuple[I64, I64]:
    """The base (bk, bv) with the sorted unique updates (k, v) applied (v == _GONE: delete), as new
    arrays (the keys array is bk itself when no key comes or goes)."""
    n = bk.size
    if not k.size:
        return bk, bv
    pos = np.searchsorted(bk, k)
    hit = np.zeros(k.size, dtype=bool)
    inside = pos < n
    hit[inside] = bk[pos[inside]] == k[inside]
    gone = v == _GONE
    dels = pos[hit & gone]  # base positions deleted (ascending)
    upd = hit & ~gone
    ins = ~hit & ~gone
    ipos, ik, iv = pos[ins], k[ins], v[ins]  # inserted before base position ipos
    if not dels.size and not ik.size:
        out_v = bv.copy()
        out_v[pos[upd]] = v[upd]
        return bk, out_v
    size = n - dels.size + ik.size
    out_k = np.empty(size, dtype=np.int64)
    out_v = np.empty(size, dtype=np.int64)
    # where each inserted key lands: its base position, less the deletions before, plus the inserts before
    dest = ipos - np.searchsorted(dels, ipos) + np.arange(ik.size)
    from_base = np.ones(size, dtype=bool)
    from_base[dest] = False
    if pause:
        time.sleep(0)  # (a GIL switch point)
    if dels.size:
        keep = np.ones(n, dtype=bool)
        keep[dels] = False
        out_k[from_base] = bk[keep]
        if pause:
            time.sleep(0)
        out_v[from_base] = bv[keep]
    else:
        out_k[from_base] = bk
        if pause:
            time.sleep(0)
        out_v[from_base] = bv
    out_k[dest], out_v[dest] = ik, iv
    upos = pos[upd]
    if upos.size:
        out_v[upos - np.searchsorted(dels, upos) + np.searchsorted(ipos, upos, "right")] = v[upd]
    return out_k, out_v


class I64Map:
    """int64 -> int64 with the dict operations the shard uses, and vectorized batch ones.

    Values must be above -2**63 + 1 (get_many reports a missing key as -1)."""

    def __init__(self, min_overlay: int = 4096, ratio: int = 32) -> None:
        self._keys: I64 = _EMPTY  # the base: sorted unique keys, their values; never written
        self._values: I64 = _EMPTY
        # For get(): memoryviews (indexing one gives an int, no numpy scalar) and a table of where
        # each bucket of keys starts (bucket: (key - _lo) >> _shift; ~8-16 keys a bucket when the
        # keys are spread evenly, ~1 byte an id), so a lookup bisects a few keys, not the base.
        self._view = self._keys.data
        self._vview = self._values.data
        self._lo, self._shift, self._buckets = 0, 0, 0
        self._starts = self._keys.data  # (_buckets + 1 positions)
        self._over: dict[int, int] = {}  # writes since the base was built; _GONE: deleted
        self._shared = False  # the overlay was handed out by freeze(): copy before writing
        self._len = 0
        self._min_overlay, self._ratio = min_overlay, ratio
        self._limit = min_overlay

    @classmethod
    def from_arrays(cls, ids: I64, values: I64, min_overlay: int = 4096, ratio: int = 32) -> Self:
        """A map of ids[i] -> values[i] (for an id given twice, its last value)."""
        out = cls(min_overlay, ratio)
        k, v = _dedup_last(np.asarray(ids, dtype=np.int64), np.asarray(values, dtype=np.int64))
        out._set_base(k, v)  # (new arrays: the input is not kept)
        return out

    def _set_base(self, keys: I64, values: I64) -> None:
        if keys is not self._keys:
            self._keys = _frozen_array(keys)
            self._view = keys.data
            self._index_buckets()
        self._values = _frozen_array(values)
        self._vview = values.data
        self._over = {}
        self._shared = False
        self._len = int(keys.size)
        self._limit = max(self._min_overlay, self._len // self._ratio)

    def _index_buckets(self) -> None:
        keys = self._keys
        n = keys.size
        if not n:
            self._lo, self._shift, self._buckets = 0, 0, 0
            return
        lo = int(keys[0])
        span = int(keys[-1]) - lo
        if span >= 1 << 62:  # (keys of both signs, far apart): one bucket
            self._lo, self._shift, self._buckets = lo, 64, 1
            self._starts = np.array([0, n], dtype=np.int64).data
            return
        shift = max(0, span.bit_length() - max(1, n >> 4).bit_length())
        buckets = (span >> shift) + 1
        starts = np.empty(buckets + 1, dtype=np.int64)
        starts[:buckets] = np.searchsorted(keys, lo + (np.arange(buckets, dtype=np.int64) << shift))
        starts[buckets] = n
        self._lo, self._shift, self._buckets, self._starts = lo, shift, buckets, starts.data

    def _writable(self) -> dict[int, int]:
        if self._shared:
            self._over = dict(self._over)
            self._shared = False
        return self._over

    def compact(self, k: I64 | None = None, v: I64 | None = None) -> None:
        """Merge the overlay (and then the sorted unique updates k -> v, if given) into a new base."""
        ok, ov = _overlay_arrays(self._over) if self._over else (_EMPTY, _EMPTY)
        if k is not None and v is not None and k.size:
            if ok.size:
                ok, ov = _dedup_last(np.concatenate([ok, k]), np.concatenate([ov, v]))
            else:
                ok, ov = k, v
        self._set_base(*_merge(self._keys, self._values, ok, ov))

    def _after_write(self) -> None:
        if len(self._over) > self._limit:
            self.compact()

    def freeze(self) -> Frozen:
        """The map as it is now, unchanged by later writes (O(1): references)."""
        self._shared = True
        return Frozen(self._keys, self._values, self._over)

    # -- one key --------------------------------------------------------------------------------

    @overload
    def get(self, i: int) -> int | None: ...
    @overload
    def get(self, i: int, default: int) -> int: ...
    def get(self, i: int, default: int | None = None) -> int | None:
        v = self._over.get(i)
        if v is not None:
            return default if v == _GONE else v
        b = (i - self._lo) >> self._shift
        if 0 <= b < self._buckets:
            starts, view = self._starts, self._view
            end = starts[b + 1]
            j = bisect.bisect_left(view, i, starts[b], end)
            if j < end and view[j] == i:
                return self._vview[j]
        return default

    def __contains__(self, i: int) -> bool:
        return self.get(i) is not None

    def __getitem__(self, i: int) -> int:
        v = self.get(i)
        if v is None:
            raise KeyError(i)
        return v

    def __setitem__(self, i: int, value: int) -> None:
        if self.get(i) is None:
            self._len += 1
        self._writable()[i] = value
        self._after_write()

    def __delitem__(self, i: int) -> None:
        if self.get(i) is None:
            raise KeyError(i)
        self._writable()[i] = _GONE
        self._len -= 1
        self._after_write()

    def pop(self, i: int) -> None:
        """Remove `i` if present."""
        if self.get(i) is not None:
            del self[i]

    def update(self, pairs: Iterable[tuple[int, int]]) -> None:
        for i, value in pairs:
            self[i] = value

    # -- many keys ------------------------------------------------------------------------------

    def _lookup(self, ids: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
        """(the value of each id, whether it is present)."""
        out = np.full(ids.size, -1, dtype=np.int64)
        found = np.zeros(ids.size, dtype=bool)
        keys = self._keys
        if keys.size and ids.size:
            if ids.size > 64:  # binary searches in ascending order touch far fewer cache lines
                order = np.argsort(ids)
                pos = np.empty(ids.size, dtype=np.intp)
                pos[order] = np.searchsorted(keys, ids[order])
            else:
                pos = np.searchsorted(keys, ids)
            np.minimum(pos, keys.size - 1, out=pos)
            found = keys[pos] == ids
            out[found] = self._values[pos[found]]
        over = self._over
        if over and ids.size:
            if len(over) < ids.size:
                ok, ov = _overlay_arrays(over)
                pos = np.minimum(np.searchsorted(ok, ids), ok.size - 1)
                there = ok[pos] == ids
                o = np.full(ids.size, _ABSENT, dtype=np.int64)
                o[there] = ov[pos[there]]
            else:
                o = np.fromiter(map(over.get, ids.tolist(), itertools.repeat(_ABSENT)), dtype=np.int64, count=ids.size)
            there = o != _ABSENT
            if there.any():
                live = o != _GONE
                found = np.where(there, live, found)
                out = np.where(there & live, o, np.where(there, -1, out))
        return out, found

    def get_many(self, ids: I64) -> I64:
        """The value of each id, -1 for ids not in the map."""
        if not self._len:
            return np.full(np.size(ids), -1, dtype=np.int64)
        return self._lookup(np.asarray(ids, dtype=np.int64).reshape(-1))[0]

    def contains_many(self, ids: I64) -> npt.NDArray[np.bool_]:
        """Whether each id is in the map."""
        return self._lookup(np.asarray(ids, dtype=np.int64).reshape(-1))[1]

    def set_many(self, ids: I64, values: I64) -> None:
        """map[ids[i]] = values[i] for each i (an id given twice: its last value)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        values = np.broadcast_to(np.asarray(values, dtype=np.int64), ids.shape)
        if not ids.size:
            return
        if ids.size + len(self._over) > self._limit:
            self.compact(*_dedup_last(ids, values))
            return
        found = self._lookup(ids)[1]
        if not found.all():
            new = ids[~found]
            self._len += new.size if new.size == 1 else int(np.unique(new).size)
        self._writable().update(zip(ids.tolist(), values.tolist(), strict=True))

    def delete_many(self, ids: I64) -> None:
        """Remove those of `ids` that are in the map."""
        if not self._len:
            return
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        gone = ids[self._lookup(ids)[1]]
        if not gone.size:
            return
        gone = np.unique(gone)
        if gone.size + len(self._over) > self._limit:
            self.compact(gone, np.full(gone.size, _GONE, dtype=np.int64))
            return
        self._len -= gone.size
        self._writable().update(zip(gone.tolist(), itertools.repeat(_GONE)))

    # -- the whole map --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def arrays(self) -> tuple[I64, I64]:
        """(keys ascending, their values): the base itself when no write is pending (read-only
        arrays: copy them to write), else new arrays."""
        if self._over:
            return _merge(self._keys, self._values, *_overlay_arrays(self._over))
        return self._keys, self._values

    def __iter__(self) -> Iterator[int]:
        """The keys, ascending (as they were when iteration began)."""
        keys = self.arrays()[0]
        for at in range(0, keys.size, _CHUNK):
            yield from keys[at : at + _CHUNK].tolist()

    def items(self) -> Iterator[tuple[int, int]]:
        """(key, value) pairs, by ascending key (as they were when iteration began)."""
        keys, values = self.arrays()
        for at in range(0, keys.size, _CHUNK):
            yield from zip(keys[at : at + _CHUNK].tolist(), values[at : at + _CHUNK].tolist(), strict=True)


class IdVersions(I64Map):
    """A partition's id -> write version (ids are int64 >= 0, versions >= 0): stored ids, or tombstones."""


def pairs_of(frozen: Frozen) -> I64:
    """A 2 x n array of a frozen map: the ids ascending, then their versions. Pure numpy (a few
    passes over the arrays), letting other threads run between steps."""
    k, v = _overlay_arrays(frozen.overlay) if frozen.overlay else (_EMPTY, _EMPTY)
    time.sleep(0)  # (a GIL switch point)
    keys, values = _merge(frozen.keys, frozen.values, k, v, pause=True)
    out = np.empty((2, keys.size), dtype=np.int64)
    for at in range(0, keys.size, 16 * _CHUNK):
        out[0, at : at + 16 * _CHUNK] = keys[at : at + 16 * _CHUNK]
        out[1, at : at + 16 * _CHUNK] = values[at : at + 16 * _CHUNK]
        time.sleep(0)
    return out
