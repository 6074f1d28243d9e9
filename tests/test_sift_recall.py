"""Recall on real SIFT data (../shared/data/sift5k, exact ground truth computed by brute force).

vecshard's IVF (nlist 64, one shared quantizer, 2 and 3 shards) must give exactly what in-process
faiss gives with the same centroids at each nprobe; nprobe = nlist must give the exact answer.
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np
import pytest

from vecshard import Client

NLIST, K = 64, 10


def recall_at(ids: np.ndarray, gt: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(ids[i, :k]) & set(gt[i, :k])) / k for i in range(len(gt))]))


def sort_by_distance_then_id(D: np.ndarray, I: np.ndarray) -> np.ndarray:
    order = np.lexsort((I, D), axis=1)
    return np.take_along_axis(I, order, axis=1)


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
