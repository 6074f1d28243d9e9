"""merge_topk against faiss's own merge, tie and duplicate rules; the placement hash is stable."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from vecshard_server.common.hashing import fmix64
from vecshard_server.common.placement import MOD, Placement, shard_of, split_by_shard
from vecshard_server.common.results import FLT_MAX
from vecshard_server.coordinator.merge import merge_topk


def _shard_results(rng: np.random.Generator, shards: int, nq: int, k: int, larger: bool):
    Ds, Is = [], []
    for s in range(shards):
        D = rng.random((nq, k)).astype(np.float32)
        D = -np.sort(-D, axis=1) if larger else np.sort(D, axis=1)
        I = (rng.permutation(10_000)[: nq * k].reshape(nq, k) * shards + s).astype(np.int64)
        Ds.append(D)
        Is.append(I)
    return Ds, Is


@pytest.mark.parametrize("larger", [False, True])
@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_equals_faiss_merge_on_tie_free_data(larger: bool, shards: int) -> None:
    rng = np.random.default_rng(shards)
    Ds, Is = _shard_results(rng, shards, nq=7, k=10, larger=larger)
    D, I = merge_topk(Ds, Is, 10, larger)
    fD, fI = faiss.merge_knn_results(np.stack(Ds), np.stack(Is), keep_max=larger)
    np.testing.assert_array_equal(I, fI)
    np.testing.assert_array_equal(D, fD)


def test_direction_l2_smaller_first_ip_larger_first() -> None:
    Ds = [np.array([[1.0, 5.0]], np.float32), np.array([[2.0, 3.0]], np.float32)]
    Is = [np.array([[10, 11]]), np.array([[20, 21]])]
    assert merge_topk(Ds, Is, 3, larger_is_better=False)[1].tolist() == [[10, 20, 21]]
    Ds = [np.array([[5.0, 1.0]], np.float32), np.array([[3.0, 2.0]], np.float32)]
    assert merge_topk(Ds, Is, 3, larger_is_better=True)[1].tolist() == [[10, 20, 21]]


def test_ties_broken_by_id_whatever_the_shard_order() -> None:
    Ds = [np.array([[1.0, 1.0]], np.float32), np.array([[1.0, 1.0]], np.float32)]
    a = merge_topk(Ds, [np.array([[9, 7]]), np.array([[3, 5]])], 3, False)[1]
    b = merge_topk(Ds[::-1], [np.array([[3, 5]]), np.array([[9, 7]])], 3, False)[1]
    assert a.tolist() == b.tolist() == [[3, 5, 7]]


def test_duplicate_ids_keep_their_best_distance() -> None:
    Ds = [np.array([[0.5, 2.0]], np.float32), np.array([[1.0, 3.0]], np.float32)]
    Is = [np.array([[4, 8]]), np.array([[4, 9]])]
    D, I = merge_topk(Ds, Is, 3, False)
    assert I.tolist() == [[4, 8, 9]]
    assert D.tolist() == [[0.5, 2.0, 3.0]]
    D, I = merge_topk([np.array([[3.0, 1.0]], np.float32)] * 2, [np.array([[4, 8]])] * 2, 3, True)
    assert I.tolist() == [[4, 8, -1]]
    assert D[0, 2] == -FLT_MAX


def test_padding_sorts_last_and_fills_k() -> None:
    Ds = [np.array([[1.0, FLT_MAX]], np.float32), np.array([[FLT_MAX, FLT_MAX]], np.float32)]
    Is = [np.array([[6, -1]]), np.array([[-1, -1]])]
    D, I = merge_topk(Ds, Is, 5, False)
    assert I.tolist() == [[6, -1, -1, -1, -1]]
    assert D[0, 0] == 1.0 and (D[0, 1:] == FLT_MAX).all()


def test_fmix64_matches_the_murmur3_reference() -> None:
    def ref(x: int) -> int:  # MurmurHash3 fmix64, in plain Python integers
        m = (1 << 64) - 1
        x &= m
        x ^= x >> 33
        x = (x * 0xFF51AFD7ED558CCD) & m
        x ^= x >> 33
        x = (x * 0xC4CEB9FE1A85EC53) & m
        x ^= x >> 33
        return x

    ids = np.array([0, 1, 2, 42, 2**31, 2**62 + 12345, 2**63 - 1], dtype=np.int64)
    assert fmix64(ids).tolist() == [ref(int(i)) for i in ids]
    assert Placement(MOD, 4).owner(ids).tolist() == [ref(int(i)) % 4 for i in ids]


def test_placement_is_balanced_and_split_covers_every_id() -> None:
    ids = np.arange(100_000, dtype=np.int64)
    counts = np.bincount(shard_of(ids, 4), minlength=4)
    assert counts.min() > 0.95 * 25_000
    parts = split_by_shard(ids[::-1].copy(), 3)
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(100_000))
    for s, pos in enumerate(parts):
        assert (shard_of(ids[::-1][pos], 3) == s).all()
        assert (np.diff(pos) > 0).all()


@pytest.mark.parametrize("larger", [False, True])
def test_small_merge_is_the_numpy_merge(larger: bool) -> None:
    """merge_topk's plain-Python path for a few results gives exactly what its numpy path gives:
    ties by id, duplicates kept once at their best distance, padding last."""
    from vecshard_server.coordinator import merge

    rng = np.random.default_rng(7)
    for trial in range(500):
        shards, width, nq, k = rng.integers(1, 4), rng.integers(1, 12), rng.integers(1, 4), rng.integers(1, 15)
        Ds = [rng.integers(-3, 4, size=(nq, width)).astype(np.float32) for _ in range(shards)]
        Is = [rng.integers(-1, 8, size=(nq, width)).astype(np.int64) for _ in range(shards)]
        small = merge._merge_small(np.concatenate(Ds, axis=1), np.concatenate(Is, axis=1), k, larger)
        D, Id = np.concatenate(Ds, axis=1), np.concatenate(Is, axis=1)
        order, pad = merge._best(D, Id, k, larger)
        big = merge._taken(D, Id, order, pad, k, larger)
        np.testing.assert_array_equal(small[1], big[1], err_msg=f"trial {trial}")
        np.testing.assert_array_equal(small[0], big[0], err_msg=f"trial {trial}")
