"""vecshard bench --reshard: resharding a loaded collection online, and what searches see meanwhile.

A local cluster (`vecshard serve`'s default: local shards with data dirs) holds n clustered vectors
(IVF_FLAT, trained). For each step (2 -> 3 -> 2 groups by default): single-query searchers (and one
writer adding far-away points, so the ground truth holds) run while the cluster is idle, then while
it reshards. Reported per step: reshard throughput (points/s), points moved to another group against
the jump hash's expectation, and for idle vs resharding: requests, failures, recall@10, p50 and p99.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vecshard import Client
from vecshard_server.bench.datasets import clustered
from vecshard_server.cluster.local import LocalCluster

F32 = npt.NDArray[np.float32]


class Load:
    """Searchers and a writer against the cluster; collects latencies, failures and results."""

    def __init__(self, address: str, name: str, queries: F32, k: int, searchers: int, dim: int) -> None:
        self.address, self.name, self.queries, self.k = address, name, queries, k
        self.searchers, self.dim = searchers, dim
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.hits: list[tuple[int, npt.NDArray[np.int64]]] = []
        self.writes = 0
        self._next_id = 10**12

    def _search(self, seed: int) -> None:
        with Client(self.address, timeout=30) as c:
            j = seed
            while not self.stop.is_set():
                q = j % len(self.queries)
                j += self.searchers
                started = time.perf_counter()
                try:
                    r = c.search(self.name, self.queries[q : q + 1], k=self.k)
                    self.latencies.append(time.perf_counter() - started)
                    self.hits.append((q, r.ids[0]))
                except Exception as err:  # noqa: BLE001 (counted: the figure is failures)
                    self.failures.append(f"{type(err).__name__}: {err}")

    def _write(self) -> None:
        rng = np.random.default_rng(5)
        with Client(self.address, timeout=30) as c:
            while not self.stop.is_set():
                x = (rng.standard_normal((50, self.dim)) + 10_000).astype(np.float32)  # never a neighbour
                ids = np.arange(self._next_id, self._next_id + 50)
                self._next_id += 50
                try:
                    c.add(self.name, ids, x)
                    self.writes += 50
                except Exception as err:  # noqa: BLE001
                    self.failures.append(f"add: {type(err).__name__}: {err}")
                time.sleep(0.05)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._search, args=(i,)) for i in range(self.searchers)]
        threads.append(threading.Thread(target=self._write))
        for t in threads:
            t.start()
        return threads

    def halt(self, threads: list[threading.Thread]) -> dict[str, Any]:
        self.stop.set()
        for t in threads:
            t.join()
        lat = np.array(self.latencies) * 1000
        out = {
            "requests": len(self.latencies) + len(self.failures),
            "failures": len(self.failures),
            "failure_examples": self.failures[:3],
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else 0.0,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else 0.0,
            "writes": self.writes,
        }
        self.stop.clear()
        self.latencies, self.failures, self.writes = [], [], 0
        return out

    def recall(self, gt: npt.NDArray[np.int64]) -> float:
        if not self.hits:
            return 0.0
        got = [len(set(ids.tolist()) & set(gt[q, : self.k].tolist())) / self.k for q, ids in self.hits]
        self.hits = []
        return float(np.mean(got))


def run_reshard_bench(
    n: int = 1_000_000,
    dim: int = 128,
    nlist: int = 1024,
    nprobe: int = 16,
    k: int = 10,
    steps: tuple[int, ...] = (3, 2),
    start_shards: int = 2,
    searchers: int = 4,
    idle_s: float = 15.0,
    workdir: Path = Path("bench-work"),
    max_points_per_s: int = 0,
    page_size: int = 0,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    x = clustered(n, dim, centers=max(20, n // 10_000), seed=1)
    queries = clustered(200, dim, centers=max(20, n // 10_000), seed=1)[:200] + np.float32(0.5)
    flat = faiss.IndexFlatL2(dim)
    flat.add(x)
    _, gt = flat.search(queries, k)
    del flat
    data_dir = workdir / f"reshard-{n}"
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    result: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "nlist": nlist,
        "nprobe": nprobe,
        "k": k,
        "searchers": searchers,
        "max_points_per_s": max_points_per_s,
        "page_size": page_size or 2000,
        "steps": [],
    }
    with LocalCluster(shards=start_shards, data_dir=data_dir, shard_mode="local", log_level="WARNING") as cluster:
        c = Client(cluster.address, timeout=600)
        c.create_collection("bench", dim, index="ivf_flat", nlist=nlist, nprobe=nprobe)
        started = time.perf_counter()
        for a in range(0, n, 20_000):
            c.add("bench", np.arange(a, min(n, a + 20_000)), x[a : a + 20_000])
        result["load_s"] = time.perf_counter() - started
        c.train("bench")
        load = Load(cluster.address, "bench", queries, k, searchers, dim)
        shards = start_shards
        for target in steps:
            threads = load.run()
            time.sleep(idle_s)
            idle = load.halt(threads)
            idle["recall"] = load.recall(gt)
            threads = load.run()
            time.sleep(1.0)
            started = time.perf_counter()
            progress = c.reshard(target, max_points_per_s=max_points_per_s, page_size=page_size)[0]
            took = time.perf_counter() - started
            during = load.halt(threads)
            during["recall"] = load.recall(gt)
            expected = _expected_moves(shards, target, progress.copied)
            result["steps"].append(
                {
                    "from": shards,
                    "to": target,
                    "phase": progress.phase,
                    "copied": progress.copied,
                    "moved": progress.moved,
                    "moved_expected": expected,
                    "seconds": took,
                    "points_per_s": progress.copied / took if took else 0.0,
                    "idle": idle,
                    "resharding": during,
                }
            )
            shards = target
        c.close()
    return result


def _expected_moves(before: int, after: int, points: int) -> float:
    """Points expected to change group (jump hash; MOD -> jump from a legacy collection is not here)."""
    if after > before:
        return points * (after - before) / after
    return points * (before - after) / before


def format_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# vecshard bench --reshard: {r['n']:,} x {r['dim']} IVF_FLAT (nlist {r['nlist']}, nprobe {r['nprobe']}), "
        f"k={r['k']}, {r['searchers']} single-query searchers + 1 writer",
        "",
        f"Copy: {r.get('max_points_per_s') or 'no'} points/s limit, pages of {r.get('page_size', 2000):,} points "
        "scanned. Moved (expected): points that changed group, against |S'-S|/max(S,S') of those copied (a group "
        "scanned later holds more of the writer's points).",
        "",
        f"Load: {r['load_s']:.1f} s. Local cluster (`vecshard serve` default: local shards, data dirs).",
        "",
        "| step | result | points copied | moved (expected) | reshard s | points/s | requests idle / during | "
        "failures | recall@10 idle / during | p50 ms idle / during | p99 ms idle / during | p99 ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        i, d = s["idle"], s["resharding"]
        ratio = d["p99_ms"] / i["p99_ms"] if i["p99_ms"] else 0.0
        lines.append(
            f"| {s['from']} -> {s['to']} | {s['phase']} | {s['copied']:,} | {s['moved']:,} "
            f"({s['moved_expected']:,.0f}) | {s['seconds']:.1f} | {s['points_per_s']:,.0f} | "
            f"{i['requests']:,} / {d['requests']:,} | "
            f"{i['failures']} / {d['failures']} | {i['recall']:.4f} / {d['recall']:.4f} | "
            f"{i['p50_ms']:.2f} / {d['p50_ms']:.2f} | {i['p99_ms']:.2f} / {d['p99_ms']:.2f} | {ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"
