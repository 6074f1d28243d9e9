"""Search by stored points (#25): `with_vectors` returns each hit's stored vector, `by_ids`
(query_ids) searches with stored points' vectors leaving each point out of its own hits, and
`recommend` searches with Qdrant's average vector leaving the given points out; checked against
brute force (faiss IndexFlat) over the same data, on 1 and 3 shards in both shard modes, through the
coalesced, direct, filtered and chunked paths."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import faiss
import grpc
import numpy as np
import pytest

from vecshard import Client, wire
from vecshard.errors import FailedPrecondition, InvalidArgument, NotFound
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

DIM = 12
N = 800


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=60) as c:
        yield c


def _data(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, DIM)).astype(np.float32)


def _ranked(x: np.ndarray, q: np.ndarray, metric: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every stored point per query, best first (ids into x), over the points where `keep` is set."""
    ids = np.arange(len(x)) if keep is None else np.flatnonzero(keep)
    index = faiss.IndexFlat(DIM, metric)
    index.add(x[ids])
    D, I = index.search(q, len(ids))
    return D, ids[I]


def _without(D: np.ndarray, I: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row without its own id."""
    keep = I != own[:, None]
    n = I.shape[1] - 1
    return np.vstack([D[r][keep[r]][:n] for r in range(len(I))]), np.vstack([I[r][keep[r]][:n] for r in range(len(I))])


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
def test_with_vectors_returns_each_hits_stored_vector(client: Client, name: str, metric: str) -> None:
    x = _data(1)
    client.create_collection(name, DIM, metric=metric)
    try:
        client.add(name, np.arange(N), x, payloads=[{"even": i % 2 == 0} for i in range(N)])
        q = _data(2)[:20]
        for nq, kw in ((3, {}), (20, {}), (4, {"filter": "even = true", "with_payload": True}), (2, {"offset": 3})):
            res = client.search(name, q[:nq], k=5, with_vectors=True, **kw)
            plain = client.search(name, q[:nq], k=5, **kw)
            np.testing.assert_array_equal(res.ids, plain.ids)  # the hot path and this one agree
            assert res.vectors is not None and res.vectors.shape == (nq, 5, DIM)
            np.testing.assert_array_equal(res.vectors, x[res.ids])
        # Padding rows are zeros.
        client.add(f"{name}", [N], np.ones((1, DIM), np.float32), payloads=[{"only": True}])
        res = client.search(name, q[:2], k=3, filter="only = true", with_vectors=True)
        assert res.ids[:, 1:].tolist() == [[-1, -1], [-1, -1]]
        assert not res.vectors[:, 1:].any() and (res.vectors[:, 0] == 1).all()
    finally:
        client.drop_collection(name)


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
def test_search_by_ids_leaves_each_point_out_of_its_own_hits(client: Client, name: str, metric: str) -> None:
    x = _data(3)
    fm = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    client.create_collection(name, DIM, metric=metric)
    try:
        client.add(name, np.arange(N), x, payloads=[{"even": i % 2 == 0} for i in range(N)])
        own = np.array([5, 77, 300, 799, 1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26], dtype=np.int64)
        D0, I0 = _without(*_ranked(x, x[own], fm), own)
        for n in (3, len(own)):  # a coalesced round, then the direct path
            res = client.search(name, by_ids=own[:n], k=6)
            np.testing.assert_array_equal(res.ids, I0[:n, :6])
            np.testing.assert_allclose(res.distances, D0[:n, :6], rtol=1e-4, atol=1e-4)
        # With offset, a filter (the even points, some of them queries), payloads and vectors.
        res = client.search(name, by_ids=own[:5], k=4, offset=2, with_payload=True, with_vectors=True)
        np.testing.assert_array_equal(res.ids, I0[:5, 2:6])
        np.testing.assert_array_equal(res.vectors, x[res.ids])
        even = np.arange(N) % 2 == 0
        D1, I1 = _ranked(x, x[own], fm, even)
        fI = np.vstack([row[row != o][:5] for row, o in zip(I1, own, strict=True)])
        res = client.search(name, by_ids=own, k=5, filter="even = true", with_payload=True)
        np.testing.assert_array_equal(res.ids, fI)
        assert all(h.payload == {"even": True} for hits in res.hits() for h in hits)
        # A point's own row is the search of its vector without it, also where the data repeats it.
        client.add(name, [N], x[5:6])
        res = client.search(name, by_ids=[5, N], k=2)
        assert res.ids[0, 0] == N and res.ids[1, 0] == 5 and res.distances[0, 0] == res.distances[1, 0]
    finally:
        client.drop_collection(name)


def test_search_by_ids_refusals(client: Client, name: str) -> None:
    x = _data(4)
    client.create_collection(name, DIM)
    try:
        client.add(name, np.arange(10), x[:10])
        client.add(name, [100], None, payloads=[{"text": "no vector"}])
        with pytest.raises(NotFound, match=r"\[12345\]"):
            client.search(name, by_ids=[1, 12345], k=3)
        with pytest.raises(FailedPrecondition, match="without a vector"):
            client.search(name, by_ids=[1, 100], k=3)
        req = pb.SearchRequest(collection=name, k=3, query_ids=wire.pack_ids(np.array([1])))
        req.queries.CopyFrom(wire.pack_matrix(x[:1]))
        with pytest.raises(grpc.RpcError) as err:
            client.stub.Search(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "one of queries" in err.value.details()
        with pytest.raises(InvalidArgument, match="max_k"):
            client.search(name, by_ids=[1], k=4000, offset=96)
        with pytest.raises(FailedPrecondition, match="without a vector"):
            client.recommend(name, [100], k=3)
        with pytest.raises(NotFound):
            client.recommend(name, [1], [12345], k=3)
        with pytest.raises(InvalidArgument, match="string ids"):
            client.search(name, by_ids=["a"], k=3)
    finally:
        client.drop_collection(name)


@pytest.mark.parametrize("metric", ["l2", "inner_product", "cosine"])
def test_recommend_searches_the_average_vector_without_the_given_points(client: Client, name: str, metric: str) -> None:
    x = _data(5)
    client.create_collection(name, DIM, metric=metric)
    try:
        client.add(name, np.arange(N), x, payloads=[{"i": i} for i in range(N)])
        stored = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
        fm = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        pos, neg = np.array([3, 40, 41]), np.array([7, 500])
        for negative in (neg, np.array([], np.int64)):
            avg = stored[pos].astype(np.float64).mean(axis=0)
            q = avg if not negative.size else 2 * avg - stored[negative].astype(np.float64).mean(axis=0)
            q = q.astype(np.float32)[None, :]
            if metric == "cosine":
                q = q / np.linalg.norm(q)
            keep = np.ones(N, dtype=bool)
            keep[pos], keep[negative] = False, False
            D0, I0 = _ranked(stored, q, fm, keep)
            res = client.recommend(name, pos, negative, k=8)
            np.testing.assert_array_equal(res.ids, I0[:, :8])
            np.testing.assert_allclose(res.distances, D0[:, :8], rtol=1e-4, atol=1e-4)
            # With a filter, offset, payloads and vectors.
            res = client.recommend(name, pos, negative, k=3, offset=2, filter="i < 400", with_payload=True)
            low = keep & (np.arange(N) < 400)
            _, I1 = _ranked(stored, q, fm, low)
            np.testing.assert_array_equal(res.ids, I1[:, 2:5])
            assert [h.payload for h in next(res.hits())] == [{"i": int(i)} for i in I1[0, 2:5]]
        with pytest.raises(InvalidArgument, match="positive"):
            client.recommend(name, [], [1], k=3)
    finally:
        client.drop_collection(name)


def test_big_search_by_ids_runs_in_chunks(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    """More queries than a chunk holds (search_chunk_work is small for a FLAT search of many points):
    each chunk leaves its own rows' points out."""
    x = _data(6)
    with Client(cluster_of(3).address, timeout=60) as c:
        c.create_collection(name, DIM)
        try:
            c.add(name, np.arange(N), x)
            own = np.arange(0, N, 2, dtype=np.int64)
            res = c.search(name, by_ids=own, k=N - 1, with_vectors=True)  # CHUNK_MAX_RESULTS // N rows a chunk
            _, I0 = _without(*_ranked(x, x[own], faiss.METRIC_L2), own)
            np.testing.assert_array_equal(res.ids, I0)
            np.testing.assert_array_equal(res.vectors, x[res.ids])
        finally:
            c.drop_collection(name)
