"""Hybrid search (#26): a dense query plus keywords, fused by RRF or linearly, against served
clusters (`cluster_of`: both shard modes) on 1 and 3 shards.

Each hybrid result is checked against a brute-force recomputation from each leg's own results (a
plain dense search and a plain keyword search for `candidates` hits, with the same filter): the
fused order (score descending, ties by id), the fused scores, each hit's score and rank in each leg;
then offset and score_threshold on the fused list, payloads, vectors, string ids, texts of a
model-bound collection, and the error cases with their status codes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from vecshard import Client, SearchResult, wire
from vecshard.errors import InvalidArgument
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.string_ids import string_id_hash

from .test_keyword_search import corpus

DIM = 8
N = 300
KEYWORDS = ["sharded search", "replica recovery", "term1 term2", "the of", "merge scores"]


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=120) as c:
        yield c


def _load(c: Client, name: str, metric: str = "l2", id_type: str = "int") -> tuple[list[Any], np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    x[::5] = x[1::5]  # (equal dense distances too: ties by id)
    texts = corpus(N, 6)
    ids: list[Any] = [f"p{i}" for i in range(N)] if id_type == "string" else list(range(5, 5 + N))
    c.create_collection(name, DIM, metric=metric, id_type=id_type)
    payloads = [{"body": t, "lang": "en" if i % 4 else "de", "i": i} for i, t in enumerate(texts)]
    c.add(name, ids, x, payloads=payloads)
    c.create_payload_index(name, "body", "text", stemmer="english", stopwords="english")
    return ids, x


def _queries(nq: int) -> np.ndarray:
    return np.random.default_rng(11).standard_normal((nq, DIM)).astype(np.float32)


def expected(
    dense: SearchResult,
    keyword: SearchResult,
    mode: str,
    rrf_k: int = 60,
    weights: tuple[float, float] = (1, 1),
    stored: Callable[[Any], int] = int,
) -> list[list[tuple[Any, float, float, int, float, int]]]:
    """Per query, the fused list recomputed from each leg's own result: (id, fused score, dense
    score, dense rank, keyword score, keyword rank), best first, ties by the stored id (`stored`:
    a string id's hash)."""
    out = []
    nq = dense.ids.shape[0]
    for q in range(nq):
        legs = []
        kq = q if keyword.ids.shape[0] == nq else 0
        for r, row, higher in ((dense, q, dense.higher_is_better), (keyword, kq, True)):
            hits = [(h.id, h.distance) for h in list(r.hits())[row]]
            values = [s for _, s in hits] or [0.0]
            best, worst = (max(values), min(values)) if higher else (min(values), max(values))
            legs.append(
                {
                    i: (rank, s, 1.0 if best == worst else (s - worst) / (best - worst))
                    for rank, (i, s) in enumerate(hits, 1)
                }
            )
        rows = []
        for i in set(legs[0]) | set(legs[1]):
            d, k = legs[0].get(i), legs[1].get(i)
            if mode == "rrf":
                fused = sum(1.0 / (rrf_k + x[0]) for x in (d, k) if x)
            else:
                fused = weights[0] * (d[2] if d else 0.0) + weights[1] * (k[2] if k else 0.0)
            nan = float("nan")
            rows.append(
                (
                    i,
                    float(np.float32(fused)),
                    d[1] if d else nan,
                    d[0] if d else 0,
                    k[1] if k else nan,
                    k[0] if k else 0,
                )
            )
        rows.sort(key=lambda e: (-e[1], stored(e[0])))
        out.append(rows)
    return out


def check(
    result: SearchResult, want: list[list[tuple[Any, float, float, int, float, int]]], k: int, skip: int = 0
) -> None:
    """The hybrid result holds the expected fused list's entries skip .. skip + k - 1 per query."""
    assert result.higher_is_better
    for q, hits in enumerate(result.hits()):
        rows = want[q][skip : skip + k]
        assert [h.id for h in hits] == [r[0] for r in rows], q
        np.testing.assert_allclose([h.distance for h in hits], [r[1] for r in rows], rtol=1e-6)
        for h, r in zip(hits, rows, strict=True):
            if r[3]:
                assert h.dense is not None and h.dense.rank == r[3]
                np.testing.assert_allclose(h.dense.score, r[2], rtol=1e-6)
            else:
                assert h.dense is None
            if r[5]:
                assert h.keyword is not None and h.keyword.rank == r[5]
                np.testing.assert_allclose(h.keyword.score, r[4], rtol=1e-6)
            else:
                assert h.keyword is None
        assert result.dense_ranks is not None and result.keyword_scores is not None
        pad = len(hits)
        assert (result.dense_ranks[q, pad:] == 0).all() and np.isnan(result.keyword_scores[q, pad:]).all()


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
def test_rrf_and_linear_equal_a_recomputation_from_each_legs_results(client: Client, name: str, metric: str) -> None:
    _load(client, name, metric)
    try:
        q = _queries(len(KEYWORDS))
        # RRF, candidates by default: max(offset + k, 100) per leg.
        dense, keyword = client.search(name, q, k=100), client.search(name, keyword=KEYWORDS, k=100)
        assert dense.higher_is_better == (metric == "inner_product")
        r = client.search(name, q, k=10, keyword=KEYWORDS)
        check(r, expected(dense, keyword, "rrf"), 10)
        # RRF with its own rank constant and fewer candidates; one keyword text for every query.
        dense, keyword = client.search(name, q, k=20), client.search(name, keyword="sharded search", k=20)
        r = client.search(name, q, k=12, keyword="sharded search", fusion="rrf", rrf_k=5, candidates=20)
        check(r, expected(dense, keyword, "rrf", rrf_k=5), 12)
        # Linear over min-max normalised scores (in the metric's direction for the dense leg).
        dense, keyword = client.search(name, q, k=30), client.search(name, keyword=KEYWORDS, k=30)
        r = client.search(name, q, k=15, keyword=KEYWORDS, fusion="linear", weights=(0.3, 0.7), candidates=30)
        check(r, expected(dense, keyword, "linear", weights=(0.3, 0.7)), 15)
        default = client.search(name, q, k=15, keyword=KEYWORDS, fusion="linear", candidates=30)
        check(default, expected(dense, keyword, "linear"), 15)
        implied = client.search(name, q, k=15, keyword=KEYWORDS, weights=(1, 1), candidates=30)
        np.testing.assert_array_equal(implied.ids, default.ids)
    finally:
        client.drop_collection(name)


def test_filter_offset_threshold_payloads_and_vectors(client: Client, name: str) -> None:
    ids, x = _load(client, name)
    try:
        q = _queries(3)
        kw = KEYWORDS[:3]
        f = 'lang = "en" and i >= 10'
        # The filter applies to both legs.
        dense, keyword = client.search(name, q, k=40, filter=f), client.search(name, keyword=kw, k=40, filter=f)
        want = expected(dense, keyword, "rrf")
        r = client.search(name, q, k=8, keyword=kw, filter=f, candidates=40, with_payload=True, with_vectors=True)
        check(r, want, 8)
        row = dict(zip(ids, x, strict=True))
        for hits in r.hits():
            for h in hits:
                assert h.payload is not None and h.payload["lang"] == "en" and h.payload["i"] >= 10
                assert h.payload["body"]  # (the stored payload, from whichever leg found the hit)
                np.testing.assert_array_equal(h.vector, row[h.id])
        # offset and score_threshold apply to the fused list.
        page = client.search(name, q, k=5, offset=6, keyword=kw, filter=f, candidates=40)
        check(page, want, 5, skip=6)
        t = float(np.median(r.distances[:, :8]))
        kept = client.search(name, q, k=8, keyword=kw, filter=f, candidates=40, score_threshold=t)
        for qi in range(3):
            keep = [i for i, s in zip(r.ids[qi], r.distances[qi], strict=True) if s >= np.float32(t)]
            assert kept.ids[qi].tolist() == keep + [-1] * (8 - len(keep))
    finally:
        client.drop_collection(name)


def test_string_ids(client: Client, name: str) -> None:
    _load(client, name, "inner_product", id_type="string")
    try:
        q = _queries(2)
        dense, keyword = client.search(name, q, k=25), client.search(name, keyword="replica", k=25)
        r = client.search(name, q, k=6, keyword="replica", fusion="linear", candidates=25, with_payload=["i"])
        bits = client.describe(name).string_id_hash_bits
        check(r, expected(dense, keyword, "linear", stored=lambda s: string_id_hash(s, bits)), 6)
        assert r.ids.dtype == object
        assert all(h.payload == {"i": int(h.id[1:])} for hits in r.hits() for h in hits)
    finally:
        client.drop_collection(name)


def test_texts_of_a_model_bound_collection(client_of: Callable[[int], Client], name: str) -> None:
    pytest.importorskip("torch", reason="embedding needs the 'embed' extra (torch)")
    c = client_of(2)
    texts = corpus(40, 12)
    c.create_collection(name, 0, None, model="minilm", store_text=True)
    try:
        c.add(name, list(range(40)), texts=texts)
        c.create_payload_index(name, "text", "text", stemmer="english")
        queries = ["sharded replicas", "crash recovery"]
        dense, keyword = c.search(name, texts=queries, k=30), c.search(name, keyword=queries, k=30)
        r = c.search(name, texts=queries, k=5, keyword=queries, candidates=30)
        check(r, expected(dense, keyword, "rrf"), 5)
    finally:
        c.drop_collection(name)


def test_bad_input_status_codes(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    address = cluster_of(3).address
    with Client(address, timeout=60) as c, grpc.insecure_channel(address) as channel:
        stub = pb_grpc.VectorSearchStub(channel)
        _load(c, name)
        try:
            q = _queries(2)
            for kwargs, what in [
                ({"fusion": "rff"}, "fusion must be 'rrf' or 'linear'"),
                ({"weights": (-0.5, 1.0)}, "weights are"),
                ({"weights": (1.0,)}, "weights are"),
                ({"rrf_k": 0}, "rrf_k must be an int >= 1"),
                ({"candidates": 0}, "candidates must be"),
                ({"keyword": ["a", 3]}, "keyword must be"),
            ]:
                with pytest.raises(InvalidArgument, match=what):  # (refused by the SDK)
                    c.search(name, q, k=3, **{"keyword": "shard", **kwargs})

            def request(**fields: Any) -> pb.SearchRequest:
                base: dict[str, Any] = {"collection": name, "k": 3, "keywords": ["shard"]}
                return pb.SearchRequest(queries=wire.pack_matrix(q), **{**base, **fields})

            bad = [
                request(fusion=7),  # not a Fusion value
                request(fusion=pb.FUSION_LINEAR, weights=[-1.0, 1.0]),
                request(fusion=pb.FUSION_LINEAR, weights=[1.0, 1.0, 1.0]),
                request(fusion=pb.FUSION_LINEAR, weights=[0.0, 0.0]),
                request(fusion=pb.FUSION_LINEAR, weights=[float("nan"), 1.0]),
                request(fusion=pb.FUSION_RRF, weights=[1.0, 1.0]),
                request(fusion=pb.FUSION_LINEAR, rrf_k=10),
                request(candidates=1_000_000),
                request(group_by="lang"),
                request(keywords=["a", "b", "c"]),  # neither one for all nor one per query
                request(score_threshold=float("inf")),
            ]
            for r in bad:
                with pytest.raises(grpc.RpcError) as err:
                    stub.Search(r, timeout=30)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (r, err.value.details())
            assert c.count(name) == N
            ok = stub.Search(request(keywords=["a", "b"]), timeout=30)  # one per query
            assert ok.higher_is_better and len(ok.dense_ranks) == 4 * 2 * 3
        finally:
            c.drop_collection(name)
