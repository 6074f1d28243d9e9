"""Keyword search (#26): BM25 (Lucene variant) over a TEXT payload index, exact across shards.

Against served clusters (`cluster_of`: both shard modes) on 1 and 3 shards: scores equal bm25s's
"lucene" method over the same tokens (the shard's own analyzer, vecshard_server.shard.analysis, makes
them: Unicode words, lowercased, english stopwords, Snowball stems) at 1e-5 relative, before and after
removes, upserts and payload edits; the same hits on 1 and 3 shards; filters (the `text` condition
too, in dict and text form, with and without an index), offset, score_threshold, payloads, vectors,
string ids and payload-only points; describe's text index counts; the CLI; and the error cases with
their status codes, nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import bm25s
import grpc
import numpy as np
import pytest
from click.testing import CliRunner

from vecshard import Client, wire
from vecshard.errors import FailedPrecondition, InvalidArgument
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cli.main import cli
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.string_ids import string_id_hash
from vecshard_server.shard.analysis import Analyzer

DIM = 4
WORDS = (
    "shard shards sharded sharding vector vectors search searches searching searched index indexes indexing "
    "query queries replica replicas keyword keywords score scores scoring merge merged merging cluster clusters "
    "node nodes coordinator fusion hybrid dense sparse token tokens stem stemming rank ranks ranking filter "
    "filters filtered payload payloads latency memory snapshot snapshots recovery restart crash write writes "
    "read reads commit log durable exact recall the a of and to in is it for with on not this that"
).split() + [f"term{i}" for i in range(150)]
QUERIES = [
    "shard search",
    "Sharded SEARCHES, replicas!",
    "the of and",  # stopwords only: no hits
    "zzzunknown",  # no such term: no hits
    "term3 term3 term7",  # a repeated word counts twice
    "recovery after a crash",
    "term0",
]


def corpus(n: int, seed: int) -> list[str]:
    """n texts of Zipf-distributed words, some capitalised, with punctuation; each holds at least
    one word that is not an english stopword."""
    rng = np.random.default_rng(seed)
    vocab = list(WORDS)
    rng.shuffle(vocab)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    p /= p.sum()
    out = []
    for _ in range(n):
        words = [vocab[j] for j in rng.choice(len(vocab), size=int(rng.integers(3, 30)), p=p)]
        words = [w.upper() if rng.random() < 0.05 else w.capitalize() if rng.random() < 0.1 else w for w in words]
        words.append(f"term{int(rng.integers(0, 150))}")
        out.append(" ".join(w + ("," if rng.random() < 0.1 else "") for w in words) + ".")
    return out


class Reference:
    """bm25s (method "lucene") over the documents of a field, tokenised by the shard's analyzer:
    the expected scores of a keyword search. docs: point id -> the field's value (a non-string
    value is no document)."""

    def __init__(self, docs: dict[Any, Any], stemmer: str = "", stopwords: str = "", k1: float = 1.2, b: float = 0.75):
        self.analyzer = Analyzer(ppb.TextIndexParams(stemmer=stemmer, stopwords=stopwords, k1=k1, b=b))
        self.ids = [i for i, text in docs.items() if isinstance(text, str)]
        self.tokens = [self.analyzer.analyze(docs[i]) for i in self.ids]
        assert all(self.tokens), "every reference document has a term (bm25s pads empty ones)"
        self.bm25 = bm25s.BM25(method="lucene", k1=k1, b=b)
        self.bm25.index(self.tokens, show_progress=False)

    def scores(self, query: str) -> dict[Any, float]:
        """Each matching document's score (documents without a query term are left out)."""
        terms = [t for t in self.analyzer.analyze(query) if t in self.bm25.vocab_dict]
        if not terms:
            return {}
        s = self.bm25.get_scores(terms)
        return {self.ids[j]: float(s[j]) for j in np.flatnonzero(s > 0)}

    def matches_all(self, words: str) -> set[Any]:
        """The documents holding every term of `words` (the `text` filter condition)."""
        terms = set(self.analyzer.analyze(words))
        if not terms:
            return set()
        return {i for i, toks in zip(self.ids, self.tokens, strict=True) if terms <= set(toks)}


def check_row(
    ids: Sequence[Any], scores: Sequence[float], expected: dict[Any, float], k: int, stored: Callable[[Any], Any] = int
) -> None:
    """One query's hits are the best k of `expected` by score, higher first, ties by the stored id
    (`stored`: a string id's hash), with its scores at 1e-5 relative (ids of near-equal scores may
    trade places)."""
    hits = [
        (i, float(s)) for i, s in zip(ids, scores, strict=True) if i is not None and not (isinstance(i, int) and i < 0)
    ]
    best = sorted(expected.items(), key=lambda e: (-e[1], stored(e[0])))[:k]
    assert len(hits) == len(best), (hits, best)
    for i, s in hits:
        assert i in expected, i
        np.testing.assert_allclose(s, expected[i], rtol=1e-5)
    np.testing.assert_allclose([s for _, s in hits], [s for _, s in best], rtol=1e-5)
    for (i, s), (j, t) in zip(hits, hits[1:], strict=False):
        assert s > t or (s == t and stored(i) < stored(j)), (i, s, j, t)


def bodies(n: int, seed: int) -> tuple[list[int], dict[int, Any], list[dict[str, Any]]]:
    """Point ids, each point's body (a few are not strings, a few points have none) and payloads."""
    texts = corpus(n, seed)
    ids = [1000 + 7 * i for i in range(n)]
    body: dict[int, Any] = {}
    payloads: list[dict[str, Any]] = []
    for i, (pid, text) in enumerate(zip(ids, texts, strict=True)):
        p: dict[str, Any] = {"lang": "en" if i % 3 else "de", "n": i, "title": " ".join(text.split()[:3])}
        if i % 17 == 5:
            p["body"] = 42  # not a string: skipped by the text index
        elif i % 19 != 7:  # (a few points have no body)
            p["body"] = text
        if "body" in p:
            body[pid] = p["body"]
        payloads.append(p)
    return ids, body, payloads


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=120) as c:
        yield c


def _load(c: Client, name: str, n: int = 400, seed: int = 1) -> tuple[list[int], dict[int, Any], list[dict[str, Any]]]:
    ids, body, payloads = bodies(n, seed)
    c.create_collection(name, DIM)
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    c.add(name, ids, vectors, payloads=payloads)
    c.create_payload_index(name, "body", "text", stemmer="english", stopwords="english")
    return ids, body, payloads


def test_keyword_scores_equal_bm25s_lucene(client: Client, name: str) -> None:
    ids, body, payloads = _load(client, name)
    try:
        ref = Reference(body, "english", "english")
        info = client.describe(name).text_indexes["body"]
        assert (info.stemmer, info.stopwords, info.k1, info.b) == ("english", "english", 1.2, 0.75)
        assert info.documents == len(ref.ids) and info.tokens == sum(len(t) for t in ref.tokens)
        assert info.skipped == sum(1 for v in body.values() if not isinstance(v, str)) > 0
        assert 0 < info.terms <= len({t for toks in ref.tokens for t in toks})
        r = client.search(name, keyword=QUERIES, k=10)
        assert r.higher_is_better and r.ids.shape == (len(QUERIES), 10)
        for q, text in enumerate(QUERIES):
            check_row(r.ids[q].tolist(), r.distances[q].tolist(), ref.scores(text), 10)
        assert (r.ids[2] == -1).all() and (r.ids[3] == -1).all()  # stopwords only, unknown word: padding
        one = client.search(name, keyword="shard search", k=5)
        np.testing.assert_array_equal(one.ids[0], r.ids[0, :5])
        # A second TEXT index with its own analyzer and BM25 parameters, chosen by keyword_field.
        client.create_payload_index(name, "title", "text", k1=2.0, b=0.3)
        with pytest.raises(InvalidArgument, match="several TEXT indexes"):
            client.search(name, keyword="shard", k=5)
        titles = Reference({i: p["title"] for i, p in zip(ids, payloads, strict=True)}, k1=2.0, b=0.3)
        t = client.search(name, keyword=["the shard", "Term1 vector"], keyword_field="title", k=7)
        for q, text in enumerate(["the shard", "Term1 vector"]):
            check_row(t.ids[q].tolist(), t.distances[q].tolist(), titles.scores(text), 7)
        again = client.search(name, keyword=QUERIES[:2], keyword_field="body", k=10)
        np.testing.assert_array_equal(again.ids, r.ids[:2])
    finally:
        client.drop_collection(name)


def _edit(c: Client, name: str, ids: list[int], body: dict[int, Any], seed: int) -> None:
    """Removes, upserts (new bodies, one without), set_payload / overwrite_payload / delete_payload_keys
    of the field: `body` is kept as the points' bodies now are."""
    rng = np.random.default_rng(seed)
    gone = [int(i) for i in rng.choice(ids, 40, replace=False)]
    c.remove(name, gone)
    for i in gone:
        body.pop(i, None)
    rest = [i for i in ids if i not in set(gone)]
    up = [int(i) for i in rng.choice(rest, 30, replace=False)]
    texts = corpus(30, seed + 1)
    payloads: list[dict[str, Any]] = [{"body": t} if j % 10 else {"lang": "en"} for j, t in enumerate(texts)]
    c.add(name, up, rng.standard_normal((30, DIM)).astype(np.float32), payloads=payloads, upsert=True)
    for i, p in zip(up, payloads, strict=True):
        body.pop(i, None)
        if "body" in p:
            body[i] = p["body"]
    for i, text in zip(rest[:10], corpus(10, seed + 2), strict=True):
        c.set_payload(name, {"body": text}, ids=[i])
        body[i] = text
    c.overwrite_payload(name, {"body": ["not", "a", "string"]}, ids=rest[10:15])
    for i in rest[10:15]:
        body[i] = None  # (present, not a string)
    c.delete_payload_keys(name, ["body"], ids=rest[15:20])
    for i in rest[15:20]:
        body.pop(i, None)


def test_the_same_hits_on_1_and_3_shards_after_removes_and_upserts(
    cluster_of: Callable[[int], LocalCluster], name: str
) -> None:
    with Client(cluster_of(1).address, timeout=120) as one, Client(cluster_of(3).address, timeout=120) as three:
        for c in (one, three):
            ids, body, _ = _load(c, name, n=300, seed=4)
        try:
            for step in range(2):
                ref = Reference(body, "english", "english")
                a = one.search(name, keyword=QUERIES, k=20)
                b = three.search(name, keyword=QUERIES, k=20)
                np.testing.assert_array_equal(a.ids, b.ids)
                np.testing.assert_allclose(a.distances, b.distances, rtol=1e-5)
                for q, text in enumerate(QUERIES):
                    check_row(b.ids[q].tolist(), b.distances[q].tolist(), ref.scores(text), 20)
                for c in (one, three):
                    info = c.describe(name).text_indexes["body"]
                    assert info.documents == len(ref.ids), step
                    assert info.tokens == sum(len(t) for t in ref.tokens), step
                    assert info.skipped == sum(1 for v in body.values() if not isinstance(v, str)), step
                if step == 0:
                    for c in (one, three):
                        edited = dict(body)
                        _edit(c, name, ids, edited, seed=9)
                    body = edited
        finally:
            one.drop_collection(name)
            three.drop_collection(name)


def test_filters_offset_threshold_payloads_and_vectors(client: Client, name: str) -> None:
    ids, body, payloads = _load(client, name, n=300, seed=2)
    try:
        ref = Reference(body, "english", "english")
        by_id = dict(zip(ids, payloads, strict=True))
        en = {i for i, p in by_id.items() if p["lang"] == "en"}
        # A filter selects the hits; the statistics stay the collection's.
        r = client.search(name, keyword=QUERIES, k=8, filter='lang = "en"', with_payload=True)
        for q, text in enumerate(QUERIES):
            expected = {i: s for i, s in ref.scores(text).items() if i in en}
            check_row(r.ids[q].tolist(), r.distances[q].tolist(), expected, 8)
        for hits in r.hits():
            assert all(h.payload == by_id[h.id] for h in hits)
        # The text condition (dict form), combined with a keyword search: every analysed term present.
        holding = ref.matches_all("Sharded replicas")
        f = {"must": [{"key": "body", "text": "Sharded replicas"}]}
        t = client.search(name, keyword="search", k=10, filter=f)
        expected = {i: s for i, s in ref.scores("search").items() if i in holding}
        check_row(t.ids[0].tolist(), t.distances[0].tolist(), expected, 10)
        # The text grammar, counted; a field without an index gives the same answer by scanning
        # (the default analyzer: no stopwords, no stemmer), and words without terms match nothing.
        assert client.count(name, 'body ~ "Sharded replicas"') == len(holding) > 0
        assert client.count(name, 'not body ~ "sharded" and lang = "en"') == len(
            {i for i in en if i not in ref.matches_all("sharded")}
        )
        titles = Reference({i: p["title"] for i, p in by_id.items()})
        assert client.count(name, 'title ~ "TERM1"') == len(titles.matches_all("term1"))
        assert client.count(name, 'body ~ "the of"') == 0
        # offset pages the merged list exactly; score_threshold keeps scores >= it.
        whole = client.search(name, keyword=QUERIES, k=15)
        page = client.search(name, keyword=QUERIES, k=5, offset=10)
        np.testing.assert_array_equal(page.ids, whole.ids[:, 10:15])
        threshold = float(np.median(whole.distances[0, :10]))
        kept = client.search(name, keyword=QUERIES[0], k=10, score_threshold=threshold)
        expected_ids = [i for i, s in zip(whole.ids[0, :10], whole.distances[0, :10], strict=True) if s >= threshold]
        assert kept.ids[0].tolist() == expected_ids + [-1] * (10 - len(expected_ids))
        # with_vectors: each hit's stored vector.
        vectors = np.random.default_rng(2).standard_normal((300, DIM)).astype(np.float32)
        row = dict(zip(ids, vectors, strict=True))
        v = client.search(name, keyword="term0 shard", k=6, with_vectors=True)
        for h in next(v.hits()):
            np.testing.assert_array_equal(h.vector, row[h.id])
    finally:
        client.drop_collection(name)


def test_string_ids_and_payload_only_points(client: Client, name: str) -> None:
    texts = corpus(120, 5)
    keys = [f"doc-{i:03d}" for i in range(120)]
    client.create_collection(name, DIM, id_type="string")
    try:
        client.add(name, keys, None, payloads=[{"body": t, "i": i} for i, t in enumerate(texts)])
        client.create_payload_index(name, "body", "text", stemmer="english")
        ref = Reference(dict(zip(keys, texts, strict=True)), stemmer="english")
        r = client.search(name, keyword=["shards", "zzz"], k=5, with_payload=["i"])
        assert r.ids.dtype == object and r.ids[1].tolist() == [None] * 5
        bits = client.describe(name).string_id_hash_bits
        check_row(
            r.ids[0].tolist(), r.distances[0].tolist(), ref.scores("shards"), 5, lambda s: string_id_hash(s, bits)
        )
        assert [h.payload for h in next(r.hits())] == [{"i": keys.index(i)} for i in r.ids[0]]
    finally:
        client.drop_collection(name)


def test_bad_input_status_codes_and_nothing_written(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    address = cluster_of(3).address
    with Client(address, timeout=60) as c, grpc.insecure_channel(address) as channel:
        stub = pb_grpc.VectorSearchStub(channel)
        c.create_collection(name, DIM)
        try:
            c.add(name, [1, 2], np.ones((2, DIM), np.float32), payloads=[{"body": "a shard", "lang": "en"}, {}])
            with pytest.raises(FailedPrecondition, match=r'create_payload_index\(.*"text"\)'):
                c.search(name, keyword="shard")
            for kwargs, what in [({"stemmer": "klingon"}, "stemmer"), ({"stopwords": "klingon"}, "stopwords")]:
                with pytest.raises(InvalidArgument, match=f"{what} 'klingon' is not supported: use one of .*english"):
                    c.create_payload_index(name, "body", "text", **kwargs)
            with pytest.raises(InvalidArgument, match="k1"):
                c.create_payload_index(name, "body", "text", k1=-1.0)  # (refused by the SDK)
            with pytest.raises(InvalidArgument, match="to a 'text' index"):
                c.create_payload_index(name, "lang", "keyword", stemmer="english")

            def status(request: Any, method: str = "Search") -> grpc.StatusCode:
                with pytest.raises(grpc.RpcError) as err:
                    getattr(stub, method)(request, timeout=30)
                return err.value.code()  # type: ignore[no-any-return]

            index = pb.CreatePayloadIndexRequest(collection=name, field="body", type=ppb.PAYLOAD_INDEX_TYPE_TEXT)
            for params in (ppb.TextIndexParams(k1=-1), ppb.TextIndexParams(b=1.5), ppb.TextIndexParams(stemmer="xx")):
                index.text.CopyFrom(params)
                assert status(index, "CreatePayloadIndex") == grpc.StatusCode.INVALID_ARGUMENT
            keyword_index = pb.CreatePayloadIndexRequest(collection=name, field="lang", type=1)
            keyword_index.text.stemmer = "english"
            assert status(keyword_index, "CreatePayloadIndex") == grpc.StatusCode.INVALID_ARGUMENT
            assert c.describe(name).payload_indexes == {}  # nothing written
            c.create_payload_index(name, "body", "text")
            c.create_payload_index(name, "lang", "keyword")
            with pytest.raises(InvalidArgument, match="keyword_field 'lang' is a KEYWORD index, not a TEXT one"):
                c.search(name, keyword="shard", keyword_field="lang")
            with pytest.raises(InvalidArgument, match="keyword_field 'nope' is not indexed"):
                c.search(name, keyword="shard", keyword_field="nope")
            bad = [
                pb.SearchRequest(collection=name, k=3, keywords=["shard"], group_by="lang"),
                pb.SearchRequest(collection=name, k=3, keywords=["shard"], nprobe=2),
                pb.SearchRequest(collection=name, k=3, keywords=["shard"], fusion=pb.FUSION_LINEAR),
                pb.SearchRequest(collection=name, k=3, keywords=["shard"], candidates=5),
                pb.SearchRequest(collection=name, k=0, keywords=["shard"]),
                pb.SearchRequest(collection=name, k=3, keyword_field="body", queries=_one_query()),
                pb.SearchRequest(collection=name, k=3, rrf_k=5, queries=_one_query()),
            ]
            assert [status(r) for r in bad] == [grpc.StatusCode.INVALID_ARGUMENT] * len(bad)
            with pytest.raises(InvalidArgument, match="with keyword="):
                c.search(name, np.ones((1, DIM)), fusion="rrf")
            assert c.search(name, keyword="shard", k=2).ids.tolist() == [[1, -1]]
            assert c.count(name) == 2
        finally:
            c.drop_collection(name)


def _one_query() -> Any:
    return wire.pack_matrix(np.ones((1, DIM), np.float32))


def test_cli_index_and_keyword_search(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    address = cluster_of(3).address
    with Client(address, timeout=60) as c:
        ids, body, _ = bodies(150, 8)
        c.create_collection(name, DIM)
        try:
            c.add(name, ids, None, payloads=[{"body": body[i]} if i in body else {} for i in ids])
            runner = CliRunner()

            def run(*args: str) -> str:
                result = runner.invoke(cli, [*args, "--address", address], catch_exceptions=False)
                assert result.exit_code == 0, result.output
                return result.output

            out = run("collections", "index", name, "body", "text", "--stemmer", "english", "--stopwords", "english")
            assert "indexed" in out and "stemmer english" in out
            got = json.loads(run("search", name, "--keyword", "sharded replicas", "-k", "4", "--json"))
            r = c.search(name, keyword="sharded replicas", k=4)
            assert [h["id"] for h in got[0]["hits"]] == [i for i in r.ids[0].tolist() if i >= 0]
            assert got[0]["query"] == "sharded replicas" and "score" in got[0]["hits"][0]
            table = run("search", name, "--keyword", "shard", "-k", "2")
            assert "score" in table
            described = json.loads(run("collections", "describe", name))
            assert described["text_indexes"]["body"]["stemmer"] == "english"
        finally:
            c.drop_collection(name)
