"""Scroll order and cursors (#25): pages in ascending id order across shards, `next_cursor` going on
where a page ends (with and without order_by), and `order_by` paging in a payload field's order
(numbers by value, then strings, then bools; a list by its smallest value ascending or largest
descending; points without the field left out; ties by id; date-times as instants with a DATETIME
index): every point exactly once, in the brute-force order, on 1 and 3 shards in both shard modes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from vecshard import Client, wire
from vecshard.filter_text import parse_filter
from vecshard.payload import filter_to_proto, payload_from_proto
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

DIM = 4
N = 500


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=60) as c:
        yield c


def _kind(v: Any) -> tuple[int, Any]:
    return (3 if isinstance(v, bool) else 2 if isinstance(v, str) else 0, v)


def _expected(
    payloads: dict[int, dict[str, Any]], field: str, descending: bool, keep: Callable[[dict[str, Any]], bool]
) -> list[int]:
    """Brute force: the ids in the documented order."""
    rows = []
    for i, p in payloads.items():
        v = p.get(field)
        items = [x for x in (v if isinstance(v, list) else [v]) if x is not None and not isinstance(x, dict | list)]
        if not items or not keep(p):
            continue
        keys = [_kind(x) for x in items]
        rows.append((max(keys) if descending else min(keys), i))
    rows.sort(key=lambda r: r[1])
    rows.sort(key=lambda r: r[0], reverse=descending)  # (stable: ties stay by id)
    return [i for _, i in rows]


def _pages(stub: Any, request: pb.ScrollRequest) -> list[pb.ScrollResponse]:
    """Every page, each from the previous one's next_cursor."""
    out = []
    while True:
        page = stub.Scroll(request, timeout=60)
        out.append(page)
        if page.done:
            assert not page.next_cursor
            return out
        assert page.next_cursor
        after = pb.ScrollRequest()
        after.CopyFrom(request)
        after.start_id, after.cursor = 0, page.next_cursor
        request = after


def _ids(pages: list[pb.ScrollResponse]) -> list[int]:
    return [i for p in pages for i in np.frombuffer(p.ids, dtype="<i8").tolist()]


def _payloads(n: int, rng: np.random.Generator) -> dict[int, dict[str, Any]]:
    out = {}
    for i in range(n):
        p: dict[str, Any] = {"few": int(rng.integers(0, 5)), "x": float(rng.standard_normal()), "name": f"n{i % 37}"}
        if i % 3:
            p["list"] = [int(v) for v in rng.integers(-50, 50, size=int(rng.integers(1, 4)))]
        if i % 5 == 0:
            p["mixed"] = [True, "b", 3, 2.5][i % 4]
        elif i % 5 == 1:
            p["mixed"] = int(rng.integers(0, 4))  # ties with 3 (an int) and 2.5
        if i % 7 == 0:
            p["x"] = int(p["x"] * 2)  # integers among the floats, some equal to each other
        out[i * 3 + 1] = p  # ids spread out (their order is not their insertion order)
    return out


@pytest.fixture
def ordered(client: Client, name: str) -> Iterator[tuple[Client, str, dict[int, dict[str, Any]]]]:
    rng = np.random.default_rng(21)
    payloads = _payloads(N, rng)
    ids = np.array(sorted(payloads, key=lambda i: (i * 7919) % 1009))  # stored in a scrambled order
    client.create_collection(name, DIM)
    try:
        x = rng.standard_normal((N, DIM)).astype(np.float32)
        client.add(name, ids, x, payloads=[payloads[i] for i in ids.tolist()])
        yield client, name, payloads
    finally:
        client.drop_collection(name)


def test_id_order_pages_with_cursor(ordered: tuple[Client, str, dict[int, dict[str, Any]]]) -> None:
    client, name, payloads = ordered
    every = sorted(payloads)
    for limit in (1, 7, 100, 1000):
        pages = _pages(client.stub, pb.ScrollRequest(collection=name, limit=limit))
        assert _ids(pages) == every
        for p in pages[:-1]:
            assert len(np.frombuffer(p.ids, "<i8")) == limit
    f = filter_to_proto(parse_filter("few = 2"))
    pages = _pages(client.stub, pb.ScrollRequest(collection=name, limit=13, filter=f, start_id=300))
    assert _ids(pages) == [i for i in every if i >= 300 and payloads[i]["few"] == 2]
    # next_start_id and next_cursor go on at the same place.
    first = client.stub.Scroll(pb.ScrollRequest(collection=name, limit=10), timeout=60)
    by_start = client.stub.Scroll(pb.ScrollRequest(collection=name, limit=10, start_id=first.next_start_id))
    by_cursor = client.stub.Scroll(pb.ScrollRequest(collection=name, limit=10, cursor=first.next_cursor))
    assert by_start.ids == by_cursor.ids and _ids([by_start]) == every[10:20]


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_order_by_pages_every_point_once_in_order(
    ordered: tuple[Client, str, dict[int, dict[str, Any]]], descending: bool
) -> None:
    client, name, payloads = ordered
    for field in ("few", "x", "name", "list", "mixed"):
        want = _expected(payloads, field, descending, lambda p: True)
        for limit in (9, 1000):
            req = pb.ScrollRequest(collection=name, limit=limit, order_by=pb.OrderBy(key=field, descending=descending))
            assert _ids(_pages(client.stub, req)) == want, (field, limit)
    # With a filter, payloads and vectors; the SDK's iterator agrees.
    f = filter_to_proto(parse_filter("few >= 2"))
    req = pb.ScrollRequest(
        collection=name,
        limit=11,
        order_by=pb.OrderBy(key="x", descending=descending),
        filter=f,
        with_payload=ppb.PayloadSelector(enable=True),
        with_vectors=True,
    )
    pages = _pages(client.stub, req)
    want = _expected(payloads, "x", descending, lambda p: p["few"] >= 2)
    assert _ids(pages) == want
    got = [payload_from_proto(p) for page in pages for p in page.payloads]
    assert got == [payloads[i] for i in want]
    assert all(wire.unpack_matrix(p.vectors).shape == (len(p.ids) // 8, DIM) for p in pages)
    points = client.scroll(name, "few >= 2", order_by="x", order="desc" if descending else "asc", page_size=11)
    assert [p.id for p in points] == want


def test_order_by_datetime_index_orders_instants(client: Client, name: str) -> None:
    times = [
        "2024-05-01T12:00:00+02:00",  # 10:00Z
        "2024-05-01T09:30:00Z",
        "2024-05-01T10:00:00.5Z",
        "2024-04-30T23:00:00-03:00",  # 02:00Z on May 1st
        "not a date",
        "2024-05-01T10:00:00Z",  # the same instant as the first
    ]
    client.create_collection(name, DIM)
    try:
        client.add(
            name, np.arange(len(times)), np.ones((len(times), DIM), np.float32), payloads=[{"t": t} for t in times]
        )
        req = pb.ScrollRequest(collection=name, limit=2, order_by=pb.OrderBy(key="t"))
        assert _ids(_pages(client.stub, req)) == sorted(range(len(times)), key=lambda i: (times[i], i))
        client.create_payload_index(name, "t", "datetime")
        assert _ids(_pages(client.stub, req)) == [3, 1, 0, 5, 2, 4]  # instants (ties by id), then other strings
        req.order_by.descending = True
        assert _ids(_pages(client.stub, req)) == [4, 2, 0, 5, 1, 3]
    finally:
        client.drop_collection(name)


def test_cursor_refusals(client: Client, name: str) -> None:
    client.create_collection(name, DIM)
    try:
        client.add(name, np.arange(5), np.ones((5, DIM), np.float32), payloads=[{"a": i} for i in range(5)])
        by_a = pb.OrderBy(key="a")
        ordered = client.stub.Scroll(pb.ScrollRequest(collection=name, limit=2, order_by=by_a), timeout=30)
        plain = client.stub.Scroll(pb.ScrollRequest(collection=name, limit=2), timeout=30)
        bad = [
            pb.ScrollRequest(collection=name, cursor=b"garbage"),
            pb.ScrollRequest(collection=name, cursor=ordered.next_cursor),
            pb.ScrollRequest(collection=name, cursor=plain.next_cursor, order_by=by_a),
            pb.ScrollRequest(
                collection=name, cursor=ordered.next_cursor, order_by=pb.OrderBy(key="a", descending=True)
            ),
            pb.ScrollRequest(collection=name, cursor=ordered.next_cursor, order_by=pb.OrderBy(key="b")),
            pb.ScrollRequest(collection=name, start_id=3, order_by=by_a),
            pb.ScrollRequest(collection=name, start_id=3, cursor=plain.next_cursor),
            pb.ScrollRequest(collection=name, order_by=pb.OrderBy(key="")),
            pb.ScrollRequest(collection=name, order_by=pb.OrderBy(key="a..b")),
        ]
        for req in bad:
            with pytest.raises(grpc.RpcError) as err:
                client.stub.Scroll(req, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (req, err.value.details())
    finally:
        client.drop_collection(name)


def test_a_page_cut_short_by_its_size_bounds_the_merged_page() -> None:
    """A group whose page ends early (done False with fewer than `limit` points: its reply was cut to
    fit) ends the merged page at its last point, so the points after it on other groups wait for the
    next page and none is skipped; ordered pages alike."""
    from vecshard_server.common.payload_order import NUMBER, encode_keys
    from vecshard_server.coordinator.scroll_pages import merge_pages

    def page(ids: list[int], done: bool, keys: list[int] | None = None) -> pb.ScrollResponse:
        out = pb.ScrollResponse(ids=wire.pack_ids(np.array(ids, dtype=np.int64)), done=done)
        if keys is not None:
            out.next_cursor = encode_keys([(NUMBER, k) for k in keys])
        return out

    sent = pb.ScrollRequest(limit=4)
    merged = merge_pages(sent, {0: page([1, 2], False), 1: page([3, 4, 5, 6], False), 2: page([0], True)})
    assert merged.ids.tolist() == [0, 1, 2] and not merged.done and merged.next_start_id == 3
    sent = pb.ScrollRequest(limit=4, order_by=pb.OrderBy(key="v", descending=True))
    parts = {0: page([10, 11], False, [9, 7]), 1: page([12, 13, 14, 15], True, [8, 7, 6, 5])}
    merged = merge_pages(sent, parts)  # 13 ties 11 at 7, after it: group 0 may hold 12
    assert merged.ids.tolist() == [10, 12, 11] and not merged.done and merged.cursor
    parts = {0: page([10, 11], True, [9, 7]), 1: page([12, 13, 14, 15], True, [8, 7, 6, 5])}
    merged = merge_pages(sent, parts)
    assert merged.ids.tolist() == [10, 12, 11, 13] and not merged.done
