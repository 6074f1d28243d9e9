"""The analyzer and the TEXT payload index (shard/analysis.py, shard/text_index.py) on their own:
BM25 scores equal to bm25s's "lucene" method over the same tokens (1e-5 relative), before and after
removes, upserts and payload edits, with the statistics of one index or of several summed (as the
coordinator sums shards'), exact counters, the `text` filter condition with and without an index,
and the bad parameters."""

from __future__ import annotations

from typing import Any

import bm25s
import numpy as np
import pytest

from vecshard.errors import AlreadyExists, InvalidArgument
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.shard.analysis import (
    DEFAULT,
    STOPWORD_LANGUAGES,
    Analyzer,
    filled,
    params_from_json,
    params_to_json,
    same_params,
    stopwords,
)
from vecshard_server.shard.payloads import PayloadStore, encode
from vecshard_server.shard.text_index import TextIndex, document_of

BASES = ["run", "walk", "cat", "dog", "index", "search", "shard", "vector", "rank", "score", "text", "word"]
BASES += ["café", "naïve", "straße", "東京", "data_set", "x42", "42"]
WORDS = [b + s for b in BASES for s in ("", "s", "ing", "ed", "er")] + list(stopwords("english"))
ENGLISH = ppb.TextIndexParams(stemmer="english", stopwords="english")


def texts(n: int, seed: int, length: int = 30) -> list[str]:
    """n generated texts: Zipf-drawn words (stopwords, Unicode, digits), mixed case and punctuation."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    out = []
    for _ in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(0, length)), p=p))
        out.append(", ".join(w.upper() if rng.random() < 0.1 else w for w in words) + ".")
    return out


def queries(analyzer: Analyzer, n: int, seed: int) -> list[list[str]]:
    """n queries' analysed terms (repeats kept, some terms stopwords or absent from the corpus)."""
    rng = np.random.default_rng(seed)
    return [analyzer.analyze(" ".join(rng.choice([*WORDS, "absent"], size=int(rng.integers(1, 6))))) for _ in range(n)]


def reference(
    docs: dict[int, list[str]], query: list[str], k: int, k1: float = 1.2, b: float = 0.75
) -> tuple[np.ndarray, np.ndarray]:
    """bm25s's "lucene" top k over the documents (id -> tokens): (scores, ids), highest first, of
    scores equal as float32 (as sent) the smaller id first."""
    ids = np.array(sorted(docs), dtype=np.int64)
    retriever = bm25s.BM25(method="lucene", k1=k1, b=b, dtype="float64")
    retriever.index([docs[int(i)] for i in ids], show_progress=False)
    known = [t for t in query if t in retriever.vocab_dict]
    scores = retriever.get_scores(known) if known else np.zeros(ids.size)
    hit = np.flatnonzero(scores > 0)
    order = hit[np.lexsort((ids[hit], -scores[hit].astype(np.float32)))][:k]
    return scores[order], ids[order]


class Store:
    """A PayloadStore with a TEXT index on "body", and the model of what it holds (id -> text)."""

    def __init__(self, params: ppb.TextIndexParams | None = ENGLISH, create: bool = True) -> None:
        self.store = PayloadStore()
        if create:
            self.store.create_index("body", "text", filled(params))
        self.model: dict[int, str] = {}

    def put(self, ids: list[int], bodies: list[Any]) -> None:
        payloads = [{"body": t, "n": i} if t is not None else {"n": i} for i, t in zip(ids, bodies, strict=True)]
        self.store.put(ids, [(p, encode(p)) for p in payloads])
        for i, t in zip(ids, bodies, strict=True):
            if isinstance(t, str):
                self.model[i] = t
            else:
                self.model.pop(i, None)

    def drop(self, ids: list[int]) -> None:
        self.store.drop(ids)
        for i in ids:
            self.model.pop(i, None)

    @property
    def index(self) -> TextIndex:
        return self.store.texts["body"]

    def tokens(self) -> dict[int, list[str]]:
        return {i: self.index.analyzer.analyze(t) for i, t in self.model.items()}

    def search(self, query: list[str], k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        docs, tokens, df = self.index.stats(query)
        live = self.store.matching(None)[0] if mask is None else mask
        return self.index.score(query, df, docs, tokens, k, live, self.store.ids_by_slot())


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)


def check_against_bm25s(s: Store, seed: int, k1: float = 1.2, b: float = 0.75) -> None:
    tokens = s.tokens()
    for q in queries(s.index.analyzer, 40, seed):
        for k in (1, 10, 1000):
            assert_same(s.search(q, k), reference(tokens, q, k, k1, b))


# -- the analyzer ------------------------------------------------------------------------------------


def test_default_analyzer_lowercases_unicode_word_tokens_and_keeps_every_one() -> None:
    assert DEFAULT.analyze("The CAFÉ, naïve straße: data_set x42-7 東京!") == [
        "the",
        "café",
        "naïve",
        "straße",
        "data_set",
        "x42",
        "7",
        "東京",
    ]
    assert DEFAULT.analyze("the the THE") == ["the", "the", "the"]
    assert DEFAULT.analyze(" ,.;- ") == []


def test_stopwords_go_before_stemming_and_the_english_list_is_lucenes() -> None:
    a = Analyzer(ENGLISH)
    assert a.analyze("The runners were running to the searches of an index") == [
        "runner",
        "were",
        "run",
        "search",
        "index",
    ]
    assert len(stopwords("english")) == 33 and {"the", "a", "with", "into"} <= stopwords("english")
    assert Analyzer(ppb.TextIndexParams(stopwords="english")).analyze("the Running") == ["running"]
    assert Analyzer(ppb.TextIndexParams(stemmer="french")).analyze("Les chevaux") == ["le", "cheval"]
    assert a.counts("running runs ran") == {"run": 2, "ran": 1}
    for language in STOPWORD_LANGUAGES:  # every list bm25s ships loads, lowercased
        words = stopwords(language)
        assert words and all(w == w.lower() for w in words)


def test_params_are_checked_and_filled() -> None:
    p = filled(ppb.TextIndexParams(stemmer="English"))
    assert (p.stemmer, p.stopwords, p.k1, p.b) == ("english", "", pytest.approx(1.2), pytest.approx(0.75))
    a = Analyzer(ppb.TextIndexParams(k1=0.9, b=0.3))
    assert (a.k1, a.b) == (0.9, 0.3)  # the float32 fields read back as the values given
    assert (Analyzer().k1, Analyzer().b) == (1.2, 0.75)
    with pytest.raises(InvalidArgument, match="english.*french|french.*english"):
        filled(ppb.TextIndexParams(stemmer="klingon"))
    with pytest.raises(InvalidArgument, match="stopwords 'klingon' is not supported: use one of .*english"):
        filled(ppb.TextIndexParams(stopwords="klingon"))
    for bad in (ppb.TextIndexParams(k1=-0.1), ppb.TextIndexParams(b=1.5), ppb.TextIndexParams(b=float("nan"))):
        with pytest.raises(InvalidArgument, match="k1 must be|b must be"):
            filled(bad)
    edge = filled(ppb.TextIndexParams(k1=0, b=1))
    assert (edge.k1, edge.b) == (0, 1)
    assert same_params(params_from_json(params_to_json(p)), p)
    assert not same_params(filled(ENGLISH), p)


def test_document_of_takes_one_string_and_counts_other_values_as_skipped() -> None:
    assert document_of({"t": "hi"}, ["t"]) == ("hi", False)
    assert document_of({"t": ["hi"]}, ["t"]) == ("hi", False)  # a list of one string
    assert document_of({"a": {"t": "x"}}, ["a", "t"]) == ("x", False)
    assert document_of({"t": None}, ["t"]) == (None, False)
    assert document_of({}, ["t"]) == (None, False)
    for other in (3, ["a", "b"], {"x": 1}, True, [1]):
        assert document_of({"t": other}, ["t"]) == (None, True)


# -- BM25 against bm25s ------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [ENGLISH, None, ppb.TextIndexParams(k1=0.8, b=0.3)])
def test_scores_equal_bm25s_lucene_before_and_after_removes_upserts_and_edits(
    params: ppb.TextIndexParams | None,
) -> None:
    s = Store(params, create=False)
    corpus = texts(600, seed=1)
    s.put(list(range(400)), corpus[:400])
    s.store.create_index("body", "text", filled(params))  # from the stored payloads
    s.put(list(range(400, 600)), corpus[400:])  # then kept up to date
    k1, b = s.index.analyzer.k1, s.index.analyzer.b
    check_against_bm25s(s, seed=2, k1=k1, b=b)
    rng = np.random.default_rng(3)
    s.drop(rng.choice(600, 150, replace=False).tolist())
    upserted = rng.choice(700, 200, replace=False).tolist()  # some stored, some removed, some new
    s.put(upserted, texts(200, seed=4))
    edited = rng.choice(sorted(s.model), 60, replace=False).tolist()
    s.put(edited[:20], [None] * 20)  # the field removed
    s.put(edited[20:40], [7] * 20)  # not a string: skipped
    s.put(edited[40:], texts(20, seed=5))
    check_against_bm25s(s, seed=6, k1=k1, b=b)
    assert s.index.skipped == 20


def test_statistics_summed_over_several_indexes_score_as_one_index() -> None:
    """As the coordinator does: documents, tokens and df summed over shards, each shard's top k with
    them, merged by (score, id), equal one index over all the documents."""
    corpus = texts(900, seed=7)
    shards = [Store() for _ in range(3)]
    for i, text in enumerate(corpus):
        shards[i * 7919 % 3].put([i], [text])
    whole = {i: shards[0].index.analyzer.analyze(t) for i, t in enumerate(corpus)}
    for q in queries(shards[0].index.analyzer, 40, seed=8):
        stats = [s.index.stats(q) for s in shards]
        docs, tokens = sum(x[0] for x in stats), sum(x[1] for x in stats)
        df = np.sum([x[2] for x in stats], axis=0).tolist() if q else []
        parts = [
            s.index.score(q, df, docs, tokens, 10, s.store.matching(None)[0], s.store.ids_by_slot()) for s in shards
        ]
        scores, ids = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        order = np.lexsort((ids, -scores))[:10]
        assert_same((scores[order], ids[order]), reference(whole, q, 10))


def test_a_filter_mask_restricts_the_hits_and_ties_go_to_the_smaller_id() -> None:
    s = Store(None)
    s.put([50, 10, 30, 20, 40], ["red fox", "red fox", "red fox", "blue fox", "red fox"])
    scores, ids = s.search(["red"], 3)
    assert ids.tolist() == [10, 30, 40] and len(set(scores.tolist())) == 1
    mask = s.store.matching(None)[0].copy()
    mask[s.store.slots_of(np.array([10, 40]))] = False
    assert s.search(["red", "fox"], 10, mask)[1].tolist() == [30, 50, 20]
    assert s.search([], 10)[1].size == 0 and s.search(["absent"], 10)[1].size == 0


def test_counters_stay_exact_through_many_rewrites_and_renumbering() -> None:
    s = Store()
    rng = np.random.default_rng(9)
    for step in range(60):
        ids = rng.choice(300, 150, replace=False).tolist()
        if step % 5 == 4:
            s.drop(ids[:50])
        else:
            s.put(ids, texts(150, seed=100 + step))
    tokens = s.tokens()
    index = s.index
    assert index.documents == len(tokens) and index.tokens == sum(map(len, tokens.values()))
    df: dict[str, int] = {}
    for toks in tokens.values():
        for t in set(toks):
            df[t] = df.get(t, 0) + 1
    assert index.terms == len(df)
    assert index.stats(sorted(df))[2] == [df[t] for t in sorted(df)]
    assert index._next <= 4096 + 2 * 300 + 150  # dead document numbers were renumbered away (9000 given out)
    check_against_bm25s(s, seed=10)


def test_text_condition_with_and_without_an_index_gives_the_same_answer() -> None:
    s = Store(None)
    corpus = texts(300, seed=11)
    s.put(list(range(300)), corpus)
    s.put([300, 301], [5, None])
    plain = PayloadStore()
    plain.put(list(range(302)), [(p, encode(p)) for p in s.store.freeze()[1][:302] if p is not None])
    for q in [*(" ".join(t) for t in queries(DEFAULT, 30, seed=12)), "", "the the", "Absent words"]:
        f = ppb.Filter(must=[ppb.Condition(field=ppb.FieldCondition(key="body", text=q))])
        indexed, unindexed = s.store.matching(f)
        scanned, fields = plain.matching(f)
        want = {
            i for i, t in s.model.items() if (terms := set(DEFAULT.analyze(q))) and terms <= set(DEFAULT.analyze(t))
        }
        assert set(s.store.ids_of(indexed).tolist()) == want == set(plain.ids_of(scanned).tolist())
        assert unindexed == [] and fields == ["body"]


def test_an_index_with_a_stemmer_matches_stems_and_a_field_has_one_index() -> None:
    s = Store()
    s.put([1, 2, 3], ["Runners running", "the run", "walked"])
    f = ppb.Filter(must=[ppb.Condition(field=ppb.FieldCondition(key="body", text="RUNS"))])
    assert s.store.ids_of(s.store.matching(f)[0]).tolist() == [1, 2]
    assert not s.store.create_index("body", "text", filled(ENGLISH))  # the same: nothing to do
    with pytest.raises(AlreadyExists, match="already indexed as text"):
        s.store.create_index("body", "text", filled(None))
    with pytest.raises(AlreadyExists):
        s.store.create_index("body", "keyword")
    with pytest.raises(InvalidArgument):
        s.store.create_index("", "text", filled(None))  # the string ids' reserved key is no field
    s.store.drop_index("body")
    assert s.store.ids_of(s.store.matching(f)[0]).tolist() == []  # scanned, by the default analyzer


def test_bulk_builds_in_chunks_and_one_document_writes_merge_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    from vecshard_server.shard import text_index

    monkeypatch.setattr(text_index, "_CHUNK", 37)  # a bulk build of many segments, merged once
    s = Store(create=False)
    corpus = texts(700, seed=13)
    s.put(list(range(500)), corpus[:500])
    s.store.create_index("body", "text", filled(ENGLISH))
    assert len(s.index.segments) == 1
    for i in range(500, 700):  # one document per write: segments merge as they come
        s.put([i], [corpus[i]])
        assert len(s.index.segments) <= text_index._MAX_SEGMENTS
    merged = len(s.index.segments)
    assert merged > 1, "one-document writes each add a segment"
    assert merged < 12, f"200 one-document writes left {merged} segments: they were not merged"
    check_against_bm25s(s, seed=14)
