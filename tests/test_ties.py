"""Distance ties are broken by the smaller id on every path, whatever the insertion order: a shard
must not keep the earlier-inserted id at its k boundary (the coordinator's merge could not bring a
dropped id back), and replicas that hold the same vectors inserted in different orders answer alike.

The vectors hold +-1 in 4 of 8 coordinates: every distance (squared L2, inner product, L1, cosine of
the unit vectors +-0.5) is exact in float32 whatever the summation order, so duplicates tie exactly."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import grpc
import numpy as np
import pytest

from vecshard import Client, wire
from vecshard.types import IndexType, Metric
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.results import pad_distance
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.engine import ShardIndex, train_centroids

DIM = 8


def family(count: int, seed: int) -> np.ndarray:
    """`count` distinct vectors with +-1 in 4 of DIM coordinates (norm 2), in a random order."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for support in itertools.combinations(range(DIM), 4):
        for signs in itertools.product((-1.0, 1.0), repeat=4):
            v = np.zeros(DIM, np.float32)
            v[list(support)] = signs
            out.append(v)
    vectors = np.stack(out)[rng.permutation(len(out))]
    return np.ascontiguousarray(vectors[:count])


def duplicates(groups: int, per_group: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids in descending order, vectors): `groups` distinct vectors, each stored `per_group` times,
    the groups interleaved so that every group's ids come in descending order."""
    base = family(groups, seed)
    n = groups * per_group
    ids = (np.arange(n, dtype=np.int64) * 7 + 3)[::-1].copy()
    return ids, np.ascontiguousarray(base[np.arange(n) % groups])


def reference(metric: str, ids: np.ndarray, x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by (distance in the metric's direction, id), in float64."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        x64 = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
        q64 = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
    if metric == "l2":
        dist = ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
        key = dist
    elif metric == "l1":
        dist = np.abs(q64[:, None, :] - x64[None, :, :]).sum(-1)
        key = dist
    else:
        dist = (q64[:, None, :] * x64[None, :, :]).sum(-1)
        key = -dist
    order = np.stack([np.lexsort((ids, row)) for row in key])[:, :k]
    return np.take_along_axis(dist, order, axis=1), ids[order]


METRICS = ["l2", "inner_product", "cosine", "l1"]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("index", ["flat", "ivf_flat"])
def test_ties_keep_the_smallest_ids_whatever_the_insertion_order(
    cluster_of: Callable[[int], LocalCluster], name: str, index: str, metric: str
) -> None:
    ids, x = duplicates(groups=6, per_group=25, seed=len(name))
    queries = np.vstack([x[:6], family(12, seed=99)[6:]])  # the group vectors themselves, then others
    with Client(cluster_of(2).address, timeout=60) as c:
        if index == "flat":
            c.create_collection(name, DIM, metric=metric)
        else:
            c.create_collection(name, DIM, metric=metric, index="ivf_flat", nlist=4, nprobe=4, train_threshold=10**6)
        for start in range(0, len(ids), 30):  # several writes, ids always descending
            c.add(name, ids[start : start + 30], x[start : start + 30])
        if index == "ivf_flat":
            c.train(name)
            assert c.describe(name).trained
        for k in (1, 10, 37, 60):  # each cuts through a group of 25 duplicates
            D, I = c.search(name, queries, k=k)
            rD, rI = reference(metric, ids, x, queries, k)
            np.testing.assert_array_equal(I, rI, err_msg=f"k={k}")
            np.testing.assert_allclose(D, rD, rtol=1e-6, atol=1e-5)
        c.drop_collection(name)


def test_the_smaller_id_wins_a_tie_with_an_earlier_inserted_one(client_of: Callable[[int], Client], name: str) -> None:
    c = client_of(2)
    c.create_collection(name, 4)
    c.add(name, [10], np.ones((1, 4)))
    c.add(name, [5], np.ones((1, 4)))
    assert c.search(name, np.ones((1, 4)), k=1).ids.tolist() == [[5]]
    assert c.search(name, np.ones((1, 4)), k=2).ids.tolist() == [[5, 10]]
    c.drop_collection(name)


def _replica_answers(cluster: LocalCluster, name: str, queries: np.ndarray, k: int) -> list[np.ndarray]:
    answers = []
    for proc in cluster.groups[0]:
        with grpc.insecure_channel(proc.address) as ch:
            res = shard_pb2_grpc.ShardStub(ch).Search(
                pb.SearchRequest(collection=name, queries=wire.pack_matrix(queries), k=k), timeout=30
            )
        answers.append(np.frombuffer(res.ids, dtype="<i8").reshape(queries.shape[0], k))
    return answers


def test_a_replica_rebuilt_by_catch_up_answers_ties_like_its_peer(name: str) -> None:
    ids, x = duplicates(groups=4, per_group=40, seed=5)
    queries = x[:4]
    with LocalCluster(shards=2, replicas=2, env={"VECSHARD_WRITE_QUORUM": "1"}, log_level="ERROR") as cluster:
        with Client(cluster.address, timeout=60) as c:
            c.create_collection(name, DIM)
            cluster.groups[0][1].kill()
            for start in range(0, len(ids), 40):  # descending ids here; the catch-up copies in id order
                c.add(name, ids[start : start + 40], x[start : start + 40])
            cluster.restart_replica(0, 1)
            for k in (1, 5, 12):
                a, b = _replica_answers(cluster, name, queries, k)
                np.testing.assert_array_equal(a, b, err_msg=f"k={k}: the replicas of shard group 0 disagree")
                np.testing.assert_array_equal(c.search(name, queries, k=k).ids, reference("l2", ids, x, queries, k)[1])


@pytest.mark.parametrize("budget", [1 << 22, 50])
@pytest.mark.parametrize("metric", METRICS)
def test_partition_resolves_ties_past_the_boundary(monkeypatch: pytest.MonkeyPatch, metric: str, budget: int) -> None:
    """In process: groups of 300 duplicates cut anywhere, with the tie searches done in one call or in
    chunks of rows (a small result budget), on a FLAT partition and a trained IVF one probing every list."""
    monkeypatch.setattr(ShardIndex, "_TIE_BUDGET", budget)
    ids, x = duplicates(groups=5, per_group=300, seed=8)
    m = Metric(metric)
    stored = x / 2 if m is Metric.COSINE else x
    queries = np.vstack([x[:5], family(20, seed=4)[5:]])
    for ivf in (False, True):
        spec = CollectionSpec("c", DIM, m, IndexType.IVF_FLAT, nlist=5, nprobe=5, train_threshold=10**9)
        part = ShardIndex(spec, 10**6)
        for start in range(0, ids.size, 100):
            part.add(ids[start : start + 100], stored[start : start + 100], False)
        if ivf:
            part.install_quantizer(train_centroids(np.unique(stored, axis=0), spec, 1))
        q = queries / 2 if m is Metric.COSINE else queries
        for k in (1, 7, 299, 300, 301, 1000, 1499, 1500, 1600):
            D, I = part.search(q, k, 5)
            rD, rI = reference(metric, ids, x, queries, k)
            if k > ids.size:  # padded like faiss
                rI = np.hstack([rI, np.full((len(q), k - ids.size), -1)])
                rD = np.hstack([rD, np.full((len(q), k - ids.size), pad_distance(m.larger_is_better))])
            np.testing.assert_array_equal(I, rI, err_msg=f"ivf={ivf} k={k}")
            np.testing.assert_allclose(D, rD, rtol=1e-6, atol=1e-5)
