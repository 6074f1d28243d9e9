"""Benchmark: vecshard search through gRPC against in-process faiss on the same data, same run.

What is measured, for each shard count S (one `LocalCluster` per S, stopped afterwards):

- Search QPS and per-call latency (p50/p95/p99, ms) at each batch size B: `Client.search` with B
  queries per call against an IVF_FLAT collection, and, as the ceiling, an in-process
  `faiss.IndexIVFFlat` built over the *same* centroids (read back with `describe(...,
  include_centroids=True)`) holding the same vectors, searched with the same nprobe and B queries per
  call (B=1: one query at a time). Each loop runs for `duration_s` after a short warm-up.
- recall@k of both against exact ground truth (sift5k: the shipped ground truth in bench/data/sift5k,
  computed by brute force, not published; synthetic: `faiss.IndexFlatL2`). With the same centroids
  and nprobe the two must agree; this is reported (`recall_identical`, `same_ids`) rather than
  asserted.
- Add throughput (vectors/s): `Client.add` in 1000-vector batches into a fresh FLAT collection against
  `faiss.IndexFlatL2.add` in 1000-vector batches.

Ratios are vecshard / faiss. Timing goals are reported, never asserted: the numbers depend on the
machine, and the cluster's processes share its CPUs with the benchmark itself (see `machine`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vecshard import Client
from vecshard_server.bench.datasets import clustered, load_sift5k
from vecshard_server.bench.measure import make_batches, recall_at_k, timed_concurrent, timed_loop
from vecshard_server.cluster.local import LocalCluster

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
ADD_BATCH = 1000
SYNTHETIC_QUERIES = 1000
SYNTHETIC_CENTERS = 100
SYNTHETIC_SEED = 1234


def load_dataset(dataset: str, n: int, dim: int, k: int) -> tuple[F32, F32, I64, str]:
    """(base, queries, top-k ground truth ids, where the ground truth came from)."""
    if dataset == "sift5k":
        base, queries, gt = load_sift5k()
        if gt.shape[1] < k:
            raise ValueError(f"sift5k ground truth holds top-{gt.shape[1]}, fewer than k={k}")
        source = "sift5k groundtruth.npy (brute force)"
        return base, queries, gt[:, :k], source
    if dataset == "synthetic":
        both = clustered(n + SYNTHETIC_QUERIES, dim, centers=SYNTHETIC_CENTERS, seed=SYNTHETIC_SEED)
        base, queries = both[:n], both[n:]
        flat = faiss.IndexFlatL2(dim)
        flat.add(base)
        _, gt_ids = flat.search(queries, k)
        return base, queries, gt_ids.astype(np.int64), "faiss.IndexFlatL2 exact search"
    raise ValueError(f"unknown dataset {dataset!r}: use 'sift5k' or 'synthetic'")


def build_faiss_ivf(centroids: F32, base: F32, nlist: int, nprobe: int) -> Any:
    """In-process IndexIVFFlat (L2) over exactly these centroids, holding base with ids 0..n-1."""
    quantizer = faiss.IndexFlatL2(base.shape[1])
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    index = faiss.IndexIVFFlat(quantizer, base.shape[1], nlist)
    assert index.is_trained
    index.add(base)
    index.nprobe = nprobe
    return index


def measure_add(client: Client, base: F32) -> dict[str, float]:
    """Vectors/s of Client.add into a fresh FLAT collection vs IndexFlatL2.add, both in 1000-row batches."""
    n, dim = base.shape
    ids = np.arange(n, dtype=np.int64)
    client.create_collection("bench_add_warmup", dim=dim, metric="l2", index="flat")
    client.add("bench_add_warmup", ids[:ADD_BATCH], base[:ADD_BATCH])
    client.drop_collection("bench_add_warmup")
    faiss.IndexFlatL2(dim).add(base[:ADD_BATCH])

    client.create_collection("bench_add", dim=dim, metric="l2", index="flat")
    start = time.perf_counter()
    for s in range(0, n, ADD_BATCH):
        client.add("bench_add", ids[s : s + ADD_BATCH], base[s : s + ADD_BATCH])
    vecshard_s = time.perf_counter() - start
    client.drop_collection("bench_add")

    flat = faiss.IndexFlatL2(dim)
    start = time.perf_counter()
    for s in range(0, n, ADD_BATCH):
        flat.add(base[s : s + ADD_BATCH])
    faiss_s = time.perf_counter() - start
    vecshard_vps, faiss_vps = n / vecshard_s, n / max(faiss_s, 1e-9)
    return {"vecshard_vps": vecshard_vps, "faiss_vps": faiss_vps, "ratio": vecshard_vps / faiss_vps}


def bench_cluster(
    shards: int,
    base: F32,
    queries: F32,
    gt: I64,
    nlist: int,
    nprobe: int,
    k: int,
    batch_sizes: Sequence[int],
    duration_s: float,
    concurrency: Sequence[int] = (1,),
    sweep: Sequence[int] = (),
) -> dict[str, Any]:
    """Every measurement on one freshly started cluster of `shards` shards."""
    cluster = LocalCluster(shards=shards, log_level="WARNING", shard_mode="local").start()  # (serve's default)
    try:
        with Client(cluster.address, timeout=600) as client:
            name = "bench_ivf"
            index = load_and_train(client, name, base, nlist, nprobe)
            recall = compare_recall(client, name, index, queries, gt, k, nprobe)
            search_rows = measure_search(
                cluster.address, name, index, queries, k, nprobe, batch_sizes, duration_s, concurrency
            )
            curve = measure_curve(client, name, index, queries, gt, k, nlist, sweep, duration_s)
            index.nprobe = nprobe
            client.drop_collection(name)
            add = measure_add(client, base)
    finally:
        cluster.stop()
    return {"shards": shards, "recall": recall, "search": search_rows, "add": add, "curve": curve}


def load_and_train(client: Client, name: str, base: F32, nlist: int, nprobe: int) -> Any:
    """Fill an IVF_FLAT collection with base (ids 0..n-1), train it, and return the in-process faiss
    index over the same centroids and vectors."""
    n, dim = base.shape
    # A threshold above n keeps the collection from training itself while it is filled.
    client.create_collection(
        name,
        dim=dim,
        metric="l2",
        index="ivf_flat",
        nlist=nlist,
        nprobe=nprobe,
        train_threshold=max(n + 1, nlist),
    )
    client.add(name, np.arange(n, dtype=np.int64), base)
    client.train(name)
    info = client.describe(name, include_centroids=True)
    if not info.trained or info.centroids is None:
        raise RuntimeError(f"collection {name!r} did not train (state {info.training_state})")
    return build_faiss_ivf(info.centroids, base, nlist, nprobe)


def compare_recall(client: Client, name: str, index: Any, queries: F32, gt: I64, k: int, nprobe: int) -> dict[str, Any]:
    """recall@k of vecshard and of the faiss index, whether they agree, and the share of queries with the same ids."""
    _, vs_ids = client.search(name, queries, k=k, nprobe=nprobe)
    _, fa_ids = index.search(queries, k)
    vs_recall, fa_recall = recall_at_k(vs_ids, gt, k), recall_at_k(fa_ids, gt, k)
    return {
        "vecshard": vs_recall,
        "faiss": fa_recall,
        "recall_identical": vs_recall == fa_recall,
        "same_ids": float(np.mean(np.all(np.sort(vs_ids, 1) == np.sort(fa_ids, 1), axis=1))),
    }


def measure_search(
    address: str,
    name: str,
    index: Any,
    queries: F32,
    k: int,
    nprobe: int,
    batch_sizes: Sequence[int],
    duration_s: float,
    concurrency: Sequence[int],
) -> list[dict[str, Any]]:
    """QPS and latency of vecshard (a Client per caller) and the faiss index, per batch size and concurrency."""
    search_rows: list[dict[str, Any]] = []

    def vecshard_caller() -> Callable[[F32], object]:
        own = Client(address, timeout=600)
        return lambda q: own.search(name, q, k=k, nprobe=nprobe)

    for b in batch_sizes:
        batches = make_batches(queries, b)
        for conc in concurrency:
            vs = timed_concurrent(vecshard_caller, batches, duration_s, conc)
            # Concurrent in-process callers each get one OpenMP thread (as a threaded service would):
            # several OpenMP teams on 2 cores spin against each other.
            threads_before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1 if conc > 1 else threads_before)
            fa = timed_concurrent(lambda: lambda q: index.search(q, k), batches, duration_s, conc)
            faiss.omp_set_num_threads(threads_before)
            search_rows.append(
                {
                    "batch": b,
                    "concurrency": conc,
                    "vecshard": vs,
                    "faiss": fa,
                    "ratio": vs["qps"] / max(fa["qps"], 1e-9),
                }
            )
    return search_rows


def measure_curve(
    client: Client,
    name: str,
    index: Any,
    queries: F32,
    gt: I64,
    k: int,
    nlist: int,
    sweep: Sequence[int],
    duration_s: float,
) -> list[dict[str, Any]]:
    """Recall and QPS (batches of 64) of vecshard and the faiss index at each nprobe of the sweep up to
    nlist; leaves the index's nprobe at the sweep's last."""
    curve: list[dict[str, Any]] = []
    batches = make_batches(queries, 64)
    for probe in [p for p in sweep if p <= nlist]:
        _, ids = client.search(name, queries, k=k, nprobe=probe)
        index.nprobe = probe

        def probe_search(q: F32, p: int = probe) -> object:
            return client.search(name, q, k=k, nprobe=p)

        vs = timed_loop(probe_search, batches, duration_s / 2)
        fa = timed_loop(lambda q: index.search(q, k), batches, duration_s / 2)
        curve.append(
            {
                "nprobe": probe,
                "recall": recall_at_k(ids, gt, k),
                "vecshard_qps": vs["qps"],
                "faiss_qps": fa["qps"],
            }
        )
    return curve


def run_bench(
    shards_list: list[int] = [1, 2],  # noqa: B006 - read only
    dataset: str = "sift5k",
    n: int = 100_000,
    dim: int = 128,
    nlist: int = 64,
    nprobe: int = 16,
    k: int = 10,
    batch_sizes: Sequence[int] = (1, 64),
    duration_s: float = 3.0,
    out_dir: Path | None = None,
    concurrency: Sequence[int] = (1,),
    sweep: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    peers: Sequence[str] = (),
) -> dict[str, Any]:
    """Run every measurement; returns a JSON-serialisable dict (also written to out_dir if given).

    `n` and `dim` apply to the synthetic dataset only; sift5k is 5000 x 128 with 100 queries.
    """
    base, queries, gt, gt_source = load_dataset(dataset, n, dim, k)
    result: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "faiss_version": faiss.__version__,
            "faiss_omp_threads": faiss.omp_get_max_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "params": {
            "dataset": dataset,
            "n": int(base.shape[0]),
            "dim": int(base.shape[1]),
            "nq": int(queries.shape[0]),
            "nlist": nlist,
            "nprobe": nprobe,
            "k": k,
            "batch_sizes": list(batch_sizes),
            "duration_s": duration_s,
            "add_batch": ADD_BATCH,
            "ground_truth": gt_source,
        },
        "runs": [
            bench_cluster(s, base, queries, gt, nlist, nprobe, k, batch_sizes, duration_s, concurrency, sweep)
            for s in shards_list
        ],
    }
    result["peers"] = {}
    if "milvus" in peers:
        from vecshard_server.bench.peers import milvus_lite

        result["peers"]["milvus_lite"] = milvus_lite(base, queries, gt, nlist, nprobe, k, batch_sizes, duration_s)
    if "chroma" in peers:
        from vecshard_server.bench.peers import chroma

        result["peers"]["chroma"] = chroma(base, queries, gt, k, duration_s)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
        (out_dir / "bench.md").write_text(format_markdown(result))
        plot_curve(result, out_dir / "qps_recall.png")
    return result


def plot_curve(result: dict[str, Any], path: Path) -> bool:
    """The ann-benchmarks view: QPS (batches of 64) against recall@k over the nprobe sweep."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for run in result["runs"]:
        curve = run.get("curve") or []
        if not curve:
            continue
        recall = [c["recall"] for c in curve]
        ax.plot(recall, [c["vecshard_qps"] for c in curve], "o-", label=f"vecshard, {run['shards']} shards")
        if run is result["runs"][0]:
            ax.plot(recall, [c["faiss_qps"] for c in curve], "k--", label="faiss in-process")
    ax.set_xlabel(f"recall@{result['params']['k']}")
    ax.set_ylabel("queries per second (batches of 64)")
    ax.set_yscale("log")
    ax.set_title(f"{result['params']['dataset']}: QPS vs recall (nprobe sweep)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def format_markdown(result: dict[str, Any]) -> str:
    """Markdown tables of a run_bench result: search, recall and add, plus the machine and parameters."""
    lines = [
        *_md_search(result),
        *_md_recall(result),
        *_md_add(result),
        *_md_milvus(result),
        *_md_chroma(result),
        *_md_curve(result),
    ]
    return "\n".join(lines) + "\n"


def _latencies(x: dict[str, float]) -> str:
    return f"{x['p50_ms']:.2f} / {x['p95_ms']:.2f} / {x['p99_ms']:.2f}"


def _md_search(result: dict[str, Any]) -> list[str]:
    """The title, the machine and parameters, and the search table."""
    m, p = result["machine"], result["params"]
    lines = [
        f"# vecshard bench: {p['dataset']} ({p['n']} x {p['dim']}, {p['nq']} queries)",
        "",
        f"IVF_FLAT nlist={p['nlist']} nprobe={p['nprobe']} k={p['k']}, {p['duration_s']}s per measurement. "
        f"Machine: {m['cpu_count']} CPUs, faiss {m['faiss_version']} "
        f"({m['faiss_omp_threads']} OpenMP threads), "
        f"{m['platform']}. Ratio = vecshard / in-process faiss. Timings are reported, not asserted.",
        "",
        "## Search",
        "",
        "| shards | batch | clients | vecshard QPS | faiss QPS | ratio | vecshard p50/p95/p99 ms "
        "| faiss p50/p95/p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        for row in run["search"]:
            vs, fa = row["vecshard"], row["faiss"]
            lines.append(
                f"| {run['shards']} | {row['batch']} | {row.get('concurrency', 1)} | {vs['qps']:,.0f} "
                f"| {fa['qps']:,.0f} "
                f"| {row['ratio']:.3f} | {_latencies(vs)} | {_latencies(fa)} |"
            )
    return lines


def _md_recall(result: dict[str, Any]) -> list[str]:
    p = result["params"]
    lines = [
        "",
        f"## Recall@{p['k']} (ground truth: {p['ground_truth']})",
        "",
        "| shards | vecshard | faiss | identical | queries with same ids |",
        "|---:|---:|---:|:---:|---:|",
    ]
    for run in result["runs"]:
        r = run["recall"]
        lines.append(
            f"| {run['shards']} | {r['vecshard']:.4f} | {r['faiss']:.4f} "
            f"| {'yes' if r['recall_identical'] else 'NO'} | {r['same_ids']:.1%} |"
        )
    return lines


def _md_add(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Add ({result['params']['add_batch']}-vector batches, FLAT)",
        "",
        "| shards | vecshard vectors/s | faiss vectors/s | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        a = run["add"]
        lines.append(f"| {run['shards']} | {a['vecshard_vps']:,.0f} | {a['faiss_vps']:,.0f} | {a['ratio']:.3f} |")
    return lines


def _md_milvus(result: dict[str, Any]) -> list[str]:
    """Milvus Lite beside the first run (one client), or why it was skipped; nothing if not measured."""
    milvus = result.get("peers", {}).get("milvus_lite")
    if not milvus:
        return []
    if "skipped" in milvus:
        return ["", f"Milvus Lite: {milvus['skipped']}"]
    first = {row["batch"]: row for row in result["runs"][0]["search"] if row.get("concurrency", 1) == 1}
    lines = [
        "",
        f"## Peer: Milvus Lite (IVF_FLAT, same nlist/nprobe; recall {milvus['recall']:.4f}, "
        f"insert {milvus['insert_vps']:,.0f} vectors/s)",
        "",
        f"| batch | Milvus Lite QPS | vecshard QPS ({result['runs'][0]['shards']} shards) | vecshard / Milvus |",
        "|---:|---:|---:|---:|",
    ]
    for row in milvus["search"]:
        vs = first.get(row["batch"], {}).get("vecshard", {}).get("qps", float("nan"))
        lines.append(f"| {row['batch']} | {row['qps']:,.0f} | {vs:,.0f} | {vs / row['qps']:.1f} |")
    return lines


def _md_chroma(result: dict[str, Any]) -> list[str]:
    """Chroma's server against the first run's nprobe sweep at equal recall, or why it was not compared;
    nothing if not measured."""
    chroma = result.get("peers", {}).get("chroma")
    curve = result["runs"][0].get("curve") or []
    if not chroma:
        return []
    if "skipped" in chroma or not curve:
        return ["", f"Chroma: {chroma.get('skipped', 'no curve to compare with')}"]
    lines = [
        "",
        f"## Peer: Chroma server (HNSW; insert {chroma['insert_vps']:,.0f} vectors/s) at equal recall",
        "",
        "vecshard: the smallest nprobe of the sweep reaching Chroma's recall, batches of 64 "
        f"({result['runs'][0]['shards']} shards).",
        "",
        "| Chroma ef | recall | QPS batch 1 | QPS batch 64 | vecshard nprobe | vecshard recall "
        "| vecshard QPS batch 64 | vecshard / Chroma |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pt in chroma["points"]:
        match = next((c for c in curve if c["recall"] >= pt["recall"]), curve[-1])
        lines.append(
            f"| {pt['ef']} | {pt['recall']:.3f} | {pt['qps_batch1']:,.0f} | {pt['qps_batch64']:,.0f} "
            f"| {match['nprobe']} | {match['recall']:.3f} | {match['vecshard_qps']:,.0f} "
            f"| {match['vecshard_qps'] / pt['qps_batch64']:.1f} |"
        )
    return lines


def _md_curve(result: dict[str, Any]) -> list[str]:
    """The nprobe sweep of every run, if any was measured."""
    if not any(run.get("curve") for run in result["runs"]):
        return []
    lines = [
        "",
        "## QPS vs recall (nprobe sweep, batches of 64; plot: qps_recall.png)",
        "",
        "| shards | nprobe | recall | vecshard QPS | faiss QPS |",
        "|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        for c in run.get("curve", []):
            lines.append(
                f"| {run['shards']} | {c['nprobe']} | {c['recall']:.3f} | {c['vecshard_qps']:,.0f} "
                f"| {c['faiss_qps']:,.0f} |"
            )
    return lines
