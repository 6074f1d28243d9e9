"""Latency benchmark: one query at a time and many clients at once, per shard mode, against a floor.

What is measured, in one run on one machine:
- the floor: a bare unary gRPC echo (a server process that returns a reply of a search reply's
  size for a request of a query's size, through grpc.aio like vecshard's servers); every vecshard
  latency is reported beside it;
- for each shard mode ("remote": a process per shard over gRPC; "local": the shards in the
  coordinator's process), through `vecshard serve`'s cluster:
  - single-query p50/p99 with one client (sync SDK), and the CPU every process of the cluster
    spent per query;
  - QPS and p50/p99 with 1, 8 and 32 concurrent single-query clients: asyncio tasks in one
    process, one AsyncClient;
  - batched QPS (256 queries a call);
- in-process faiss over the same centroids and data: one query at a time, and 256 a call.

Datasets: sift5k (IVF nlist 64, nprobe 16: the search is microseconds, so this measures the
overhead) and synthetic (clustered, -n vectors).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard import AsyncClient, Client
from vecshard_server.bench import floors
from vecshard_server.bench.measure import recall_at_k
from vecshard_server.bench.search import build_faiss_ivf, load_dataset
from vecshard_server.cluster.local import LocalCluster

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def echo_floor(request_bytes: int, reply_bytes: int, n: int, workdir: Path) -> dict[str, float]:
    """p50/p99 of a bare unary grpc.aio call of these sizes (server in its own process; floors.py)."""
    single: dict[str, float] = floors.echo_floor("aio", request_bytes, reply_bytes, n, (), 0.0)["single"]
    return single


async def _concurrent(
    address: str, name: str, queries: F32, k: int, nprobe: int, clients: int, duration_s: float
) -> dict[str, float]:
    """`clients` asyncio tasks, each searching one query at a time, over one AsyncClient."""
    async with AsyncClient(address, timeout=60) as c:

        def one(i: int) -> Any:
            i %= len(queries)
            return c.search(name, queries[i : i + 1], k, nprobe=nprobe)

        return await floors.concurrent_calls(one, clients, duration_s)


def bench_mode(
    mode: str,
    shards: int,
    base: F32,
    queries: F32,
    gt: I64,
    nlist: int,
    nprobe: int,
    k: int,
    single: int,
    duration_s: float,
    clients: Sequence[int],
    batch: int,
) -> tuple[dict[str, Any], F32]:
    n, dim = base.shape
    with LocalCluster(shards=shards, log_level="WARNING", shard_mode=mode) as cluster:
        with Client(cluster.address, timeout=600) as c:
            name = "latency"
            c.create_collection(name, dim, index="ivf_flat", nlist=nlist, nprobe=nprobe, train_threshold=n + 1)
            c.add(name, np.arange(n), base)
            c.train(name)
            centroids = c.describe(name, include_centroids=True).centroids
            assert centroids is not None
            recall = recall_at_k(c.search(name, queries, k, nprobe=nprobe).ids, gt, k)
            pids = [p.popen.pid for p in cluster.processes()]
            i = [0]

            def one() -> object:
                i[0] += 1
                q = queries[i[0] % len(queries) : i[0] % len(queries) + 1]
                return c.search(name, q, k, nprobe=nprobe)

            cpu0 = cpu_seconds(pids)
            single_row = floors.latencies(one, single)
            cpu_per_query_ms = (cpu_seconds(pids) - cpu0) / (single + min(50, single)) * 1e3
            conc = {
                str(m): asyncio.run(_concurrent(cluster.address, name, queries, k, nprobe, m, duration_s))
                for m in clients
            }
            big = np.ascontiguousarray(queries[np.arange(batch) % len(queries)])
            c.search(name, big, k, nprobe=nprobe)
            t0 = time.perf_counter()
            rounds = 0
            while time.perf_counter() - t0 < duration_s:
                c.search(name, big, k, nprobe=nprobe)
                rounds += 1
            batched_qps = rounds * batch / (time.perf_counter() - t0)
    return {
        "mode": mode,
        "recall": recall,
        "single": single_row,
        "cpu_per_query_ms": cpu_per_query_ms,
        "concurrent": conc,
        "batched_qps": batched_qps,
    }, centroids


def run_latency_bench(
    dataset: str,
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    k: int,
    shards: int,
    duration_s: float = 3.0,
    single: int = 2000,
    clients: Sequence[int] = (1, 8, 32),
    batch: int = 256,
    modes: Sequence[str] = ("remote", "local"),
    workdir: Path = Path("."),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    base, queries, gt, _ = load_dataset(dataset, n, dim, k)
    result: dict[str, Any] = {
        "dataset": dataset,
        "n": int(base.shape[0]),
        "dim": int(base.shape[1]),
        "nlist": nlist,
        "nprobe": nprobe,
        "k": k,
        "shards": shards,
        "cpus": os.cpu_count(),
        "modes": [],
    }
    result["floor"] = echo_floor(4 * base.shape[1] + 64, 12 * k + 32, single, workdir)
    log(f"floor: p50 {result['floor']['p50_ms']:.3f} ms")
    centroids = None
    for mode in modes:
        row, centroids = bench_mode(
            mode, shards, base, queries, gt, nlist, nprobe, k, single, duration_s, clients, batch
        )
        qps32 = row["concurrent"].get("32", {}).get("qps", 0)
        log(f"{mode}: p50 {row['single']['p50_ms']:.3f} ms, 32 clients {qps32:,.0f} QPS")
        result["modes"].append(row)
    assert centroids is not None
    index = build_faiss_ivf(centroids, base, nlist, nprobe)
    index.search(queries[:10], k)
    j = [0]

    def local_one() -> object:
        j[0] += 1
        return index.search(queries[j[0] % len(queries) : j[0] % len(queries) + 1], k)

    result["faiss_single"] = floors.latencies(local_one, single)
    big = np.ascontiguousarray(queries[np.arange(batch) % len(queries)])
    t0 = time.perf_counter()
    rounds = 0
    while time.perf_counter() - t0 < duration_s:
        index.search(big, k)
        rounds += 1
    result["faiss_batched_qps"] = rounds * batch / (time.perf_counter() - t0)
    return result


def format_markdown(r: dict[str, Any]) -> str:
    floor = r["floor"]["p50_ms"]
    fs = r["faiss_single"]["qps"]
    lines = [
        f"# Latency: {r['dataset']} ({r['n']:,} x {r['dim']}), IVF nlist {r['nlist']} nprobe {r['nprobe']}, "
        f"k={r['k']}, {r['shards']} shards, {r['cpus']} CPUs",
        "",
        f"Floor (bare unary grpc.aio echo of a query's size): p50 {floor:.3f} ms, p99 {r['floor']['p99_ms']:.3f} ms. "
        f"In-process faiss: {fs:,.0f} QPS one query at a time, {r['faiss_batched_qps']:,.0f} QPS at 256 a call.",
        "",
        "| mode | recall | p50 ms (x floor) | p99 ms | CPU/query ms | QPS 1 client | QPS 8 (p99 / p50) | "
        "QPS 32 (x faiss 1-by-1) | QPS batch 256 (x faiss) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in r["modes"]:
        s, c = m["single"], m["concurrent"]
        c8, c32 = c.get("8", {}), c.get("32", {})
        lines.append(
            f"| {m['mode']} | {m['recall']:.3f} | {s['p50_ms']:.3f} ({s['p50_ms'] / floor:.2f}x) | {s['p99_ms']:.3f} | "
            f"{m['cpu_per_query_ms']:.3f} | {c.get('1', {}).get('qps', 0):,.0f} | "
            f"{c8.get('qps', 0):,.0f} ({c8.get('p99_ms', 0) / max(c8.get('p50_ms', 1e-9), 1e-9):.1f}x) | "
            f"{c32.get('qps', 0):,.0f} ({c32.get('qps', 0) / fs:.2f}x) | "
            f"{m['batched_qps']:,.0f} ({m['batched_qps'] / r['faiss_batched_qps']:.2f}x) |"
        )
    return "\n".join(lines) + "\n"
