"""Payloads and filters through real clusters: round trips (int64 exact), every write kind, indexes,
Count / Scroll / Delete by filter, bad input, and filtered search equal to brute force over the
filtered set (hypothesis: random payloads, random nested filters, a reference evaluator here)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecshard import Client, InvalidArgument, NotFound, wire
from vecshard.payload import payload_to_proto
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cluster.local import LocalCluster

DIM = 8
N = 600
KEYWORDS = ["en", "fr", "de", "ja", "pt"]


# -- a reference evaluator, written from payload.proto's rules ------------------------------------


def _leaves(payload: dict[str, Any], key: str) -> tuple[bool, list[Any]]:
    nodes: list[Any] = [payload]
    for part in key.split("."):
        nxt: list[Any] = []
        for node in nodes:
            stack = [node]
            while stack:
                v = stack.pop()
                if isinstance(v, list):
                    stack.extend(v)
                elif isinstance(v, dict) and part in v:
                    nxt.append(v[part])
        if not nxt:
            return False, []
        nodes = nxt
    out: list[Any] = []

    def flat(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                flat(x)
        else:
            out.append(v)

    for v in nodes:
        flat(v)
    return True, out


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _same(x: Any, v: Any) -> bool:
    if isinstance(v, bool) or isinstance(x, bool):
        return isinstance(x, bool) and isinstance(v, bool) and x == v
    if isinstance(v, str) or isinstance(x, str):
        return x == v
    return _number(x) and _number(v) and x == v


def matches(f: dict[str, Any], pid: int, payload: dict[str, Any]) -> bool:
    def cond(c: dict[str, Any]) -> bool:
        if "has_id" in c:
            return pid in c["has_id"]
        if "key" not in c:
            return matches(c, pid, payload)
        _, leaves = _leaves(payload, c["key"])
        if "match" in c:
            return any(_same(x, c["match"]) for x in leaves)
        if "match_any" in c:
            return any(_same(x, v) for x in leaves for v in c["match_any"])
        if "range" in c:
            ops = {
                "gt": lambda a, b: a > b,
                "gte": lambda a, b: a >= b,
                "lt": lambda a, b: a < b,
                "lte": lambda a, b: a <= b,
            }
            return any(_number(x) and all(ops[o](x, b) for o, b in c["range"].items()) for x in leaves)
        if "is_null" in c:
            return bool(leaves) and all(x is None for x in leaves)
        if "is_empty" in c:
            return all(x is None for x in leaves)
        return any(x is not None for x in leaves)  # exists

    return (
        all(cond(c) for c in f.get("must", []))
        and (not f.get("should") or any(cond(c) for c in f["should"]))
        and not any(cond(c) for c in f.get("must_not", []))
    )


# -- data -----------------------------------------------------------------------------------------


def make_payloads(n: int, seed: int) -> list[dict[str, Any]]:
    """Payloads with nested objects, lists of objects, mixed kinds in one field, nulls and absences."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p: dict[str, Any] = {}
        r = rng.random()
        if r < 0.7:
            p["kw"] = KEYWORDS[rng.integers(5)]
        elif r < 0.8:
            p["kw"] = [KEYWORDS[j] for j in rng.choice(5, size=2, replace=False)]
        elif r < 0.85:
            p["kw"] = None
        r = rng.random()
        if r < 0.6:
            p["n"] = int(rng.integers(-5, 20))
        elif r < 0.75:
            p["n"] = float(rng.integers(-10, 40)) / 2
        elif r < 0.8:
            p["n"] = "7"  # a string where numbers usually are: never a number
        elif r < 0.85:
            p["n"] = [int(rng.integers(0, 10)), None]
        if rng.random() < 0.8:
            p["meta"] = {"x": int(rng.integers(0, 50)), "ok": bool(rng.random() < 0.5)}
        if rng.random() < 0.5:
            p["arr"] = [{"v": int(rng.integers(0, 30))} for _ in range(int(rng.integers(0, 3)))]
        if rng.random() < 0.1:
            p["big"] = (1 << 62) + i  # beyond float64's exact integers
        out.append(p)
    return out


KEYS = ["kw", "n", "meta.x", "meta.ok", "arr.v", "big", "missing"]


def _value_for(key: str) -> st.SearchStrategy[Any]:
    if key == "kw":
        return st.sampled_from(KEYWORDS + ["zz"])
    if key == "meta.ok":
        return st.booleans()
    if key == "big":
        return st.integers((1 << 62) - 2, (1 << 62) + N + 2)
    return st.one_of(st.integers(-6, 50), st.integers(-12, 80).map(lambda v: v / 2), st.just("7"))


@st.composite
def conditions(draw: st.DrawFn, depth: int) -> dict[str, Any]:
    kinds = ["match", "match_any", "range", "is_null", "is_empty", "exists", "has_id"] + (
        ["filter"] if depth < 3 else []
    )
    kind = draw(st.sampled_from(kinds))
    if kind == "filter":
        return draw(filters(depth + 1))
    if kind == "has_id":
        return {"has_id": draw(st.lists(st.integers(0, N + 5), max_size=30))}
    key = draw(st.sampled_from(KEYS))
    if kind == "match":
        return {"key": key, "match": draw(_value_for(key))}
    if kind == "match_any":
        return {"key": key, "match_any": draw(st.lists(_value_for(key), min_size=1, max_size=4))}
    if kind == "range":
        num = st.one_of(st.integers(-6, 50), st.integers(-12, 100).map(lambda v: v / 2))
        if key == "big":
            num = st.integers((1 << 62) - 2, (1 << 62) + N + 2)
        ops = draw(st.lists(st.sampled_from(["gt", "gte", "lt", "lte"]), min_size=1, max_size=2, unique=True))
        return {"key": key, "range": {o: draw(num) for o in ops}}
    return {"key": key, kind: True}


@st.composite
def filters(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    f: dict[str, Any] = {}
    for group in ("must", "should", "must_not"):
        conds = draw(st.lists(conditions(depth), max_size=2 if depth else 3))
        if conds:
            f[group] = conds
    return f


METRICS = ["l2", "inner_product", "cosine", "l1"]


def brute_force(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over (x, ids) in numpy (float64), ties by the smaller id; padded like the server."""
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "l2":
        d = ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    elif metric == "l1":
        d = np.abs(q64[:, None, :] - x64[None, :, :]).sum(-1)
    else:
        d = -(q64 @ x64.T)
    D = np.full((len(q), k), np.nan)
    I = np.full((len(q), k), -1, dtype=np.int64)
    for r in range(len(q)):
        order = np.lexsort((ids, d[r]))[:k]
        D[r, : order.size] = -d[r, order] if metric in ("inner_product", "cosine") else d[r, order]
        I[r, : order.size] = ids[order]
    return D, I


def assert_same_ids(I: np.ndarray, bI: np.ndarray, bD: np.ndarray, msg: str) -> None:
    """The same ids in the same places, except among reference distances that tie in float32 (the
    server ranks float32 distances, ties by id; the reference ranks float64 ones). bI/bD hold one
    more column than I, so a tie across the k-th place is seen too."""
    k = I.shape[1]
    close = np.isclose(bD[:, 1:], bD[:, :-1], rtol=1e-6, atol=1e-6)
    tied = np.zeros(bD.shape, dtype=bool)
    tied[:, 1:] |= close
    tied[:, :-1] |= close
    tied = tied[:, :k]
    np.testing.assert_array_equal(np.where(tied, -2, I), np.where(tied, -2, bI[:, :k]), err_msg=msg)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[dict[str, Any]]]:
    x = np.random.default_rng(5).standard_normal((N, DIM)).astype(np.float32)
    return x, make_payloads(N, 6)


def _fill(
    c: Client, name: str, metric: str, index: str, x: np.ndarray, payloads: list[dict[str, Any]], indexed: bool
) -> None:
    if index == "flat":
        c.create_collection(name, DIM, metric)
    else:
        c.create_collection(name, DIM, metric, "ivf_flat", nlist=8, nprobe=1)
    c.add(name, np.arange(N), x, payloads=payloads)
    if index != "flat":
        c.train(name)
    if indexed:
        for field, kind in (
            ("kw", "keyword"),
            ("n", "float"),
            ("meta.x", "integer"),
            ("meta.ok", "bool"),
            ("arr.v", "integer"),
            ("big", "integer"),
        ):
            c.create_payload_index(name, field, kind)


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_filtered_search_equals_brute_force_over_the_filtered_set(
    cluster_of: Callable[[int], LocalCluster],
    data: tuple[np.ndarray, list[dict[str, Any]]],
    shards: int,
    index: str,
    name: str,
) -> None:
    """FLAT, and IVF with nprobe = nlist, equal brute force over the matching points for every metric
    (same ids, distances within float error), with and without payload indexes; IVF at nprobe 1
    still returns min(k, matches) hits, every one matching; Count and Scroll agree with the reference."""
    x, payloads = data
    q = np.random.default_rng(7).standard_normal((3, DIM)).astype(np.float32)
    k = 7
    with Client(cluster_of(shards).address, timeout=60) as c:
        names = {}
        for metric in METRICS:
            for indexed in (False, True):
                names[metric, indexed] = f"{name}_{metric[:2]}{int(indexed)}"
                _fill(c, names[metric, indexed], metric, index, x, payloads, indexed)

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(f=filters())
        def check(f: dict[str, Any]) -> None:
            keep = np.array([matches(f, i, p) for i, p in enumerate(payloads)], dtype=bool)
            ids = np.flatnonzero(keep).astype(np.int64)
            for metric in METRICS:
                bD, bI = brute_force(x[keep], ids, q, k + 1, metric)
                for indexed in (False, True):
                    coll = names[metric, indexed]
                    full = 8 if index == "ivf" else None
                    D, I = c.search(coll, q, k, nprobe=full, filter=f)
                    assert_same_ids(I, bI, bD, f"{metric} indexed={indexed} filter={f}")
                    real = I >= 0
                    np.testing.assert_allclose(D[real], bD[:, :k][real], rtol=1e-4, atol=1e-3)
                    if index == "ivf":  # one list probed: never short of min(k, matches) hits
                        res = c.search(coll, q, k, nprobe=1, filter=f)
                        assert ((res.ids >= 0).sum(axis=1) == min(k, ids.size)).all(), (f, res.plans)
                        assert np.isin(res.ids[res.ids >= 0], ids).all()
            coll = names["l2", True]
            assert c.count(coll, f) == ids.size
            assert c.count(names["l2", False], f) == ids.size
            got = [p.id for p in c.scroll(coll, f, with_payload=False, page_size=97)]
            assert got == ids.tolist()

        check()
        for coll in names.values():
            c.drop_collection(coll)


def test_filtered_ivf_plans_are_exact_at_full_nprobe(data: tuple[np.ndarray, list[dict[str, Any]]], name: str) -> None:
    """With the exact plan turned off (VECSHARD_FILTER_EXACT_RATIO=0) the IVF plans run: restricted by
    an IDSelector, or filtering candidates; at nprobe = nlist both equal brute force, and at nprobe 1
    neither is ever short of hits."""
    x, payloads = data
    # 240 queries: a request whose candidates to filter would exceed 65,536 takes the IDSelector plan
    q = np.random.default_rng(8).standard_normal((240, DIM)).astype(np.float32)
    k = 9
    env = {"VECSHARD_FILTER_EXACT_RATIO": "0"}
    with LocalCluster(shards=2, env=env, log_level="WARNING") as cluster, Client(cluster.address, timeout=60) as c:
        for metric in METRICS:
            _fill(c, f"{name}_{metric[:2]}", metric, "ivf", x, payloads, indexed=metric == "l2")
        plans: set[str] = set()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(f=filters())
        def check(f: dict[str, Any]) -> None:
            keep = np.array([matches(f, i, p) for i, p in enumerate(payloads)], dtype=bool)
            ids = np.flatnonzero(keep).astype(np.int64)
            for metric in METRICS:
                bD, bI = brute_force(x[keep], ids, q, k + 1, metric)
                res = c.search(f"{name}_{metric[:2]}", q, k, nprobe=8, filter=f)
                plans.update(p.plan for p in res.plans)
                assert all(p.plan != "exact" for p in res.plans)
                assert_same_ids(res.ids, bI, bD, f"{metric} {f} {res.plans}")
                real = res.ids >= 0
                np.testing.assert_allclose(res.distances[real], bD[:, :k][real], rtol=1e-4, atol=1e-3)
                short = c.search(f"{name}_{metric[:2]}", q, k, nprobe=1, filter=f)
                assert ((short.ids >= 0).sum(axis=1) == min(k, ids.size)).all(), (f, short.plans)

        check()
        assert {"ivf-postfilter", "ivf-filtered"} <= plans, plans


def test_payloads_round_trip_exactly_and_every_payload_write(client_of: Callable[[int], Client], name: str) -> None:
    c = client_of(2)
    c.create_collection(name, DIM)
    x = np.random.default_rng(1).standard_normal((40, DIM)).astype(np.float32)
    odd = {
        "int_max": (1 << 63) - 1,
        "int_min": -(1 << 63),
        "above_2_53": (1 << 53) + 1,
        "pi": math.pi,
        "neg_zero": -0.0,
        "text": "héllo \u2603 \x00 end",
        "null": None,
        "yes": True,
        "list": [1, 2.5, "x", None, [3]],
        "nested": {"a": {"b": {"c": [{"d": 1}]}}},
        "empty_list": [],
        "empty_obj": {},
    }
    payloads: list[dict[str, Any] | None] = [{"i": i, "even": i % 2 == 0, **(odd if i == 3 else {})} for i in range(40)]
    payloads[5] = None  # no payload at all
    c.add(name, np.arange(40), x, payloads=payloads)
    got = c.retrieve(name, [3, 5, 1000, 7])
    assert got[0] is not None and got[0].payload == payloads[3]
    assert isinstance(got[0].payload["int_max"], int) and got[0].payload["above_2_53"] == (1 << 53) + 1
    assert got[1] is not None and got[1].payload == {} and got[2] is None
    assert got[3] is not None and got[3].payload == {"i": 7, "even": False}
    # search returns the winners' payloads (a projection of dotted fields when asked)
    res = c.search(name, x[3], k=1, with_payload=["nested.a.b", "int_max", "nope"])
    assert res.hits() and next(res.hits())[0].payload == {
        "nested": {"a": {"b": {"c": [{"d": 1}]}}},
        "int_max": (1 << 63) - 1,
    }
    assert c.search(name, x[3], k=1).payloads is None
    # merge, overwrite, delete keys: by ids and by filter; vectors stay
    assert c.set_payload(name, {"tag": "a", "i": -1}, ids=[1, 2, 999]) == 2
    assert c.retrieve(name, [1])[0].payload == {"i": -1, "even": False, "tag": "a"}  # type: ignore[union-attr]
    assert c.set_payload(name, {"flag": True}, filter={"must": [{"key": "even", "match": True}]}) == 20
    assert c.count(name, "flag = true") == 20
    assert c.overwrite_payload(name, {"only": 1}, ids=[4]) == 1
    assert c.retrieve(name, [4])[0].payload == {"only": 1}  # type: ignore[union-attr]
    assert c.delete_payload_keys(name, ["nested.a", "list"], ids=[3]) == 1
    p3 = c.retrieve(name, [3])[0].payload  # type: ignore[union-attr]
    assert p3 is not None and p3["nested"] == {} and "list" not in p3 and p3["int_max"] == (1 << 63) - 1
    assert p3 is not None and payloads[3] is not None and payloads[3]["nested"]["a"]  # the original is untouched
    np.testing.assert_array_equal(c.get(name, [1, 3, 4]), x[[1, 3, 4]])
    # an upsert replaces the payload with the vector
    c.add(name, [6], x[:1], payloads=[{"new": 1}], upsert=True)
    assert c.retrieve(name, [6])[0].payload == {"new": 1}  # type: ignore[union-attr]
    c.add(name, [6], x[:1], upsert=True)
    assert c.retrieve(name, [6])[0].payload == {}  # type: ignore[union-attr]
    # delete by filter, count, scroll
    assert c.delete(name, "flag = true and i < 10") == 3  # 0, 2 (its i is -1) and 8: 4 and 6 lost their flag
    assert c.count(name) == 37
    pages = list(c.scroll(name, "i >= 30", page_size=3, with_payload=["i"]))
    assert [p.id for p in pages] == list(range(30, 40)) and pages[0].payload == {"i": 30}
    with_vec = list(c.scroll(name, "i = 33", with_vectors=True))
    assert len(with_vec) == 1 and with_vec[0].vector is not None
    np.testing.assert_array_equal(with_vec[0].vector, x[33])
    # indexes: listed, used (no unindexed fields), dropped, results unchanged
    before = c.search(name, x[:2], k=5, filter="i >= 10 and even = true").ids
    info = c.create_payload_index(name, "i", "integer")
    info = c.create_payload_index(name, "even", "bool")
    assert info.payload_indexes == {"i": "integer", "even": "bool"}
    res = c.search(name, x[:2], k=5, filter="i >= 10 and even = true")
    np.testing.assert_array_equal(res.ids, before)
    assert res.plans and all(not p.unindexed_fields for p in res.plans)
    assert c.drop_payload_index(name, "even").payload_indexes == {"i": "integer"}
    with pytest.raises(NotFound):
        c.drop_payload_index(name, "even")


def test_store_text_keeps_the_embedded_text(client_of: Callable[[int], Client], name: str) -> None:
    c = client_of(2)
    c.create_collection(name, 0, None, model="minilm", store_text=True)
    assert c.describe(name).store_text
    texts = ["a cat sat on the mat", "stock prices fell sharply", "the kitten purrs"]
    c.add(name, [1, 2, 3], texts=texts, payloads=[{"lang": "en"}, None, {"text": "kept as given"}])
    res = c.search(name, texts=["feline"], k=3, with_payload=True)
    by_id = {h.id: h.payload for h in next(res.hits())}
    assert by_id[1] == {"lang": "en", "text": texts[0]} and by_id[2] == {"text": texts[1]}
    assert by_id[3] == {"text": "kept as given"}
    with pytest.raises(InvalidArgument, match="store_text"):
        c.create_collection(name + "x", 8, store_text=True)


def test_scroll_is_stable_under_concurrent_writes(client_of: Callable[[int], Client], name: str) -> None:
    """Ids present throughout are returned exactly once; ids written meanwhile at most once."""
    c = client_of(3)
    c.create_collection(name, DIM)
    x = np.random.default_rng(3).standard_normal((3000, DIM)).astype(np.float32)
    c.add(name, np.arange(0, 3000, 2), x[::2], payloads=[{"g": 1}] * 1500)  # the stable ones: even ids
    stop = threading.Event()

    def churn() -> None:
        rng = np.random.default_rng(4)
        while not stop.is_set():
            odd = rng.choice(np.arange(1, 3000, 2), 50, replace=False)
            c.add(name, odd, x[odd], payloads=[{"g": 1}] * 50, upsert=True)
            c.remove(name, rng.choice(np.arange(1, 3000, 2), 50, replace=False))
            c.set_payload(name, {"touched": True}, ids=rng.choice(np.arange(0, 3000, 2), 20, replace=False))

    t = threading.Thread(target=churn)
    t.start()
    try:
        seen = [p.id for p in c.scroll(name, "g = 1", page_size=64, with_payload=False)]
    finally:
        stop.set()
        t.join()
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    assert set(range(0, 3000, 2)) <= set(seen)


def _stub(cluster: LocalCluster) -> pb_grpc.VectorSearchStub:
    return pb_grpc.VectorSearchStub(grpc.insecure_channel(cluster.address))


BAD: list[tuple[str, str, Callable[[str], Any], str]] = [
    (
        "Add",
        "NaN payload",
        lambda n: pb.AddRequest(
            collection=n,
            ids=wire.pack_ids(np.array([1])),
            vectors=wire.pack_matrix(np.ones((1, DIM), np.float32)),
            payloads=[ppb.Payload(fields={"x": ppb.Value(double_value=math.nan)})],
        ),
        "finite",
    ),
    (
        "Add",
        "payload count",
        lambda n: pb.AddRequest(
            collection=n,
            ids=wire.pack_ids(np.array([1, 2])),
            vectors=wire.pack_matrix(np.ones((2, DIM), np.float32)),
            payloads=[ppb.Payload()],
        ),
        "payloads for 2",
    ),
    (
        "Add",
        "empty key",
        lambda n: pb.AddRequest(
            collection=n,
            ids=wire.pack_ids(np.array([1])),
            vectors=wire.pack_matrix(np.ones((1, DIM), np.float32)),
            payloads=[ppb.Payload(fields={"": ppb.Value(bool_value=True)})],
        ),
        "empty key",
    ),
    (
        "Search",
        "empty condition",
        lambda n: pb.SearchRequest(
            collection=n,
            k=1,
            queries=wire.pack_matrix(np.ones((1, DIM), np.float32)),
            filter=ppb.Filter(must=[ppb.Condition()]),
        ),
        "filter.must[0]",
    ),
    (
        "Search",
        "range on a bool",
        lambda n: pb.SearchRequest(
            collection=n,
            k=1,
            queries=wire.pack_matrix(np.ones((1, DIM), np.float32)),
            filter=ppb.Filter(
                should=[
                    ppb.Condition(field=ppb.FieldCondition(key="a", range=ppb.Range(gt=ppb.Value(bool_value=True))))
                ]
            ),
        ),
        "filter.should[0].range.gt",
    ),
    (
        "Count",
        "match null",
        lambda n: pb.CountRequest(
            collection=n,
            filter=ppb.Filter(
                must=[ppb.Condition(field=ppb.FieldCondition(key="a", match=ppb.Value(null_value=True)))]
            ),
        ),
        "is_null",
    ),
    (
        "Count",
        "bad key",
        lambda n: pb.CountRequest(
            collection=n,
            filter=ppb.Filter(
                must_not=[
                    ppb.Condition(
                        filter=ppb.Filter(must=[ppb.Condition(field=ppb.FieldCondition(key="a..b", exists=True))])
                    )
                ]
            ),
        ),
        "filter.must_not[0].must[0].key",
    ),
    (
        "Count",
        "has_id bytes",
        lambda n: pb.CountRequest(collection=n, filter=ppb.Filter(must=[ppb.Condition(has_id=b"123")])),
        "has_id",
    ),
    (
        "Add",
        "unset value",
        lambda n: pb.AddRequest(
            collection=n,
            ids=wire.pack_ids(np.array([1])),
            vectors=wire.pack_matrix(np.ones((1, DIM), np.float32)),
            payloads=[ppb.Payload(fields={"x": ppb.Value(list_value=ppb.ListValue(values=[ppb.Value()]))})],
        ),
        "payloads[0].x[0] is a Value with no kind set",
    ),
    ("Remove", "empty filter", lambda n: pb.RemoveRequest(collection=n, filter=ppb.Filter()), "every point"),
    (
        "SetPayload",
        "empty filter",
        lambda n: pb.SetPayloadRequest(collection=n, filter=ppb.Filter(), payload=payload_to_proto({"a": 0})),
        "every point",
    ),
    ("Remove", "neither", lambda n: pb.RemoveRequest(collection=n), "ids is empty: send the ids"),
    (
        "Remove",
        "ids and filter",
        lambda n: pb.RemoveRequest(collection=n, ids=wire.pack_ids(np.array([1])), filter=ppb.Filter()),
        "not both",
    ),
    (
        "SetPayload",
        "neither",
        lambda n: pb.SetPayloadRequest(collection=n, payload=payload_to_proto({"a": 1})),
        "exactly one",
    ),
    (
        "SetPayload",
        "keys with merge",
        lambda n: pb.SetPayloadRequest(collection=n, ids=wire.pack_ids(np.array([1])), keys=["a"]),
        "DELETE_KEYS",
    ),
    (
        "SetPayload",
        "too big",
        lambda n: pb.SetPayloadRequest(
            collection=n, ids=wire.pack_ids(np.array([1])), payload=payload_to_proto({"a": "x" * 1_100_000})
        ),
        "max_payload_bytes",
    ),
    ("CreatePayloadIndex", "no type", lambda n: pb.CreatePayloadIndexRequest(collection=n, field="a"), "type"),
    ("Scroll", "limit", lambda n: pb.ScrollRequest(collection=n, limit=10_001), "at most 10,000"),
    ("Scroll", "negative start", lambda n: pb.ScrollRequest(collection=n, start_id=-5), "start_id"),
]


@pytest.mark.parametrize(("method", "what", "make", "says"), BAD, ids=[b[1] for b in BAD])
def test_bad_payloads_and_filters_are_invalid_argument_and_write_nothing(
    cluster_of: Callable[[int], LocalCluster],
    name: str,
    method: str,
    what: str,
    make: Callable[[str], Any],
    says: str,
) -> None:
    cluster = cluster_of(2)
    with Client(cluster.address) as c:
        c.create_collection(name, DIM)
        c.add(name, [1, 2], np.ones((2, DIM), np.float32), payloads=[{"a": 1}, {"a": 2}])
        stub = _stub(cluster)
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, method)(make(name), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert says in (err.value.details() or ""), err.value.details()
        assert c.count(name) == 2 and [p.payload for p in c.scroll(name)] == [{"a": 1}, {"a": 2}]
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, method)(make(name + "nope"), timeout=30)
        assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def test_async_client_payload_methods(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    import asyncio

    from vecshard import AsyncClient

    x = np.random.default_rng(9).standard_normal((30, DIM)).astype(np.float32)

    async def scenario() -> None:
        async with AsyncClient(cluster_of(2).address) as c:
            await c.create_collection(name, DIM)
            await c.add(name, np.arange(30), x, payloads=[{"i": i, "odd": i % 2 == 1} for i in range(30)])
            res = await c.search(name, x[:1], k=3, filter="odd = true", with_payload=["i"])
            assert all(h.payload == {"i": h.id} and h.id % 2 for h in next(res.hits()))
            assert await c.count(name, {"must": [{"key": "i", "range": {"gte": 20}}]}) == 10
            assert [p.id async for p in c.scroll(name, "i < 5", page_size=2)] == [0, 1, 2, 3, 4]
            assert await c.set_payload(name, {"tag": 1}, ids=[0, 1]) == 2
            assert await c.overwrite_payload(name, {"i": 2}, filter="i = 2") == 1
            assert await c.delete_payload_keys(name, ["odd"], ids=[0]) == 1
            got = await c.retrieve(name, [0, 2, 99])
            assert [p.payload if p else None for p in got] == [{"i": 0, "tag": 1}, {"i": 2}, None]
            assert (await c.create_payload_index(name, "i", "integer")).payload_indexes == {"i": "integer"}
            assert (await c.drop_payload_index(name, "i")).payload_indexes == {}
            assert await c.delete(name, "i >= 25") == 5 and await c.count(name) == 25

    asyncio.run(scenario())


@pytest.mark.parametrize("page_size", [1, 2, 100])
def test_scroll_reaches_the_largest_id(client: Client, name: str, page_size: int) -> None:
    """A page ending at id 2**63 - 1 is the last: its successor does not fit an int64 (this was
    INTERNAL, "Value out of range", from the shard and the coordinator alike; the fuzz found it)."""
    top = (1 << 63) - 1
    ids = np.array([5, top - 1, top], dtype=np.int64)
    client.create_collection(name, 4)
    client.add(name, ids, np.eye(3, 4, dtype=np.float32), payloads=[{"i": 0}, {"i": 1}, {"i": 2}])
    got = [p.id for p in client.scroll(name, page_size=page_size)]
    assert got == ids.tolist()
    assert [p.id for p in client.scroll(name, start_id=top, page_size=page_size)] == [top]
    client.drop_collection(name)
