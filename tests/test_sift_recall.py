"""Recall on real SIFT data: sift5k, shipped in vecshard_server/bench/data/sift5k (exact ground truth
computed by brute force, not published; see the README there).

vecshard's IVF (nlist 64, one shared quantizer, 2 and 3 shards) must give exactly what in-process
faiss gives with the same centroids at each nprobe; nprobe = nlist must give the exact answer. The
shipped files themselves are checked against their README (shapes, dtypes, sha256) and the ground
truth is recomputed by brute force, so the data cannot silently rot.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import faiss
import numpy as np
import pytest

from vecshard import Client
from vecshard_server.bench.datasets import SIFT5K_DIR, SIFT5K_FILES

NLIST, K = 64, 10


def recall_at(ids: np.ndarray, gt: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(ids[i, :k]) & set(gt[i, :k])) / k for i in range(len(gt))]))


def sort_by_distance_then_id(D: np.ndarray, I: np.ndarray) -> np.ndarray:
    order = np.lexsort((I, D), axis=1)
    return np.take_along_axis(I, order, axis=1)


def readme_table() -> dict[str, tuple[tuple[int, ...], str, int, str]]:
    """file -> (shape, dtype, bytes, sha256), from the table in the shipped README."""
    row = re.compile(r"^\| (\S+\.npy) \| (\d+) × (\d+) \| (\w+) \| (\d+) \| `([0-9a-f]{64})` \|$", re.M)
    text = (SIFT5K_DIR / "README.md").read_text(encoding="utf-8")
    return {m[1]: ((int(m[2]), int(m[3])), m[4], int(m[5]), m[6]) for m in row.finditer(text)}


def test_sift5k_files_match_readme() -> None:
    table = readme_table()
    assert sorted(table) == sorted(SIFT5K_FILES)
    for f, (shape, dtype, size, sha256) in table.items():
        raw = (SIFT5K_DIR / f).read_bytes()
        assert len(raw) == size, f
        assert hashlib.sha256(raw).hexdigest() == sha256, f
        a = np.load(SIFT5K_DIR / f, allow_pickle=False)
        assert a.shape == shape and a.dtype == np.dtype(dtype), (f, a.shape, a.dtype)
    assert sum(table[f][2] for f in table) < 1_000_000


def test_sift5k_ground_truth_is_exact_brute_force(sift5k) -> None:
    """groundtruth.npy = exact squared-L2 top-100 over base for every query, ties broken by lower id."""
    base, queries, gt = sift5k
    assert base.dtype == queries.dtype == np.float32 and base.shape == (5000, 128) and queries.shape == (100, 128)
    assert gt.shape == (100, 100)
    b, q = base.astype(np.int64), queries.astype(np.int64)  # whole numbers: exact in int64
    d = (q * q).sum(1)[:, None] - 2 * (q @ b.T) + (b * b).sum(1)[None, :]
    ids = np.broadcast_to(np.arange(len(b)), d.shape)
    want = np.take_along_axis(ids, np.lexsort((ids, d), axis=1)[:, :100], axis=1)
    np.testing.assert_array_equal(gt, want)
    # and faiss's exact search agrees on the distances (its order among equal distances may differ)
    flat = faiss.IndexFlatL2(128)
    flat.add(base)
    fD, _ = flat.search(queries, 100)
    np.testing.assert_array_equal(fD, np.take_along_axis(d, want, axis=1).astype(np.float32))


@pytest.mark.parametrize("shards", [2, 3])
def test_sift5k_recall_equals_in_process_faiss(
    client_of: Callable[[int], Client], name: str, shards: int, sift5k, capsys: pytest.CaptureFixture[str]
) -> None:
    base, queries, gt = sift5k
    c = client_of(shards)
    c.create_collection(name, 128, metric="l2", index="ivf_flat", nlist=NLIST, nprobe=16, train_threshold=10**9)
    c.add(name, np.arange(len(base)), base)
    c.train(name)
    centroids = c.describe(name, include_centroids=True).centroids
    quantizer = faiss.IndexFlatL2(128)
    quantizer.add(centroids)
    single = faiss.IndexIVFFlat(quantizer, 128, NLIST)
    single.add(base)

    rows = []
    for nprobe in (1, 4, 16, 64):
        single.nprobe = nprobe
        rD, rI = single.search(queries, K)
        D, I = c.search(name, queries, K, nprobe=nprobe)
        np.testing.assert_array_equal(I, sort_by_distance_then_id(rD, rI))
        np.testing.assert_array_equal(D, np.sort(rD, axis=1))
        got, want = recall_at(I, gt, K), recall_at(rI, gt, K)
        assert got == want
        rows.append((nprobe, got))
    assert rows[-1][1] == 1.0  # nprobe = nlist probes everything: exact
    D, I = c.search(name, queries, K, nprobe=NLIST)
    np.testing.assert_array_equal(I, gt[:, :K])
    with capsys.disabled():
        print(
            f"\nsift5k recall@10, nlist {NLIST}, {shards} shards: " + ", ".join(f"nprobe {p}: {r:.3f}" for p, r in rows)
        )
    c.drop_collection(name)
