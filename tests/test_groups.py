"""Grouped search (#25, group_by): each query's best k groups of hits by a payload field's values, each
with its best group_size hits, equal to grouping the hits of one brute-force index (faiss IndexFlat)
over the same data in (distance, id) order; on 1 and 3 shards in both shard modes. List fields put a
point in each distinct element's group, points without the field are left out, and the checks of
group_size, offset and max_k are INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import faiss
import grpc
import numpy as np
import pytest

from vecshard import Client, wire
from vecshard.errors import InvalidArgument
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

DIM = 8
N = 900


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=60) as c:
        yield c


def _payload(i: int, rng: np.random.Generator) -> dict[str, Any]:
    p: dict[str, Any] = {"g": int(i % 37), "s": f"s{i % 11}", "few": ["a", "b", "c"][i % 3], "i": i}
    r = i % 10
    if r < 6:  # a list, with repeated elements sometimes
        p["tags"] = [int(t) for t in rng.integers(0, 12, size=int(rng.integers(1, 4)))]
    elif r < 8:
        p["tags"] = int(rng.integers(0, 12))
    elif r == 8:
        p["tags"] = []  # no value: in no group
    # r == 9: no field at all
    if i % 97 == 0:
        p["rare"] = "only"
    return p


def _scalars(v: Any) -> list[Any]:
    """The distinct values of a field's value (a list: its elements), in the documented value order
    (numbers, then strings, then bools)."""
    items = v if isinstance(v, list) else [v]
    out = {x for x in items if isinstance(x, bool | int | float | str)}
    return sorted(out, key=lambda x: (2 if isinstance(x, bool) else 1 if isinstance(x, str) else 0, x))


def _grouped(
    x: np.ndarray,
    payloads: list[dict[str, Any]],
    q: np.ndarray,
    field: str,
    k: int,
    size: int,
    metric: int = faiss.METRIC_L2,
    keep: np.ndarray | None = None,
    own: list[int] | None = None,
) -> list[list[tuple[Any, list[int], list[float]]]]:
    """Brute force: each query's groups (value, ids, distances) from one pass over all its hits."""
    ids = np.arange(len(x)) if keep is None else np.flatnonzero(keep)
    index = faiss.IndexFlat(DIM, metric)
    index.add(x[ids])
    D, I = index.search(q, len(ids))
    out = []
    for r in range(len(q)):
        groups: dict[Any, tuple[list[int], list[float]]] = {}
        for d, j in zip(D[r].tolist(), ids[I[r]].tolist(), strict=True):
            if own is not None and j == own[r]:
                continue
            if field not in payloads[j]:
                continue
            for v in _scalars(payloads[j][field]):
                key = (type(v) is bool, v)
                if key not in groups:
                    if len(groups) == k:
                        continue
                    groups[key] = ([], [])
                if len(groups[key][0]) < size:
                    groups[key][0].append(j)
                    groups[key][1].append(d)
        out.append([(key[1], g[0], g[1]) for key, g in groups.items()])
    return out


def _check(res: Any, expect: list[list[tuple[Any, list[int], list[float]]]]) -> None:
    assert res.groups is not None and len(res.groups) == len(expect)
    assert res.ids.shape[1] == 0
    for got, want in zip(res.groups, expect, strict=True):
        assert [g.value for g in got] == [v for v, _, _ in want]
        assert [[h.id for h in g.hits] for g in got] == [ids for _, ids, _ in want]
        for g, (_, _, dist) in zip(got, want, strict=True):
            np.testing.assert_allclose([h.distance for h in g.hits], dist, rtol=1e-4, atol=1e-4)


@pytest.fixture
def grouped_data(client: Client, name: str) -> Iterator[tuple[Client, str, np.ndarray, list[dict[str, Any]]]]:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    payloads = [_payload(i, rng) for i in range(N)]
    client.create_collection(name, DIM)
    try:
        client.add(name, np.arange(N), x, payloads=payloads)
        yield client, name, x, payloads
    finally:
        client.drop_collection(name)


def test_groups_equal_one_index_grouping(grouped_data: tuple[Client, str, np.ndarray, list[dict[str, Any]]]) -> None:
    client, name, x, payloads = grouped_data
    q = np.random.default_rng(12).standard_normal((6, DIM)).astype(np.float32)
    for field, k, size in (("g", 5, 3), ("s", 4, 7), ("tags", 6, 2), ("few", 10, 4), ("rare", 3, 5), ("i", 3, 1)):
        res = client.search(name, q, k=k, group_by=field, group_size=size)
        _check(res, _grouped(x, payloads, q, field, k, size))
    # The default group_size is 3.
    _check(client.search(name, q[:2], k=4, group_by="g"), _grouped(x, payloads, q[:2], "g", 4, 3))


def test_groups_with_filter_payloads_vectors_and_threshold(
    grouped_data: tuple[Client, str, np.ndarray, list[dict[str, Any]]],
) -> None:
    client, name, x, payloads = grouped_data
    q = np.random.default_rng(13).standard_normal((3, DIM)).astype(np.float32)
    keep = np.array([p["i"] % 2 == 0 for p in payloads])
    res = client.search(
        name, q, k=4, group_by="tags", group_size=3, filter="g < 20", with_payload=["i"], with_vectors=True
    )
    keep = np.array([p["g"] < 20 for p in payloads])
    expect = _grouped(x, payloads, q, "tags", 4, 3, keep=keep)
    _check(res, expect)
    for got in res.groups or []:
        for g in got:
            for h in g.hits:
                assert h.payload == {"i": h.id}
                np.testing.assert_array_equal(h.vector, x[h.id])
    # score_threshold keeps the hits within it: groups shrink, and empty ones go.
    t = float(np.median([d for row in expect for _, _, ds in row for d in ds]))
    res = client.search(name, q, k=4, group_by="tags", group_size=3, filter="g < 20", score_threshold=t)
    trimmed = [
        [(v, [i for i, d in zip(ids, ds, strict=True) if d <= t], [d for d in ds if d <= t]) for v, ids, ds in row]
        for row in expect
    ]
    _check(res, [[g for g in row if g[1]] for row in trimmed])


def test_groups_of_stored_points_leave_each_point_out(
    grouped_data: tuple[Client, str, np.ndarray, list[dict[str, Any]]],
) -> None:
    client, name, x, payloads = grouped_data
    own = [4, 50, 333]
    res = client.search(name, by_ids=own, k=5, group_by="g", group_size=2)
    _check(res, _grouped(x, payloads, x[own], "g", 5, 2, own=own))


def test_group_refusals(client: Client, name: str) -> None:
    client.create_collection(name, DIM)
    try:
        client.add(name, [1], np.ones((1, DIM), np.float32), payloads=[{"g": 1}])
        q = np.ones((1, DIM), np.float32)
        with pytest.raises(InvalidArgument, match="offset"):
            client.search(name, q, k=2, group_by="g", offset=1)
        with pytest.raises(InvalidArgument, match="max_k"):
            client.search(name, q, k=100, group_by="g", group_size=41)
        with pytest.raises(InvalidArgument, match="max_k"):
            client.search(name, q, k=1, group_by="g", group_size=5000)
        with pytest.raises(InvalidArgument, match="group_by"):
            client.search(name, q, k=1, group_by="a..b")
        req = pb.SearchRequest(collection=name, k=1, group_size=2)
        req.queries.CopyFrom(wire.pack_matrix(q))
        with pytest.raises(grpc.RpcError) as err:
            client.stub.Search(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "group_by" in err.value.details()
        # group_size 0 from another client is 3.
        client.add(name, [2, 3, 4], np.ones((3, DIM), np.float32), payloads=[{"g": 1}] * 3)
        req = pb.SearchRequest(collection=name, k=1, group_by="g")
        req.queries.CopyFrom(wire.pack_matrix(q))
        resp = client.stub.Search(req, timeout=30)
        assert len(resp.groups) == 1 and np.frombuffer(resp.groups[0].groups[0].ids, "<i8").tolist() == [1, 2, 3]
    finally:
        client.drop_collection(name)
