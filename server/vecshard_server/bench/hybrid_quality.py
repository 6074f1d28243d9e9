"""`vecshard bench --workload hybrid-quality`: retrieval quality of keyword, dense and hybrid search
on a real text corpus, through a local cluster (the worked example of docs/hybrid.md).

The corpus (bench/data/stdlib_docs, see its README) is the docstrings of Python's standard library:
each document is its dotted name and docstring ("json.dumps\\nSerialize ``obj`` to a JSON ..."). The
40 hand-written queries each name their relevant documents: 20 "exact" ones name an identifier or a
rare term (`pbkdf2_hmac`, `SIGALRM`), 20 "paraphrase" ones say what is wanted in other words ("delete
a folder and everything inside it" for shutil.rmtree).

One MiniLM-bound collection (the server's default model, all-MiniLM-L6-v2, store_text) holds the
documents as texts, with a TEXT index on "text" (english stemmer and stopwords). Every query runs as
keyword only, dense only (the server embeds it), and hybrid with RRF (rrf_k 60) and with linear
fusion at several dense weights (keyword weight 1 - w); 100 candidates a leg. Scored: recall@10,
MRR@10 and nDCG@10 (binary relevance), per query kind and over all. The keyword leg is also checked
against bm25s in this process with the same analyzer (the top 10 must be the same documents).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vecshard import Client
from vecshard_server.cluster.local import LocalCluster

DATA_DIR = Path(__file__).parent / "data" / "stdlib_docs"
LINEAR_WEIGHTS = (0.3, 0.5, 0.7, 0.8)  # the dense weight w; keyword 1 - w
KINDS = ("exact", "paraphrase", "all")
K = 10


def load_docs() -> list[dict[str, Any]]:
    """The corpus: dicts with id (0..n-1, the line), name (dotted), kind and doc (the docstring)."""
    with (DATA_DIR / "docs.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_queries() -> list[dict[str, Any]]:
    """The hand-written queries: dicts with id, kind ("exact" or "paraphrase"), query and relevant (names)."""
    with (DATA_DIR / "queries.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def doc_text(row: dict[str, Any]) -> str:
    """What is indexed and embedded for a document: its dotted name, then its docstring."""
    return f"{row['name']}\n{row['doc']}"


def select(docs: list[dict[str, Any]], queries: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The documents to load: all of them, or every relevant one plus the first others up to `limit`."""
    if limit is None or limit >= len(docs):
        return docs
    wanted = {name for q in queries for name in q["relevant"]}
    chosen = [d for d in docs if d["name"] in wanted]
    others = [d for d in docs if d["name"] not in wanted][: max(0, limit - len(chosen))]
    return sorted(chosen + others, key=lambda d: int(d["id"]))


def scores(ranked: Sequence[int], relevant: set[int], k: int = K) -> tuple[float, float, float]:
    """(recall@k, MRR@k, nDCG@k) of one ranked id list, binary relevance."""
    hits = [r for r, i in enumerate(list(ranked)[:k]) if i in relevant]
    recall = len(hits) / len(relevant)
    mrr = 1.0 / (hits[0] + 1) if hits else 0.0
    dcg = sum(1.0 / np.log2(r + 2) for r in hits)
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(relevant), k)))
    return recall, mrr, float(dcg / ideal)


def analyze(text: str, stemmer: Any, stopwords: frozenset[str]) -> list[str]:
    """The english TEXT index's analyzer, for the in-process bm25s reference: word tokens, lowercased,
    stopwords dropped, stemmed (docs/hybrid.md)."""
    words: list[str] = stemmer.stemWords([w for w in re.findall(r"\w+", text.lower()) if w not in stopwords])
    return words


def bm25s_top(texts: list[str], ids: list[int], queries: list[str], k: int = K) -> list[list[int]]:
    """bm25s ("lucene") over the same analysed terms: each query's top-k ids with a positive score."""
    import bm25s
    import Stemmer
    from bm25s.stopwords import STOPWORDS_EN

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its logger to DEBUG

    stem, stop = Stemmer.Stemmer("english"), frozenset(STOPWORDS_EN)
    model = bm25s.BM25(method="lucene", k1=1.2, b=0.75)  # bm25s defaults to k1 = 1.5
    model.index([analyze(t, stem, stop) for t in texts], show_progress=False)
    out = []
    for q in queries:
        terms = [t for t in analyze(q, stem, stop) if t in model.vocab_dict]
        s = model.get_scores(terms) if terms else np.zeros(len(texts))
        order = np.argsort(-s, kind="stable")[:k]
        out.append([ids[i] for i in order if s[i] > 0])
    return out


def _runs(c: Client, name: str, texts: list[str]) -> dict[str, list[list[int]]]:
    """Every search mode's ranked ids for each query, by mode label."""

    def ids(**kw: Any) -> list[list[int]]:
        res = c.search(name, k=K, **kw)
        return [[int(i) for i in row if i >= 0] for row in res.ids]

    runs = {
        "keyword": ids(keyword=texts),
        "dense": ids(texts=texts),
        "hybrid rrf": ids(texts=texts, keyword=texts, fusion="rrf"),
    }
    for w in LINEAR_WEIGHTS:
        runs[f"hybrid linear {w:g}/{1 - w:g}"] = ids(texts=texts, keyword=texts, fusion="linear", weights=(w, 1 - w))
    return runs


def _table(
    runs: dict[str, list[list[int]]], queries: list[dict[str, Any]], by_name: dict[str, int]
) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for mode, ranked in runs.items():
        per: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in KINDS}
        for q, r in zip(queries, ranked, strict=True):
            s = scores(r, {by_name[n] for n in q["relevant"]})
            per[q["kind"]].append(s)
            per["all"].append(s)
        out[mode] = {kind: [float(x) for x in np.mean(v, axis=0)] for kind, v in per.items() if v}
    return out


def run_quality_bench(shards: int = 2, limit: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Load the corpus (all of it, or `limit` documents: every relevant one and the first others) into a
    MiniLM collection with an english TEXT index; score every search mode over the queries."""
    queries = load_queries()
    docs = select(load_docs(), queries, limit)
    by_name = {d["name"]: int(d["id"]) for d in docs}
    missing = [n for q in queries for n in q["relevant"] if n not in by_name]
    if missing:
        raise ValueError(f"queries name documents the corpus lacks: {missing}")
    texts, qtexts = [doc_text(d) for d in docs], [q["query"] for q in queries]
    ids = [int(d["id"]) for d in docs]
    counts = {kind: sum(q["kind"] == kind or kind == "all" for q in queries) for kind in KINDS}
    result: dict[str, Any] = {"docs": len(docs), "queries": len(queries), "counts": counts, "shards": shards, "k": K}
    with LocalCluster(shards=shards, log_level="WARNING", shard_mode="local") as cluster:
        with Client(cluster.address, timeout=3600) as c:
            name = "stdlib_docs"
            c.create_collection(name, 0, metric=None, model="minilm", store_text=True)
            c.create_payload_index(name, "text", "text", stemmer="english", stopwords="english")
            t0 = time.perf_counter()
            for s in range(0, len(texts), 256):
                c.add(name, ids[s : s + 256], texts=texts[s : s + 256])
            result["load_s"] = time.perf_counter() - t0
            log(f"loaded {len(texts)} documents (embedded by the server) in {result['load_s']:.0f}s")
            runs = _runs(c, name, qtexts)
    reference = bm25s_top(texts, ids, qtexts)
    result["keyword_same_as_bm25s"] = float(np.mean([a == b for a, b in zip(runs["keyword"], reference, strict=True)]))
    result["table"] = _table(runs, queries, by_name)
    result["examples"] = _examples(runs, queries, by_name)
    return result


def _examples(
    runs: dict[str, list[list[int]]], queries: list[dict[str, Any]], by_name: dict[str, int]
) -> list[dict[str, Any]]:
    """Per query: the rank (1-based, 0 when outside the top 10) of its first relevant document in each mode."""
    out = []
    for i, q in enumerate(queries):
        rel = {by_name[n] for n in q["relevant"]}
        ranks = {}
        for mode, ranked in runs.items():
            hit = [r + 1 for r, x in enumerate(ranked[i][:K]) if x in rel]
            ranks[mode] = hit[0] if hit else 0
        out.append({"id": q["id"], "kind": q["kind"], "query": q["query"], "ranks": ranks})
    return out


def format_markdown(r: dict[str, Any]) -> str:
    """The quality table (recall@10 / MRR@10 / nDCG@10 per mode and query kind) and the per-query ranks."""
    lines = [
        f"# Keyword, dense and hybrid search on Python's stdlib docstrings ({r['docs']:,} documents, "
        f"{r['queries']} hand-written queries; {r['shards']} shards; MiniLM; english stemmer and stopwords)",
        "",
        "recall@10 / MRR@10 / nDCG@10 (binary relevance); linear w/1-w is (dense, keyword) weights.",
        "",
        "| search | " + " | ".join(f"{kind} ({r['counts'][kind]})" for kind in KINDS) + " |",
        "|---|---:|---:|---:|",
    ]
    for mode, per in r["table"].items():
        cells = [" / ".join(f"{x:.3f}" for x in per[kind]) for kind in KINDS]
        lines.append(f"| {mode} | {' | '.join(cells)} |")
    lines += [
        "",
        f"The keyword leg's top 10 equals bm25s's (\"lucene\", same analyzer, in-process) for "
        f"{r['keyword_same_as_bm25s']:.0%} of the queries.",
        "",
        "Rank of the first relevant document (0: not in the top 10):",
        "",
        "| query | kind | " + " | ".join(r["table"]) + " |",
        "|---|---|" + "---:|" * len(r["table"]),
    ]
    for ex in r["examples"]:
        ranks = " | ".join(str(ex["ranks"][m]) for m in r["table"])
        lines.append(f"| {ex['query']} | {ex['kind']} | {ranks} |")
    return "\n".join(lines) + "\n"
