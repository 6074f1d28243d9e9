"""String ids on the read side (#25): Get takes string ids (an id stored under another string, a hash
collision, is not found), and Search, Scroll, grouped searches, searches by id and recommendations
answer the stored strings ("" as padding), with payloads only when asked and never the reserved key;
ids of the other kind than the collection's are INVALID_ARGUMENT naming it. On 1 and 3 shards in both
shard modes (a collision with a narrow hash, VECSHARD_STRING_ID_HASH_BITS, on a cluster of its own)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import faiss
import grpc
import numpy as np
import pytest

from vecshard import Client, wire
from vecshard.errors import InvalidArgument, NotFound
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.string_ids import string_id_hash

from .support import string_id_collision

DIM = 6
N = 120


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=60) as c:
        yield c


def _keys(n: int) -> list[str]:
    return [f"doc/{i:03d}-é" for i in range(n)]


@pytest.fixture
def stored(client: Client, name: str) -> Iterator[tuple[Client, str, np.ndarray]]:
    x = np.random.default_rng(7).standard_normal((N, DIM)).astype(np.float32)
    client.create_collection(name, DIM, id_type="string")
    try:
        client.add(name, _keys(N), x, payloads=[{"i": i, "g": i % 4} for i in range(N)])
        client.add(name, ["text-only"], None, payloads=[{"i": -1, "g": 0}])
        yield client, name, x
    finally:
        client.drop_collection(name)


def _exact(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatL2(DIM)
    index.add(x)
    return index.search(q, k)


def _rpc_code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_get_by_string_ids(stored: tuple[Client, str, np.ndarray]) -> None:
    client, name, x = stored
    keys = _keys(N)
    asked = [keys[5], keys[99], "text-only", keys[5]]
    req = pb.GetRequest(collection=name, string_ids=asked, with_payload=ppb.PayloadSelector(enable=True))
    resp = client.stub.Get(req, timeout=30)
    np.testing.assert_array_equal(wire.unpack_matrix(resp.vectors)[[0, 1, 3]], x[[5, 99, 5]])
    assert resp.found == b"\x01\x01\x01\x01" and resp.has_vector == b"\x01\x01\x00\x01"
    assert [dict(p.fields) for p in resp.payloads][0].keys() == {"i", "g"}  # never the reserved key ""
    assert all("" not in p.fields for p in resp.payloads)
    with pytest.raises(NotFound, match="nope"):
        client.get(name, [keys[1], "nope"])
    resp = client.stub.Get(pb.GetRequest(collection=name, string_ids=["nope", keys[2]], allow_missing=True))
    assert resp.found == b"\x00\x01" and resp.has_vector == b"\x00\x01"
    points = client.retrieve(name, [keys[3], "nope"], with_vectors=True)
    assert points[0] is not None and points[0].id == keys[3] and points[0].payload == {"i": 3, "g": 3}
    assert points[1] is None
    # Ids of the other kind: INVALID_ARGUMENT naming the collection's id type.
    code, msg = _rpc_code(lambda: client.stub.Get(pb.GetRequest(collection=name, ids=wire.pack_ids(np.arange(2)))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "string ids" in msg


def test_searches_and_scrolls_answer_string_ids(stored: tuple[Client, str, np.ndarray]) -> None:
    client, name, x = stored
    keys = np.array(_keys(N), dtype=object)
    q = np.random.default_rng(8).standard_normal((20, DIM)).astype(np.float32)
    D0, I0 = _exact(x, q, 5)
    for nq in (2, 20):
        res = client.search(name, q[:nq], k=5)
        assert res.ids.tolist() == keys[I0[:nq]].tolist()
        assert res.payloads is None
    res = client.search(name, q[:3], k=4, with_payload=True, with_vectors=True, filter="g = 1")
    for hits in res.hits():
        for h in hits:
            assert h.payload is not None and h.payload["g"] == 1 and keys[h.payload["i"]] == h.id
            np.testing.assert_array_equal(h.vector, x[h.payload["i"]])
    # Padding: "" in the reply (None in the SDK); the hashes are in ids.
    req = pb.SearchRequest(collection=name, k=N + 5)
    req.queries.CopyFrom(wire.pack_matrix(q[:1]))
    resp = client.stub.Search(req, timeout=30)
    assert resp.string_ids[:N] == [keys[i] for i in _exact(x, q[:1], N)[1][0]] and resp.string_ids[N:] == [""] * 5
    hashes = np.frombuffer(resp.ids, "<i8")
    assert hashes[0] == string_id_hash(resp.string_ids[0], 63) and (hashes[N:] == -1).all()
    assert not resp.payloads
    # Grouped: each group's hits with their strings.
    res = client.search(name, q[:2], k=2, group_by="g", group_size=3)
    assert res.groups is not None
    for got in res.groups:
        for g in got:
            assert all(isinstance(h.id, str) and h.id.startswith("doc/") for h in g.hits)
    # Scroll pages: ordered by hash, with the strings, payloads only if asked for.
    pages, req = [], pb.ScrollRequest(collection=name, limit=17)
    while True:
        page = client.stub.Scroll(req, timeout=30)
        pages.append(page)
        if page.done:
            break
        req = pb.ScrollRequest(collection=name, limit=17, cursor=page.next_cursor)
    strings = [s for p in pages for s in p.string_ids]
    assert sorted(strings) == sorted([*keys.tolist(), "text-only"]) and not any(p.payloads for p in pages)
    ids = [i for p in pages for i in np.frombuffer(p.ids, "<i8").tolist()]
    assert ids == sorted(ids) == [string_id_hash(s, 63) for s in strings]
    page = client.stub.Scroll(
        pb.ScrollRequest(
            collection=name, limit=5, with_payload=ppb.PayloadSelector(enable=True, fields=["i"]), with_vectors=True
        )
    )
    assert all(set(p.fields) == {"i"} for p in page.payloads) and len(page.string_ids) == 5
    assert len(page.has_vector) == 5
    ordered = list(client.scroll(name, order_by="i", page_size=7))
    assert [p.id for p in ordered] == ["text-only", *keys.tolist()]


def test_search_by_string_ids_and_recommend(stored: tuple[Client, str, np.ndarray]) -> None:
    client, name, x = stored
    keys = np.array(_keys(N), dtype=object)
    res = client.search(name, by_ids=[keys[3], keys[50]], k=3)
    _, I0 = _exact(x, x[[3, 50]], 4)
    assert res.ids.tolist() == [keys[row[1:]].tolist() for row in I0]
    res = client.recommend(name, [keys[1], keys[2]], [keys[9]], k=4)
    q = (2 * x[[1, 2]].astype(np.float64).mean(axis=0) - x[9]).astype(np.float32)[None, :]
    _, I1 = _exact(x, q, 7)
    assert res.ids.tolist() == [[keys[i] for i in I1[0] if i not in (1, 2, 9)][:4]]
    with pytest.raises(NotFound, match="nope"):
        client.search(name, by_ids=["nope"], k=3)
    code, msg = _rpc_code(lambda: client.stub.Search(pb.SearchRequest(collection=name, k=1, query_ids=b"\0" * 8)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "string ids" in msg


def test_string_ids_for_an_int_collection_are_invalid(client: Client, name: str) -> None:
    client.create_collection(name, DIM)
    try:
        client.add(name, [1], np.ones((1, DIM), np.float32))
        code, msg = _rpc_code(lambda: client.stub.Get(pb.GetRequest(collection=name, string_ids=["a"])))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "int ids" in msg
        with pytest.raises(InvalidArgument, match="int ids"):
            client.recommend(name, ["a"], k=1)
    finally:
        client.drop_collection(name)


def _collision(bits: int) -> tuple[str, str]:
    return string_id_collision(bits, "key-")


@pytest.mark.parametrize("shard_mode", ["remote", "local"])
def test_get_of_a_colliding_string_finds_nothing(shard_mode: str) -> None:
    a, b = _collision(8)
    env = {"VECSHARD_STRING_ID_HASH_BITS": "8"}
    with LocalCluster(shards=3, env=env, log_level="ERROR", shard_mode=shard_mode) as cluster:
        with Client(cluster.address, timeout=60) as c:
            c.create_collection("collide", DIM, id_type="string")
            c.add("collide", [a], np.ones((1, DIM), np.float32), payloads=[{"who": "a"}])
            resp = c.stub.Get(pb.GetRequest(collection="collide", string_ids=[b, a], allow_missing=True))
            assert resp.found == b"\x00\x01" and resp.has_vector == b"\x00\x01"
            assert not wire.unpack_matrix(resp.vectors)[0].any()
            with pytest.raises(NotFound, match=b):
                c.search("collide", by_ids=[b], k=1)
            assert c.search("collide", by_ids=[a], k=1).ids.tolist() == [[None]]
