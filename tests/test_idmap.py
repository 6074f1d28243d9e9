"""The numpy id maps (`I64Map`, `IdVersions`) against a plain dict, and PayloadStore's slots.

Small overlay limits make compactions happen every few writes, so every operation meets a base, an
overlay, and both; frozen maps must stay what they were whatever is written after."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecshard_server.shard.idmap import I64Map, IdVersions, pairs_of
from vecshard_server.shard.payloads import EMPTY, PayloadStore, encode, payload_hash

KEYS = st.integers(0, 40)  # few keys: writes hit the same ids often
BATCH = st.lists(KEYS, max_size=12)

OPS = st.one_of(
    st.tuples(st.just("set"), KEYS, st.integers(0, 10**12)),
    st.tuples(st.just("del"), KEYS),
    st.tuples(st.just("pop"), KEYS),
    st.tuples(st.just("update"), st.lists(st.tuples(KEYS, st.integers(0, 99)), max_size=5)),
    st.tuples(st.just("set_many"), BATCH, st.integers(0, 10**6)),
    st.tuples(st.just("delete_many"), BATCH),
    st.tuples(st.just("get_many"), st.lists(st.integers(-3, 50), max_size=80)),
    st.tuples(st.just("freeze")),
    st.tuples(st.just("compact")),
)


def _check_equal(m: I64Map, d: dict[int, int]) -> None:
    assert len(m) == len(d) and bool(m) == bool(d)
    assert list(m) == sorted(d)
    assert dict(m.items()) == d
    for i in range(-2, 45):
        assert (i in m) == (i in d)
        assert m.get(i) == d.get(i)
        assert m.get(i, -7) == d.get(i, -7)
        if i in d:
            assert m[i] == d[i]
        else:
            with pytest.raises(KeyError):
                m[i]


def _as_dict(pairs: np.ndarray[Any, Any]) -> dict[int, int]:
    assert pairs.shape[0] == 2 and pairs.dtype == np.int64
    assert pairs[0].tolist() == sorted(set(pairs[0].tolist()))  # ascending, unique
    return dict(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))


@settings(max_examples=300, deadline=None)
@given(
    start=st.dictionaries(KEYS, st.integers(0, 10**9), max_size=30),
    ops=st.lists(OPS, max_size=60),
    min_overlay=st.sampled_from([1, 2, 3, 8, 4096]),
    ratio=st.sampled_from([1, 2, 32]),
)
def test_the_map_is_a_dict_through_any_writes_and_compactions(
    start: dict[int, int], ops: list[tuple[Any, ...]], min_overlay: int, ratio: int
) -> None:
    ids = np.array(list(start), dtype=np.int64)
    m = IdVersions.from_arrays(ids, np.array(list(start.values()), dtype=np.int64), min_overlay, ratio)
    assert isinstance(m, IdVersions)
    d = dict(start)
    frozen = []
    for op in ops:
        name = op[0]
        if name == "set":
            m[op[1]] = op[2]
            d[op[1]] = op[2]
        elif name == "del":
            if op[1] in d:
                del m[op[1]]
                del d[op[1]]
            else:
                with pytest.raises(KeyError):
                    del m[op[1]]
        elif name == "pop":
            m.pop(op[1])
            d.pop(op[1], None)
        elif name == "update":
            m.update(op[1])
            d.update(op[1])
        elif name == "set_many":
            batch = np.array(op[1], dtype=np.int64)
            values = op[2] + np.arange(batch.size, dtype=np.int64)
            m.set_many(batch, values)
            d.update(zip(batch.tolist(), values.tolist(), strict=True))  # an id twice: the last value
        elif name == "delete_many":
            m.delete_many(np.array(op[1], dtype=np.int64))  # absent ids, and ids twice, included
            for i in op[1]:
                d.pop(i, None)
        elif name == "get_many":
            asked = np.array(op[1], dtype=np.int64)
            assert m.get_many(asked).tolist() == [d.get(i, -1) for i in op[1]]
            assert m.contains_many(asked).tolist() == [i in d for i in op[1]]
        elif name == "freeze":
            frozen.append((m.freeze(), dict(d)))
        else:
            m.compact()
        assert len(m) == len(d)
    _check_equal(m, d)
    for f, then in frozen:  # every frozen map is the map at its freeze
        assert _as_dict(pairs_of(f)) == then
    assert _as_dict(pairs_of(m.freeze())) == d
    keys, values = m.arrays()
    assert dict(zip(keys.tolist(), values.tolist(), strict=True)) == d


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**62), 2**62), st.integers(0, 2**62)), max_size=200))
def test_from_arrays_round_trips_through_pairs_of(pairs: list[tuple[int, int]]) -> None:
    ids = np.array([i for i, _ in pairs], dtype=np.int64)
    values = np.array([v for _, v in pairs], dtype=np.int64)
    m = I64Map.from_arrays(ids, values)
    d = dict(pairs)  # an id given twice: its last value, as a dict
    out = pairs_of(m.freeze())
    assert _as_dict(out) == d and len(m) == len(d)
    again = I64Map.from_arrays(out[0], out[1])
    assert dict(again.items()) == d
    ids[:] = 0  # the map copied its input
    assert dict(m.items()) == d


@settings(max_examples=200, deadline=None)
@given(
    keys=st.one_of(
        st.sets(st.integers(0, 2**63 - 1), max_size=300),  # spread out
        st.sets(st.integers(-(2**63), 2**63 - 1), max_size=300),  # both signs, far apart
        st.sets(st.integers(10**12, 10**12 + 2000), max_size=300),  # dense
        st.builds(lambda a, b: a | b, st.sets(st.integers(0, 100)), st.sets(st.integers(2**40, 2**40 + 50))),
    ),
    probes=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=30),
)
def test_single_lookups_find_exactly_the_keys_whatever_their_spread(keys: set[int], probes: list[int]) -> None:
    ids = np.array(sorted(keys), dtype=np.int64)
    m = I64Map.from_arrays(ids, ids // 2)
    for i in [*keys, *probes, *(k + 1 for k in keys if k < 2**63 - 1), *(k - 1 for k in keys if k > -(2**63))]:
        assert m.get(i) == (i // 2 if i in keys else None)
        assert (i in m) == (i in keys)
    asked = np.array(probes + sorted(keys), dtype=np.int64)
    assert m.get_many(asked).tolist() == [i // 2 if i in keys else -1 for i in asked.tolist()]


def test_a_frozen_map_stays_unchanged_through_big_writes_and_compactions() -> None:
    ids = np.arange(0, 30000, 3, dtype=np.int64)
    m = IdVersions.from_arrays(ids, ids * 10)
    m[1] = 1  # an overlay entry at the freeze
    frozen = m.freeze()
    base_keys = frozen.keys.copy()
    m.set_many(np.arange(0, 60000, 2, dtype=np.int64), np.full(30000, 7, dtype=np.int64))  # compacts
    m.delete_many(np.arange(0, 3000, dtype=np.int64))
    for i in range(5000):
        m[10**6 + i] = i  # compactions on single writes
    expected = {**{i: i * 10 for i in ids.tolist()}, 1: 1}
    assert _as_dict(pairs_of(frozen)) == expected
    assert np.array_equal(frozen.keys, base_keys)
    with pytest.raises(ValueError):
        frozen.keys[0] = 5  # the base is read-only
    assert m.get(0) is None and m[3000] == 7 and m[3003] == 30030 and m[10**6 + 4999] == 4999
    assert len(m) == len(dict(m.items()))


def test_batch_and_single_operations_on_an_empty_map() -> None:
    m = I64Map()
    assert m.get_many(np.array([1, 2], dtype=np.int64)).tolist() == [-1, -1]
    assert m.get_many(np.empty(0, dtype=np.int64)).size == 0
    m.delete_many(np.array([1], dtype=np.int64))
    m.set_many(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
    m.pop(3)
    assert not m and len(m) == 0 and list(m) == [] and pairs_of(m.freeze()).shape == (2, 0)
    m.set_many(np.array([5, 5, 2], dtype=np.int64), np.array([1, 2, 3], dtype=np.int64))
    assert dict(m.items()) == {2: 3, 5: 2} and len(m) == 2
    big = np.arange(10000, dtype=np.int64)  # a batch past the overlay's limit merges at once
    m.set_many(big, big + 1)
    assert len(m) == 10000 and m[5] == 6 and not m._over
    m.delete_many(np.concatenate([big[::2], big[::2], np.array([-1, 10**9], dtype=np.int64)]))
    assert len(m) == 5000 and 4 not in m and m[5] == 6


# -- PayloadStore ---------------------------------------------------------------------------------

E = (EMPTY, b"")


def _p(x: int) -> tuple[dict[str, Any], bytes]:
    d: dict[str, Any] = {"x": x}
    return d, encode(d)


def test_slots_of_gives_each_ids_slot_and_minus_one_for_the_others() -> None:
    s = PayloadStore()
    s.put([10, 20, 30], [E, E, E])
    assert s.slots_of(np.array([30, 5, 10, 20, 10], dtype=np.int64)).tolist() == [2, -1, 0, 1, 0]
    s.drop([20])
    assert s.slots_of(np.array([20, 30], dtype=np.int64)).tolist() == [-1, 2]
    s.put([40], [E])  # reuses slot 1
    assert s.slots_of(np.array([40], dtype=np.int64)).tolist() == [1]
    assert s.slots == 3 and len(s) == 3
    assert s.slots_of(np.empty(0, dtype=np.int64)).size == 0


def test_held_free_slots_are_not_reused_until_released() -> None:
    s = PayloadStore()
    s.put(list(range(6)), [E] * 6)
    s.drop([0])  # freed before the hold
    s.hold_free()
    s.hold_free()  # no-op
    s.drop([1, 2])
    s.put([100, 101], [E, E])
    assert s.slots_of(np.array([100, 101], dtype=np.int64)).tolist() == [6, 7]  # appended
    assert s.slots == 8
    assert s.ids_of(np.ones(8, dtype=bool)).tolist() == [3, 4, 5, 100, 101]
    s.release_free()
    s.release_free()  # no-op
    s.put([200, 201, 202, 203], [E] * 4)  # the free slots, last freed first, then a new one
    assert s.slots_of(np.array([200, 201, 202, 203], dtype=np.int64)).tolist() == [2, 1, 0, 8]
    assert len(s) == 9


def test_put_and_drop_keep_slots_payloads_hashes_and_indexes_consistent() -> None:
    s = PayloadStore()
    s.create_index("x", "integer")
    digest = s.put([1, 2, 2, 3], [_p(1), _p(2), _p(22), E])  # 2 twice: its last payload
    assert len(s) == 3 and s.slots == 3
    assert s.get(2) == {"x": 22} and s.get(3) == EMPTY and s.get(9) is None
    expected = (payload_hash(1, _p(1)[1]) + payload_hash(2, _p(22)[1])) % 2**64
    assert digest == expected
    assert s.drop([2, 2, 9]) == (-payload_hash(2, _p(22)[1])) % 2**64
    assert s.get(2) is None and len(s) == 2
    assert s.contains(np.array([1, 2, 3, -1], dtype=np.int64), np.ones(3, dtype=bool)).tolist() == [
        True,
        False,
        True,
        False,
    ]
    s.put(np.array([4], dtype=np.int64), [_p(4)])  # an array of ids works too
    assert s.slots_of(np.array([4], dtype=np.int64)).tolist() == [1]
    s.set_lists(np.array([4, 1, 77], dtype=np.int64), np.array([5, 6, 7], dtype=np.int64))
    assert s.list_counts(np.ones(3, dtype=bool), 8).tolist() == [0, 0, 0, 0, 0, 1, 1, 0]
    assert sorted(s.items()) == [(1, {"x": 1}), (4, {"x": 4})]
    ids, payloads = s.freeze()
    assert ids.tolist() == [1, 4, 3] and payloads == [{"x": 1}, {"x": 4}, EMPTY]
    with pytest.raises(ValueError):
        s.put([5, 6], [E])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 30), max_size=10)), max_size=40))
def test_the_store_matches_a_dict_of_payloads(steps: list[tuple[bool, list[int]]]) -> None:
    s = PayloadStore()
    ref: dict[int, Any] = {}
    for n, (is_put, ids) in enumerate(steps):
        if is_put:
            s.put(ids, [_p(n) if i % 2 else E for i in ids])
            ref.update((i, {"x": n} if i % 2 else EMPTY) for i in ids)
        else:
            s.drop(ids)
            for i in ids:
                ref.pop(i, None)
        assert len(s) == len(ref)
    slots = s.slots_of(np.arange(31, dtype=np.int64))
    assert sorted(s.ids_of(np.ones(s.slots, dtype=bool)).tolist()) == sorted(ref)
    for i in range(31):
        assert s.get(i) == ref.get(i)
        assert (slots[i] >= 0) == (i in ref)
    live = slots[slots >= 0]
    assert np.unique(live).size == live.size  # no two ids share a slot
