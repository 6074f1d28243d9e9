"""The payloads of one partition, their payload indexes, and filter evaluation.

Every stored point has a slot (its row in the numpy columns below) holding its payload (a dict,
never mutated once stored: writes replace it). A filter evaluates to a boolean mask over the slots:
conditions on indexed fields read numpy columns, the others read every payload ("a scan").

Semantics (see payload.proto and docs/filters.md): a key path (vecshard.payload.key_parts: dotted,
backticks around a part holding dots) reaches into nested objects and through lists; a field's
values are its leaves (lists flattened); a test holds when it holds for any value (match_except:
some value is not null and none is listed). Numbers compare exactly by value (int 3 equals 3.0;
2**53 + 1 does not equal 2.0**53); bools are not numbers; strings in a range compare by code point;
datetime_range compares RFC 3339 strings as instants. An index never changes an answer: it answers
from its column what it can, and the slots with values it does not hold are read from the payloads.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vecshard.errors import AlreadyExists, InvalidArgument, NotFound
from vecshard.payload import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    PayloadDict,
    datetime_micros,
    key_parts,
    parse_datetime,
    payload_from_proto,
    payload_to_proto,
    value_from_proto,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.shard.analysis import DEFAULT, describe, same_params
from vecshard_server.shard.idmap import I64Map
from vecshard_server.shard.text_index import TextIndex, document_of

Mask = npt.NDArray[np.bool_]
I64 = npt.NDArray[np.int64]
Side = Literal["left", "right"]

EMPTY: PayloadDict = {}  # shared by every point without a payload; never mutated
_EXACT_INT = 1 << 53  # integers beyond this are not exact as float64

INDEX_TYPES: dict[int, str] = {
    ppb.PAYLOAD_INDEX_TYPE_KEYWORD: "keyword",
    ppb.PAYLOAD_INDEX_TYPE_INTEGER: "integer",
    ppb.PAYLOAD_INDEX_TYPE_FLOAT: "float",
    ppb.PAYLOAD_INDEX_TYPE_BOOL: "bool",
    ppb.PAYLOAD_INDEX_TYPE_DATETIME: "datetime",
    ppb.PAYLOAD_INDEX_TYPE_TEXT: "text",  # a TextIndex (text_index.py), in PayloadStore.texts
}
_BOUND_NAMES = ("gt", "gte", "lt", "lte")


def encode(payload: PayloadDict) -> bytes:
    """The canonical bytes of a payload (map keys sorted): equal payloads, equal bytes."""
    return payload_to_proto(payload, stored=True).SerializeToString(deterministic=True) if payload else b""


def payload_hash(point_id: int, blob: bytes) -> int:
    """A 64-bit hash of (id, payload bytes), 0 for an empty payload: part of a partition's digest."""
    if not blob:
        return 0
    h = hashlib.blake2b(blob, digest_size=8, key=int(point_id).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _flatten(v: Any, out: list[Any]) -> None:
    if isinstance(v, list):
        for x in v:
            _flatten(x, out)
    else:
        out.append(v)


def values_at(payload: PayloadDict, path: Sequence[str]) -> tuple[bool, list[Any]]:
    """(whether the key is present, its leaf values)."""
    cur: list[Any] = [payload]
    for part in path:
        nxt: list[Any] = []
        for obj in cur:
            items: list[Any] = []
            _flatten(obj, items)
            for o in items:
                if isinstance(o, dict) and part in o:
                    nxt.append(o[part])
        if not nxt:
            return False, []
        cur = nxt
    leaves: list[Any] = []
    for v in cur:
        _flatten(v, leaves)
    return True, leaves


def _eq(x: Any, v: Any) -> bool:
    if isinstance(v, bool):
        return isinstance(x, bool) and x == v
    if isinstance(v, str):
        return isinstance(x, str) and x == v
    return _is_num(x) and x == v


class _Bounds:
    """A range of numbers or of strings (payload.proto's Range): ints and floats compare exactly,
    strings by code point (Python's own order)."""

    def __init__(self, r: ppb.Range, path: str) -> None:
        self.b: dict[str, Any] = {}
        kinds = set()
        for name in _BOUND_NAMES:
            if r.HasField(name):
                v = value_from_proto(getattr(r, name))
                if isinstance(v, str):
                    kinds.add("string")
                elif not _is_num(v):
                    raise InvalidArgument(
                        f"{path}.range.{name} must be a number or a string (for date-times use datetime_range)"
                    )
                elif isinstance(v, float) and math.isnan(v):
                    raise InvalidArgument(f"{path}.range.{name} is NaN")
                else:
                    kinds.add("number")
                self.b[name] = v
        if not self.b:
            raise InvalidArgument(f"{path}.range sets no bound: set gt, gte, lt or lte")
        if len(kinds) > 1:
            raise InvalidArgument(
                f"{path}.range mixes number and string bounds: a range holds numbers or strings, not both"
            )
        self.strings = "string" in kinds

    def holds(self, x: Any) -> bool:
        if not (isinstance(x, str) if self.strings else _is_num(x)):
            return False
        b = self.b
        return not (
            ("gt" in b and not x > b["gt"])
            or ("gte" in b and not x >= b["gte"])
            or ("lt" in b and not x < b["lt"])
            or ("lte" in b and not x <= b["lte"])
        )

    def int_bounds(self) -> tuple[int, int]:
        """The same range over integers, as [lo, hi] (lo > hi: empty)."""
        lo, hi = INT64_MIN, INT64_MAX
        for name, v in self.b.items():
            if name == "gt":
                lo = max(lo, math.floor(v) + 1)
            elif name == "gte":
                lo = max(lo, math.ceil(v))
            elif name == "lt":
                hi = min(hi, math.ceil(v) - 1)
            else:
                hi = min(hi, math.floor(v))
        return lo, hi

    def exact_as_float(self) -> bool:
        return all(isinstance(v, float) or abs(v) <= _EXACT_INT for v in self.b.values())

    def positions(self, size: int, search: Callable[[Any, Side], int]) -> tuple[int, int]:
        """The [a, b) positions within the range of `size` ascending values, `search(bound, side)`
        finding a bound's position as np.searchsorted does."""
        a, b = 0, size
        for name, v in self.b.items():
            if name == "gt":
                a = max(a, search(v, "right"))
            elif name == "gte":
                a = max(a, search(v, "left"))
            elif name == "lt":
                b = min(b, search(v, "left"))
            else:
                b = min(b, search(v, "right"))
        return a, max(a, b)

    def float_slice(self, values: npt.NDArray[np.float64]) -> tuple[int, int]:
        """The [a, b) positions of ascending float64 values within the range (bounds exact as float)."""
        return self.positions(values.size, lambda v, side: int(np.searchsorted(values, float(v), side)))

    def column_mask(self, col: npt.NDArray[Any]) -> Mask:
        m = np.ones(col.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            for name, v in self.b.items():
                fv = float(v)
                m &= (
                    col > fv
                    if name == "gt"
                    else col >= fv
                    if name == "gte"
                    else col < fv
                    if name == "lt"
                    else col <= fv
                )
        return m


class _Instants:
    """A datetime_range as [lo, hi], microseconds since the epoch, both included (lo > hi: empty)."""

    def __init__(self, r: ppb.DatetimeRange, path: str) -> None:
        self.lo, self.hi = INT64_MIN, INT64_MAX
        given = False
        for name in _BOUND_NAMES:
            text = getattr(r, name)
            if not text:
                continue
            given = True
            us = parse_datetime(text, f"{path}.datetime_range.{name}")
            if name == "gt":
                self.lo = max(self.lo, us + 1)
            elif name == "gte":
                self.lo = max(self.lo, us)
            elif name == "lt":
                self.hi = min(self.hi, us - 1)
            else:
                self.hi = min(self.hi, us)
        if not given:
            raise InvalidArgument(
                f"{path}.datetime_range sets no bound: set gt, gte, lt or lte to an RFC 3339 date-time"
            )

    def holds(self, x: Any) -> bool:
        us = datetime_micros(x) if isinstance(x, str) else None
        return us is not None and self.lo <= us <= self.hi


_DTYPES: dict[str, Any] = {
    "keyword": np.int32,
    "integer": np.int64,
    "float": np.float64,
    "bool": np.int8,
    "datetime": np.int64,
}


class FieldIndex:
    """A payload index on one field: a numpy column of each slot's value of the index's type (for
    keyword, a code of the string; for datetime, the instant in microseconds).

    A slot with several values of the type is in `multi`; a slot with values of other kinds (or,
    for a float index, integers too large for float64; for a datetime index, strings that are no
    RFC 3339 date-time) is in `other` and read from its payload.
    """

    def __init__(self, field: str, kind: str) -> None:
        self.field, self.kind = field, kind
        self.path = key_parts(field, "field")
        self.col: npt.NDArray[Any] = np.empty(0, dtype=_DTYPES[kind])
        self.has: Mask = np.zeros(0, dtype=bool)
        self.multi: dict[int, frozenset[Any]] = {}  # slot -> its values (codes for keyword)
        self.other: set[int] = set()
        self.vocab: dict[str, int] = {}
        # The column sorted: (values, their slots), for lookups in O(log n + matches). Dropped by
        # every write and rebuilt once a few reads have scanned the column without it.
        self._sorted: tuple[npt.NDArray[Any], npt.NDArray[np.int64]] | None = None
        self._scans = 0
        self._ranks: tuple[list[str], I64] | None = None  # keyword: (vocab sorted, each code's rank)

    def grow(self, n: int) -> None:
        if n > self.col.size:
            extra = n - self.col.size
            self.col = np.concatenate([self.col, np.zeros(extra, dtype=self.col.dtype)])
            self.has = np.concatenate([self.has, np.zeros(extra, dtype=bool)])

    def _typed(self, x: Any) -> Any:
        """x as a value of this index's column, or None when it is of another kind."""
        if self.kind == "keyword":
            if isinstance(x, str):
                return self.vocab.setdefault(x, len(self.vocab))
            return None
        if self.kind == "datetime":
            return datetime_micros(x) if isinstance(x, str) else None
        if self.kind == "bool":
            return int(x) if isinstance(x, bool) else None
        if not _is_num(x):
            return None
        if self.kind == "integer":
            return x if isinstance(x, int) else None
        return float(x) if isinstance(x, float) or abs(x) <= _EXACT_INT else None

    def set(self, slot: int, payload: PayloadDict | None) -> None:
        self._sorted = None
        self.has[slot] = False
        self.multi.pop(slot, None)
        self.other.discard(slot)
        if not payload:
            return
        _, leaves = values_at(payload, self.path)
        typed = []
        for x in leaves:
            if x is None:
                continue
            t = self._typed(x)
            if t is None:
                self.other.add(slot)
            else:
                typed.append(t)
        if len(typed) == 1 or (typed and len(set(typed)) == 1):
            self.col[slot], self.has[slot] = typed[0], True
        elif typed:
            self.multi[slot] = frozenset(typed)

    _REBUILD_AFTER = 3  # column scans since the last write before the sorted view is rebuilt

    def sorted_view(self, n: int) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]] | None:
        """(values ascending, their slots) of the first n slots, or None while it is not worth
        rebuilding (writes came in since it was built)."""
        if self._sorted is None:
            self._scans += 1
            if self._scans < self._REBUILD_AFTER:
                return None
            slots = np.flatnonzero(self.has[:n])
            values = self.col[slots]
            order = np.argsort(values, kind="stable")
            self._sorted = (values[order], slots[order])
            self._scans = 0
        return self._sorted

    def _equal(self, n: int, wanted: list[Any]) -> Mask:
        """Slots holding one of the (already typed) values."""
        col, has = self.col[:n], self.has[:n]
        view = self.sorted_view(n) if wanted else None
        if view is not None:
            values, slots = view
            w = np.asarray(wanted, dtype=values.dtype)
            lo, hi = np.searchsorted(values, w, "left"), np.searchsorted(values, w, "right")
            m = np.zeros(n, dtype=bool)
            for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
                if b > a:
                    m[slots[a:b]] = True
        elif not wanted:
            m = np.zeros(n, dtype=bool)
        elif len(wanted) <= 4:
            m = np.zeros(n, dtype=bool)
            for v in wanted:
                m |= col == v
            m &= has
        else:
            values = np.asarray(wanted, dtype=col.dtype)
            # a lookup table over the values' range is one pass over the column (sorting is not)
            table = col.dtype.kind in "iu" and int(values.max()) - int(values.min()) < 1 << 24
            m = has & np.isin(col, values, kind="table" if table else None)
        want = set(wanted)
        for slot, vals in self.multi.items():
            if slot < n and vals & want:
                m[slot] = True
        return m

    def _wanted(self, values: list[Any]) -> list[Any] | None:
        """The values of the column equal to these (others never are), or None when the index cannot
        tell (a datetime index holds instants, not the strings)."""
        wanted: list[Any] = []
        for v in values:
            if self.kind == "keyword":
                if isinstance(v, str) and v in self.vocab:
                    wanted.append(self.vocab[v])
            elif self.kind == "bool":
                if isinstance(v, bool):
                    wanted.append(int(v))
            elif self.kind == "datetime":
                return None
            elif _is_num(v):
                if self.kind == "integer" and (isinstance(v, int) or float(v).is_integer()):
                    if INT64_MIN <= int(v) <= INT64_MAX:
                        wanted.append(int(v))
                elif self.kind == "float":
                    if isinstance(v, int) and abs(v) > _EXACT_INT:
                        return None
                    wanted.append(float(v))
        return wanted

    def _present(self, n: int) -> Mask:
        """Slots with a value of the index's type."""
        m = self.has[:n].copy()
        for slot in self.multi:
            if slot < n:
                m[slot] = True
        return m

    def answer(self, fc: ppb.FieldCondition, n: int, path: str) -> Mask | None:
        """The slots whose typed values pass `fc` (the caller reads the slots in `other` from their
        payloads), or None when this index cannot answer the test."""
        test = fc.WhichOneof("test")
        if test in ("match", "match_any", "match_except"):
            values = getattr(fc, test).values if test != "match" else [fc.match]
            wanted = self._wanted([value_from_proto(v) for v in values])
            if wanted is None:
                return None
            m = self._equal(n, wanted)
            return self._present(n) & ~m if test == "match_except" else m
        if test == "range":
            return self._range(_Bounds(fc.range, path), n)
        if test == "datetime_range" and self.kind == "datetime":
            instants = _Instants(fc.datetime_range, path)
            return self._between(n, instants.lo, instants.hi)
        if test == "exists":
            return self._present(n)
        return None

    def _range(self, bounds: _Bounds, n: int) -> Mask | None:
        if self.kind == "datetime" and bounds.strings:
            return None  # the column holds instants: the strings themselves are in the payloads
        if self.kind == "keyword" and bounds.strings:
            return self._string_range(bounds, n)
        if self.kind not in ("integer", "float") or bounds.strings:
            return np.zeros(n, dtype=bool)  # no value of the index's type is in the range
        if self.kind == "integer":
            lo, hi = bounds.int_bounds()
            return self._between(n, lo, hi)
        if not bounds.exact_as_float():
            return None
        view = self.sorted_view(n)
        if view is not None:
            a, b = bounds.float_slice(view[0])
            m = np.zeros(n, dtype=bool)
            m[view[1][a:b]] = True
        else:
            m = self.has[:n] & bounds.column_mask(self.col[:n])
        return self._add_multi(m, bounds.holds)

    def _between(self, n: int, lo: int, hi: int) -> Mask:
        """Slots of an integer column (integer, datetime) with a value in [lo, hi]."""
        m = np.zeros(n, dtype=bool)
        if lo > hi:
            return m
        view = self.sorted_view(n)
        if view is not None:
            start, stop = int(np.searchsorted(view[0], lo, "left")), int(np.searchsorted(view[0], hi, "right"))
            m[view[1][start:stop]] = True
        else:
            col = self.col[:n]
            m = self.has[:n] & (col >= lo) & (col <= hi)
        return self._add_multi(m, lambda v: lo <= v <= hi)

    def _add_multi(self, m: Mask, holds: Callable[[Any], bool]) -> Mask:
        for slot, vals in self.multi.items():
            if slot < m.size and any(holds(v) for v in vals):
                m[slot] = True
        return m

    def _string_range(self, bounds: _Bounds, n: int) -> Mask:
        """A keyword column's slots with a string in the range: codes ranked in string order, then
        one pass comparing ranks."""
        if not self.vocab:
            return np.zeros(n, dtype=bool)
        if self._ranks is None or len(self._ranks[0]) != len(self.vocab):
            strings = list(self.vocab)  # in code order: a string's code is its position
            order = sorted(range(len(strings)), key=strings.__getitem__)
            rank = np.empty(len(strings), dtype=np.int64)
            rank[order] = np.arange(len(strings))
            self._ranks = ([strings[i] for i in order], rank)
        ordered, rank = self._ranks
        a, b = bounds.positions(
            len(ordered), lambda v, side: (bisect.bisect_right if side == "right" else bisect.bisect_left)(ordered, v)
        )
        r = rank[self.col[:n]]
        m = self.has[:n] & (r >= a) & (r < b)
        return self._add_multi(m, lambda code: a <= rank[code] < b)


class PayloadStore:
    """Payloads by point id, in slots; the caller (ShardIndex) serialises writes under its lock.

    Per slot it holds numpy columns (its id, liveness, IVF list) and one list entry (its payload;
    the shared EMPTY for most points), and per id no Python object: id -> slot is an `I64Map`, the
    free slots a numpy stack."""

    def __init__(self) -> None:
        self._slot = I64Map()  # id -> slot, for every stored id
        self._ids = np.empty(0, dtype=np.int64)
        self._live = np.zeros(0, dtype=bool)
        self._lists = np.zeros(0, dtype=np.intp)  # each slot's IVF list + 1 (0: none, or untrained)
        self._vector = np.zeros(0, dtype=bool)  # the slot's point has a vector (not payload-only)
        self.vectorless = 0  # live points without a vector
        self._payloads: list[PayloadDict | None] = []
        self._hashes: dict[int, int] = {}  # slot -> payload_hash, for non-empty payloads
        self._free = np.empty(0, dtype=np.int64)  # a stack of free slots: _free[:_nfree]
        self._nfree = 0
        self._held = False  # hold_free() in force: put reuses no free slot
        self.indexes: dict[str, FieldIndex] = {}
        self.texts: dict[str, TextIndex] = {}  # TEXT indexes (a field has one index, of either kind)

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def slots(self) -> int:
        """Slots ever allocated (live or free): the length of slot-indexed views."""
        return len(self._payloads)

    def slots_of(self, ids: I64) -> I64:
        """The slot of each id, -1 for ids without one."""
        return self._slot.get_many(np.asarray(ids, dtype=np.int64))

    def hold_free(self) -> None:
        """Until release_free(), put reuses no free slot (freed by drop before or after this call):
        it appends new slots, so slot-indexed arrays read meanwhile without a lock keep each slot's
        id. A second call while held does nothing."""
        self._held = True

    def release_free(self) -> None:
        """Make the free slots (those freed while held included) reusable again."""
        self._held = False

    def _grow(self, n: int) -> None:
        if n > self._ids.size:
            cap = max(n, 2 * self._ids.size, 1024)
            self._ids = np.concatenate([self._ids, np.full(cap - self._ids.size, -1, dtype=np.int64)])
            self._live = np.concatenate([self._live, np.zeros(cap - self._live.size, dtype=bool)])
            self._lists = np.concatenate([self._lists, np.zeros(cap - self._lists.size, dtype=np.intp)])
            self._vector = np.concatenate([self._vector, np.zeros(cap - self._vector.size, dtype=bool)])
            for index in self.indexes.values():
                index.grow(cap)

    def _allocate(self, k: int) -> I64:
        """k slots for new ids: free ones first (the last freed first), unless held; then new ones."""
        out = np.empty(k, dtype=np.int64)
        reuse = 0 if self._held else min(k, self._nfree)
        if reuse:
            out[:reuse] = self._free[self._nfree - reuse : self._nfree][::-1]
            self._nfree -= reuse
        if k > reuse:
            start = len(self._payloads)
            out[reuse:] = np.arange(start, start + k - reuse)
            self._payloads.extend([None] * (k - reuse))
            self._grow(start + k - reuse)
        return out

    def _release(self, slots: I64) -> None:
        """Push slots on the free stack (the last of them is reused first)."""
        need = self._nfree + slots.size
        if need > self._free.size:
            free = np.empty(max(need, 2 * self._free.size, 1024), dtype=np.int64)
            free[: self._nfree] = self._free[: self._nfree]
            self._free = free
        self._free[self._nfree : need] = slots
        self._nfree = need

    def put(self, ids: Iterable[int] | I64, payloads: Iterable[tuple[PayloadDict, bytes]]) -> int:
        """Store (payload, its canonical bytes) for each id; returns the digest change (mod 2^64)."""
        ids = _as_ids(ids)
        items = payloads if isinstance(payloads, list | tuple) else list(payloads)
        if len(items) != ids.size:
            raise ValueError(f"put: {ids.size} ids but {len(items)} payloads")
        if not ids.size:
            return 0
        slots = self._slot.get_many(ids)
        fresh = np.flatnonzero(slots < 0)
        if fresh.size:  # a slot for each new id, in the order of their first appearance
            uniq, first, inverse = np.unique(ids[fresh], return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            got = self._allocate(uniq.size)
            slot_of = np.empty(uniq.size, dtype=np.int64)
            slot_of[order] = got
            slots[fresh] = slot_of[inverse.reshape(-1)]
            self._slot.set_many(uniq, slot_of)
            self._ids[got], self._live[got], self._lists[got], self._vector[got] = uniq[order], True, 0, True
        change = 0
        hashes, stored, indexes = self._hashes, self._payloads, list(self.indexes.values())
        texts: dict[int, list[PayloadDict | None]] | None = {} if self.texts else None  # slot -> [old, new]
        for slot, i, (payload, blob) in zip(slots.tolist(), ids.tolist(), items, strict=True):
            if hashes:
                change -= hashes.pop(slot, 0)
            if blob:
                h = payload_hash(i, blob)
                if h:
                    hashes[slot] = h
                    change += h
            if texts is not None:
                texts.setdefault(slot, [stored[slot], None])[1] = payload or EMPTY
            stored[slot] = payload or EMPTY
            for index in indexes:
                index.set(slot, payload)
        if texts:
            self._update_texts(list(texts), [o for o, _ in texts.values()], [n for _, n in texts.values()])
        return change & ((1 << 64) - 1)

    def _update_texts(self, slots: list[int], olds: list[PayloadDict | None], news: list[PayloadDict | None]) -> None:
        for text in self.texts.values():
            text.update(slots, olds, news)

    def drop(self, ids: Iterable[int] | I64) -> int:
        """Forget the payloads of ids (removed points); returns the digest change."""
        ids = _as_ids(ids)
        if not ids.size or not len(self._slot):
            return 0
        slots = self._slot.get_many(ids)
        present = slots >= 0
        ids, slots = ids[present], slots[present]
        if not ids.size:
            return 0
        if ids.size > 1:  # an id listed twice: once, where it first appears
            first = np.sort(np.unique(ids, return_index=True)[1])
            if first.size < ids.size:
                ids, slots = ids[first], slots[first]
        change = 0
        hashes, stored, indexes = self._hashes, self._payloads, list(self.indexes.values())
        if self.texts:
            gone = slots.tolist()
            self._update_texts(gone, [stored[s] for s in gone], [None] * len(gone))
        for slot in slots.tolist():
            if hashes:
                change -= hashes.pop(slot, 0)
            stored[slot] = None
            for index in indexes:
                index.set(slot, None)
        self._slot.delete_many(ids)
        self.vectorless -= int(np.count_nonzero(~self._vector[slots]))
        self._vector[slots] = True
        self._live[slots] = False
        self._ids[slots] = -1
        self._release(slots)
        return change & ((1 << 64) - 1)

    def set_lists(self, ids: I64, lists: I64) -> None:
        """Record the IVF list of stored ids."""
        slots = self._slot.get_many(np.asarray(ids, dtype=np.int64))
        ok = slots >= 0
        self._lists[slots[ok]] = np.asarray(lists)[ok] + 1

    def set_has_vector(self, ids: I64, has: bool) -> None:
        """Record whether stored ids have a vector (a point added with a payload only has none)."""
        slots = self._slot.get_many(np.asarray(ids, dtype=np.int64))
        slots = slots[slots >= 0]
        changed = slots[self._vector[slots] != has]
        self._vector[changed] = has
        self.vectorless += -int(changed.size) if has else int(changed.size)

    def has_vector(self, ids: I64) -> npt.NDArray[np.bool_]:
        """Whether each id is stored with a vector (unknown ids: False)."""
        slots = self._slot.get_many(np.asarray(ids, dtype=np.int64))
        out = np.zeros(slots.size, dtype=bool)
        ok = slots >= 0
        out[ok] = self._vector[slots[ok]]
        return out

    def with_vector(self, n: int) -> Mask:
        """Over the first n slots: those whose point has a vector (what a vector search may return)."""
        return self._vector[:n]

    def list_counts(self, mask: Mask, nlist: int) -> npt.NDArray[np.int64]:
        """How many of the slots where mask is set each IVF list holds (one weighted pass)."""
        counts = np.bincount(self._lists[: mask.size], weights=mask, minlength=nlist + 1)[1 : nlist + 1]
        return counts.astype(np.int64)

    def freeze(self) -> tuple[I64, list[PayloadDict | None]]:
        """(ids, payloads) by slot, a copy (payload dicts are never changed in place)."""
        n = self.slots
        return self._ids[:n].copy(), list(self._payloads)

    def ids_of(self, mask: Mask) -> I64:
        """The ids of the live slots where mask is set (in slot order)."""
        n = mask.size
        return self._ids[:n][mask & self._live[:n]]

    def get(self, i: int) -> PayloadDict | None:
        slot = self._slot.get(int(i))
        return None if slot is None else self._payloads[slot]

    def items(self) -> list[tuple[int, PayloadDict]]:
        """(id, payload) of every point with a non-empty payload (a consistent copy under the caller's lock)."""
        return [(int(self._ids[s]), p) for s, p in enumerate(self._payloads) if p]

    # -- indexes --------------------------------------------------------------------------------

    def index_kinds(self) -> dict[str, str]:
        """The kind of each indexed field."""
        return {**{f: i.kind for f, i in list(self.indexes.items())}, **dict.fromkeys(list(self.texts), "text")}

    def needs_index(self, field: str, kind: str, params: ppb.TextIndexParams | None = None) -> bool:
        """Whether `create_index` would create an index: False when the field has this one (a TEXT index
        with the same params); AlreadyExists when it has another."""
        have = self.index_kinds().get(field)
        if have is None:
            return True
        text = self.texts.get(field)
        if have == kind and (text is None or params is None or same_params(text.params, params)):
            return False
        shown = f"text ({describe(text.params)})" if text is not None else have
        raise AlreadyExists(f"payload field {field!r} is already indexed as {shown}: drop that index first")

    def create_index(self, field: str, kind: str, params: ppb.TextIndexParams | None = None) -> bool:
        """Index `field` (a TEXT index: with these analyzer and BM25 params); False when it is already
        indexed so."""
        if not self.needs_index(field, kind, params):
            return False
        if kind == "text":
            text = TextIndex(field, params)
            stored = self._payloads
            text.update(range(len(stored)), [None] * len(stored), stored)
            self.texts[field] = text
            return True
        index = FieldIndex(field, kind)
        index.grow(self._ids.size)
        for slot, p in enumerate(self._payloads):
            if p:
                index.set(slot, p)
        self.indexes[field] = index
        return True

    def drop_index(self, field: str) -> None:
        if self.indexes.pop(field, None) is None and self.texts.pop(field, None) is None:
            raise NotFound(f"payload field {field!r} has no index")

    def ids_by_slot(self) -> I64:
        """Each slot's id (-1: free), a view: read it under the caller's lock."""
        return self._ids

    # -- filters --------------------------------------------------------------------------------

    def matching(self, f: ppb.Filter | None) -> tuple[Mask, list[str]]:
        """(mask over slots of the points matching f, the fields read without an index)."""
        n = self.slots
        live = self._live[:n]
        if f is None:
            return live.copy(), []
        unindexed: list[str] = []
        return self._filter(f, live, "filter", 0, unindexed), sorted(set(unindexed))

    def matching_ids(self, f: ppb.Filter | None) -> I64:
        """The ids of the points matching f, in slot order."""
        return self.ids_of(self.matching(f)[0])

    def contains(self, ids: I64, mask: Mask) -> Mask:
        """Whether each id is stored and its slot passes `mask` (-1 and unknown ids: False)."""
        slots = self._slot.get_many(np.asarray(ids, dtype=np.int64))
        ok = slots >= 0
        out = np.zeros(ids.size, dtype=bool)
        out[ok] = mask[slots[ok]] if mask.size else False
        return out

    def _filter(self, f: ppb.Filter, live: Mask, path: str, depth: int, unindexed: list[str]) -> Mask:
        if depth > MAX_DEPTH:
            raise InvalidArgument(f"{path} nests filters more than {MAX_DEPTH} levels deep")
        m = live.copy()
        for i, c in enumerate(f.must):
            m &= self._condition(c, live, f"{path}.must[{i}]", depth, unindexed)
        if len(f.should):
            any_of = np.zeros_like(live)
            for i, c in enumerate(f.should):
                any_of |= self._condition(c, live, f"{path}.should[{i}]", depth, unindexed)
            m &= any_of
        for i, c in enumerate(f.must_not):
            m &= ~self._condition(c, live, f"{path}.must_not[{i}]", depth, unindexed)
        return m

    def _condition(self, c: ppb.Condition, live: Mask, path: str, depth: int, unindexed: list[str]) -> Mask:
        kind = c.WhichOneof("kind")
        if kind == "filter":
            return self._filter(c.filter, live, path, depth + 1, unindexed)
        n = live.size
        if kind == "has_id":
            if len(c.has_id) % 8:
                raise InvalidArgument(f"{path}.has_id has {len(c.has_id)} bytes: pack ids as little-endian int64")
            slots = self._slot.get_many(np.frombuffer(c.has_id, dtype="<i8").astype(np.int64))
            m = np.zeros(n, dtype=bool)
            m[slots[slots >= 0]] = True
            return m
        if kind != "field":
            raise InvalidArgument(f"{path} is empty: set field, filter or has_id")
        fc = c.field
        parts = key_parts(fc.key, f"{path}.key")
        pred = _predicate(fc, parts, path)
        if fc.WhichOneof("test") == "text":
            text = self.texts.get(fc.key) or next((t for t in self.texts.values() if t.path == parts), None)
            if text is not None:
                return text.matches_all(text.analyzer.analyze(fc.text), n)
            index = None
        else:
            index = self._index_of(fc.key, parts)
        if index is not None:
            test = fc.WhichOneof("test")
            if test == "is_empty":
                exists = ppb.FieldCondition(key=fc.key, exists=True)
                hit = index.answer(exists, n, path)
                if hit is not None:
                    return live & ~self._scan_slots(hit, index.other, _predicate(exists, parts, path))
            else:
                hit = index.answer(fc, n, path)
                if hit is not None:
                    return self._scan_slots(hit, index.other, pred)
        unindexed.append(fc.key)
        payloads = self._payloads
        return np.fromiter((p is not None and pred(p) for p in payloads), dtype=bool, count=n)

    def _index_of(self, key: str, parts: list[str]) -> FieldIndex | None:
        """The index of the field at this path, however its key is spelled ("a.b", "`a`.b")."""
        index = self.indexes.get(key)
        if index is None:
            index = next((i for i in self.indexes.values() if i.path == parts), None)
        return index

    def _scan_slots(self, m: Mask, slots: set[int], pred: Callable[[PayloadDict], bool]) -> Mask:
        """m, with the slots that hold values the index does not hold read from their payloads (what
        the index said of them, from some of their values, is replaced)."""
        payloads = self._payloads
        for s in slots:
            if s < m.size:
                p = payloads[s]
                m[s] = p is not None and pred(p)
        return m


def _predicate(fc: ppb.FieldCondition, keys: list[str], path: str) -> Callable[[PayloadDict], bool]:
    """The test of fc on one payload (keys: fc.key's parts); InvalidArgument for a malformed test."""
    test = fc.WhichOneof("test")
    if test in ("match", "match_any", "match_except"):
        raw = [fc.match] if test == "match" else list(getattr(fc, test).values)
        if not raw:
            raise InvalidArgument(f"{path}.{test} is empty: list at least one value")
        values = []
        for v in raw:
            if v.WhichOneof("kind") not in ("bool_value", "int_value", "double_value", "string_value"):
                raise InvalidArgument(f"{path}.{test} takes strings, numbers or bools (use is_null for null)")
            values.append(value_from_proto(v))
        if test == "match_except":
            return lambda p: _none_of(values_at(p, keys)[1], values)
        return lambda p: any(_eq(x, v) for x in values_at(p, keys)[1] for v in values)
    if test == "range" or test == "datetime_range":
        bounds = _Bounds(fc.range, path) if test == "range" else _Instants(fc.datetime_range, path)
        return lambda p: any(bounds.holds(x) for x in values_at(p, keys)[1])
    if test in ("is_null", "is_empty", "exists"):
        if not getattr(fc, test):
            raise InvalidArgument(f"{path}.{test} must be true (negate it with must_not)")
        if test == "is_null":
            return lambda p: (lambda leaves: bool(leaves) and all(x is None for x in leaves))(values_at(p, keys)[1])
        if test == "exists":
            return lambda p: any(x is not None for x in values_at(p, keys)[1])
        return lambda p: all(x is None for x in values_at(p, keys)[1])
    if test == "text":
        return _text_predicate(fc.text, keys)
    raise InvalidArgument(
        f"{path} sets no test: set match, match_any, match_except, range, datetime_range, is_null, is_empty, "
        "exists or text"
    )


def _text_predicate(text: str, keys: list[str]) -> Callable[[PayloadDict], bool]:
    """The `text` test without a TEXT index: the field is a string holding every term of `text`, both
    analysed by the default analyzer (a text without terms matches nothing)."""
    terms = set(DEFAULT.analyze(text))
    if not terms:
        return lambda p: False

    def holds(p: PayloadDict) -> bool:
        doc = document_of(p, keys)[0]
        return doc is not None and terms.issubset(DEFAULT.analyze(doc))

    return holds


def _none_of(leaves: list[Any], values: list[Any]) -> bool:
    """match_except: some value is not null, and none equals one of `values`."""
    return any(x is not None for x in leaves) and not any(_eq(x, v) for x in leaves for v in values)


def _as_ids(ids: Iterable[int] | I64) -> I64:
    if isinstance(ids, np.ndarray):
        return np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if isinstance(ids, list | tuple):
        return np.asarray(ids, dtype=np.int64).reshape(-1)
    return np.fromiter(ids, dtype=np.int64)


def decode(payloads: Sequence[ppb.Payload]) -> list[tuple[PayloadDict, bytes]]:
    """(dict, canonical bytes) of each payload received."""
    out = []
    for p in payloads:
        if p.fields:
            d = payload_from_proto(p)
            out.append((d, encode(d)))
        else:
            out.append((EMPTY, b""))
    return out


def payload_from_blob(blob: bytes) -> PayloadDict:
    """A payload from its canonical bytes (as stored in snapshots)."""
    p = ppb.Payload()
    p.ParseFromString(blob)
    return payload_from_proto(p)


def project(payload: PayloadDict | None, fields: Sequence[str]) -> ppb.Payload:
    """The payload (only `fields`, key paths as in a filter, when given) as a proto."""
    if not payload:
        return ppb.Payload()
    if not fields:
        return payload_to_proto(payload, stored=True)
    out: PayloadDict = {}
    for i, f in enumerate(fields):
        parts = [f] if f == "" else key_parts(f, f"with_payload.fields[{i}]")  # "": the string id's key
        src: Any = payload
        for part in parts:
            if not isinstance(src, dict) or part not in src:
                break
            src = src[part]
        else:
            dst = out
            for part in parts[:-1]:
                dst = dst.setdefault(part, {})
            dst[parts[-1]] = src
    return payload_to_proto(out, stored=True)
