"""One SDK definition: `Client` and `AsyncClient` have the same public methods with the same
parameters and docstrings, both run the shared plans of `vecshard.methods` (forwarding every
parameter, in order), and the async client does what the sync one does against a served cluster:
upload with payloads and progress, over a channel of the caller's, retrying per `vecshard.retry`."""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest

import vecshard.aio
import vecshard.client
from vecshard import AsyncClient, Client, InvalidArgument, ResourceExhausted, Unavailable, methods
from vecshard.retry import Backoff
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cluster.local import LocalCluster

from .conftest import clustered

NEEDS_CLIENT = {"add", "upload", "update_vectors", "embed"}  # the plans that read the client's settings


def _own_and_inherited(cls: type) -> dict[str, Any]:
    """The class's attributes with those of the SDK classes it inherits (its method groups)."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith("vecshard"):
            out.update(vars(klass))
    return out


def _public_methods(cls: type) -> dict[str, Any]:
    return {n: f for n, f in _own_and_inherited(cls).items() if not n.startswith("_") and inspect.isfunction(f)}


def _public_properties(cls: type) -> set[str]:
    return {n for n, f in _own_and_inherited(cls).items() if not n.startswith("_") and isinstance(f, property)}


def _same_parameters(sync: Any, aio: Any, allowed: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """Differences between two signatures' parameters (name, kind, default, annotation, in order)."""
    a, b = list(inspect.signature(sync).parameters.values()), list(inspect.signature(aio).parameters.values())
    out = []
    if [p.name for p in a] != [p.name for p in b]:
        return [f"names {[p.name for p in a]} != {[p.name for p in b]}"]
    for p, q in zip(a, b, strict=True):
        if p.kind != q.kind or p.default != q.default:
            out.append(f"{p.name}: {p.kind.name}={p.default!r} != {q.kind.name}={q.default!r}")
        if p.annotation != q.annotation and (allowed or {}).get(p.name) != (p.annotation, q.annotation):
            out.append(f"{p.name}: annotation {p.annotation!r} != {q.annotation!r}")
    return out


def test_client_and_async_client_have_the_same_methods_and_parameters() -> None:
    sync, aio = _public_methods(Client), _public_methods(AsyncClient)
    assert sorted(sync) == sorted(aio), f"only Client: {set(sync) - set(aio)}; only AsyncClient: {set(aio) - set(sync)}"
    assert len(sync) >= 20
    assert _public_properties(Client) == _public_properties(AsyncClient) == {"stub"}
    problems = {name: _same_parameters(sync[name], aio[name]) for name in sync}
    assert {k: v for k, v in problems.items() if v} == {}
    for name, fn in sync.items():
        assert not inspect.iscoroutinefunction(fn) and not inspect.isasyncgenfunction(fn), name
        afn = aio[name]
        assert inspect.iscoroutinefunction(afn) or inspect.isasyncgenfunction(afn), f"AsyncClient.{name} is not async"
        ret, aret = inspect.signature(fn).return_annotation, inspect.signature(afn).return_annotation
        # the same result, awaited (a coroutine's annotation is its result) or iterated with `async for`
        assert aret in (ret, f"Async{ret}"), f"{name}: {ret} vs {aret}"
        assert (aret == f"Async{ret}") == inspect.isasyncgenfunction(afn), name


def test_the_constructors_take_the_same_parameters() -> None:
    assert "channel" in inspect.signature(AsyncClient).parameters
    allowed = {"channel": ("grpc.Channel | None", "grpc.aio.Channel | None")}
    assert _same_parameters(Client.__init__, AsyncClient.__init__, allowed) == []


# The data API of issue #25 as docs/api.md and notes promise it: (method, parameters in order).
DATA_API = {
    "create_collection": ["name", "dim", "metric", "index", "*", "id_type", "timeout"],
    "add": ["collection", "ids", "vectors", "*", "payloads", "upsert", "on_conflict", "timeout"],
    "upload": ["collection", "ids", "vectors", "*", "payloads", "upsert", "on_conflict", "timeout"],
    "update_vectors": ["collection", "ids", "vectors", "*", "texts", "images", "model_fingerprint", "timeout"],
    "search": [
        "collection",
        "queries",
        "k",
        "*",
        "by_ids",
        "filter",
        "with_payload",
        "with_vectors",
        "offset",
        "score_threshold",
        "group_by",
        "group_size",
        "keyword",
        "keyword_field",
        "fusion",
        "rrf_k",
        "weights",
        "candidates",
        "timeout",
    ],
    "recommend": [
        "collection",
        "positive",
        "negative",
        "k",
        "*",
        "filter",
        "with_payload",
        "with_vectors",
        "offset",
        "score_threshold",
        "nprobe",
        "timeout",
    ],
    "scroll": ["collection", "filter", "*", "with_payload", "with_vectors", "order_by", "order", "timeout"],
    "facet": ["collection", "field", "filter", "limit", "*", "timeout"],
    "retrieve": ["collection", "ids", "*", "with_payload", "with_vectors", "timeout"],
    "create_payload_index": ["collection", "field", "type", "*", "stemmer", "stopwords", "k1", "b", "timeout"],
}
DEFAULTS = {
    ("update_vectors", "model_fingerprint"): None,
    ("search", "by_ids"): None,
    ("search", "with_vectors"): False,
    ("search", "group_by"): None,
    ("search", "group_size"): 3,
    ("recommend", "negative"): (),
    ("recommend", "k"): 10,
    ("recommend", "nprobe"): 0,
    ("scroll", "order_by"): None,
    ("scroll", "order"): "asc",
    ("facet", "filter"): None,
    ("facet", "limit"): 10,
    ("add", "on_conflict"): None,
    ("add", "upsert"): False,
    ("create_collection", "id_type"): "int",
    # keyword and hybrid search (#26)
    ("search", "keyword"): None,
    ("search", "keyword_field"): None,
    ("search", "fusion"): None,
    ("search", "rrf_k"): 60,
    ("search", "weights"): None,
    ("search", "candidates"): None,
    ("create_payload_index", "stemmer"): None,
    ("create_payload_index", "stopwords"): None,
    ("create_payload_index", "k1"): None,
    ("create_payload_index", "b"): None,
}


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_the_data_api_has_its_parameters_in_both_clients(cls: type) -> None:
    """Each method of the data API takes the promised parameters, in this order (others may sit
    between them), positional before the `*` and keyword-only after, with the promised defaults."""
    for method, expected in DATA_API.items():
        params = inspect.signature(getattr(cls, method)).parameters
        names = [n for n in params if n != "self"]
        star = expected.index("*")
        for i, p in enumerate(n for n in expected if n != "*"):
            assert p in names, f"{cls.__name__}.{method} has no {p}"
            kind = params[p].kind
            keyword_only = i >= star
            assert (kind is inspect.Parameter.KEYWORD_ONLY) == keyword_only, f"{method}({p}) kind {kind}"
        order = [names.index(p) for p in expected if p != "*"]
        assert order == sorted(order), f"{cls.__name__}.{method}: {names}"
    for (method, p), default in DEFAULTS.items():
        assert inspect.signature(getattr(cls, method)).parameters[p].default == default, (method, p)


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_every_public_method_has_a_docstring(cls: type) -> None:
    for name in [*_public_methods(cls), *_public_properties(cls)]:
        doc = inspect.getdoc(getattr(cls, name))
        assert doc and len(doc) > 20, f"{cls.__name__}.{name} has no docstring"
    for name, fn in _public_methods(cls).items():
        if hasattr(methods, name):  # the shared definition's docstring, once for both classes
            shared = inspect.getdoc(getattr(methods, name))
            assert shared and shared in (inspect.getdoc(fn) or ""), f"{cls.__name__}.{name}"
            assert "{hit options}" not in shared and "{keyword options}" not in shared, name  # (filled in)
    for name in ("search", "recommend"):  # every option of the data API is explained
        doc = inspect.getdoc(getattr(cls, name)) or ""
        options = ("with_vectors", "offset", "score_threshold", "filter", "with_payload")
        assert all(f"{o}:" in doc for o in options), name
    for name, option in [("search", "group_by"), ("search", "by_ids"), ("scroll", "order_by"), ("add", "on_conflict")]:
        assert option in (inspect.getdoc(getattr(cls, name)) or ""), (name, option)
    search_doc = inspect.getdoc(cls.search) or ""
    assert all(f"{o}:" in search_doc for o in ("keyword", "keyword_field", "fusion", "rrf_k", "weights", "candidates"))
    index_doc = inspect.getdoc(cls.create_payload_index) or ""
    assert all(o in index_doc for o in ("stemmer", "stopwords", "k1", "b", '"text"'))


@pytest.mark.parametrize("module", [vecshard.client, vecshard.aio])
def test_each_method_forwards_its_parameters_to_its_plan_in_order(module: Any) -> None:
    """Each public method is one call of the plan of its name, passing its own parameters in their
    order (plus the client for the plans that read its settings), and the plan's parameters have the
    same names: so nothing is dropped, swapped or computed differently by one of the clients."""
    tree = ast.parse(inspect.getsource(module))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert len(classes) >= 2  # the client and its method group(s)
    checked = 0
    for fn in (f for cls in classes for f in cls.body):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or fn.name.startswith("_"):
            continue
        if fn.name == "close" or any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
            continue
        params = [a.arg for a in fn.args.args[1:] + fn.args.kwonlyargs]
        calls = [
            c
            for c in ast.walk(fn)
            if isinstance(c, ast.Call)
            and isinstance(c.func, ast.Attribute)
            and isinstance(c.func.value, ast.Name)
            and c.func.value.id == "methods"
        ]
        assert [c.func.attr for c in calls] == [fn.name], f"{fn.name} must call methods.{fn.name} once"
        passed = [a.id if isinstance(a, ast.Name) else ast.dump(a) for a in calls[0].args]
        assert not calls[0].keywords, fn.name
        expected = (["self"] if fn.name in NEEDS_CLIENT else []) + params
        assert passed == expected, f"{fn.name} passes {passed}"
        plan_params = list(inspect.signature(getattr(methods, fn.name)).parameters)
        assert plan_params == (["client"] if fn.name in NEEDS_CLIENT else []) + params, fn.name
        checked += 1
    assert checked == len(_public_methods(Client)) - 1  # every method but close


def test_backoff_schedule_and_what_it_retries() -> None:
    policy = Backoff(retries=3, initial_s=0.2, max_s=0.5, jitter=0.5)
    for attempt, base in enumerate([0.2, 0.4, 0.5]):
        wait = policy.wait_s(Unavailable("x"), attempt)
        assert wait is not None and base <= wait < base * 1.5
    assert policy.wait_s(Unavailable("x"), 3) is None  # the retries are spent
    assert policy.wait_s(InvalidArgument("x"), 0) is None
    busy = ResourceExhausted("busy", retry_after_s=0.01)
    assert policy.wait_s(busy, 0) is None  # only with busy=True
    wait = Backoff(busy=True).wait_s(busy, 0)
    assert wait is not None and 0.01 <= wait < 0.015
    assert Backoff(busy=True).wait_s(ResourceExhausted("over a limit"), 0) is None  # no hint: fails again
    seen: list[object] = []

    def flaky(failed: object) -> str:
        seen.append(failed)
        if len(seen) < 3:
            raise Unavailable(f"down {len(seen)}")
        return "ok"

    assert Backoff(retries=2, initial_s=0.001, max_s=0.001).call(flaky) == "ok"
    assert [str(s) if s else None for s in seen] == [None, "UNAVAILABLE: down 1", "UNAVAILABLE: down 2"]
    seen.clear()
    with pytest.raises(Unavailable, match="down 2"):
        Backoff(retries=1, initial_s=0.001).call(flaky)


def test_async_upload_with_payloads_and_progress_reads_back(
    cluster_of: Callable[[int], LocalCluster], name: str
) -> None:
    """AsyncClient.upload takes payloads= and progress= (they were missing), stores what the sync
    Client.upload stores, and both clients read the payloads back."""
    address = cluster_of(2).address
    n, dim = 1000, 8
    data = clustered(n, dim, seed=21)
    payloads: list[dict[str, Any] | None] = [{"i": i, "even": i % 2 == 0} if i % 7 else None for i in range(n)]
    progressed: list[int] = []

    async def scenario() -> tuple[object, ...]:
        async with AsyncClient(address) as ac:
            await ac.create_collection(name, dim)
            with pytest.raises(InvalidArgument, match="not an iterator"):
                await ac.upload(name, iter(range(n)), data, payloads=payloads)
            result = await ac.upload(
                name, np.arange(n), data, payloads=payloads, batch_size=128, parallel=3, progress=progressed.append
            )
            got = await ac.retrieve(name, [0, 1, 7, 998, 5000], with_vectors=True)
            hits = await ac.search(name, data[:2], k=3, filter="even = true", with_payload=True)
            scrolled = [p.id async for p in ac.scroll(name, "i >= 990", page_size=4)]
        return result, got, hits, scrolled

    result, got, hits, scrolled = asyncio.run(scenario())
    assert (result.added, result.replaced, result.count) == (n, 0, n)
    assert sorted(progressed) == [104] + [128] * 7 and sum(progressed) == n
    assert [p.payload if p else "missing" for p in got] == [  # a point stored without a payload has {}
        {},
        {"i": 1, "even": False},
        {},
        {"i": 998, "even": True},
        "missing",
    ]
    np.testing.assert_array_equal(got[3].vector, data[998])
    assert all(h.payload is not None and h.payload["even"] for q in hits.hits() for h in q)
    assert scrolled == [i for i in range(990, n) if i % 7]
    with Client(address) as c:
        assert {p.id: p.payload for p in c.scroll(name)} == {i: p or {} for i, p in enumerate(payloads)}
        again = c.upload(name, np.arange(n), data, payloads=payloads, batch_size=300)  # upserts: the same
        assert (again.added, again.replaced, again.count) == (0, n, n)
        c.drop_collection(name)


def test_async_client_on_a_channel_of_the_callers(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    """channel= (as Client has it): the client uses that channel and leaves it open when closed."""
    address = cluster_of(2).address

    async def scenario() -> tuple[int, list[str]]:
        async with grpc.aio.insecure_channel(address) as channel:
            async with AsyncClient(address, channel=channel) as ac:
                await ac.create_collection(name, 4)
                await ac.add(name, [1, 2], np.eye(2, 4, dtype=np.float32), payloads=[{"a": 1}, None])
            # the client is closed, the channel is not: the raw stub still answers on it
            stub = pb_grpc.VectorSearchStub(channel)
            count = (await stub.Count(pb.CountRequest(collection=name), timeout=30)).count
            async with AsyncClient(address, channel=channel) as ac:
                names = [c.name for c in await ac.list_collections()]
                await ac.drop_collection(name)
        return count, names

    count, names = asyncio.run(scenario())
    assert count == 2 and name in names


class _FlakyAdd(pb_grpc.VectorSearchServicer):
    """A real gRPC server whose Add answers UNAVAILABLE `failures` times, then OK."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def Add(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"down ({self.calls})")
        return pb.AddResponse(added=1, count=self.calls)


@pytest.mark.parametrize("use_async", [False, True])
def test_upload_retries_a_failed_batch_per_the_shared_backoff(use_async: bool) -> None:
    flaky = _FlakyAdd(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_VectorSearchServicer_to_server(flaky, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()

    def upload(retries: int) -> object:
        x = np.zeros((1, 4), dtype=np.float32)
        if not use_async:
            with Client(address, timeout=30) as c:
                return c.upload("x", [0], x, retries=retries)

        async def go() -> object:
            async with AsyncClient(address, timeout=30) as ac:
                return await ac.upload("x", [0], x, retries=retries)

        return asyncio.run(go())

    try:
        assert upload(retries=2).added == 1 and flaky.calls == 3
        flaky.calls = 0
        with pytest.raises(Unavailable, match=r"down \(2\)"):
            upload(retries=1)
        assert flaky.calls == 2
    finally:
        server.stop(0)


def test_async_keyword_and_hybrid_search_answer_as_the_sync_client(
    cluster_of: Callable[[int], LocalCluster], name: str
) -> None:
    """The keyword and hybrid options (#26) through AsyncClient: a text index with its analyzer and
    BM25 parameters, keyword and hybrid searches (rrf and linear), each with the sync client's
    answer; and the same local refusals."""
    address = cluster_of(2).address
    texts = ["red fox jumps", "the lazy dogs", "a red dog", "foxes and dogs run", "nothing here"] * 20
    data = clustered(len(texts), 4, seed=5)
    q = data[:3]
    searches: list[dict[str, Any]] = [
        {"keyword": ["red dogs", "fox", "the"], "k": 5, "filter": "i >= 10"},
        {"queries": q, "keyword": "red fox", "k": 4, "with_payload": True},
        {"queries": q, "keyword": ["dog", "fox", "red"], "k": 6, "fusion": "linear", "weights": (0.2, 0.8)},
        {"queries": q, "keyword": "dogs", "k": 3, "rrf_k": 10, "candidates": 20, "offset": 2},
    ]

    async def scenario() -> tuple[Any, list[Any]]:
        async with AsyncClient(address) as ac:
            await ac.create_collection(name, 4)
            await ac.add(name, np.arange(len(texts)), data, payloads=[{"body": t, "i": i} for i, t in enumerate(texts)])
            info = await ac.create_payload_index(name, "body", "text", stemmer="english", stopwords="english", k1=1.5)
            with pytest.raises(InvalidArgument, match="fusion must be"):
                await ac.search(name, q, keyword="x", fusion="rff")
            return info, [await ac.search(name, **s) for s in searches]

    info, results = asyncio.run(scenario())
    text = info.text_indexes["body"]
    assert (text.stemmer, text.stopwords, text.k1, text.b) == ("english", "english", 1.5, 0.75)
    with Client(address) as c:
        try:
            assert c.describe(name).text_indexes["body"] == text
            for s, got in zip(searches, results, strict=True):
                want = c.search(name, **s)
                np.testing.assert_array_equal(got.ids, want.ids)
                np.testing.assert_array_equal(got.distances, want.distances)
                assert got.higher_is_better and list(got.hits()) == list(want.hits())
            assert any(h.dense is not None and h.keyword is not None for h in next(results[1].hits()))
        finally:
            c.drop_collection(name)
