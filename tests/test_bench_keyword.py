"""The keyword and hybrid benchmarks run end to end at a tiny size, and the real corpus they use
for quality is whole: `vecshard bench --workload keyword|hybrid|hybrid-quality` (no timing asserted).

What can fail: the generated corpus must tokenize to exactly its tokens (else bm25s and vecshard
would not see the same terms), vecshard's keyword top 10 must score as bm25s's "lucene" method
does on the same tokens (the bench's agreement check), the restart and rebuild figures must come
out, the hybrid searches must run, and every query of the real corpus must name documents that
exist, with the keyword leg equal to an in-process bm25s over the same analyzer.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from vecshard_server.bench import hybrid_quality, keyword

DOCS_SHA256 = "b27ef14947605d569ac9a8447f8406e88a1b7050d59b9a2bb2fd930478ddabfd"


def test_generated_corpus_tokenizes_to_its_tokens() -> None:
    words = keyword.term_names(30_000)
    assert len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]{3,}", w) for w in words)
    c = keyword.make_corpus(3000, 30_000, nq=200)
    again = keyword.make_corpus(3000, 30_000, nq=200)
    assert np.array_equal(c.tokens, again.tokens) and c.queries == again.queries
    texts = c.texts()
    for i in (0, 1, 2999):
        assert re.findall(r"\w+", texts[i].lower()) == [c.vocab[t] for t in c.tokens[c.offsets[i] : c.offsets[i + 1]]]
    rank = {w: r for r, w in enumerate(c.vocab)}
    assert all(2 <= len(q) <= 4 and min(rank[t] for t in q) >= keyword.STOP_RANKS for q in c.queries)
    assert abs(c.tokens.size / c.docs - keyword.DOC_LEN) < 1


def test_keyword_bench_end_to_end(tmp_path: Path) -> None:
    """Through the CLI, as documented: the report and its figures land in --out."""
    out = tmp_path / "out"
    args = ["--workload", "keyword", "--docs", "2000", "--terms", "20000", "--duration", "0.2", "--shards", "2"]
    run = subprocess.run(
        [sys.executable, "-m", "vecshard_server", "bench", *args, "--workdir", str(tmp_path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads((out / "bench_keyword.json").read_text())
    assert r["docs"] == 2000 and r["shards"] == 2
    assert r["vecshard"]["agreement"]["same_scores"] == 1.0
    assert r["vecshard"]["agreement"]["same_ids"] == 1.0
    corpus = keyword.make_corpus(2000, 20_000)  # the bench's corpus (same seed): its document-term pairs
    doc = np.repeat(np.arange(2000), np.diff(corpus.offsets))
    assert r["bm25s"]["postings"] == np.unique(doc * 20_000 + corpus.tokens).size
    assert r["tokens"] == corpus.tokens.size
    assert set(r["vecshard"]["keyword"]) == {"1", "32"}
    d = r["durability"]
    assert d["restart_with_index_s"] > 0 and d["restart_without_index_s"] > 0 and d["create_index_s"] > 0
    report = (out / "bench_keyword.md").read_text()
    assert "| index build, documents/s" in report and "startup cost of the text index" in report
    assert report in run.stdout


def test_hybrid_bench_end_to_end(tmp_path: Path) -> None:
    r = keyword.run_keyword_bench("hybrid", 2000, 20_000, 1, 0.2, tmp_path, nq=100, restart=False, log=lambda _: None)
    v = r["vecshard"]
    assert v["agreement"]["same_scores"] == 1.0
    for mode in ("keyword", "dense", "hybrid_rrf", "hybrid_linear"):
        assert v[mode]["1"]["calls"] > 0 and v[mode]["32"]["calls"] > 0
    assert "durability" not in r
    assert "| hybrid, RRF |" in keyword.format_markdown(r)


def test_real_corpus_is_whole() -> None:
    data = hybrid_quality.DATA_DIR
    assert hashlib.sha256((data / "docs.jsonl").read_bytes()).hexdigest() == DOCS_SHA256
    assert DOCS_SHA256 in (data / "README.md").read_text()
    docs = hybrid_quality.load_docs()
    assert [d["id"] for d in docs] == list(range(len(docs)))
    names = {d["name"] for d in docs}
    assert len(names) == len(docs)
    queries = hybrid_quality.load_queries()
    assert len(queries) == 40 and len({q["id"] for q in queries}) == 40
    assert sorted({q["kind"] for q in queries}) == ["exact", "paraphrase"]
    assert sum(q["kind"] == "exact" for q in queries) == 20
    missing = [(q["id"], n) for q in queries for n in q["relevant"] if n not in names]
    assert missing == []


def test_quality_mode_runs_on_the_real_corpus() -> None:
    """A slice of the real corpus (every relevant document and the first others, 120 in all)."""
    r = hybrid_quality.run_quality_bench(shards=2, limit=120, log=lambda _: None)
    assert r["docs"] == 120 and r["queries"] == 40
    linear = [f"hybrid linear {w:g}/{1 - w:g}" for w in hybrid_quality.LINEAR_WEIGHTS]
    modes = ["keyword", "dense", "hybrid rrf", *linear]
    assert list(r["table"]) == modes
    for per in r["table"].values():
        assert set(per) == {"exact", "paraphrase", "all"}
        assert all(0.0 <= x <= 1.0 for row in per.values() for x in row)
    assert r["keyword_same_as_bm25s"] == 1.0
    assert all(0 <= rank <= 10 for ex in r["examples"] for rank in ex["ranks"].values())
    report = hybrid_quality.format_markdown(r)
    assert "| hybrid rrf |" in report and "pbkdf2_hmac" in report
