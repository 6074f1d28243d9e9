"""Read-your-writes, read-your-deletes, upsert, Get, training under load, catalog and lifecycle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from vecshard import AlreadyExists, Client, FailedPrecondition, NotFound

from .conftest import clustered

DIM = 16


def wait_trained(c: Client, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.describe(name).trained:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not train within {timeout}s")


def test_read_your_writes_before_during_and_after_auto_training(client: Client, name: str) -> None:
    data = clustered(1200, DIM, seed=1)
    c = client
    info = c.create_collection(name, DIM, index="ivf_flat", nlist=8, nprobe=1)
    assert info.train_threshold == 39 * 8 and info.training_state == "untrained"
    for start in range(0, len(data), 60):
        ids = np.arange(start, start + 60)
        c.add(name, ids, data[ids])
        D, I = c.search(name, data[ids], k=1, nprobe=1)  # each new vector finds itself at once
        assert I[:, 0].tolist() == ids.tolist()
        np.testing.assert_allclose(D[:, 0], 0, atol=1e-3)
    wait_trained(c, name)
    D, I = c.search(name, data, k=1, nprobe=1)
    assert (I[:, 0] == np.arange(len(data))).all()
    c.add(name, [5000], data[:1] + 100)
    assert c.search(name, data[:1] + 100, k=1)[1][0, 0] == 5000
    c.drop_collection(name)


@pytest.mark.parametrize("train", [False, True])
def test_removed_ids_never_come_back(client: Client, name: str, train: bool) -> None:
    c = client
    data = clustered(2000, DIM, seed=2)
    c.create_collection(name, DIM, index="ivf_flat", nlist=16, nprobe=16, train_threshold=10**9)
    c.add(name, np.arange(2000), data)
    if train:
        c.train(name)
    gone = np.random.default_rng(0).choice(2000, 500, replace=False)
    assert c.remove(name, gone) == 500
    assert c.remove(name, gone) == 0  # idempotent
    assert c.describe(name).count == 1500
    _, I = c.search(name, data[gone], k=100)
    assert not np.isin(I, gone).any()
    _, I = c.search(name, data, k=50)
    assert not np.isin(I, gone).any()
    with pytest.raises(NotFound, match="3 of the 3 requested ids are not in"):
        c.get(name, gone[:3])
    c.add(name, gone[:10], data[gone[:10]])  # a removed id can be added again
    assert c.search(name, data[gone[:10]], k=1)[1][:, 0].tolist() == gone[:10].tolist()
    c.drop_collection(name)


@pytest.mark.parametrize("index", ["flat", "ivf_flat"])
def test_upsert_replaces_and_plain_add_refuses_whole_batch(client: Client, name: str, index: str) -> None:
    c = client
    data = clustered(100, DIM, seed=3)
    ivf = {"nlist": 4, "nprobe": 4, "train_threshold": 10**9} if index == "ivf_flat" else {}
    c.create_collection(name, DIM, metric="l2", index=index, **ivf)
    c.add(name, np.arange(50), data[:50])
    if ivf:
        assert c.train(name).trained
    # ids 50..59 are new and spread over both shards; id 7 exists: nothing of the batch may stay.
    with pytest.raises(AlreadyExists, match="upsert"):
        c.add(name, np.r_[np.arange(50, 60), 7], data[50:61])
    assert c.describe(name).count == 50
    assert np.isnan(c.get(name, np.arange(50, 60), allow_missing=True)).all()
    result = c.add(name, [7, 60], data[[90, 60]], upsert=True)
    assert (result.added, result.replaced, result.count) == (1, 1, 51)
    np.testing.assert_array_equal(c.get(name, [7]), data[[90]])
    assert c.search(name, data[90], k=1)[1][0, 0] == 7
    c.drop_collection(name)


def test_get_returns_exact_vectors_in_request_order(client: Client, name: str) -> None:
    c = client
    data = clustered(300, DIM, seed=4)
    ids = np.arange(300) * 7919 + 3
    c.create_collection(name, DIM, metric="inner_product")
    c.add(name, ids, data)
    pick = np.array([250, 3, 3, 0, 299])
    np.testing.assert_array_equal(c.get(name, ids[pick]), data[pick])
    got = c.get(name, [ids[1], 10**15, ids[2]], allow_missing=True)
    np.testing.assert_array_equal(got[[0, 2]], data[[1, 2]])
    assert np.isnan(got[1]).all()
    c.drop_collection(name)


def test_training_under_concurrent_adds_loses_nothing(client: Client, name: str) -> None:
    c = client
    writers, per_writer, batch = 4, 1500, 100
    data = clustered(1000 + writers * per_writer, DIM, seed=5)
    c.create_collection(name, DIM, index="ivf_flat", nlist=16, nprobe=1, train_threshold=10**9)
    c.add(name, np.arange(1000), data[:1000])
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            lo = 1000 + w * per_writer
            for s in range(lo, lo + per_writer, batch):
                ids = np.arange(s, s + batch)
                c.add(name, ids, data[ids])
                if s % 300 == 0:
                    c.remove(name, ids[:5])
                    c.add(name, ids[:5], data[ids[:5]])
        except BaseException as err:  # re-raised below
            errors.append(err)

    def train() -> None:
        try:
            for seed in (1, 2, 3):
                c.train(name, seed=seed)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)] + [threading.Thread(target=train)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    n = len(data)
    info = c.describe(name)
    assert info.count == n and info.trained
    np.testing.assert_array_equal(c.get(name, np.arange(n)), data)
    _, I = c.search(name, data, k=1, nprobe=1)
    assert (I[:, 0] == np.arange(n)).all()
    c.drop_collection(name)


def test_train_preconditions_and_centroids(client: Client, name: str) -> None:
    c = client
    c.create_collection(name, DIM)
    with pytest.raises(FailedPrecondition, match="FLAT"):
        c.train(name)
    c.drop_collection(name)
    c.create_collection(name, DIM, index="ivf_flat", nlist=32)
    c.add(name, np.arange(20), clustered(20, DIM))
    with pytest.raises(FailedPrecondition, match="at least 32"):
        c.train(name)
    info = c.describe(name, include_centroids=True)
    assert info.training_state == "untrained" and info.centroids is None
    c.add(name, np.arange(20, 100), clustered(80, DIM, seed=9))
    info = c.train(name)
    assert info.trained and info.count == 100
    assert c.describe(name, include_centroids=True).centroids.shape == (32, DIM)
    c.drop_collection(name)


def test_collection_lifecycle(client: Client, name: str) -> None:
    c = client
    info = c.create_collection(name, 8, metric="cosine", index="ivf_flat", nlist=100)
    assert (info.nprobe, info.train_threshold, info.count) == (8, 3900, 0)
    assert [s.count for s in info.shards] == [0, 0]
    with pytest.raises(AlreadyExists):
        c.create_collection(name, 8)
    assert name in [i.name for i in c.list_collections()]
    c.drop_collection(name)
    assert name not in [i.name for i in c.list_collections()]
    with pytest.raises(NotFound):
        c.describe(name)
    with pytest.raises(NotFound):
        c.drop_collection(name)
    c.create_collection(name, 4)  # the name is free again
    c.drop_collection(name)


def test_cosine_stores_unit_vectors_and_ranks_by_similarity(client: Client, name: str) -> None:
    c = client
    c.create_collection(name, 2, metric="cosine")
    c.add(name, [1, 2, 3], [[3, 4], [0, 10], [-1, 0]])
    np.testing.assert_allclose(c.get(name, [1]), [[0.6, 0.8]], rtol=1e-6)
    D, I = c.search(name, [[0, 0.5]], k=3)
    assert I.tolist() == [[2, 1, 3]]
    np.testing.assert_allclose(D, [[1.0, 0.8, 0.0]], atol=1e-6)
    c.drop_collection(name)


def test_padding_when_fewer_than_k(client_of: Callable[[int], Client], name: str) -> None:
    c = client_of(3)
    c.create_collection(name, 4, metric="l1")
    c.add(name, [10, 20], [[0, 0, 0, 0], [1, 1, 1, 1]])
    D, I = c.search(name, [[0, 0, 0, 1]], k=4)
    assert I.tolist() == [[10, 20, -1, -1]]
    assert D[0, :2].tolist() == [1.0, 3.0] and (D[0, 2:] == np.finfo(np.float32).max).all()
    c.drop_collection(name)
