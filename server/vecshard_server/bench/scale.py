"""Scale benchmark: millions of vectors through `vecshard serve`, beside in-process faiss of the same kind.

For each index kind (IVF_FLAT, IVF_SQ8, IVF_PQ with refine), in one run on one machine:
- in-process faiss: train on a sample, add every vector, search (recall@k, QPS at batch 1, 64 and
  1024 for each nprobe); the index's own bytes (codes + ids per list, and the centroids);
- vecshard: `vecshard serve`'s default cluster (a coordinator holding S local shards, each with a
  data dir: WAL and snapshots on disk), loaded with `vecshard import` (a sample first, then Train, then the rest,
  resumed from the same state file), the same searches, and the resident memory of the process
  (/proc/PID/status: RssAnon is the heap; RssFile the memory-mapped files, pages the kernel may drop).

The data is synthetic and written once to a memory-mapped .npy in the work dir: Gaussian clusters
around n / 10,000 centres, each point the centre plus a point of a 16-dimensional latent space
mapped linearly into `dim` dimensions, plus small noise (low intrinsic dimension, as real embeddings
have). Exact ground truth by brute force (faiss.IndexFlatL2, in chunks, merged with ResultHeap).
Refine for the in-process PQ index re-ranks its k * r candidates with the float vectors read from
the same memory-mapped file, as the shards do.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vecshard import Client
from vecshard_server.bench.measure import recall_at_k
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.memory import TRIM_EVERY_S, release_free_memory

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

CHUNK = 1 << 20
LATENT = 16
NQ = 1000
SEED = 20261127


@dataclass(frozen=True)
class Kind:
    name: str  # vecshard's index type
    pq_m: int = 0
    refine: int = 0

    @property
    def label(self) -> str:
        if self.name == "ivf_pq":
            return f"IVF_PQ{self.pq_m}" + (f"+refine{self.refine}" if self.refine > 1 else "")
        return self.name.upper()


DEFAULT_KINDS = (Kind("ivf_flat"), Kind("ivf_sq8"), Kind("ivf_pq", pq_m=16, refine=8))


def make_data(path: Path, n: int, dim: int) -> tuple[F32, F32]:
    """(base memory-mapped from `path`, queries); generated once, reused when the file matches.
    One centre per 10,000 points: clusters of the same density at any n."""
    centers = max(20, n // 10_000)
    qpath = path.with_suffix(".queries.npy")
    if path.exists() and qpath.exists():
        base = np.load(path, mmap_mode="r")
        if base.shape == (n, dim):
            return base, np.load(qpath)
    rng = np.random.default_rng(SEED)
    c = rng.normal(0, 4, size=(centers, dim)).astype(np.float32)
    w = rng.normal(0, 1, size=(LATENT, dim)).astype(np.float32)  # (the clusters overlap in part)

    def rows(m: int) -> F32:
        labels = rng.integers(0, centers, size=m)
        z = rng.normal(0, 1, size=(m, LATENT)).astype(np.float32)
        out = c[labels] + z @ w
        out += rng.normal(0, 0.3, size=(m, dim)).astype(np.float32)
        return out

    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    for a in range(0, n, CHUNK):
        out[a : a + CHUNK] = rows(min(CHUNK, n - a))
    out.flush()
    del out
    os.replace(tmp, path)
    np.save(qpath, rows(NQ))
    return np.load(path, mmap_mode="r"), np.load(qpath)


def ground_truth(base: F32, queries: F32, k: int, cache: Path) -> I64:
    if cache.exists():
        gt = np.load(cache)
        if gt.shape == (queries.shape[0], k):
            return np.asarray(gt, dtype=np.int64)
    heap = faiss.ResultHeap(queries.shape[0], k)
    flat = faiss.IndexFlatL2(base.shape[1])
    for a in range(0, base.shape[0], CHUNK):
        flat.reset()
        flat.add(np.ascontiguousarray(base[a : a + CHUNK]))
        D, I = flat.search(queries, k)
        heap.add_result(D, I + a)
    heap.finalize()
    np.save(cache, heap.I)
    return heap.I.astype(np.int64)


def faiss_index(kind: Kind, dim: int, nlist: int) -> Any:
    quantizer = faiss.IndexFlatL2(dim)
    index: Any
    if kind.name == "ivf_pq":
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, kind.pq_m, 8)
    elif kind.name in ("ivf_sq8", "ivf_sqfp16"):
        qt = faiss.ScalarQuantizer.QT_8bit if kind.name == "ivf_sq8" else faiss.ScalarQuantizer.QT_fp16
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, qt)
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist)
    return index


def index_bytes(index: Any) -> int:
    """faiss's own memory for an IVF index: codes and ids of every list, and the centroids."""
    inv = index.invlists
    stored = sum(inv.list_size(i) for i in range(index.nlist))
    return int(stored * (index.code_size + 8) + index.nlist * index.d * 4)


def refine_exact(base: F32, queries: F32, I: I64, k: int) -> I64:
    """Re-rank candidates by exact L2 with the float vectors (read from the memory-mapped base)."""
    out = np.empty((I.shape[0], k), dtype=np.int64)
    for r in range(I.shape[0]):
        cand = I[r][I[r] >= 0]
        order = np.sort(cand)
        vecs = np.asarray(base[order])
        d = ((vecs - queries[r]) ** 2).sum(axis=1)
        best = order[np.lexsort((order, d))][:k]
        out[r, : best.size] = best
        out[r, best.size :] = -1
    return out


def rss(pid: int) -> dict[str, int]:
    """Resident bytes of a process: total, anonymous (heap) and file-backed (memory-mapped files)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


class PeakMemory:
    """Polls a process's RssAnon and RssFile while running (a thread): their maxima."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = rss(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            for key in self.peak:
                self.peak[key] = max(self.peak[key], now.get(key, 0))
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def grid(
    search: Callable[[F32, int, int], I64],
    queries: F32,
    gt: I64,
    k: int,
    nprobes: Sequence[int],
    batches: Sequence[int],
    single_queries: int,
) -> list[dict[str, Any]]:
    """Recall@k and QPS per (nprobe, batch): batch 1 over the first `single_queries` queries (with
    p50/p99), bigger batches over all queries."""
    rows = []
    for nprobe in nprobes:
        search(queries[:8], k, nprobe)  # warm-up
        for batch in batches:
            nq = single_queries if batch == 1 else queries.shape[0]
            found = np.empty((nq, k), dtype=np.int64)
            lat = []
            start = time.perf_counter()
            for a in range(0, nq, batch):
                t0 = time.perf_counter()
                found[a : a + batch] = search(np.ascontiguousarray(queries[a : min(nq, a + batch)]), k, nprobe)
                lat.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
            row = {"nprobe": nprobe, "batch": batch, "qps": nq / elapsed, "recall": recall_at_k(found, gt[:nq], k)}
            if batch == 1:
                row["p50_ms"], row["p99_ms"] = (float(v) * 1e3 for v in np.percentile(lat, [50, 99]))
            rows.append(row)
    return rows


def bench_faiss(
    kind: Kind,
    base: F32,
    queries: F32,
    gt: I64,
    nlist: int,
    train_points: int,
    k: int,
    nprobes: Sequence[int],
    batches: Sequence[int],
    single: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    n, dim = base.shape
    release_free_memory()
    heap0 = rss(os.getpid())["RssAnon"]
    index = faiss_index(kind, dim, nlist)
    rng = np.random.default_rng(1)
    sample = np.asarray(base[np.sort(rng.choice(n, size=min(n, train_points), replace=False))])
    index.cp.max_points_per_centroid = max(256, -(-sample.shape[0] // nlist))
    t0 = time.perf_counter()
    index.train(sample)
    train_s = time.perf_counter() - t0
    del sample
    t0 = time.perf_counter()
    for a in range(0, n, CHUNK):
        index.add(np.ascontiguousarray(base[a : a + CHUNK]))
    add_s = time.perf_counter() - t0
    release_free_memory()
    heap = rss(os.getpid())["RssAnon"] - heap0  # the index as this process holds it (lists' spare capacity too)
    log(f"  faiss {kind.label}: train {train_s:.1f}s, add {n / add_s:,.0f} vectors/s")

    def search(q: F32, kk: int, nprobe: int) -> I64:
        params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
        if kind.refine > 1:
            _, I = index.search(q, kk * kind.refine, params=params)
            return refine_exact(base, q, I, kk)
        return np.asarray(index.search(q, kk, params=params)[1], dtype=np.int64)

    rows = grid(search, queries, gt, k, nprobes, batches, single)
    out = {
        "train_s": train_s,
        "add_s": add_s,
        "add_vps": n / add_s,
        "index_bytes": index_bytes(index),
        "heap_bytes": heap,
        "grid": rows,
    }
    return out


def bench_vecshard(
    kind: Kind,
    data_path: Path,
    base: F32,
    queries: F32,
    gt: I64,
    nlist: int,
    train_points: int,
    k: int,
    nprobes: Sequence[int],
    batches: Sequence[int],
    single: int,
    shards: int,
    workdir: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    n, dim = base.shape
    data_dir = workdir / f"cluster-{kind.name}"
    shutil.rmtree(data_dir, ignore_errors=True)
    state = workdir / f"import-{kind.name}.json"
    state.unlink(missing_ok=True)
    name = f"scale_{kind.name}"
    # `vecshard serve`'s default: the shards in the coordinator's process
    with LocalCluster(shards=shards, data_dir=data_dir, log_level="WARNING", shard_mode="local") as cluster:
        with Client(cluster.address, timeout=3600) as c:
            c.create_collection(
                name,
                dim,
                metric="l2",
                index=kind.name,
                nlist=nlist,
                nprobe=nprobes[0],
                train_threshold=10**12,
                pq_m=kind.pq_m,
                refine_factor=kind.refine,
            )

            assert cluster.coordinator is not None
            base_heap = rss(cluster.coordinator.popen.pid)["RssAnon"]  # with empty shards: the fixed part
            with PeakMemory(cluster.coordinator.popen.pid) as peak:
                first, rest, train_s = import_and_train(c, name, data_path, cluster.address, state, train_points)
            load_s = first + rest
            assert c.describe(name).count == n
            log(
                f"  vecshard {kind.label}: load {n / load_s:,.0f} vectors/s ({first:.0f}s + {rest:.0f}s), "
                f"train {train_s:.1f}s"
            )

            def search(q: F32, kk: int, nprobe: int) -> I64:
                return c.search(name, q, kk, nprobe=nprobe).ids

            gc.collect()
            time.sleep(TRIM_EVERY_S + 2)  # (the shards give freed heap pages back every TRIM_EVERY_S)
            memory = {"coordinator": rss(cluster.coordinator.popen.pid)} if cluster.coordinator else {}
            rows = grid(search, queries, gt, k, nprobes, batches, single)
            disk = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
    restarted = _restarted_memory(data_dir, shards, name, n)
    shutil.rmtree(data_dir, ignore_errors=True)
    state.unlink(missing_ok=True)
    return {
        "restarted_memory": restarted,
        "train_s": train_s,
        "load_s": load_s,
        "load_vps": n / load_s,
        "memory": memory,
        "disk_bytes": disk,
        "base_heap": base_heap,
        "peak_memory": peak.peak,
        "grid": rows,
    }


def _restarted_memory(data_dir: Path, shards: int, name: str, n: int) -> dict[str, int]:
    """The coordinator's memory after a restart on the same data dir (faiss reads each list at its
    exact size from the snapshot), at rest."""
    with LocalCluster(shards=shards, data_dir=data_dir, log_level="WARNING", shard_mode="local") as cluster:
        with Client(cluster.address, timeout=3600) as c:
            assert c.describe(name).count == n
        gc.collect()
        time.sleep(TRIM_EVERY_S + 2)
        assert cluster.coordinator is not None
        return rss(cluster.coordinator.popen.pid)


def import_and_train(
    c: Client, name: str, data_path: Path, address: str, state: Path, train_points: int
) -> tuple[float, float, float]:
    """`vecshard import` the first train_points vectors, Train on them, then import the rest (resumed
    from the same state file): (seconds of the first import, of the second, of training)."""
    first = run_import(name, data_path, address, state, "--limit", str(train_points))
    t0 = time.perf_counter()
    c.train(name, max_training_points=train_points)
    train_s = time.perf_counter() - t0
    rest = run_import(name, data_path, address, state)
    return first, rest, train_s


def run_import(name: str, data_path: Path, address: str, state: Path, *more: str) -> float:
    """Seconds `vecshard import` (a subprocess, quiet) takes to load data_path into the collection."""
    cmd = [
        sys.executable,
        "-m",
        "vecshard_server",
        "import",
        name,
        str(data_path),
        "--address",
        address,
        "--state",
        str(state),
        "-q",
        *more,
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def run_scale_bench(
    n: int,
    dim: int,
    nlist: int,
    k: int,
    shards: int,
    workdir: Path,
    kinds: Sequence[Kind] = DEFAULT_KINDS,
    nprobes: Sequence[int] = (2, 4, 8, 16, 32),
    batches: Sequence[int] = (1, 64, 1024),
    single: int = 200,
    train_points: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    train_points = train_points or min(n, 100 * nlist)
    t0 = time.perf_counter()
    data_path = workdir / f"synthetic-{n}x{dim}.npy"
    base, queries = make_data(data_path, n, dim)
    log(f"data {n:,} x {dim}: {time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    gt = ground_truth(base, queries, k, workdir / f"gt-{n}x{dim}-k{k}.npy")
    log(f"ground truth: {time.perf_counter() - t0:.0f}s")
    results = []
    for kind in kinds:
        log(f"{kind.label}:")
        f = bench_faiss(kind, base, queries, gt, nlist, train_points, k, nprobes, batches, single, log)
        v = bench_vecshard(
            kind, data_path, base, queries, gt, nlist, train_points, k, nprobes, batches, single, shards, workdir, log
        )
        results.append({"kind": kind.label, "faiss": f, "vecshard": v})
    return {
        "n": n,
        "dim": dim,
        "nlist": nlist,
        "k": k,
        "shards": shards,
        "train_points": train_points,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "max_rss_bench": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        },
        "results": results,
    }


def _per_vector(result: dict[str, Any], r: dict[str, Any]) -> dict[str, float]:
    n = result["n"]
    mem = r["vecshard"]["memory"]
    shards = [v for key, v in mem.items() if key.startswith("shard")] or [mem["coordinator"]]  # (local shards)
    return {
        "faiss_index": r["faiss"]["index_bytes"] / n,
        "faiss_heap": r["faiss"].get("heap_bytes", 0) / n,
        "shards_rss": sum(s["VmRSS"] for s in shards) / n,
        "shards_anon": sum(s["RssAnon"] for s in shards) / n,
        "shards_anon_marginal": (sum(s["RssAnon"] for s in shards) - r["vecshard"].get("base_heap", 0)) / n,
        "shards_file": sum(s["RssFile"] for s in shards) / n,
        "coordinator_rss_mb": mem.get("coordinator", {}).get("VmRSS", 0) / 2**20,
        "disk": r["vecshard"]["disk_bytes"] / n,
    }


def format_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# Scale: {result['n']:,} x {result['dim']} synthetic (clustered, low intrinsic dimension), L2, "
        f"nlist {result['nlist']}, k={result['k']}, {result['shards']} shards, trained on {result['train_points']:,}",
        "",
        f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, faiss {m['faiss']}. "
        "vecshard: `vecshard import` (a sample, Train, the rest) into a local cluster with data dirs; faiss: the "
        "same kind in this process. Recall@k against exact brute force.",
        "",
        "## Load, train, memory",
        "",
        "| kind | faiss add (vec/s) | vecshard load (vec/s) | load ratio | faiss train (s) | vecshard train (s) | "
        "faiss index (B/vec) | faiss process heap (B/vec) | process RSS (B/vec) | of which heap | "
        "heap beyond empty shards / faiss heap | "
        "mmapped | coordinator process RSS (MiB) | disk (B/vec) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        f, v, pv = r["faiss"], r["vecshard"], _per_vector(result, r)
        lines.append(
            f"| {r['kind']} | {f['add_vps']:,.0f} | {v['load_vps']:,.0f} | {v['load_vps'] / f['add_vps']:.2f} | "
            f"{f['train_s']:.1f} | {v['train_s']:.1f} | {pv['faiss_index']:.0f} | {pv['faiss_heap']:.0f} | "
            f"{pv['shards_rss']:.0f} | {pv['shards_anon']:.0f} | "
            f"{pv['shards_anon_marginal'] / max(pv['faiss_heap'], 1):.2f} | "
            f"{pv['shards_file']:.0f} | {pv['coordinator_rss_mb']:.0f} | {pv['disk']:.0f} |"
        )
    lines += [
        "",
        "## Recall and QPS (vecshard / in-process faiss of the same kind)",
        "",
        "| kind | nprobe | batch | recall vecshard | recall faiss | QPS vecshard | QPS faiss | ratio | "
        "p50 / p99 ms (batch 1) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["results"]:
        for fv, vv in zip(r["faiss"]["grid"], r["vecshard"]["grid"], strict=True):
            lat = f"{vv['p50_ms']:.2f} / {vv['p99_ms']:.2f}" if "p50_ms" in vv else ""
            lines.append(
                f"| {r['kind']} | {vv['nprobe']} | {vv['batch']} | {vv['recall']:.4f} | {fv['recall']:.4f} | "
                f"{vv['qps']:,.0f} | {fv['qps']:,.0f} | {vv['qps'] / fv['qps']:.2f} | {lat} |"
            )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> bool:
    """QPS vs recall, one panel per batch size, a curve per kind and system."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    batches = sorted({row["batch"] for r in result["results"] for row in r["vecshard"]["grid"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        for r in result["results"]:
            for system, style in (("vecshard", "-o"), ("faiss", "--x")):
                rows = [row for row in r[system]["grid"] if row["batch"] == batch]
                ax.plot(
                    [row["recall"] for row in rows], [row["qps"] for row in rows], style, label=f"{r['kind']} {system}"
                )
        ax.set_xlabel(f"recall@{result['k']}")
        ax.set_ylabel("queries/s")
        ax.set_yscale("log")
        ax.set_title(f"batch {batch}")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['n']:,} x {result['dim']}, nlist {result['nlist']}, {result['shards']} shards")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True
