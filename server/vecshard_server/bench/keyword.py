"""`vecshard bench --workload keyword` and `--workload hybrid`: BM25 keyword search (and hybrid
search) through a local cluster, beside bm25s in this process on the same tokens, in the same run.

The corpus is generated: `docs` documents of Poisson(60) tokens drawn from a Zipf vocabulary of
`terms` terms (P(rank r) ~ 1/r, the shape of natural language's word frequencies). Term r is a word
of lowercase letters (its base-26 digits, at least 3 letters: the frequent terms are the short
ones), so the default analyzer (Unicode word tokens, lowercased) and bm25s's tokenizer both split a
document into exactly its generated tokens. Each query is 2 to 4 terms drawn from the corpus's
tokens, skipping the STOP_RANKS most frequent terms (the ones a stopword list would drop; with them
a query would score nearly every document).

Measured, in order:
1. bm25s (method "lucene", numpy backend, k1 1.2 and b 0.75 like vecshard's defaults: bm25s's own
   k1 default is 1.5): `bm25s.tokenize` and `index()` of the same texts (documents/s), its postings'
   bytes (data + indices + indptr per posting), one query at a time (p50/p99, QPS; and `get_scores`
   alone, without the top-k selection), and BATCHED_NQ queries in one `retrieve` call (QPS), top-10.
2. vecshard through `vecshard serve`'s cluster (LocalCluster, local shards, a data dir): the TEXT
   index created first, then Add of the documents (payload {"text": ...}; payload-only points for
   `keyword`, with a dense vector each for `hybrid`) in batches of ADD_BATCH: documents/s and the
   server's RSS growth per posting (payloads and WAL buffers included); the top-10 of every query
   against bm25s's (scores equal within 1e-5 relative); keyword top-10 p50/p99 and QPS with 1 and
   32 concurrent clients (each its own connection); `hybrid` adds the dense-only and the hybrid (RRF
   and linear) searches.
3. Durability: the cluster restarted with the text index (time until a keyword search answers) and
   without it (the index dropped: time until the collection answers a count); the difference is the
   cost of rebuilding the index from the payloads at startup, and the difference of the two
   restarted servers' RSS is the index's memory alone. Then the index is created again on the
   loaded payloads (the same rebuild, timed on its own).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard import Client
from vecshard.errors import VecshardError
from vecshard_server.bench.datasets import clustered
from vecshard_server.bench.latency import cpu_seconds
from vecshard_server.bench.measure import timed_concurrent, timed_loop
from vecshard_server.cluster.local import LocalCluster

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

DOC_LEN = 60  # mean tokens per document (Poisson)
STOP_RANKS = 100  # the most frequent terms, never drawn for queries
QUERY_TERMS = (2, 4)  # terms per query, inclusive
NQ = 1000
BATCHED_NQ = 200  # bm25s's batched retrieve: these many queries in one call
ADD_BATCH = 5000
CLIENTS = (1, 32)
DENSE_DIM = 32  # hybrid: the documents' vectors (clustered), IVF_FLAT
HYBRID_NLIST, HYBRID_NPROBE = 1024, 16
SCORE_RTOL = 1e-5
GOALS = {"build": 0.5, "p50_ms": 20.0, "qps": 0.5}  # x bm25s, ms at 1M documents, x bm25s in-process


def term_names(terms: int) -> list[str]:
    """Term r (0 the most frequent) as its base-26 digits in letters, at least 3 of them."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for r in range(terms):
        word = ""
        while r or len(word) < 3:
            r, d = divmod(r, 26)
            word = letters[d] + word
        out.append(word)
    return out


@dataclass
class Corpus:
    vocab: list[str]
    offsets: I64  # document i's tokens are tokens[offsets[i]:offsets[i + 1]]
    tokens: I32  # term ranks
    queries: list[list[str]] = field(default_factory=list)

    @property
    def docs(self) -> int:
        return int(self.offsets.size - 1)

    def texts(self) -> list[str]:
        """Each document as a string: its tokens' words joined by spaces."""
        words = np.array(self.vocab, dtype=object)
        o = self.offsets.tolist()
        return [" ".join(words[self.tokens[o[i] : o[i + 1]]]) for i in range(self.docs)]


def make_corpus(docs: int, terms: int, nq: int = NQ, seed: int = 0) -> Corpus:
    """The generated corpus and its queries (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, rng.poisson(DOC_LEN, size=docs))
    offsets = np.zeros(docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cdf = np.cumsum(1.0 / np.arange(1, terms + 1))
    cdf /= cdf[-1]
    tokens = np.empty(int(offsets[-1]), dtype=np.int32)
    chunk = 1 << 22
    for s in range(0, tokens.size, chunk):
        e = min(s + chunk, tokens.size)
        tokens[s:e] = np.minimum(np.searchsorted(cdf, rng.random(e - s), side="right"), terms - 1)
    corpus = Corpus(term_names(terms), offsets, tokens)
    picks = tokens[rng.integers(0, tokens.size, size=nq * QUERY_TERMS[1] * 4)]
    picks = picks[picks >= STOP_RANKS]
    lo, hi = QUERY_TERMS
    sizes = rng.integers(lo, hi + 1, size=nq)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    if picks.size < starts[-1]:
        raise ValueError(f"too few documents ({docs}) to draw {nq} queries of rarer terms: use more --docs")
    corpus.queries = [[corpus.vocab[t] for t in picks[starts[i] : starts[i + 1]]] for i in range(nq)]
    return corpus


def _rss(pids: list[int]) -> int:
    """Resident bytes of these processes (VmRSS)."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def _index_batches(nq: int) -> list[F32]:
    """timed_loop's batches: one query each, holding the query's index."""
    return [np.full(1, i, dtype=np.float32) for i in range(nq)]


def run_bm25s(texts: list[str], queries: list[list[str]], k: int, duration: float) -> dict[str, Any]:
    """bm25s ("lucene", numpy backend; k1 1.2 and b 0.75 as vecshard's defaults) on the same texts:
    build, memory, one-at-a-time QPS, batched QPS (the first BATCHED_NQ queries in one retrieve
    call), and every query's top k by bm25s's scores (`get_scores`, ties by id) for the agreement."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its logger to DEBUG

    t0 = time.perf_counter()
    tokenized = bm25s.tokenize(texts, lower=True, stopwords=None, stemmer=None, show_progress=False)
    t1 = time.perf_counter()
    model = bm25s.BM25(method="lucene", k1=1.2, b=0.75)  # bm25s defaults to k1 = 1.5
    model.index(tokenized, show_progress=False)
    t2 = time.perf_counter()
    del tokenized
    scores = model.scores
    postings = int(scores["data"].size)
    nbytes = sum(int(scores[key].nbytes) for key in ("data", "indices", "indptr"))

    def one(b: F32) -> object:
        return model.retrieve([queries[int(b[0])]], k=k, show_progress=False)

    single = timed_loop(one, _index_batches(len(queries)), duration)
    scoring = timed_loop(lambda b: model.get_scores(queries[int(b[0])]), _index_batches(len(queries)), duration)
    batch = queries[:BATCHED_NQ]
    t3 = time.perf_counter()
    model.retrieve(batch, k=k, show_progress=False)
    batched_qps = len(batch) / (time.perf_counter() - t3)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    top = np.zeros((len(queries), k), dtype=np.float64)
    lat = []
    t4 = time.perf_counter()
    for i, q in enumerate(queries):
        t = time.perf_counter()
        best, best_scores = top_matching(model.get_scores(q), k)
        lat.append(time.perf_counter() - t)
        ids[i, : best.size], top[i, : best.size] = best, best_scores
    tuned_qps = len(queries) / (time.perf_counter() - t4)
    p50, p99 = (float(v) * 1e3 for v in np.percentile(lat, [50, 99]))
    return {
        "tokenize_s": t1 - t0,
        "index_s": t2 - t1,
        "index_docs_per_s": len(texts) / (t2 - t1),
        "tokenize_index_docs_per_s": len(texts) / (t2 - t0),
        "postings": postings,
        "bytes_per_posting": nbytes / postings,
        "single": single,
        "scoring_only": scoring,
        "batched_qps": batched_qps,
        "batched_nq": len(batch),
        "tuned": {"qps": tuned_qps, "p50_ms": p50, "p99_ms": p99},
        "ids": ids,
        "scores": top,
    }


def top_matching(scores: npt.NDArray[np.floating[Any]], k: int) -> tuple[I64, npt.NDArray[np.floating[Any]]]:
    """The top k of a score array among its positive entries, higher first, ties by index: a top-k
    that looks at the matching documents only (bm25s's retrieve partitions the whole array)."""
    hit = np.flatnonzero(scores > 0)
    if hit.size > k:
        kth = np.partition(scores[hit], hit.size - k)[hit.size - k]
        hit = hit[scores[hit] >= kth]
    best = hit[np.lexsort((hit, -scores[hit]))][:k].astype(np.int64)
    return best, scores[best]


def agreement(ids: I64, scores: F32, ref_ids: I64, ref_scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    """vecshard's top k against bm25s's: the share of queries whose hit scores equal bm25s's positive
    scores (1e-5 relative, rank by rank) and whose ids above the k-th score (ties at the cut aside)
    are the same; the largest relative score difference."""
    same_scores = same_ids = 0
    worst = 0.0
    for i in range(ids.shape[0]):
        want = ref_scores[i][ref_scores[i] > 0]
        got = scores[i][ids[i] >= 0].astype(np.float64)
        if got.size == want.size:
            diff = np.abs(got - want) / np.maximum(np.abs(want), 1e-12)
            worst = max(worst, float(diff.max(initial=0.0)))
            same_scores += bool((diff <= SCORE_RTOL).all())
        cut = (want.min() if want.size else 0.0) * (1 + SCORE_RTOL)
        sure = set(ref_ids[i][: want.size][want > cut].tolist())
        same_ids += sure <= set(ids[i].tolist())
    n = max(1, ids.shape[0])
    return {"same_scores": same_scores / n, "same_ids": same_ids / n, "max_rel_diff": worst}


def _add_all(c: Client, name: str, texts: list[str], vectors: F32 | None) -> float:
    """Add every document (batches of ADD_BATCH, one client): seconds."""
    start = time.perf_counter()
    for s in range(0, len(texts), ADD_BATCH):
        e = min(s + ADD_BATCH, len(texts))
        payloads = [{"text": t} for t in texts[s:e]]
        c.add(name, np.arange(s, e), None if vectors is None else vectors[s:e], payloads=payloads)
    return time.perf_counter() - start


def _searches(
    cluster: LocalCluster, name: str, call: Callable[[Client, int], object], nq: int, duration: float
) -> dict[str, dict[str, float]]:
    """p50/p99 and QPS of one search at a time, with 1 and 32 concurrent clients (each its own Client),
    and the CPU the cluster's processes used meanwhile, in cores (warm-up included)."""
    clients: list[Client] = []
    pids = [p.popen.pid for p in cluster.processes()]

    def make_call() -> Callable[[F32], object]:
        c = Client(cluster.address, timeout=600)
        clients.append(c)
        return lambda b: call(c, int(b[0]))

    out = {}
    try:
        for n in CLIENTS:
            cpu0, t0 = cpu_seconds(pids), time.perf_counter()
            out[str(n)] = timed_concurrent(make_call, _index_batches(nq), duration, n)
            out[str(n)]["server_cores"] = (cpu_seconds(pids) - cpu0) / (time.perf_counter() - t0)
    finally:
        for c in clients:
            c.close()
    return out


def _wait_answer(c: Client, probe: Callable[[Client], object], timeout: float = 3600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe(c)
            return
        except VecshardError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _restart(cluster: LocalCluster, probe: Callable[[Client], object]) -> tuple[float, int]:
    """Stop the cluster (it snapshots), start it again: seconds until `probe` answers, and RSS then."""
    cluster.stop()
    t0 = time.perf_counter()
    cluster.start(timeout=3600)
    with Client(cluster.address, timeout=3600) as c:
        _wait_answer(c, probe)
        seconds = time.perf_counter() - t0
    return seconds, _rss([p.popen.pid for p in cluster.processes()])


def durability(cluster: LocalCluster, name: str, query: str, postings: int) -> dict[str, float]:
    """Restart with and without the text index; then build it again from the loaded payloads."""
    with_s, with_rss = _restart(cluster, lambda c: c.search(name, keyword=query, k=10))
    with Client(cluster.address, timeout=3600) as c:
        c.drop_payload_index(name, "text")
    without_s, without_rss = _restart(cluster, lambda c: c.count(name))
    with Client(cluster.address, timeout=3600) as c:
        t0 = time.perf_counter()
        c.create_payload_index(name, "text", "text")
        create_s = time.perf_counter() - t0
    rebuilt_rss = _rss([p.popen.pid for p in cluster.processes()])
    return {
        "restart_with_index_s": with_s,
        "restart_without_index_s": without_s,
        "startup_cost_s": with_s - without_s,
        "create_index_s": create_s,
        "index_bytes_per_posting": (with_rss - without_rss) / postings,
        "create_rss_bytes_per_posting": (rebuilt_rss - without_rss) / postings,
    }


def _load(c: Client, name: str, texts: list[str], vectors: F32 | None) -> dict[str, float]:
    """Create the collection and its TEXT index, then add the documents (trained after, for hybrid)."""
    n = len(texts)
    if vectors is None:
        c.create_collection(name, 8)  # payload-only points: no vector
    else:
        nlist = min(HYBRID_NLIST, max(8, n // 100))
        c.create_collection(name, DENSE_DIM, "l2", "ivf_flat", nlist=nlist, nprobe=HYBRID_NPROBE, train_threshold=n + 1)
    c.create_payload_index(name, "text", "text")
    add_s = _add_all(c, name, texts, vectors)
    out = {"add_s": add_s, "docs_per_s": n / add_s}
    if vectors is not None:
        t0 = time.perf_counter()
        c.train(name)
        out["train_s"] = time.perf_counter() - t0
    return out


def _top_k(c: Client, name: str, keywords: list[str], k: int) -> tuple[I64, F32]:
    ids, dist = [], []
    for s in range(0, len(keywords), 100):
        res = c.search(name, keyword=keywords[s : s + 100], k=k)
        ids.append(res.ids)
        dist.append(res.distances)
    return np.vstack(ids).astype(np.int64), np.vstack(dist).astype(np.float32)


def run_vecshard(
    cluster: LocalCluster,
    texts: list[str],
    keywords: list[str],
    ref: tuple[I64, npt.NDArray[np.float64]],
    k: int,
    duration: float,
    dense: tuple[F32, F32] | None = None,
) -> dict[str, Any]:
    """Load, check against bm25s's top k, and time keyword (and, with dense vectors, hybrid) searches."""
    name, nq = "bench_keyword", len(keywords)
    pids = [p.popen.pid for p in cluster.processes()]
    with Client(cluster.address, timeout=3600) as c:
        rss0 = _rss(pids)
        out: dict[str, Any] = _load(c, name, texts, None if dense is None else dense[0])
        out["rss_growth_bytes"] = _rss(pids) - rss0
        out["agreement"] = agreement(*_top_k(c, name, keywords, k), *ref)
    out["keyword"] = _searches(cluster, name, lambda c, i: c.search(name, keyword=keywords[i], k=k), nq, duration)
    if dense is not None:
        q = dense[1]
        out["dense"] = _searches(cluster, name, lambda c, i: c.search(name, q[i : i + 1], k), nq, duration)
        for fusion in ("rrf", "linear"):

            def hybrid(c: Client, i: int, f: str = fusion) -> object:
                return c.search(name, q[i : i + 1], k, keyword=keywords[i], fusion=f)

            out[f"hybrid_{fusion}"] = _searches(cluster, name, hybrid, nq, duration)
    return out


def run_keyword_bench(
    workload: str,
    docs: int,
    terms: int,
    shards: int,
    duration: float,
    workdir: Path,
    k: int = 10,
    nq: int = NQ,
    restart: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole `--workload keyword|hybrid` run (see the module docstring): its figures."""
    t0 = time.perf_counter()
    corpus = make_corpus(docs, terms, nq)
    texts = corpus.texts()
    keywords = [" ".join(q) for q in corpus.queries]
    log(f"generated {docs:,} documents ({corpus.tokens.size:,} tokens) in {time.perf_counter() - t0:.0f}s")
    result: dict[str, Any] = {
        "workload": workload,
        "docs": docs,
        "terms": terms,
        "tokens": int(corpus.tokens.size),
        "nq": nq,
        "k": k,
        "shards": shards,
        "duration": duration,
    }
    bm = run_bm25s(texts, corpus.queries, k, duration)
    ref = (bm.pop("ids"), bm.pop("scores"))
    result["bm25s"] = bm
    log(f"bm25s: index {bm['index_s']:.1f}s, {bm['single']['p50_ms']:.2f} ms p50")
    dense = None
    if workload == "hybrid":
        data = clustered(docs + nq, DENSE_DIM, centers=256)
        dense = (data[:docs], data[docs:])
    data_dir = workdir / "keyword-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    try:
        with LocalCluster(shards=shards, log_level="WARNING", shard_mode="local", data_dir=data_dir) as cluster:
            result["vecshard"] = run_vecshard(cluster, texts, keywords, ref, k, duration, dense)
            v = result["vecshard"]
            log(f"vecshard: add {v['add_s']:.1f}s, {v['keyword']['1']['p50_ms']:.2f} ms p50")
            if restart:
                result["durability"] = durability(cluster, "bench_keyword", keywords[0], bm["postings"])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _lat(row: dict[str, float]) -> str:
    return f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f}"


def _cpu_ms(row: dict[str, float]) -> str:
    return f"{row['server_cores'] / row['qps'] * 1e3:.1f}"


def format_markdown(r: dict[str, Any]) -> str:
    """The report: vecshard beside bm25s, each ratio against its goal."""
    bm, v = r["bm25s"], r["vecshard"]
    kw1, kw32 = v["keyword"]["1"], v["keyword"]["32"]
    build = v["docs_per_s"] / bm["index_docs_per_s"]
    ref_qps, tuned = max(bm["single"]["qps"], bm["batched_qps"]), bm["tuned"]
    at_1m = "" if r["docs"] == 1_000_000 else f" (the goal is for 1M documents; this run has {r['docs']:,})"
    shards = f"{r['shards']} shard{'s' if r['shards'] > 1 else ''}"
    vectors = " and vectors" if "dense" in v else ""
    lines = [
        f"# Keyword search (BM25, top-{r['k']}): {r['docs']:,} generated documents, {r['tokens']:,} tokens, "
        f"{r['terms']:,}-term Zipf vocabulary; {r['nq']} queries of 2-4 terms; vecshard on {shards} "
        f'(`vecshard serve`\'s local shards, a data dir), bm25s {bm_version()} in-process ("lucene", numpy)',
        "",
        "| figure | vecshard | bm25s | vecshard / bm25s | goal |",
        "|---|---:|---:|---:|---|",
        f"| index build, documents/s (vecshard: Add with the TEXT index; bm25s: index()) | {v['docs_per_s']:,.0f} "
        f"| {bm['index_docs_per_s']:,.0f} | {build:.2f} | >= {GOALS['build']}x: {_verdict(build >= GOALS['build'])} |",
        f"| bm25s tokenize() + index() from the texts, documents/s | | {bm['tokenize_index_docs_per_s']:,.0f} "
        f"| {v['docs_per_s'] / bm['tokenize_index_docs_per_s']:.2f} | |",
        f"| keyword p50 / p99 ms, 1 client (bm25s: one query a call) | {_lat(kw1)} | {_lat(bm['single'])} | "
        f"| p50 <= {GOALS['p50_ms']:.0f} ms: {_verdict(kw1['p50_ms'] <= GOALS['p50_ms'])}{at_1m} |",
        f"| QPS, 1 client (bm25s: one query a call) | {kw1['qps']:,.0f} | {bm['single']['qps']:,.0f} "
        f"| {kw1['qps'] / bm['single']['qps']:.2f} | |",
        f"| bm25s get_scores() alone (no top-k selection), one query a call: p50 / p99 ms, QPS | "
        f"| {_lat(bm['scoring_only'])}, {bm['scoring_only']['qps']:,.0f} | | |",
        f"| QPS, 32 clients (bm25s: {bm['batched_nq']} queries in one retrieve call) | {kw32['qps']:,.0f} "
        f"| {bm['batched_qps']:,.0f} | {kw32['qps'] / bm['batched_qps']:.2f} | |",
        f"| QPS, 32 clients against bm25s retrieve()'s best in-process QPS | {kw32['qps']:,.0f} | {ref_qps:,.0f} "
        f"| {kw32['qps'] / ref_qps:.2f} | >= {GOALS['qps']}x: {_verdict(kw32['qps'] >= GOALS['qps'] * ref_qps)} |",
        f"| bm25s get_scores() + a top-k over the matching documents only (the agreement's reference), "
        f"one query a call: p50 / p99 ms, QPS | | {_lat(tuned)}, {tuned['qps']:,.0f} | | |",
        f"| QPS, 32 clients against that tuned bm25s | {kw32['qps']:,.0f} | {tuned['qps']:,.0f} "
        f"| {kw32['qps'] / tuned['qps']:.2f} | >= {GOALS['qps']}x (stricter): "
        f"{_verdict(kw32['qps'] >= GOALS['qps'] * tuned['qps'])} |",
        f"| p50 / p99 ms, 32 clients | {_lat(kw32)} | | | |",
        f"| server CPU while searching, cores busy, 1 / 32 clients (CPU ms a query) | {kw1['server_cores']:.2f} / "
        f"{kw32['server_cores']:.2f} ({_cpu_ms(kw1)} / {_cpu_ms(kw32)}) | | | |",
        f"| bytes per posting (vecshard: server RSS growth over the Add, payloads{vectors} included; bm25s: its "
        "arrays) "
        f"| {v['rss_growth_bytes'] / bm['postings']:.1f} | {bm['bytes_per_posting']:.1f} | | |",
        *_durability_rows(r),
        "",
        f"Postings (distinct document-term pairs): {bm['postings']:,}. Agreement with bm25s over the {r['nq']} "
        f"queries: top-{r['k']} scores equal (1e-5 relative) for {v['agreement']['same_scores']:.1%}, the same "
        f"ids (ties at the cut aside) for {v['agreement']['same_ids']:.1%}; largest relative score difference "
        f"{v['agreement']['max_rel_diff']:.1e}.",
    ]
    if "dense" in v:
        lines += _hybrid_lines(r)
    return "\n".join(lines) + "\n"


def bm_version() -> str:
    try:
        import bm25s

        return str(bm25s.__version__)
    except (ImportError, AttributeError):
        return "?"


def _durability_rows(r: dict[str, Any]) -> list[str]:
    d = r.get("durability")
    if not d:
        return []
    per_10m = 10_000_000 / r["docs"]
    return [
        f"| text index alone, bytes per posting (RSS of the restarted server with it minus without it) "
        f"| {d['index_bytes_per_posting']:.1f} | | | |",
        f"| restart until a keyword search answers, s (without the index: until a count answers) "
        f"| {d['restart_with_index_s']:.1f} ({d['restart_without_index_s']:.1f}) | | | |",
        f"| startup cost of the text index, s (the difference; x{per_10m:g} for 10M documents) "
        f"| {d['startup_cost_s']:.1f} ({d['startup_cost_s'] * per_10m:.0f}) | | | |",
        f"| create_payload_index on the loaded payloads, s (x{per_10m:g} for 10M documents) "
        f"| {d['create_index_s']:.1f} ({d['create_index_s'] * per_10m:.0f}) | | | |",
    ]


def _hybrid_lines(r: dict[str, Any]) -> list[str]:
    v = r["vecshard"]
    rows = [("keyword only", v["keyword"]), ("dense only (IVF_FLAT)", v["dense"])]
    rows += [("hybrid, RRF", v["hybrid_rrf"]), ("hybrid, linear", v["hybrid_linear"])]
    lines = [
        "",
        f"## Hybrid: {DENSE_DIM}-d clustered vectors beside the text (IVF_FLAT, nprobe {HYBRID_NPROBE}), "
        f"trained in {v['train_s']:.1f}s after the Add; 100 candidates a leg",
        "",
        "| search (top-10) | p50 / p99 ms, 1 client | QPS, 1 client | p50 / p99 ms, 32 clients | QPS, 32 clients "
        "| server CPU ms a query, 1 / 32 clients |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in rows:
        one, many = row["1"], row["32"]
        lines.append(
            f"| {label} | {_lat(one)} | {one['qps']:,.0f} | {_lat(many)} | {many['qps']:,.0f} "
            f"| {_cpu_ms(one)} / {_cpu_ms(many)} |"
        )
    return lines
