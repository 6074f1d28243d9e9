"""Limits that keep one caller from taking the service down (docs/limits.md).

A cluster with low limits on loopback: every per-request cost limit refuses with RESOURCE_EXHAUSTED
naming its setting (and no retry-after: the same request fails again), nothing of a refused write is
stored, the admission bound refuses concurrent big work at once with a retry-after hint (trailing
`retry-after-ms` and a google.rpc.RetryInfo detail, exposed by the SDK as `err.retry_after`), and a
small request is served while a big one runs. No timing assertions: the timing goals live in
`vecshard bench --abuse`. The admission and fair-queuing mechanics are also checked in-process, with a
fake clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status

from vecshard import Client, ResourceExhausted, wire
from vecshard.errors import RETRY_AFTER_HEADER, from_rpc_error
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.admission import Admission, FairScheduler, Flow

DIM, N = 32, 4000
ADMIN, READ = [("x-api-key", "admin-key")], [("x-api-key", "read-key")]
LIMITS = {
    "VECSHARD_MAX_SEARCH_RESULTS": "1000",
    "VECSHARD_MAX_SEARCH_SCAN": "400000",  # 100 queries of the FLAT collection (4000 vectors)
    "VECSHARD_MAX_TEXT_CHARS": "1000",
    "VECSHARD_MAX_EMBED_CHARS": "3000",
    "VECSHARD_MAX_INFLIGHT_BYTES": str(64 * 1024),
    "VECSHARD_SMALL_REQUEST_BYTES": str(8 * 1024),
    "VECSHARD_SEARCH_CHUNK_WORK": str(4000 * DIM),  # one query per chunk: a big search runs long
    "VECSHARD_SEARCH_CHUNK_PARALLEL": "1",
}


class _ApiKey(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends the admin key on a plaintext loopback channel (the SDK sends keys only over TLS)."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details._replace(metadata=[*(details.metadata or ()), *ADMIN]), request)


def admin_client(address: str) -> Client:
    return Client(address, channel=grpc.intercept_channel(grpc.insecure_channel(address), _ApiKey()), timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    keys = Path(tmp_path_factory.mktemp("keys")) / "keys.toml"
    keys.write_text('admin = ["admin-key"]\nread = ["read-key"]\n')
    env = {**LIMITS, "VECSHARD_API_KEYS_FILE": str(keys)}
    with LocalCluster(shards=2, env=env, log_level="WARNING") as c:
        with admin_client(c.address) as admin:
            admin.create_collection("flat", DIM)
            admin.add("flat", np.arange(N), np.random.default_rng(1).random((N, DIM), dtype=np.float32))
            admin.create_collection("notes", dim=0, metric=None, model="minilm")
        yield c


@pytest.fixture(scope="module")
def stub(cluster: LocalCluster) -> Iterator[pb_grpc.VectorSearchStub]:
    with grpc.insecure_channel(cluster.address) as channel:
        yield pb_grpc.VectorSearchStub(channel)


def refusal(call: object, request: object, metadata: list[tuple[str, str]] = ADMIN) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, metadata=metadata, timeout=60)  # type: ignore[operator]
    err = info.value
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    return err


def search_request(nq: int, k: int) -> pb.SearchRequest:
    q = np.random.default_rng(nq).random((nq, DIM), dtype=np.float32)
    return pb.SearchRequest(collection="flat", queries=wire.pack_matrix(q), k=k)


def test_search_results_limit(stub: pb_grpc.VectorSearchStub) -> None:
    err = refusal(stub.Search, search_request(nq=11, k=100))  # 1100 > 1000 results
    assert "max_search_results=1000" in err.details() and "VECSHARD_MAX_SEARCH_RESULTS" in err.details()
    assert "at most 10 queries per call" in err.details()
    assert from_rpc_error(err).retry_after is None  # a limit of the request: retrying it unchanged fails again
    assert not any(k == RETRY_AFTER_HEADER for k, _ in err.trailing_metadata() or ())
    stub.Search(search_request(nq=10, k=100), metadata=ADMIN, timeout=60)  # at the limit: served


def test_search_scan_limit(stub: pb_grpc.VectorSearchStub) -> None:
    err = refusal(stub.Search, search_request(nq=101, k=1))  # 101 x 4000 vectors > 400,000
    assert "max_search_scan=400000" in err.details() and "VECSHARD_MAX_SEARCH_SCAN" in err.details()
    assert "at most 100 queries per call" in err.details()
    resp = stub.Search(search_request(nq=100, k=1), metadata=ADMIN, timeout=60)
    assert resp.nq == 100


def test_embed_limits_for_a_read_key(stub: pb_grpc.VectorSearchStub) -> None:
    err = refusal(stub.Embed, types_pb2.EmbedRequest(texts=["x" * 1001]), READ)
    assert "max_text_chars=1000" in err.details() and "VECSHARD_MAX_TEXT_CHARS" in err.details()
    err = refusal(stub.Embed, types_pb2.EmbedRequest(texts=["x" * 1000] * 4), READ)  # 4000 > 3000 characters
    assert "max_embed_chars=3000" in err.details() and "VECSHARD_MAX_EMBED_CHARS" in err.details()
    assert from_rpc_error(err).retry_after is None
    resp = stub.Embed(types_pb2.EmbedRequest(texts=["x" * 1000] * 3), metadata=READ, timeout=120)
    assert resp.vectors.rows == 3
    # The same limits hold for texts sent to Search.
    err = refusal(stub.Search, pb.SearchRequest(collection="notes", texts=["y" * 1000] * 4, k=1), READ)
    assert "VECSHARD_MAX_EMBED_CHARS" in err.details()


def test_refused_add_writes_nothing(stub: pb_grpc.VectorSearchStub) -> None:
    before = stub.DescribeCollection(pb.DescribeCollectionRequest(name="notes"), metadata=ADMIN, timeout=60).count
    request = pb.AddRequest(collection="notes", ids=wire.pack_ids(np.arange(100, 104)), texts=["z" * 1000] * 4)
    err = refusal(stub.Add, request)
    assert "max_embed_chars=3000" in err.details()
    after = stub.DescribeCollection(pb.DescribeCollectionRequest(name="notes"), metadata=ADMIN, timeout=60).count
    assert after == before


def test_admission_refuses_beyond_the_bound_and_small_requests_pass(
    cluster: LocalCluster, stub: pb_grpc.VectorSearchStub
) -> None:
    """A big search (one query per chunk: it runs a while) holds the coordinator's large lane; big
    requests meanwhile are refused at once with a retry-after hint, small ones are served, and a
    refused Add wrote nothing."""
    # ~25 KiB of cost: a large request, under the 64 KiB budget; and 90 x 4300 vectors stays under the
    # scan limit while one of the Adds below is stored (100 queries did not: refused as too big)
    big = search_request(nq=90, k=10)
    big_add = pb.AddRequest(
        collection="flat",
        ids=wire.pack_ids(np.arange(10**6, 10**6 + 300)),
        vectors=wire.pack_matrix(np.ones((300, DIM), np.float32)),
    )  # ~ 3 x 41 KiB: large, and over what is left of the budget
    outcome: list[object] = []

    def run_big() -> None:
        # As a client honouring retry-after does: the Add below may win the race for the lane.
        for _ in range(50):
            try:
                outcome.append(stub.Search(big, metadata=ADMIN, timeout=120))
                return
            except grpc.RpcError as err:
                hint = from_rpc_error(err).retry_after
                if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or hint is None:
                    outcome.append(err)
                    return
                time.sleep(hint)
        outcome.append(AssertionError("the big search was refused 50 times"))

    refused: list[grpc.RpcError] = []
    small_ok = 0
    with admin_client(cluster.address) as client:
        for _ in range(20):  # each round: a big search, and while it runs, big and small requests
            runner = threading.Thread(target=run_big)
            runner.start()
            while runner.is_alive():
                try:
                    stub.Add(big_add, metadata=ADMIN, timeout=60)
                    stub.Remove(pb.RemoveRequest(collection="flat", ids=big_add.ids), metadata=ADMIN, timeout=60)
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
                    refused.append(err)
                    D, _ = client.search("flat", np.zeros((1, DIM), np.float32), k=5)  # small: always admitted
                    assert D.shape == (1, 5)
                    small_ok += 1
            runner.join()
            if refused:
                break
        assert refused, "no Add was refused while big searches ran"
        err = refused[0]
        assert "max_inflight_bytes" in err.details() and "VECSHARD_MAX_INFLIGHT_BYTES" in err.details()
        # The retry-after hint: in trailing metadata, as a google.rpc.RetryInfo, and in the SDK error.
        ms = dict(err.trailing_metadata() or ())[RETRY_AFTER_HEADER]
        assert int(ms) > 0
        status = rpc_status.from_call(err)
        assert status is not None and status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert any(d.type_url.endswith("google.rpc.RetryInfo") for d in status.details)
        sdk = from_rpc_error(err)
        assert isinstance(sdk, ResourceExhausted) and sdk.retry_after == pytest.approx(int(ms) / 1000)
        assert small_ok >= 1
        assert all(isinstance(o, pb.SearchResponse) for o in outcome), outcome
        # Nothing of a refused Add was written (served ones were removed again).
        rows = client.get("flat", np.arange(10**6, 10**6 + 300), allow_missing=True)
        assert np.isnan(rows).all()
        assert client.describe("flat").count == N


def test_a_big_search_in_chunks_equals_one_call(cluster: LocalCluster, stub: pb_grpc.VectorSearchStub) -> None:
    """The chunked path (one query per chunk here) returns what one faiss search of all queries would."""
    req = search_request(nq=50, k=7)
    resp = stub.Search(req, metadata=ADMIN, timeout=120)
    with admin_client(cluster.address) as client:
        q = wire.unpack_matrix(req.queries)
        D1, I1 = client.search("flat", q[:1], k=7)
    I = np.frombuffer(resp.ids, dtype=np.int64).reshape(50, 7)
    D = np.frombuffer(resp.distances, dtype=np.float32).reshape(50, 7)
    assert (I[:1] == I1).all() and np.allclose(D[:1], D1)
    assert (np.diff(D, axis=1) >= 0).all() and resp.shards_ok == 2


# -- the mechanics, in-process ---------------------------------------------------------------------


def test_admission_lanes_and_retry_after() -> None:
    now = [0.0]
    adm = Admission("test", "units", 100, "big_setting", 10, 20, "small_setting", clock=lambda: now[0])
    with adm.admit(60, "first"):
        with pytest.raises(ResourceExhausted) as info:
            with adm.admit(50, "second"):
                pass
        assert "big_setting=100" in info.value.details and info.value.retry_after is not None
        with adm.admit(10, "small"), adm.admit(10, "small too"):  # its own lane
            with pytest.raises(ResourceExhausted, match="small_setting=20"):
                with adm.admit(5, "a third small"):
                    pass
        with adm.admit(40, "fits"):
            pass
        now[0] = 1.0  # 60 units took 1 s: 1/60 s per unit learnt when it ends
    with adm.admit(1000, "bigger than the lane, into an empty lane"):
        with pytest.raises(ResourceExhausted) as info:
            with adm.admit(20, "beside it"):
                pass
        # 100 units held since t=1.0 at 1/60 s a unit: expected to end at ~2.67 s
        assert info.value.retry_after == pytest.approx(100 / 60, rel=0.3)
    assert adm.large.in_flight == 0 and adm.small.in_flight == 0


def test_fair_scheduler_lets_a_small_request_in_between() -> None:
    order: list[str] = []

    async def main() -> None:
        sched = FairScheduler(1)
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()

        def work(name: str) -> None:
            order.append(name)

        async def big() -> None:
            flow = Flow()
            for i in range(5):
                await sched.run(flow, 100, work, f"big{i}")
                if i == 0:
                    loop.call_soon(gate.set)

        async def small() -> None:
            await gate.wait()
            await sched.run(Flow(), 1, work, "small")

        await asyncio.gather(big(), small())

    asyncio.run(main())
    assert order.index("small") <= 2, order  # after at most the big request's next piece, not its last


def test_a_large_request_is_checked_before_it_is_parsed(cluster: LocalCluster, stub: pb_grpc.VectorSearchStub) -> None:
    """Requests over 1 MiB are parsed off the event loop, after the admission check of their size: a
    busy coordinator refuses one without parsing it, and bytes that are no message still get
    INVALID_ARGUMENT on that path."""
    garbage = b"\xff" * (2 << 20)
    channel = grpc.insecure_channel(cluster.address)
    raw = channel.unary_unary(
        "/vecshard.v1.VectorSearch/Search", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as info:
        raw(garbage, metadata=ADMIN, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    big = search_request(nq=90, k=10)
    for _ in range(20):  # a big search holds the large lane; a 2 MiB request meanwhile is refused unparsed
        runner = threading.Thread(target=lambda: stub.Search(big, metadata=ADMIN, timeout=120))
        runner.start()
        refused = None
        while runner.is_alive() and refused is None:
            try:
                raw(garbage, metadata=ADMIN, timeout=60)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refused = err
        runner.join()
        if refused is not None:
            assert "a request of 2,097,152 bytes" in refused.details() and from_rpc_error(refused).retry_after
            return
    raise AssertionError("no large request was refused while big searches ran")
