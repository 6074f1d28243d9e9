"""String ids, points without a vector and Add's conflict policy (#25 items 1-3), through the
generated stubs as any gRPC client sends them, against served clusters of 1 and 3 shards in both
shard modes; hash collisions forced with a narrow hash (VECSHARD_STRING_ID_HASH_BITS); kill -9 and
restart keep string ids and payload-only points (from the log and from snapshots), and a reshard
carries them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from vecshard import wire
from vecshard.payload import payload_from_proto, payload_to_proto
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import types_pb2 as t
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.string_ids import KEY, string_id_hash

from .support import string_id_collision

DIM = 8
_n = itertools.count()


class Api:
    """The public API through the generated stub, with packing done here."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = vector_search_pb2_grpc.VectorSearchStub(self.channel)

    def create(self, name: str, id_type: int = t.ID_TYPE_STRING, metric: int = t.METRIC_L2) -> pb.CollectionInfo:
        cfg = t.CollectionConfig(name=name, dim=DIM, metric=metric, index_type=t.INDEX_TYPE_FLAT, id_type=id_type)
        info: pb.CollectionInfo = self.stub.CreateCollection(pb.CreateCollectionRequest(config=cfg), timeout=60)
        return info

    def add(
        self,
        name: str,
        ids: Sequence[str] | Sequence[int],
        vectors: np.ndarray | None,
        payloads: Sequence[dict[str, Any]] | None = None,
        **kw: Any,
    ) -> pb.AddResponse:
        req = pb.AddRequest(collection=name, **kw)
        _set_ids(req, ids)
        if vectors is not None:
            req.vectors.CopyFrom(wire.pack_matrix(vectors))
        if payloads is not None:
            req.payloads.extend(payload_to_proto(p) for p in payloads)
        resp: pb.AddResponse = self.stub.Add(req, timeout=60)
        return resp

    def update_vectors(self, name: str, ids: Sequence[str] | Sequence[int], vectors: np.ndarray) -> int:
        req = pb.UpdateVectorsRequest(collection=name, vectors=wire.pack_matrix(vectors))
        _set_ids(req, ids)
        return int(self.stub.UpdateVectors(req, timeout=60).updated)

    def remove(self, name: str, ids: Sequence[str] | Sequence[int]) -> int:
        req = pb.RemoveRequest(collection=name)
        _set_ids(req, ids)
        return int(self.stub.Remove(req, timeout=60).removed)

    def set_payload(self, name: str, ids: Sequence[str], payload: dict[str, Any], mode: int) -> int:
        req = pb.SetPayloadRequest(collection=name, string_ids=ids, payload=payload_to_proto(payload), mode=mode)
        return int(self.stub.SetPayload(req, timeout=60).updated)

    def count(self, name: str, f: ppb.Filter | None = None) -> int:
        return int(self.stub.Count(pb.CountRequest(collection=name, filter=f), timeout=60).count)

    def points(self, name: str) -> dict[int, tuple[dict[str, Any], np.ndarray]]:
        """Every stored point: id -> (payload as stored, the string id under KEY included; vector)."""
        out: dict[int, tuple[dict[str, Any], np.ndarray]] = {}
        start = 0
        while True:
            req = pb.ScrollRequest(
                collection=name,
                start_id=start,
                limit=1000,
                with_payload=ppb.PayloadSelector(enable=True),
                with_vectors=True,
            )
            page = self.stub.Scroll(req, timeout=60)
            ids = wire.unpack_ids(page.ids)
            vectors = wire.unpack_matrix(page.vectors) if ids.size else np.empty((0, DIM), np.float32)
            for n, (i, p, v) in enumerate(zip(ids.tolist(), page.payloads, vectors, strict=True)):
                payload = payload_from_proto(p)
                if page.string_ids:  # the string ids come apart from the payloads: put them back
                    payload[KEY] = page.string_ids[n]
                out[i] = (payload, v)
            if page.done or not ids.size:
                return out
            start = page.next_start_id

    def search_ids(self, name: str, q: np.ndarray, k: int) -> np.ndarray:
        resp = self.stub.Search(pb.SearchRequest(collection=name, queries=wire.pack_matrix(q), k=k), timeout=60)
        return wire.unpack_ids(resp.ids).reshape(q.shape[0], k)

    def close(self) -> None:
        self.channel.close()


def _set_ids(req: Any, ids: Sequence[str] | Sequence[int]) -> None:
    if ids and isinstance(ids[0], str):
        req.string_ids.extend(ids)
    else:
        req.ids = wire.pack_ids(np.asarray(ids, dtype=np.int64))


def _status(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def api(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Api]:
    a = Api(cluster_of(request.param).address)
    yield a
    a.close()


def _name(prefix: str) -> str:
    return f"{prefix}_{next(_n)}"


def _h(s: str, bits: int = 63) -> int:
    return string_id_hash(s, bits)


def test_string_ids_are_stored_placed_and_written_by_their_strings(api: Api) -> None:
    name = _name("sid")
    info = api.create(name)
    assert info.config.id_type == t.ID_TYPE_STRING and info.config.string_id_hash_bits == 63
    ids = ["doc-1", "a3f1c2e4-8b0a-4d7e-9a55-0c7f3e2b9d11", "é✓", "x" * 256, "with space", "0"]
    x = np.random.default_rng(1).standard_normal((len(ids), DIM)).astype(np.float32)
    r = api.add(name, ids, x, [{"i": i} for i in range(len(ids))])
    assert (r.added, r.replaced, r.skipped, r.count) == (len(ids), 0, 0, len(ids))
    stored = api.points(name)
    assert set(stored) == {_h(s) for s in ids}
    for i, s in enumerate(ids):
        payload, vector = stored[_h(s)]
        assert payload == {"i": i, KEY: s}  # (as a shard stores it: the string under the reserved key)
        np.testing.assert_array_equal(vector, x[i])
    np.testing.assert_array_equal(api.search_ids(name, x[2:3], 1)[0], [_h(ids[2])])

    code, msg = _status(lambda: api.add(name, ["doc-1"], x[:1]))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "'doc-1'" in msg and "on_conflict" in msg
    assert api.count(name) == len(ids)

    # set_payload by string ids keeps the string id whatever the mode
    assert api.set_payload(name, ["doc-1", "missing"], {"tag": "new"}, pb.SET_PAYLOAD_MODE_OVERWRITE) == 1
    assert api.points(name)[_h("doc-1")][0] == {"tag": "new", KEY: "doc-1"}
    assert api.set_payload(name, ["0"], {"more": 1}, pb.SET_PAYLOAD_MODE_MERGE) == 1
    assert api.points(name)[_h("0")][0] == {"i": 5, "more": 1, KEY: "0"}

    assert api.remove(name, ["doc-1", "é✓", "never-stored", "doc-1"]) == 2
    assert api.count(name) == len(ids) - 2
    assert set(api.points(name)) == {_h(s) for s in ids if s not in ("doc-1", "é✓")}


def test_bad_ids_are_refused_naming_the_id_type_and_nothing_is_written(api: Api) -> None:
    name, ints = _name("sidbad"), _name("intbad")
    api.create(name)
    api.create(ints, id_type=t.ID_TYPE_INT)
    x = np.ones((2, DIM), np.float32)
    cases = [
        (lambda: api.add(name, [1, 2], x), "has string ids"),
        (lambda: api.add(ints, ["a", "b"], x), "has int ids"),
        (lambda: api.add(name, ["", "b"], x), "string_ids[0] has 0 bytes"),
        (lambda: api.add(name, ["a", "y" * 257], x), "string_ids[1] has 257 bytes"),
        (lambda: api.add(name, ["a", "a"], x), "lists 'a' twice"),
        (lambda: api.add(name, ["a", "b"], x, on_conflict=9), "on_conflict 9"),
        (lambda: api.add(name, ["a", "b"], x, on_conflict=pb.ON_CONFLICT_SKIP, upsert=True), "upsert"),
        (lambda: api.remove(name, [5]), "has string ids"),
        (lambda: api.update_vectors(ints, ["a"], x[:1]), "has int ids"),
    ]
    for call, words in cases:
        code, msg = _status(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in msg, (words, msg)
    # Bytes that are not UTF-8 (a client in another language can send them): refused as malformed
    good = pb.AddRequest(collection=name, vectors=wire.pack_matrix(x[:1]), string_ids=["AB"]).SerializeToString()
    raw = api.channel.unary_unary("/vecshard.v1.VectorSearch/Add")
    code, msg = _status(lambda: raw(good.replace(b"AB", b"\xff\xfe"), timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in msg
    assert api.count(name) == 0 and api.count(ints) == 0


def test_conflict_policy_fail_skip_replace(api: Api) -> None:
    _conflicts(api, t.ID_TYPE_INT, [1, 2, 3, 4])
    _conflicts(api, t.ID_TYPE_STRING, ["k1", "k2", "k3", "k4"])


def _conflicts(api: Api, id_type: int, ids: list[Any]) -> None:
    name = _name("conflict")
    api.create(name, id_type=id_type)
    x = np.random.default_rng(2).standard_normal((4, DIM)).astype(np.float32)
    api.add(name, ids[:2], x[:2], [{"v": "old"}] * 2)
    code, _ = _status(lambda: api.add(name, ids[1:3], x[1:3], on_conflict=pb.ON_CONFLICT_FAIL))
    assert code == grpc.StatusCode.ALREADY_EXISTS and api.count(name) == 2  # nothing of it written
    r = api.add(name, ids[1:4], x[1:4] + 1, [{"v": "new"}] * 3, on_conflict=pb.ON_CONFLICT_SKIP)
    assert (r.added, r.replaced, r.skipped, r.count) == (2, 0, 1, 4)
    stored = api.points(name)
    key = (lambda i: _h(i)) if id_type == t.ID_TYPE_STRING else (lambda i: i)
    assert stored[key(ids[1])][0]["v"] == "old"  # skipped: left as it was
    np.testing.assert_array_equal(stored[key(ids[1])][1], x[1])
    assert stored[key(ids[2])][0]["v"] == "new"
    r = api.add(name, ids[:2], x[:2] + 2, [{"v": "re"}] * 2, on_conflict=pb.ON_CONFLICT_REPLACE)
    assert (r.added, r.replaced, r.skipped) == (0, 2, 0)
    r = api.add(name, ids[2:], x[2:] + 3, [{"v": "up"}] * 2, upsert=True)  # the alias
    assert (r.added, r.replaced) == (0, 2)
    stored = api.points(name)
    assert [stored[key(i)][0]["v"] for i in ids] == ["re", "re", "up", "up"]
    np.testing.assert_array_equal(stored[key(ids[3])][1], x[3] + 3)


def test_points_without_a_vector(api: Api) -> None:
    name = _name("novec")
    api.create(name, id_type=t.ID_TYPE_INT)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, DIM)).astype(np.float32)
    api.add(name, list(range(40)), x, [{"kind": "vec", "i": i} for i in range(40)])
    r = api.add(name, list(range(100, 110)), None, [{"kind": "doc", "i": i} for i in range(10)])
    assert (r.added, r.count) == (10, 50)
    assert api.count(name) == 50
    f = ppb.Filter(must=[ppb.Condition(field=ppb.FieldCondition(key="kind", match=ppb.Value(string_value="doc")))])
    assert api.count(name, f) == 10
    stored = api.points(name)
    assert all(not stored[100 + i][1].any() and stored[100 + i][0]["kind"] == "doc" for i in range(10))
    hits = api.search_ids(name, x, 50)  # every vector, never a point without one
    assert set(hits.ravel().tolist()) - {-1} == set(range(40))
    resp = api.stub.Search(pb.SearchRequest(collection=name, queries=wire.pack_matrix(x[:3]), k=5, filter=f))
    assert (wire.unpack_ids(resp.ids) == -1).all()  # the filter matches only points without a vector

    # update_vectors gives them vectors and keeps their payloads; unknown ids are ignored
    v = rng.standard_normal((3, DIM)).astype(np.float32)
    assert api.update_vectors(name, [100, 101, 999], v) == 2
    np.testing.assert_array_equal(api.search_ids(name, v[:2], 1).ravel(), [100, 101])
    stored = api.points(name)
    assert stored[100][0] == {"kind": "doc", "i": 0} and stored[101][0] == {"kind": "doc", "i": 1}
    np.testing.assert_array_equal(stored[100][1], v[0])
    assert api.count(name) == 50
    # and replace the vectors of points that have one
    assert api.update_vectors(name, [0], v[2:]) == 1
    np.testing.assert_array_equal(api.search_ids(name, v[2:], 1).ravel(), [0])
    assert api.points(name)[0][0] == {"kind": "vec", "i": 0}
    # a payload-only Add needs one payload per id
    code, msg = _status(lambda: api.add(name, [200, 201], None, [{"a": 1}]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "per id" in msg
    assert api.remove(name, [102, 0]) == 2 and api.count(name) == 48


def _collision(bits: int) -> tuple[str, str]:
    return string_id_collision(bits, "id-")


@pytest.mark.parametrize("shard_mode", ["remote", "local"])
def test_a_hash_collision_never_merges_two_strings(shard_mode: str) -> None:
    a, b = _collision(8)
    x = np.random.default_rng(4).standard_normal((3, DIM)).astype(np.float32)
    env = {"VECSHARD_STRING_ID_HASH_BITS": "8"}
    with LocalCluster(shards=3, env=env, log_level="ERROR", shard_mode=shard_mode) as cluster:
        api = Api(cluster.address)
        try:
            name = "collide"
            assert api.create(name).config.string_id_hash_bits == 8
            api.add(name, [a], x[:1], [{"who": "a"}])
            for mode in (pb.ON_CONFLICT_FAIL, pb.ON_CONFLICT_SKIP, pb.ON_CONFLICT_REPLACE):
                code, msg = _status(lambda mode=mode: api.add(name, [b, "other"], x[1:], on_conflict=mode))
                assert code == grpc.StatusCode.FAILED_PRECONDITION, (mode, code, msg)
                assert repr(b) in msg and repr(a) in msg and "collision" in msg
                assert api.count(name) == 1  # nothing of the batch written
            code, msg = _status(lambda: api.add(name, ["fresh", a, b], x))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "collide" in msg
            # b names no stored point: nothing happens to a
            assert api.remove(name, [b]) == 0
            assert api.set_payload(name, [b], {"who": "b"}, pb.SET_PAYLOAD_MODE_OVERWRITE) == 0
            assert api.update_vectors(name, [b], x[2:]) == 0
            stored = api.points(name)
            assert stored == {string_id_hash(a, 8): ({"who": "a", KEY: a}, stored[string_id_hash(a, 8)][1])}
            np.testing.assert_array_equal(stored[string_id_hash(a, 8)][1], x[0])
            # once a is gone, b may take the hash
            assert api.remove(name, [a]) == 1
            api.add(name, [b], x[1:2], [{"who": "b"}])
            assert list(api.points(name).values())[0][0] == {"who": "b", KEY: b}
        finally:
            api.close()


def test_string_ids_and_points_without_vectors_survive_kill_9(tmp_path: Path) -> None:
    env = {"VECSHARD_CHECKPOINT_INTERVAL_S": "1"}
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, DIM)).astype(np.float32)
    ids = [f"doc/{i}" for i in range(60)]
    with LocalCluster(shards=2, data_dir=tmp_path, env=env, log_level="WARNING") as cluster:
        api = Api(cluster.address)
        try:
            api.create("dur")
            api.add("dur", ids[:30], x[:30], [{"i": i} for i in range(30)])
            api.add("dur", [f"text/{i}" for i in range(10)], None, [{"t": i} for i in range(10)])
            time.sleep(2.5)  # a checkpoint snapshots these
            api.add("dur", ids[30:], x[30:], [{"i": i} for i in range(30, 60)])  # these only in the log
            api.add("dur", [f"late/{i}" for i in range(5)], None, [{"t": i} for i in range(5)])
            api.update_vectors("dur", ["text/0", "late/0"], x[:2] + 5)
            api.remove("dur", ["doc/1", "text/9"])
            api.add("dur", ids[:3], x[:3], [{"r": 1}] * 3, on_conflict=pb.ON_CONFLICT_SKIP)  # doc/1 is back
            before = api.points("dur")
            assert len(before) == 60 + 15 - 2 + 1 and before[string_id_hash("doc/1", 63)][0] == {"r": 1, KEY: "doc/1"}
            for shard in cluster.shards:
                shard.kill()
            for shard in cluster.shards:
                shard.restart()
            after = api.points("dur")
            assert set(after) == set(before)
            for i, (payload, vector) in before.items():
                assert after[i][0] == payload
                np.testing.assert_array_equal(after[i][1], vector)
            assert api.count("dur") == 74
            hits = api.search_ids("dur", x[:1] + 5, 2).ravel().tolist()
            assert set(hits) == {string_id_hash("text/0", 63), string_id_hash("late/0", 63)}
        finally:
            api.close()
        assert any((tmp_path / "shard-0").rglob("vectorless.npy")), "no snapshot held points without a vector"


def test_a_reshard_carries_string_ids_and_points_without_vectors() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((80, DIM)).astype(np.float32)
    ids = [f"p{i}" for i in range(80)]
    with LocalCluster(shards=3, log_level="WARNING") as cluster:
        api = Api(cluster.address)
        try:
            api.create("moved")
            api.add("moved", ids, x, [{"i": i} for i in range(80)])
            api.add("moved", [f"q{i}" for i in range(20)], None, [{"q": i} for i in range(20)])
            before = api.points("moved")
            resp = api.stub.Reshard(pb.ReshardRequest(collections=["moved"], shards=2, wait=True), timeout=120)
            assert resp.collections[0].phase == "DONE", resp
            after = api.points("moved")
            assert set(after) == set(before)
            for i, (payload, vector) in before.items():
                assert after[i][0] == payload
                np.testing.assert_array_equal(after[i][1], vector)
            assert api.count("moved") == 100
            assert set(api.search_ids("moved", x, 100).ravel().tolist()) - {-1} == {string_id_hash(s, 63) for s in ids}
        finally:
            api.close()
