"""Through a running cluster, results equal one in-process faiss index over the same data.

FLAT: brute force. IVF_FLAT: exact while untrained; once trained, an `IndexIVFFlat` built locally
with the collection's own centroids (DescribeCollection include_centroids). Same ids, distances
within float error, for S = 1..4 shards and every metric.
"""

from __future__ import annotations

from collections.abc import Callable

import faiss
import numpy as np
import pytest

from vecshard import Client

from .conftest import clustered

FAISS_METRIC = {
    "l2": faiss.METRIC_L2,
    "inner_product": faiss.METRIC_INNER_PRODUCT,
    "cosine": faiss.METRIC_INNER_PRODUCT,
    "l1": faiss.METRIC_L1,
}
DIM, N, NLIST, K = 24, 3000, 16, 10


def reference(data: np.ndarray, ids: np.ndarray, metric: str, centroids: np.ndarray | None):
    m = FAISS_METRIC[metric]
    if centroids is None:
        index = faiss.IndexIDMap2(faiss.IndexFlat(DIM, m))
    else:
        quantizer = faiss.IndexFlat(DIM, m)
        quantizer.add(centroids)
        index = faiss.IndexIVFFlat(quantizer, DIM, NLIST, m)
        assert index.is_trained
    index.add_with_ids(data, ids)
    return index


def assert_same(got, want) -> None:
    (D, I), (rD, rI) = got, want
    np.testing.assert_array_equal(I, rI)
    np.testing.assert_allclose(D, rD, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("index", ["flat", "ivf_flat"])
@pytest.mark.parametrize("metric", ["l2", "inner_product", "cosine", "l1"])
@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_sharded_equals_single_index(
    client_of: Callable[[int], Client], name: str, shards: int, metric: str, index: str
) -> None:
    c = client_of(shards)
    rng = np.random.default_rng(shards * 10 + len(metric))
    data = clustered(N, DIM, seed=shards)
    ids = rng.choice(10**12, size=N, replace=False).astype(np.int64)
    queries = clustered(40, DIM, seed=99) + rng.normal(0, 0.5, size=(40, DIM)).astype(np.float32)
    local_data, local_q = data.copy(), queries.copy()
    if metric == "cosine":
        faiss.normalize_L2(local_data)
        faiss.normalize_L2(local_q)

    ivf = index == "ivf_flat"
    c.create_collection(
        name,
        DIM,
        metric=metric,
        index=index,
        **({"nlist": NLIST, "nprobe": 4, "train_threshold": 10**9} if ivf else {}),
    )
    for part in np.array_split(np.arange(N), 3):
        c.add(name, ids[part], data[part])
    assert c.describe(name).count == N

    exact = reference(local_data, ids, metric, None)
    assert_same(c.search(name, queries, K), exact.search(local_q, K))  # untrained IVF searches exactly

    if ivf:
        info = c.train(name)
        assert info.trained and all(s.trained for s in info.shards)
        centroids = c.describe(name, include_centroids=True).centroids
        assert centroids is not None and centroids.shape == (NLIST, DIM)
        single = reference(local_data, ids, metric, centroids)
        for nprobe in (1, 4, NLIST):
            single.nprobe = nprobe
            assert_same(c.search(name, queries, K, nprobe=nprobe), single.search(local_q, K))
        single.nprobe = 4
        assert_same(c.search(name, queries, K), single.search(local_q, K))  # nprobe 0 = collection default
    c.drop_collection(name)
