"""Facet (#25): the points per value of a payload field, summed exactly over the shards, most common
first, ties by value (numbers by value, then strings, then bools); a list field counts a point once
per distinct element; a filter restricts the points; limit 0 = 10, at most 10,000. Checked against
counting in Python, on 1 and 3 shards in both shard modes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from vecshard import Client
from vecshard.errors import InvalidArgument, NotFound
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

DIM = 4


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=60) as c:
        yield c


def _rank(v: Any) -> tuple[int, Any]:
    return (2 if isinstance(v, bool) else 1 if isinstance(v, str) else 0, v)


def _expected(payloads: list[dict[str, Any]], field: str, limit: int, keep: Callable[[dict[str, Any]], bool]) -> list:
    counts: Counter[tuple[int, Any]] = Counter()
    for p in payloads:
        v: Any = p
        for part in field.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if not keep(p) or v is None:
            continue
        items = v if isinstance(v, list) else [v]
        counts.update({_rank(x) for x in items if x is not None})
    best = sorted(counts.items(), key=lambda e: (-e[1], e[0]))[:limit]
    return [(key[1], n) for key, n in best]


def test_facet_counts_equal_counting_every_point(client: Client, name: str) -> None:
    rng = np.random.default_rng(3)
    n = 700
    payloads: list[dict[str, Any]] = []
    for i in range(n):
        p: dict[str, Any] = {"color": ["red", "green", "blue", "Blue", "é"][i % 5], "n": int(rng.integers(0, 6))}
        if i % 4:
            p["tags"] = [str(t) for t in rng.integers(0, 8, size=int(rng.integers(0, 5)))]  # repeats count once
        if i % 9 == 0:
            p["mixed"] = [1, "1", True, 1.0, None, 2.5]  # 1 and 1.0 are one value
        elif i % 9 == 1:
            p["mixed"] = False
        elif i % 9 == 2:
            p["mixed"] = 2.5
        p["meta"] = {"lang": ["en", "de"][i % 2]}
        payloads.append(p)
    client.create_collection(name, DIM)
    try:
        client.add(name, np.arange(n), rng.standard_normal((n, DIM)).astype(np.float32), payloads=payloads)
        client.add(name, [n], None, payloads=[{"color": "red", "n": 99}])  # a point without a vector counts too
        payloads.append({"color": "red", "n": 99})
        for field in ("color", "n", "tags", "mixed", "meta.lang"):
            got = client.facet(name, field, limit=100)
            assert [(f.value, f.count) for f in got] == _expected(payloads, field, 100, lambda p: True), field
        assert [(f.value, f.count) for f in client.facet(name, "tags")] == _expected(
            payloads, "tags", 10, lambda p: True
        )
        assert len(client.facet(name, "n", limit=2)) == 2
        # The numbers' value types: 1 and 1.0 are the value 1, 2.5 stays a float.
        mixed = {f.value: f.count for f in client.facet(name, "mixed", limit=10)}
        assert type(next(v for v in mixed if v == 2.5)) is float and mixed[True] > 0 and mixed["1"] > 0
        got = client.facet(name, "color", filter="n >= 3", limit=10)
        assert [(f.value, f.count) for f in got] == _expected(payloads, "color", 10, lambda p: p["n"] >= 3)
        assert client.facet(name, "absent") == []
    finally:
        client.drop_collection(name)


def test_facet_refusals(client: Client, name: str) -> None:
    client.create_collection(name, DIM)
    try:
        client.add(name, [1], np.ones((1, DIM), np.float32), payloads=[{"a": 1}])
        with pytest.raises(InvalidArgument, match="10,000"):
            client.facet(name, "a", limit=10_001)
        assert len(client.facet(name, "a", limit=10_000)) == 1
        client.add(name, np.arange(2, 30), np.ones((28, DIM), np.float32), payloads=[{"a": i} for i in range(2, 30)])
        resp = client.stub.Facet(pb.FacetRequest(collection=name, key="a"), timeout=30)  # limit 0: 10
        assert [c.value.int_value for c in resp.counts] == [1, *range(2, 11)]
        with pytest.raises(InvalidArgument):
            client.facet(name, "a..b")
        with pytest.raises(InvalidArgument):
            client.facet(name, "a", filter={"must": [{"key": "a"}]})
    finally:
        client.drop_collection(name)
    with pytest.raises(NotFound):
        client.facet("no_such_collection_here", "a")
