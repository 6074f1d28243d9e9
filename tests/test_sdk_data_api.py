"""The SDK's side of the data API (#25): string ids, on_conflict, payload-only points, update_vectors,
search with_vectors / by_ids / group_by, recommend, scroll order_by and cursors, facet, and the
datetime payload index.

First the requests the SDK builds and the answers it reads (checked without a server, on the
messages themselves, plus a real gRPC server that records what the clients send, for what only a
whole call shows: paging, parity of Client and AsyncClient, nothing sent on bad input); then the
whole data API against real clusters (1 and 3 shards, both shard modes), checked against faiss."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import faiss
import grpc
import numpy as np
import pytest

from vecshard import AlreadyExists, AsyncClient, Client, FacetCount, Group, Hit, InvalidArgument, Point, build, wire
from vecshard.types import CollectionInfo
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cluster.local import LocalCluster

MB = 4 << 20


def _ids(req: Any, field: str = "ids") -> list[int]:
    return np.frombuffer(getattr(req, field), dtype="<i8").tolist()


# -- ids: int or str, by the elements' type ---------------------------------------------------------


def test_ids_are_int_or_str_by_their_elements() -> None:
    assert wire.as_any_ids(["a", "b"]) == ["a", "b"]
    assert wire.as_any_ids(np.array(["x", "yz"])) == ["x", "yz"]
    assert wire.as_any_ids(np.array(["u", "v"], dtype=object)) == ["u", "v"]
    assert wire.as_any_ids("solo") == ["solo"]  # one str is one id, as one int is
    assert wire.as_any_ids(("k",)) == ["k"]
    for ints in ([1, 2], (1, 2), np.array([1, 2]), range(1, 3), np.array([1, 2], dtype=object)):
        got = wire.as_any_ids(ints)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64 and got.tolist() == [1, 2]
    assert wire.as_any_ids(7).tolist() == [7]  # type: ignore[union-attr]
    assert wire.as_any_ids([]).tolist() == []  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match=r"mix str and int ids \('a' and 1\)"):
        wire.as_any_ids(["a", 1])
    with pytest.raises(InvalidArgument, match="mix str and int"):
        wire.as_any_ids(np.array([3, "b"], dtype=object))
    with pytest.raises(InvalidArgument, match="must be integers"):
        wire.as_any_ids([1.5, 2.0])


def test_string_ids_are_checked_before_anything_is_sent() -> None:
    wire.check_string_ids(["a", "é" * 128, "x" * 256])
    with pytest.raises(InvalidArgument, match="is empty"):
        wire.check_string_ids([])
    with pytest.raises(InvalidArgument, match=r"ids\[1\] has 0 bytes"):
        wire.check_string_ids(["a", ""])
    with pytest.raises(InvalidArgument, match=r"ids\[0\] has 257 bytes"):
        wire.check_string_ids(["x" * 257])
    with pytest.raises(InvalidArgument, match="not valid UTF-8"):
        wire.check_string_ids(["\ud800"])
    with pytest.raises(InvalidArgument, match="'b' appears more than once"):
        wire.check_string_ids(["a", "b", "c", "b"])


# -- add: string ids, on_conflict, payload-only points ----------------------------------------------


def test_add_batches_send_string_ids_in_their_own_field_and_fit_the_message_limit() -> None:
    ids = [f"doc-{i:05d}-" + "x" * 200 for i in range(3000)]
    x = np.random.default_rng(0).random((3000, 64), dtype=np.float32)
    reqs = build.add_batches("c", ids, x, max_message_bytes=1 << 20)
    assert len(reqs) > 1 and all(r.ByteSize() <= 1 << 20 for r in reqs)
    assert [s for r in reqs for s in r.string_ids] == ids and all(not r.ids for r in reqs)
    np.testing.assert_array_equal(np.vstack([wire.unpack_matrix(r.vectors) for r in reqs]), x)
    ints = build.add_batches("c", np.arange(10), x[:10], max_message_bytes=MB)  # int ids as before
    assert len(ints) == 1 and _ids(ints[0]) == list(range(10)) and not ints[0].string_ids
    with pytest.raises(InvalidArgument, match="'doc-00001"):
        build.add_batches("c", [ids[0], ids[1], ids[1]], x[:3], max_message_bytes=MB)
    with pytest.raises(InvalidArgument, match="got 2 ids for 3 vectors"):
        build.add_batches("c", ["a", "b"], x[:3], max_message_bytes=MB)


@pytest.mark.parametrize(
    ("upsert", "on_conflict", "sent"),
    [
        (False, None, (False, pb.ON_CONFLICT_UNSPECIFIED)),
        (True, None, (True, pb.ON_CONFLICT_UNSPECIFIED)),  # what servers before on_conflict read
        (False, "fail", (False, pb.ON_CONFLICT_FAIL)),
        (False, "skip", (False, pb.ON_CONFLICT_SKIP)),
        (False, "replace", (True, pb.ON_CONFLICT_REPLACE)),
        (True, "replace", (True, pb.ON_CONFLICT_REPLACE)),
        (False, "SKIP", (False, pb.ON_CONFLICT_SKIP)),
    ],
)
def test_on_conflict_and_its_upsert_alias(upsert: bool, on_conflict: str | None, sent: tuple[bool, int]) -> None:
    (req,) = build.add_batches("c", [1], np.ones((1, 4)), upsert=upsert, on_conflict=on_conflict, max_message_bytes=MB)
    assert (req.upsert, req.on_conflict) == sent


def test_on_conflict_refuses_misspellings_and_contradictions() -> None:
    with pytest.raises(InvalidArgument, match="one of 'fail', 'skip', 'replace'.*'skipp'"):
        build.conflict(False, "skipp")
    with pytest.raises(InvalidArgument, match="upsert=True means on_conflict='replace', not 'skip'"):
        build.conflict(True, "skip")
    with pytest.raises(InvalidArgument, match="not 'fail'"):
        build.conflict(True, "fail")


def test_payload_only_points_carry_no_vectors_texts_or_images() -> None:
    payloads = [{"i": i, "tag": "p" * 1000} for i in range(2000)]
    reqs = build.add_batches("c", [f"p{i}" for i in range(2000)], None, payloads=payloads, max_message_bytes=1 << 20)
    assert len(reqs) > 1 and all(r.ByteSize() <= 1 << 20 for r in reqs)
    for r in reqs:
        assert not r.HasField("vectors") and not r.texts and not r.images
        assert len(r.payloads) == len(r.string_ids)
    assert sum(len(r.payloads) for r in reqs) == 2000
    with pytest.raises(InvalidArgument, match="payloads alone"):
        build.add_batches("c", [1], None, max_message_bytes=MB)
    with pytest.raises(InvalidArgument, match="got 1 payloads for 2 points"):
        build.add_batches("c", [1, 2], None, payloads=[{}], max_message_bytes=MB)


def test_upload_and_paced_batches_take_string_ids_from_sequences_and_iterators() -> None:
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    ids = [f"k{i}" for i in range(10)]
    for source in (ids, iter(ids), np.array(ids)):
        out = list(build.upload_batches("c", source, x, batch_size=4, upsert=True))
        assert [n for n, _ in out] == [4, 4, 2]
        assert [s for _, r in out for s in r.string_ids] == ids and all(r.upsert for _, r in out)
    packed = build.payloads_of([{"i": i} for i in range(10)], 10)
    only = list(build.upload_batches("c", ids, batch_size=6, upsert=False, payloads=packed, on_conflict="skip"))
    assert [len(r.payloads) for _, r in only] == [6, 4] and not any(r.HasField("vectors") for _, r in only)
    assert {r.on_conflict for _, r in only} == {pb.ON_CONFLICT_SKIP}
    pacer = build.EmbedPacer(60.0, maximum=3)
    texts = list(build.paced_adds("c", iter(ids[:5]), ["t"] * 5, "texts", pacer, upsert=False, on_conflict="skip"))
    assert [list(r.string_ids) for _, r in texts] == [ids[:3], ids[3:5]]
    assert all(r.on_conflict == pb.ON_CONFLICT_SKIP and list(r.texts) == ["t"] * n for n, r in texts)


def test_add_result_sums_skipped() -> None:
    r = build.add_result([pb.AddResponse(added=2, skipped=3, count=5), pb.AddResponse(added=1, skipped=1, count=6)])
    assert (r.added, r.replaced, r.count, r.skipped) == (3, 0, 6, 4)


# -- update_vectors ---------------------------------------------------------------------------------


def test_update_vectors_requests() -> None:
    x = np.ones((3, 4), dtype=np.float32)
    (req,) = build.update_vector_batches("c", ["a", "b", "c"], x, model_fingerprint="fp", max_message_bytes=MB)
    assert list(req.string_ids) == ["a", "b", "c"] and req.model_fingerprint == "fp" and not req.ids
    np.testing.assert_array_equal(wire.unpack_matrix(req.vectors), x)
    (req,) = build.update_vector_batches("c", [5, 6, 7], x, max_message_bytes=MB)
    assert _ids(req) == [5, 6, 7]
    with pytest.raises(InvalidArgument, match="got 2 ids for 3 vectors"):
        build.update_vector_batches("c", [1, 2], x, max_message_bytes=MB)
    paced = list(build.update_vectors_inputs("c", ["a", "b"], ["t1", "t2"], "texts", build.EmbedPacer(60.0), ""))
    assert [(list(r.string_ids), list(r.texts)) for _, r in paced] == [(["a", "b"], ["t1", "t2"])]


# -- search: by_ids, with_vectors, group_by; recommend -----------------------------------------------


def test_search_by_ids_with_vectors_and_groups() -> None:
    req = build.search("c", None, 5, None, None, None, False, "", by_ids=[3, 9], with_vectors=True)
    assert _ids(req, "query_ids") == [3, 9] and not req.HasField("queries") and req.with_vectors
    assert not req.group_by
    req = build.search("c", None, 5, None, None, None, False, "", by_ids=["a", "b"], group_by="album", group_size=2)
    assert list(req.query_string_ids) == ["a", "b"] and not req.query_ids
    assert (req.group_by, req.group_size) == ("album", 2)
    req = build.search("c", np.ones((1, 4)), 5, None, None, None, False, "", "x = 1", True, 0, 2, 0.5)
    assert req.HasField("filter") and req.with_payload.enable and req.offset == 2 and req.score_threshold == 0.5
    with pytest.raises(InvalidArgument, match="exactly one of queries, texts, images, by_ids"):
        build.search("c", np.ones((1, 4)), 5, None, None, None, False, "", by_ids=[1])
    with pytest.raises(InvalidArgument, match="group_size must be >= 1"):
        build.search("c", np.ones((1, 4)), 5, None, None, None, False, "", group_by="g", group_size=0)
    with pytest.raises(InvalidArgument, match="group_by must name a payload field"):
        build.search("c", np.ones((1, 4)), 5, None, None, None, False, "", group_by="")
    with pytest.raises(InvalidArgument, match="by_ids is empty"):
        build.search("c", None, 5, None, None, None, False, "", by_ids=[])


def test_recommend_requests() -> None:
    req = build.recommend("c", [1, 2], [3], 4, None, False, True, 1, None, 2)
    assert req.HasField("recommend") and not req.HasField("queries")
    assert _ids(req.recommend, "positive") == [1, 2] and _ids(req.recommend, "negative") == [3]
    assert (req.k, req.nprobe, req.offset, req.with_vectors) == (4, 2, 1, True)
    req = build.recommend("c", ["a"], (), 4, "x = 1", True, False, 0, 0.25, 0)
    assert list(req.recommend.positive_string_ids) == ["a"] and not req.recommend.negative_string_ids
    assert req.HasField("filter") and req.score_threshold == 0.25
    with pytest.raises(InvalidArgument, match="positive is empty"):
        build.recommend("c", [], [1], 4, None, False, False, 0, None, 0)
    with pytest.raises(InvalidArgument, match="mix str and int"):
        build.recommend("c", ["a"], [1], 4, None, False, False, 0, None, 0)


def _response(nq: int, k: int, ids: list[list[int]], dim: int = 0, strings: list[list[str]] | None = None) -> Any:
    flat = np.array(ids, dtype="<i8").reshape(-1)
    d = np.where(flat >= 0, np.arange(flat.size, dtype=np.float32), np.float32(3.4028235e38))
    resp = pb.SearchResponse(nq=nq, k=k, ids=flat.tobytes(), distances=d.astype("<f4").tobytes())
    if strings is not None:
        resp.string_ids.extend(s for row in strings for s in row)
    if dim:
        v = np.arange(flat.size * dim, dtype=np.float32).reshape(flat.size, dim)
        resp.vectors.CopyFrom(wire.pack_matrix(v))
    return resp


def test_search_results_with_string_ids_and_vectors() -> None:
    resp = _response(2, 3, [[11, 12, -1], [13, -1, -1]], dim=2, strings=[["a", "b", ""], ["c", "", ""]])
    resp.payloads.extend([ppb.Payload(fields={"n": ppb.Value(int_value=i)}) for i in range(6)])
    r = build.search_result(resp)
    assert r.ids.dtype == object and r.ids.tolist() == [["a", "b", None], ["c", None, None]]
    assert r.vectors is not None and r.vectors.shape == (2, 3, 2)
    hits = list(r.hits())
    assert [[h.id for h in row] for row in hits] == [["a", "b"], ["c"]]
    assert [h.payload for h in hits[0]] == [{"n": 0}, {"n": 1}] and r.payloads and r.payloads[0][2] is None
    assert hits[1][0].vector is not None and hits[1][0].vector.tolist() == [6.0, 7.0]
    D, I = r  # still unpacks like faiss
    assert D.shape == I.shape == (2, 3)
    plain = build.search_result(_response(1, 2, [[4, -1]]))  # int ids: as before
    assert plain.ids.dtype == np.int64 and plain.vectors is None and [h.id for h in next(plain.hits())] == [4]
    assert isinstance(next(plain.hits())[0].id, int)


def test_grouped_search_results() -> None:
    g1 = pb.HitGroup(
        value=ppb.Value(string_value="rock"),
        string_ids=["s1", "s2"],
        distances=np.array([0.5, 0.7], dtype="<f4").tobytes(),
        payloads=[ppb.Payload(fields={"a": ppb.Value(bool_value=True)}), ppb.Payload()],
        vectors=wire.pack_matrix(np.eye(2, dtype=np.float32)),
    )
    g2 = pb.HitGroup(value=ppb.Value(int_value=7), string_ids=["s3"], distances=np.array([0.9], "<f4").tobytes())
    resp = pb.SearchResponse(nq=2, k=2, groups=[pb.GroupedHits(groups=[g1, g2]), pb.GroupedHits()])
    r = build.search_result(resp)
    assert r.groups is not None and len(r.groups) == 2 and r.groups[1] == []
    first, second = r.groups[0]
    assert isinstance(first, Group) and (first.value, second.value) == ("rock", 7)
    assert [(h.id, round(h.distance, 3), h.payload) for h in first.hits] == [
        ("s1", 0.5, {"a": True}),
        ("s2", 0.7, {}),
    ]
    assert first.hits[1].vector is not None and first.hits[1].vector.tolist() == [0.0, 1.0]
    assert second.hits == [Hit("s3", pytest.approx(0.9), None)]
    assert r.ids.shape == r.distances.shape == (2, 0)
    assert [[h.id for h in row] for row in r.hits()] == [["s1", "s2", "s3"], []]
    ints = pb.HitGroup(value=ppb.Value(bool_value=False), ids=np.array([5], "<i8").tobytes(), distances=b"\0" * 4)
    (only,) = build.search_result(pb.SearchResponse(nq=1, k=1, groups=[pb.GroupedHits(groups=[ints])])).groups[0]
    assert only.value is False and only.hits[0].id == 5


# -- scroll, get/retrieve, facet, remove and set_payload --------------------------------------------


def test_scroll_order_and_cursor() -> None:
    req = build.scroll("c", None, True, False, 0, 50, "year", "desc")
    assert req.order_by.key == "year" and req.order_by.descending
    assert not build.scroll("c", None, True, False, 0, 50).HasField("order_by")
    with pytest.raises(InvalidArgument, match="order must be 'asc' or 'desc'"):
        build.scroll("c", None, True, False, 0, 50, "year", "down")
    with pytest.raises(InvalidArgument, match="order='desc' needs order_by"):
        build.scroll("c", None, True, False, 0, 50, None, "desc")
    assert build.next_page(req, pb.ScrollResponse(next_cursor=b"abc", next_start_id=9)) and req.cursor == b"abc"
    assert req.start_id == 0
    old = build.scroll("c", None, True, False, 0, 50)
    assert not build.next_page(old, pb.ScrollResponse(next_start_id=42, done=True)) and old.start_id == 42


def test_scroll_pages_and_get_answers_with_string_ids_and_vectorless_points() -> None:
    v = wire.pack_matrix(np.array([[1, 2], [0, 0]], dtype=np.float32))
    page = pb.ScrollResponse(ids=np.array([8, 9], "<i8").tobytes(), string_ids=["a", "b"], vectors=v)
    page.has_vector = bytes([1, 0])
    points = build.scroll_page(page, with_vectors=True)
    assert [p.id for p in points] == ["a", "b"] and points[1].vector is None
    assert points[0].vector is not None and points[0].vector.tolist() == [1.0, 2.0]
    older = pb.ScrollResponse(ids=np.array([8, 9], "<i8").tobytes(), vectors=v)  # no has_vector: all have one
    assert all(p.vector is not None for p in build.scroll_page(older, with_vectors=True))
    assert build.scroll_page(older, with_vectors=False) == [Point(8), Point(9)]
    req = build.get("c", ["a", "b", "zz"], True, True)
    assert list(req.string_ids) == ["a", "b", "zz"] and not req.ids
    resp = pb.GetResponse(vectors=wire.pack_matrix(np.array([[1, 2], [0, 0], [0, 0]], np.float32)))
    resp.found, resp.has_vector = bytes([1, 1, 0]), bytes([1, 0, 0])
    got = build.points(resp, ["a", "b", "zz"], with_vectors=True)
    assert [p.id if p else None for p in got] == ["a", "b", None]
    assert got[0] and got[0].vector is not None and got[1] and got[1].vector is None
    rows = build.get_result(resp, allow_missing=True)
    assert rows[0].tolist() == [1.0, 2.0] and np.isnan(rows[1:]).all()


def test_facet_remove_and_set_payload_requests() -> None:
    req = build.facet("c", "lang", "year >= 2020", 3)
    assert (req.key, req.limit) == ("lang", 3) and req.HasField("filter")
    with pytest.raises(InvalidArgument, match="limit must be 1 to 10,000"):
        build.facet("c", "lang", None, 0)
    with pytest.raises(InvalidArgument, match="needs a payload field"):
        build.facet("c", "", None, 10)
    counts = pb.FacetResponse(
        counts=[pb.FacetCount(value=ppb.Value(string_value="en"), count=5), pb.FacetCount(value=ppb.Value(int_value=3))]
    )
    assert build.facet_counts(counts) == [FacetCount("en", 5), FacetCount(3, 0)]
    assert list(build.remove("c", ["a", "b"]).string_ids) == ["a", "b"]
    assert _ids(build.remove("c", [1, 2])) == [1, 2]
    req = build.set_payload("c", {"x": 1}, ["a"], None, "merge")
    assert list(req.string_ids) == ["a"] and not req.ids
    with pytest.raises(InvalidArgument, match="mix str and int"):
        build.remove("c", ["a", 2])


def test_collections_with_string_ids_and_the_datetime_index() -> None:
    req = build.create_collection("c", 4, "l2", "flat", 0, 0, 0, None, id_type="string")
    assert req.config.id_type == types_pb2.ID_TYPE_STRING
    assert build.create_collection("c", 4, "l2", "flat", 0, 0, 0, None).config.id_type == types_pb2.ID_TYPE_INT
    with pytest.raises(InvalidArgument, match="unknown id_type 'uuid'"):
        build.create_collection("c", 4, "l2", "flat", 0, 0, 0, None, id_type="uuid")
    config = types_pb2.CollectionConfig(
        name="c", dim=4, metric=1, index_type=1, id_type=types_pb2.ID_TYPE_STRING, string_id_hash_bits=63
    )
    info = CollectionInfo.from_proto(pb.CollectionInfo(config=config))
    assert (info.id_type, info.string_ids, info.string_id_hash_bits) == ("string", True, 63)
    assert (
        CollectionInfo.from_proto(pb.CollectionInfo(config=types_pb2.CollectionConfig(metric=1, index_type=1))).id_type
        == "int"
    )
    req = build.create_payload_index("c", "published", "datetime")
    assert req.type == ppb.PAYLOAD_INDEX_TYPE_DATETIME
    with pytest.raises(InvalidArgument, match="keyword, integer, float, bool, datetime"):
        build.create_payload_index("c", "published", "date")


# -- whole calls, on a real gRPC server that records them --------------------------------------------


class _Recorder(pb_grpc.VectorSearchServicer):
    """Answers Add, UpdateVectors and Scroll (three pages by cursor) and records each request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Add(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        n = len(request.string_ids) or len(request.ids) // 8
        return pb.AddResponse(added=n - 1, skipped=1, count=n)

    def UpdateVectors(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.UpdateVectorsResponse(updated=len(request.string_ids) or len(request.ids) // 8)

    def Scroll(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        page = int(request.cursor or b"0")
        return pb.ScrollResponse(
            ids=np.array([page], "<i8").tobytes(),
            string_ids=[f"p{page}"],
            next_cursor=str(page + 1).encode(),
            next_start_id=123,  # not to be used: a cursor was sent
            done=page == 2,
        )


@pytest.fixture
def recorder() -> Iterator[tuple[_Recorder, str]]:
    servicer = _Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_VectorSearchServicer_to_server(servicer, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    yield servicer, address
    server.stop(0)


def _both(address: str, call: Callable[[Any], Any]) -> list[Any]:
    """call(client) with a Client, then awaited with an AsyncClient (async generators are listed)."""
    with Client(address, timeout=30) as c:
        sync = call(c)
        sync = list(sync) if isinstance(sync, Iterator) else sync

    async def go() -> Any:
        async with AsyncClient(address, timeout=30) as ac:
            out = call(ac)
            if hasattr(out, "__aiter__"):
                return [x async for x in out]
            return await out

    return [sync, asyncio.run(go())]


def test_both_clients_send_the_same_data_api_calls(recorder: tuple[_Recorder, str]) -> None:
    servicer, address = recorder
    x = np.ones((3, 4), dtype=np.float32)
    results = _both(address, lambda c: c.add("c", ["a", "b", "c"], x, on_conflict="skip"))
    assert results[0] == results[1] and (results[0].added, results[0].skipped) == (2, 1)
    results = _both(address, lambda c: c.add("c", [1, 2], payloads=[{"a": 1}, None]))
    assert results[0].count == 2
    results = _both(address, lambda c: c.update_vectors("c", ["a", "b"], x[:2]))
    assert results == [2, 2]
    results = _both(address, lambda c: c.scroll("c", order_by="year", order="desc", page_size=1))
    assert [[p.id for p in r] for r in results] == [["p0", "p1", "p2"]] * 2
    adds, payload_only, updates, scrolls = (servicer.requests[i : i + 2] for i in (0, 2, 4, 6))
    assert (
        adds[0] == adds[1]
        and adds[0].on_conflict == pb.ON_CONFLICT_SKIP
        and list(adds[0].string_ids) == ["a", "b", "c"]
    )
    assert payload_only[0] == payload_only[1] and not payload_only[0].HasField("vectors")
    assert updates[0] == updates[1]
    pages = servicer.requests[6:]
    assert [r.cursor for r in pages] == [b"", b"1", b"2"] * 2 and all(r.order_by.descending for r in pages)
    assert all(r.start_id == 0 for r in pages) and scrolls[0].order_by.key == "year"


def test_bad_input_sends_nothing(recorder: tuple[_Recorder, str]) -> None:
    servicer, address = recorder
    x = np.ones((2, 4), dtype=np.float32)
    with Client(address, timeout=30) as c:
        with pytest.raises(InvalidArgument, match="on_conflict must be one of"):
            c.add("c", [1, 2], x, on_conflict="overwrite")
        with pytest.raises(InvalidArgument, match="upsert=True means"):
            c.add("c", [1, 2], x, upsert=True, on_conflict="skip")
        with pytest.raises(InvalidArgument, match="upsert=True means"):
            c.upload("c", [1, 2], x, upsert=True, on_conflict="fail")
        with pytest.raises(InvalidArgument, match="mix str and int"):
            c.add("c", ["a", 2], x)
        with pytest.raises(InvalidArgument, match="more than once"):
            c.add("c", ["a", "a"], x, batch_size=1)  # the whole batch is checked before its first chunk
        with pytest.raises(InvalidArgument, match="unknown id_type"):
            c.create_collection("c", 4, id_type="str")
        with pytest.raises(InvalidArgument, match="order must be"):
            list(c.scroll("c", order_by="x", order="up"))
        with pytest.raises(InvalidArgument, match="exactly one of vectors, texts, images"):
            c.update_vectors("c", [1], None)
    assert servicer.requests == []


# -- the data API against real clusters -------------------------------------------------------------

DIM = 8
N = 300


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=60) as c:
        yield c


def _data(seed: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _exact(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatL2(DIM)
    index.add(x)
    return index.search(q, k)


STRING_IDS = [f"doc-{i:04d}" for i in range(N - 3)] + ["é/ü 🙂 #1", "x" * 256, "1234"]


def test_string_ids_round_trip(client: Client, name: str) -> None:
    """A string-id collection takes and returns str ids in every call; the ids' strings never leak
    into payloads; on_conflict and its upsert alias decide what a repeated id does."""
    x = _data(1)
    info = client.create_collection(name, DIM, id_type="string")
    assert info.id_type == "string" and client.describe(name).string_ids
    try:
        payloads = [{"i": i} for i in range(N)]
        assert client.add(name, STRING_IDS, x, payloads=payloads, batch_size=64).added == N
        got = client.retrieve(name, [STRING_IDS[5], "missing", STRING_IDS[-2]], with_vectors=True)
        assert [p.id if p else None for p in got] == [STRING_IDS[5], None, STRING_IDS[-2]]
        assert got[0] and got[0].payload == {"i": 5} and got[0].vector is not None
        np.testing.assert_array_equal(got[0].vector, x[5])
        np.testing.assert_array_equal(client.get(name, STRING_IDS[-3:]), x[-3:])
        scrolled = {p.id: p.payload for p in client.scroll(name, page_size=37)}
        assert scrolled == dict(zip(STRING_IDS, payloads, strict=True))
        assert sorted(p.id for p in client.scroll(name, "i >= 297")) == sorted(STRING_IDS[-3:])
        # on_conflict: a batch of one stored and one new id
        with pytest.raises(AlreadyExists):
            client.add(name, [STRING_IDS[0], "new-a"], x[:2])
        assert client.retrieve(name, ["new-a"]) == [None]  # nothing of the failed batch is kept
        skipped = client.add(name, [STRING_IDS[0], "new-a"], x[2:4], payloads=[{"s": 1}, {"s": 2}], on_conflict="skip")
        assert (skipped.added, skipped.skipped, skipped.replaced, skipped.count) == (1, 1, 0, N + 1)
        assert [p.payload if p else None for p in client.retrieve(name, [STRING_IDS[0], "new-a"])] == [
            {"i": 0},
            {"s": 2},
        ]
        replaced = client.add(name, [STRING_IDS[0]], x[9:10], upsert=True)
        assert (replaced.added, replaced.replaced) == (0, 1)
        np.testing.assert_array_equal(client.get(name, [STRING_IDS[0]]), x[9:10])
        again = client.add(name, [STRING_IDS[0]], x[:1], payloads=[{"i": 0}], on_conflict="replace")
        assert again.replaced == 1
        # payload writes and removal by string id
        assert client.set_payload(name, {"tag": "t"}, ids=[STRING_IDS[1], "nope"]) == 1
        assert client.retrieve(name, [STRING_IDS[1]])[0].payload == {"i": 1, "tag": "t"}  # type: ignore[union-attr]
        assert client.remove(name, [STRING_IDS[2], "new-a", "nope"]) == 2
        assert client.count(name) == N - 1 and client.retrieve(name, [STRING_IDS[2]]) == [None]
        with pytest.raises(InvalidArgument, match="mix str and int"):
            client.remove(name, [STRING_IDS[3], 4])
    finally:
        client.drop_collection(name)


def test_search_in_a_string_id_collection_matches_faiss(client: Client, name: str) -> None:
    """Search answers with the str ids of the points faiss finds, padding with None; by_ids and
    recommend take str ids; hits, groups and vectors carry them."""
    x, q = _data(2), _data(3, 4)
    client.create_collection(name, DIM, id_type="string")
    try:
        client.add(name, STRING_IDS, x, payloads=[{"g": i % 4} for i in range(N)])
        D0, I0 = _exact(x, q, 10)
        r = client.search(name, q, k=10, with_vectors=True)
        assert r.ids.tolist() == [[STRING_IDS[i] for i in row] for row in I0]
        np.testing.assert_allclose(r.distances, D0, rtol=1e-4, atol=1e-4)
        assert r.vectors is not None
        np.testing.assert_array_equal(r.vectors, x[I0])
        hit = next(r.hits())[0]
        assert hit.id == STRING_IDS[I0[0, 0]] and hit.vector is not None
        short = client.search(name, q[:1], k=5, filter="g = 1 and g != 1")  # nothing matches: all padding
        assert short.ids.tolist() == [[None] * 5] and list(short.hits()) == [[]]
        by_id = client.search(name, by_ids=[STRING_IDS[7]], k=5)
        _, I1 = _exact(x, x[7:8], 6)
        assert by_id.ids.tolist() == [[STRING_IDS[i] for i in I1[0] if i != 7][:5]]
        rec = client.recommend(name, [STRING_IDS[1], STRING_IDS[2]], [STRING_IDS[3]], k=5)
        query = 2 * x[1:3].mean(axis=0) - x[3]
        _, I2 = _exact(x, query[None], 8)
        assert rec.ids.tolist() == [[STRING_IDS[i] for i in I2[0] if i not in (1, 2, 3)][:5]]
        groups = client.search(name, q[:1], k=2, group_by="g", group_size=2).groups
        assert groups is not None and all(isinstance(h.id, str) for g in groups[0] for h in g.hits)
    finally:
        client.drop_collection(name)


@pytest.mark.parametrize("id_kind", ["int", "string"])
def test_points_without_vectors_then_update_vectors(client: Client, name: str, id_kind: str) -> None:
    """Payload-only points are counted, scrolled, retrieved (vector None) and filtered, but no vector
    search finds them until update_vectors gives them a vector; then search matches faiss over all."""
    x, y, q = _data(4), _data(5, 20), _data(6, 5)
    ids: list[Any] = list(range(N + 20)) if id_kind == "int" else [f"p{i}" for i in range(N + 20)]
    client.create_collection(name, DIM, id_type=id_kind)
    try:
        client.add(name, ids[:N], x, payloads=[{"kind": "vector"}] * N)
        added = client.add(name, ids[N:], payloads=[{"kind": "bare", "n": i} for i in range(20)])
        assert (added.added, added.count) == (20, N + 20)
        assert client.count(name, 'kind = "bare"') == 20
        bare = client.retrieve(name, ids[N : N + 2], with_vectors=True)
        assert [(p.id, p.payload, p.vector) for p in bare if p] == [
            (ids[N], {"kind": "bare", "n": 0}, None),
            (ids[N + 1], {"kind": "bare", "n": 1}, None),
        ]
        assert np.isnan(client.get(name, ids[N : N + 1])).all()
        scrolled = {p.id: p.vector for p in client.scroll(name, 'kind = "bare"', with_vectors=True)}
        assert set(scrolled) == set(ids[N:]) and all(v is None for v in scrolled.values())
        D0, I0 = _exact(x, q, 10)
        r = client.search(name, q, k=10)
        assert r.ids.tolist() == [[ids[i] for i in row] for row in I0]  # the bare points are not found
        assert [h for row in client.search(name, q, k=5, filter='kind = "bare"').hits() for h in row] == []
        assert client.update_vectors(name, ids[N:], y) == 20
        missing = 10**6 if id_kind == "int" else "nope"
        assert client.update_vectors(name, [ids[N], missing], y[:2]) == 1  # ids not stored are ignored
        client.update_vectors(name, [ids[N]], y[:1])
        both = np.vstack([x, y])
        D1, I1 = _exact(both, q, 10)
        r = client.search(name, q, k=10)
        assert r.ids.tolist() == [[ids[i] for i in row] for row in I1]
        np.testing.assert_allclose(r.distances, D1, rtol=1e-4, atol=1e-4)
        after = client.retrieve(name, [ids[N + 3]], with_vectors=True)[0]
        assert after and after.payload == {"kind": "bare", "n": 3} and after.vector is not None  # payload kept
        np.testing.assert_array_equal(after.vector, y[3])
    finally:
        client.drop_collection(name)


def test_on_conflict_with_int_ids(client: Client, name: str) -> None:
    x = _data(7, 10)
    client.create_collection(name, DIM)
    try:
        client.add(name, range(5), x[:5], payloads=[{"v": 1}] * 5)
        with pytest.raises(AlreadyExists):
            client.add(name, [4, 5], x[5:7], on_conflict="fail")
        assert client.count(name) == 5
        r = client.add(name, [3, 4, 5, 6], x[6:10], payloads=[{"v": 2}] * 4, on_conflict="skip")
        assert (r.added, r.skipped, r.replaced, r.count) == (2, 2, 0, 7)
        np.testing.assert_array_equal(client.get(name, [3, 4, 5]), np.vstack([x[3:5], x[8:9]]))
        r = client.add(name, [0, 9], x[:2] + 1, on_conflict="replace")
        assert (r.added, r.replaced, r.skipped) == (1, 1, 0)
        np.testing.assert_array_equal(client.get(name, [0]), x[:1] + 1)
        r = client.upload(name, [1, 2, 10], x[:3] + 2, on_conflict="skip")
        assert (r.added, r.skipped) == (1, 2)
        np.testing.assert_array_equal(client.get(name, [1, 10]), np.vstack([x[1:2], x[2:3] + 2]))
    finally:
        client.drop_collection(name)


def _grouped(x: np.ndarray, q: np.ndarray, groups: list[Any], k: int, size: int) -> list[tuple[Any, list[int]]]:
    """The reference grouping: walk one index's full ranking best first; a point joins the group of
    each distinct value of its field; the first k groups to appear, each with its best `size` hits."""
    _, order = _exact(x, q[None], len(x))
    out: dict[Any, list[int]] = {}
    for i in order[0].tolist():
        for value in dict.fromkeys(groups[i] if isinstance(groups[i], list) else [groups[i]]):
            if value in out or len(out) < k:
                members = out.setdefault(value, [])
                if len(members) < size:
                    members.append(i)
    return list(out.items())


def test_search_options_match_faiss(client: Client, name: str) -> None:
    """with_vectors, by_ids, group_by and recommend on int ids, against one faiss index."""
    x, q = _data(8), _data(9, 3)
    groups: list[Any] = [f"g{i % 7}" for i in range(N)]
    groups[5] = ["g1", "g2", "g1"]  # a list field: the point is in both groups
    client.create_collection(name, DIM)
    try:
        client.add(name, np.arange(N), x, payloads=[{"g": g, "i": i} for i, g in enumerate(groups)])
        D0, I0 = _exact(x, q, 6)
        r = client.search(name, q, k=6, with_vectors=True, with_payload=True)
        np.testing.assert_array_equal(r.ids, I0)
        assert r.vectors is not None and r.vectors.shape == (3, 6, DIM)
        np.testing.assert_array_equal(r.vectors, x[I0])
        assert [[h.payload["i"] for h in row] for row in r.hits()] == I0.tolist()  # type: ignore[index]
        by_ids = client.search(name, by_ids=[10, 20], k=4)
        _, I1 = _exact(x, x[[10, 20]], 5)
        assert by_ids.ids.tolist() == [[i for i in I1[0] if i != 10][:4], [i for i in I1[1] if i != 20][:4]]
        rec = client.recommend(name, [1, 2, 3], [4], k=5, with_vectors=True)
        _, I2 = _exact(x, (2 * x[1:4].mean(axis=0) - x[4])[None], 9)
        assert rec.ids.tolist() == [[i for i in I2[0] if i not in (1, 2, 3, 4)][:5]]
        alone = client.recommend(name, [7], k=3, offset=1)
        _, I3 = _exact(x, x[7:8], 5)
        assert alone.ids.tolist() == [[i for i in I3[0] if i != 7][1:4]]
        for query in q:
            got = client.search(name, query, k=3, group_by="g", group_size=2, with_payload=["i"]).groups
            assert got is not None
            expected = _grouped(x, query, groups, 3, 2)
            assert [(g.value, [h.id for h in g.hits]) for g in got[0]] == expected
            assert all(h.payload == {"i": h.id} for g in got[0] for h in g.hits)
    finally:
        client.drop_collection(name)


def test_scroll_in_payload_order_pages_by_cursor(client: Client, name: str) -> None:
    x = _data(10, 100)
    years: list[Any] = [2000 + (i * 37) % 25 for i in range(100)]
    years[3] = years[50] = None  # these two points have no year: left out
    client.create_collection(name, DIM)
    try:
        payloads = [{"year": y} if y is not None else {"other": 1} for y in years]
        client.add(name, np.arange(100), x, payloads=payloads)
        with_year = [(y, i) for i, y in enumerate(years) if y is not None]
        up = [(p.payload["year"], p.id) for p in client.scroll(name, order_by="year", page_size=7)]  # type: ignore[index]
        assert up == sorted(with_year)
        down = [(p.payload["year"], p.id) for p in client.scroll(name, order_by="year", order="desc", page_size=9)]  # type: ignore[index]
        assert [y for y, _ in down] == sorted((y for y, _ in with_year), reverse=True)
        assert sorted(down) == sorted(with_year)
        filtered = [p.id for p in client.scroll(name, "year >= 2020", order_by="year", page_size=4)]
        assert filtered == [i for _, i in sorted(w for w in with_year if w[0] >= 2020)]
        by_id = [p.id for p in client.scroll(name, page_size=11)]
        assert by_id == list(range(100))
    finally:
        client.drop_collection(name)


def test_facet_counts_match_the_payloads(client: Client, name: str) -> None:
    x = _data(11, 200)
    langs = [["en", "de", "fr", "en"][i % 4] for i in range(200)]
    tags: list[Any] = [["a", "b", "a"] if i % 5 == 0 else ["b"] for i in range(200)]
    client.create_collection(name, DIM)
    try:
        client.add(
            name,
            np.arange(200),
            x,
            payloads=[{"lang": a, "tags": t, "i": i} for i, (a, t) in enumerate(zip(langs, tags, strict=True))],
        )
        assert client.facet(name, "lang") == [FacetCount("en", 100), FacetCount("de", 50), FacetCount("fr", 50)]
        assert client.facet(name, "lang", limit=1) == [FacetCount("en", 100)]
        assert client.facet(name, "tags") == [FacetCount("b", 200), FacetCount("a", 40)]  # once per point
        assert client.facet(name, "lang", filter="i < 10") == [
            FacetCount("en", 5),
            FacetCount("de", 3),
            FacetCount("fr", 2),
        ]
        assert client.facet(name, "absent") == []
    finally:
        client.drop_collection(name)


def test_datetime_payload_index(client: Client, name: str) -> None:
    """create_payload_index(..., "datetime") makes a DATETIME index, and scrolling in the order of
    such a field compares instants, not strings."""
    client.create_collection(name, DIM)
    try:
        info = client.create_payload_index(name, "published", "datetime")
        assert info.payload_indexes == {"published": "datetime"}
        assert client.describe(name).payload_indexes == {"published": "datetime"}
        stamps = ["2024-05-01T12:00:00+02:00", "2024-05-01T11:00:00Z", "2024-05-01T10:30:00Z", "2023-12-31T23:59:59Z"]
        client.add(name, range(4), _data(13, 4), payloads=[{"published": t} for t in stamps])
        assert [p.id for p in client.scroll(name, order_by="published")] == [3, 0, 2, 1]  # 0 is 10:00Z
    finally:
        client.drop_collection(name)


def test_async_client_on_the_data_api(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    """AsyncClient answers the data API as Client does: string ids, payload-only points, update_vectors."""
    address = cluster_of(3).address
    x = _data(12, 50)
    ids = [f"a{i}" for i in range(50)]

    async def scenario() -> tuple[Any, ...]:
        async with AsyncClient(address) as ac:
            await ac.create_collection(name, DIM, id_type="string")
            await ac.add(name, ids[:40], x[:40])
            await ac.add(name, ids[40:], payloads=[{"bare": True}] * 10)
            updated = await ac.update_vectors(name, ids[45:], x[45:])
            points = [p async for p in ac.scroll(name, "bare = true", with_vectors=True)]
            result = await ac.search(name, x[:3], k=4)
        return updated, points, result

    updated, points, result = asyncio.run(scenario())
    with Client(address) as c:
        try:
            assert updated == 5
            assert sorted((p.id, p.vector is None) for p in points) == [(f"a{n}", n < 45) for n in range(40, 50)]
            sync = c.search(name, x[:3], k=4)
            assert result.ids.tolist() == sync.ids.tolist()
            _, I0 = _exact(np.vstack([x[:40], x[45:]]), x[:3], 4)
            keep = ids[:40] + ids[45:]
            assert sync.ids.tolist() == [[keep[i] for i in row] for row in I0]
        finally:
            c.drop_collection(name)
