"""The SDK surface: AsyncClient equals Client, bulk upload, retries, typed results, raw stubs, and
the README's Python snippets run as written against a live cluster."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from vecshard import AsyncClient, Client, InvalidArgument, wire
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cluster.local import LocalCluster

from .conftest import clustered

ROOT = Path(__file__).resolve().parents[1]


def test_async_client_answers_as_the_sync_client(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    address = cluster_of(2).address
    data = clustered(500, 8, seed=4)

    async def build_and_search() -> tuple[object, ...]:
        async with AsyncClient(address) as ac:
            await ac.create_collection(name, 8, index="ivf_flat", nlist=4)
            await ac.add(name, np.arange(500), data)
            info = await ac.train(name)
            res = await ac.search(name, data[:7], k=4, nprobe=2)
            got = await ac.get(name, [5, 9])
            names = [i.name for i in await ac.list_collections()]
            await ac.close()  # idempotent with the context manager's close
        return info, res, got, names

    async def remove() -> int:
        async with AsyncClient(address) as ac:
            return await ac.remove(name, [1, 2])

    info, res, got, names = asyncio.run(build_and_search())
    with Client(address) as c:
        assert info.trained and name in names  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got, c.get(name, [5, 9]))
        sync = c.search(name, data[:7], k=4, nprobe=2)
        np.testing.assert_array_equal(res.ids, sync.ids)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(res.distances, sync.distances)  # type: ignore[attr-defined]
        hits = list(sync.hits())
        assert len(hits) == 7 and hits[0][0].id == sync.ids[0, 0] and hits[0][0].distance == sync.distances[0, 0]
        assert asyncio.run(remove()) == 2
        assert c.describe(name).count == 498
        c.drop_collection(name)


def test_upload_from_memmap_and_iterators(cluster_of: Callable[[int], LocalCluster], name: str, tmp_path: Path) -> None:
    c = Client(cluster_of(2).address)
    data = clustered(5000, 16, seed=8)
    np.save(tmp_path / "v.npy", data)
    c.create_collection(name, 16)
    result = c.upload(
        name, range(5000), np.load(tmp_path / "v.npy", mmap_mode="r"), batch_size=700, parallel=3, progress=True
    )
    assert (result.added, result.count) == (5000, 5000)
    np.testing.assert_array_equal(c.get(name, [0, 4999, 2500]), data[[0, 4999, 2500]])
    rows = (data[i] + 1 for i in range(300))  # a generator of rows, upserting ids 0..299
    result = c.upload(name, iter(range(300)), rows, batch_size=64)
    assert (result.added, result.replaced) == (0, 300)
    np.testing.assert_array_equal(c.get(name, [299]), data[[299]] + 1)
    with pytest.raises(InvalidArgument, match="ran out of inputs"):
        c.upload(name, range(10), iter(data[:5]))
    c.drop_collection(name)
    c.close()


class _Flaky(pb_grpc.VectorSearchServicer):
    """A real gRPC server that answers UNAVAILABLE twice, then OK (to observe the client's retries)."""

    def __init__(self) -> None:
        self.calls = 0

    def ListCollections(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return pb.ListCollectionsResponse()

    def Search(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad k")

    def Remove(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "maybe applied on some groups")


def test_retries_unavailable_but_never_invalid_argument() -> None:
    flaky = _Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_VectorSearchServicer_to_server(flaky, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=30) as c:
            assert c.list_collections() == []
            assert flaky.calls == 3
            with pytest.raises(InvalidArgument, match="bad k"):
                c.search("x", np.zeros((1, 2)), k=1)
            assert flaky.calls == 4  # not retried
            # A write that met UNAVAILABLE may have been applied somewhere: replaying it behind the
            # caller's back, after another client's later write, would undo that write. Not retried.
            from vecshard import Unavailable

            with pytest.raises(Unavailable, match="maybe applied"):
                c.remove("x", [1])
            assert flaky.calls == 5
        with Client(f"127.0.0.1:{port}", timeout=30, retries=False) as c:
            flaky.calls = 0
            with pytest.raises(Exception, match="try again"):
                c.list_collections()
            assert flaky.calls == 1
    finally:
        server.stop(0)


def test_raw_stubs_give_the_sdk_answers(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    address = cluster_of(3).address
    data = clustered(400, 8, seed=12)
    with Client(address) as c:
        c.create_collection(name, 8, metric="inner_product")
        c.add(name, np.arange(400) * 3, data)
        sdk = c.search(name, data[:5], k=6)
    with grpc.insecure_channel(address) as channel:  # only the generated code from here on
        stub = pb_grpc.VectorSearchStub(channel)
        resp = stub.Search(
            pb.SearchRequest(
                collection=name,
                k=6,
                queries=types_pb2.FloatMatrix(data=data[:5].astype("<f4").tobytes(), rows=5, cols=8),
            )
        )
        ids = np.frombuffer(resp.ids, dtype="<i8").reshape(resp.nq, resp.k)
        dist = np.frombuffer(resp.distances, dtype="<f4").reshape(resp.nq, resp.k)
        np.testing.assert_array_equal(ids, sdk.ids)
        np.testing.assert_array_equal(dist, sdk.distances)
        stub.DropCollection(pb.DropCollectionRequest(name=name))
    assert wire.F32.str == "<f4"


def test_close_is_idempotent_and_threads_share_a_client(cluster_of: Callable[[int], LocalCluster]) -> None:
    c = Client(cluster_of(2).address)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                c.list_collections()
        except BaseException as err:  # re-raised below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    c.close()
    c.close()


def test_a_collection_info_stands_for_its_name(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    """What list_collections()/describe() return can be handed back wherever a name is taken."""
    from vecshard import NotFound

    with Client(cluster_of(2).address) as c:
        c.create_collection(name, 4)
        info = next(i for i in c.list_collections() if i.name == name)
        c.add(info, [1, 2], np.eye(2, 4, dtype=np.float32))
        assert c.describe(info).count == 2
        assert c.search(info, np.eye(1, 4, dtype=np.float32), k=1).ids[0][0] == 1
        c.drop_collection(info)
        assert name not in [i.name for i in c.list_collections()]
        with pytest.raises(NotFound, match="does not exist: nothing to drop"):
            c.drop_collection(info)
        with pytest.raises(TypeError, match="by its name \\(str\\) or a CollectionInfo, not int"):
            c.drop_collection(42)  # type: ignore[arg-type]


def test_keyword_and_hybrid_requests_and_results_without_a_server() -> None:
    """search's keyword options as sent (one text or one per query; the fusion only for a hybrid
    search, linear implied by weights, rrf_k only when not 60), the local refusals, and a hybrid
    reply's leg columns read into each Hit's `dense` and `keyword` (None where absent)."""
    from vecshard import LegScore, build

    q = np.ones((2, 4), np.float32)
    alone = build.search("c", None, 5, None, None, None, False, "", keywords=build.Keywords("red fox"))
    assert list(alone.keywords) == ["red fox"] and not alone.queries.data and alone.fusion == 0
    hybrid = build.search("c", q, 5, None, None, None, False, "", keywords=build.Keywords(["a", "b"], weights=(1, 2)))
    assert (hybrid.fusion, list(hybrid.weights), hybrid.rrf_k) == (pb.FUSION_LINEAR, [1.0, 2.0], 0)
    rrf = build.search("c", q, 5, None, None, None, False, "", keywords=build.Keywords("a", "body", "RRF", 7, None, 50))
    assert (rrf.fusion, rrf.rrf_k, rrf.candidates, rrf.keyword_field) == (pb.FUSION_RRF, 7, 50, "body")
    for bad, what in [
        (build.Keywords("a", fusion="rff"), "fusion must be"),
        (build.Keywords("a", weights=(1, -1)), "weights are"),
        (build.Keywords("a", weights=(1, float("nan"))), "weights are"),
        (build.Keywords("a", rrf_k=0), "rrf_k must be"),
        (build.Keywords("a", candidates=0), "candidates must be"),
        (build.Keywords([]), "keyword must be"),
        (build.Keywords(None, fusion="rrf"), "with keyword="),
    ]:
        with pytest.raises(InvalidArgument, match=what):
            build.search("c", q, 5, None, None, None, False, "", keywords=bad)
    with pytest.raises(InvalidArgument, match="to hybrid searches"):
        build.search("c", None, 5, None, None, None, False, "", keywords=build.Keywords("a", fusion="linear"))
    resp = pb.SearchResponse(
        nq=1,
        k=3,
        ids=np.array([[7, 3, -1]], "<i8").tobytes(),
        distances=np.array([[0.5, 0.25, -1.0]], "<f4").tobytes(),
        higher_is_better=True,
        dense_scores=np.array([[1.5, np.nan, np.nan]], "<f4").tobytes(),
        dense_ranks=np.array([[2, 0, 0]], "<i4").tobytes(),
        keyword_scores=np.array([[9.0, 4.0, np.nan]], "<f4").tobytes(),
        keyword_ranks=np.array([[1, 3, 0]], "<i4").tobytes(),
    )
    result = build.search_result(resp)
    assert result.higher_is_better
    hits = next(result.hits())
    assert [(h.id, h.dense, h.keyword) for h in hits] == [
        (7, LegScore(1.5, 2), LegScore(9.0, 1)),
        (3, None, LegScore(4.0, 3)),
    ]
    plain = build.search_result(pb.SearchResponse(nq=1, k=1, ids=np.zeros(1, "<i8").tobytes(), distances=b"\0" * 4))
    assert next(plain.hits())[0].dense is None and not plain.higher_is_better
