"""`vecshard bench --report`: every performance goal as a ratio against its floor, measured in one run
on one machine, written as one markdown table, one JSON file and one plot (latency and QPS against
concurrency, vecshard beside the bare gRPC floors).

The goals (server / floor):
1. single-query p50 <= 1.5x a bare unary gRPC call of the same payload (p99 <= 3x), local shards;
   <= 2.2x in remote mode (one more hop);
2. 32 concurrent single-query clients (asyncio tasks over the SDK's AsyncClient) >= 0.8x the QPS the
   same 32 tasks get from a bare echo server (the faster of a sync thread-pool server and a grpc.aio
   server); beside it, in-process faiss answering the same queries one at a time; batched searches
   (nq 64..1,000) >= 0.9x in-process faiss on the same data and centroids;
3. resident memory per vector (anonymous, at the peak of a load and at rest) <= 1.2x faiss's own
   bytes (codes + ids) + 16, for IVF_FLAT, IVF_SQ8 and IVF_PQ (bench/scale.py at `memory_n` vectors);
4. ingest (Add batches of 1,000, acknowledged durable) >= 0.5x faiss `add` + an fsynced append.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vecshard import AsyncClient, Client
from vecshard_server.bench import scale
from vecshard_server.bench.floors import concurrent_calls, echo_floor, ingest_floor, latencies
from vecshard_server.bench.latency import cpu_seconds
from vecshard_server.bench.search import build_faiss_ivf, load_dataset
from vecshard_server.cluster.local import LocalCluster

F32 = npt.NDArray[np.float32]
INGEST_BATCH = 1000
GOALS = {"p50": 1.5, "p99": 3.0, "p50_remote": 2.2, "qps32": 0.8, "batched": 0.9, "memory": 1.2, "ingest": 0.5}


def _rows(queries: F32, i: int, nq: int = 1) -> F32:
    a = (i * nq) % max(1, len(queries) - nq)
    return queries[a : a + nq]


def measure_mode(
    mode: str,
    shards: int,
    base: F32,
    queries: F32,
    nlist: int,
    nprobe: int,
    k: int,
    single: int,
    clients: Sequence[int],
    duration_s: float,
    batches: Sequence[int],
    workdir: Path,
) -> tuple[dict[str, Any], F32]:
    """One shard mode through `vecshard serve`'s cluster: single-query latency and CPU, concurrency
    through AsyncClient, batched QPS, and durable ingest in batches of 1,000."""
    n, dim = base.shape
    data_dir = workdir / f"report-{mode}"
    shutil.rmtree(data_dir, ignore_errors=True)
    out: dict[str, Any] = {"mode": mode}
    with LocalCluster(shards=shards, log_level="WARNING", shard_mode=mode, data_dir=data_dir) as cluster:
        with Client(cluster.address, timeout=600) as c:
            name = "report"
            c.create_collection(name, dim, index="ivf_flat", nlist=nlist, nprobe=nprobe, train_threshold=n + 1)
            train = min(n, 64 * nlist)
            c.add(name, np.arange(train), base[:train])
            c.train(name)
            t0 = time.perf_counter()
            for a in range(train, n, INGEST_BATCH):
                c.add(name, np.arange(a, min(n, a + INGEST_BATCH)), base[a : a + INGEST_BATCH])
            out["ingest_vps"] = (n - train) / (time.perf_counter() - t0)
            out["ingest_n"] = n - train
            centroids = c.describe(name, include_centroids=True).centroids
            assert centroids is not None
            pids = [p.popen.pid for p in cluster.processes()]
            i = [0]

            def one() -> object:
                i[0] += 1
                return c.search(name, _rows(queries, i[0]), k, nprobe=nprobe)

            cpu0 = cpu_seconds(pids)
            out["single"] = latencies(one, single)
            out["cpu_per_query_ms"] = (cpu_seconds(pids) - cpu0) / (single + min(50, single)) * 1e3
            out["batched"] = {}
            for nq in batches:
                c.search(name, _rows(queries, 0, nq), k, nprobe=nprobe)
                rounds, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < duration_s:
                    c.search(name, _rows(queries, rounds, nq), k, nprobe=nprobe)
                    rounds += 1
                out["batched"][str(nq)] = rounds * nq / (time.perf_counter() - t0)

        async def many(m: int) -> dict[str, float]:
            async with AsyncClient(cluster.address, timeout=60) as ac:
                return await concurrent_calls(
                    lambda j: ac.search(name, _rows(queries, j), k, nprobe=nprobe), m, duration_s
                )

        out["concurrent"] = {str(m): asyncio.run(many(m)) for m in clients}
    if mode == "local":  # the same data, reopened by one process: each layer's share of a query
        out["breakdown"] = breakdown(data_dir, shards, name, queries, k, nprobe, single)
    shutil.rmtree(data_dir, ignore_errors=True)
    return out, centroids


def breakdown(data_dir: Path, shards: int, name: str, queries: F32, k: int, nprobe: int, n: int) -> Any:
    """coordinator/breakdown.py over a stopped local cluster's data dir: p50 ms per layer."""
    qfile = data_dir / "breakdown-queries.npy"
    np.save(qfile, queries[:1000])
    args = ["--data-dir", str(data_dir), "--shards", str(shards), "--collection", name, "--queries", str(qfile)]
    args += ["-k", str(k), "--nprobe", str(nprobe), "-n", str(n)]
    cmd = [sys.executable, "-m", "vecshard_server.coordinator.breakdown", *args]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_faiss(
    centroids: F32,
    base: F32,
    queries: F32,
    nlist: int,
    nprobe: int,
    k: int,
    single: int,
    duration_s: float,
    batches: Sequence[int],
    workdir: Path,
) -> dict[str, Any]:
    """In-process faiss over the same centroids and data: one query at a time, batched, and the
    durable-ingest floor (add + fsynced append, batches of 1,000, after the same training sample)."""
    index = build_faiss_ivf(centroids, base, nlist, nprobe)
    j = [0]

    def one() -> object:
        j[0] += 1
        return index.search(_rows(queries, j[0]), k)

    out: dict[str, Any] = {"single": latencies(one, single), "batched": {}}
    for nq in batches:
        rounds, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration_s:
            index.search(_rows(queries, rounds, nq), k)
            rounds += 1
        out["batched"][str(nq)] = rounds * nq / (time.perf_counter() - t0)
    empty = build_faiss_ivf(centroids, base[:0], nlist, nprobe)
    train = min(base.shape[0], 64 * nlist)
    out["ingest"] = ingest_floor(empty, base[train:], INGEST_BATCH, workdir)
    return out


def run_report(
    n: int = 200_000,
    dim: int = 128,
    nlist: int = 256,
    nprobe: int = 16,
    k: int = 10,
    shards: int = 2,
    duration_s: float = 3.0,
    single: int = 2000,
    clients: Sequence[int] = (1, 4, 8, 16, 32),
    batches: Sequence[int] = (64, 256, 1000),
    memory_n: int = 2_000_000,
    memory_nlist: int = 1024,
    workdir: Path = Path("."),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    base, queries, _, _ = load_dataset("synthetic", n, dim, k)
    result: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "nlist": nlist,
        "nprobe": nprobe,
        "k": k,
        "shards": shards,
        "clients": list(clients),
        "batches": list(batches),
        "goals": GOALS,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "load_avg_start": os.getloadavg(),
        },
    }
    request_bytes, reply_bytes = 4 * dim + 64, 12 * k + 32
    result["echo"] = {
        m: echo_floor(m, request_bytes, reply_bytes, single, clients, duration_s) for m in ("sync", "aio")
    }
    log(
        f"echo floors: p50 sync {result['echo']['sync']['single']['p50_ms']:.3f} ms, aio "
        f"{result['echo']['aio']['single']['p50_ms']:.3f} ms"
    )
    centroids = None
    result["modes"] = []
    for mode in ("local", "remote"):
        row, centroids = measure_mode(
            mode, shards, base, queries, nlist, nprobe, k, single, clients, duration_s, batches, workdir
        )
        log(
            f"{mode}: p50 {row['single']['p50_ms']:.3f} ms, "
            f"32 clients {row['concurrent'].get('32', {}).get('qps', 0):,.0f} QPS"
        )
        result["modes"].append(row)
    assert centroids is not None
    result["faiss"] = measure_faiss(centroids, base, queries, nlist, nprobe, k, single, duration_s, batches, workdir)
    if memory_n:
        result["memory"] = memory_rows(memory_n, dim, memory_nlist, k, shards, workdir, log)
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["ratios"] = ratios(result)
    return result


def memory_rows(n: int, dim: int, nlist: int, k: int, shards: int, workdir: Path, log: Callable[[str], None]) -> Any:
    """bench/scale.py's load of n vectors per kind: the process's memory per vector beyond its empty
    state, anonymous and file-backed, at the peak of the load and at rest, beside faiss's own bytes."""
    res = scale.run_scale_bench(
        n, dim, nlist, k, shards, workdir / "scale", nprobes=(16,), batches=(64,), single=100, log=log
    )
    rows = []
    for r in res["results"]:
        v = r["vecshard"]
        rest, peak, base_heap = v["memory"]["coordinator"], v["peak_memory"], v["base_heap"]
        rows.append(
            {
                "kind": r["kind"],
                "faiss_index_bpv": r["faiss"]["index_bytes"] / n,
                "faiss_heap_bpv": r["faiss"]["heap_bytes"] / n,
                "anon_rest_bpv": (rest["RssAnon"] - base_heap) / n,
                "file_rest_bpv": rest["RssFile"] / n,
                "anon_peak_bpv": (peak["RssAnon"] - base_heap) / n,
                "file_peak_bpv": peak["RssFile"] / n,
                "anon_restarted_bpv": (v["restarted_memory"]["RssAnon"] - base_heap) / n,
                "load_vps": v["load_vps"],
                "faiss_add_vps": r["faiss"]["add_vps"],
            }
        )
    return {"n": n, "nlist": nlist, "rows": rows}


def ratios(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal: (what, value, floor, ratio, goal, met)."""
    echo = r["echo"]
    best_echo32 = max(echo[m]["concurrent"].get("32", {}).get("qps", 0) for m in echo)
    floor_p50 = min(echo[m]["single"]["p50_ms"] for m in echo)
    floor_p99 = min(echo[m]["single"]["p99_ms"] for m in echo)
    out: list[dict[str, Any]] = []

    def add(what: str, value: float, floor: float, goal: float, larger_better: bool, unit: str) -> None:
        ratio = value / floor if floor else float("nan")
        met = ratio >= goal if larger_better else ratio <= goal
        out.append(
            {
                "what": what,
                "value": value,
                "floor": floor,
                "ratio": ratio,
                "goal": goal,
                "goal_op": ">=" if larger_better else "<=",
                "met": bool(met),
                "unit": unit,
            }
        )

    for m in r["modes"]:
        mode = m["mode"]
        p50_goal = GOALS["p50"] if mode == "local" else GOALS["p50_remote"]
        add(f"{mode}: single-query p50 / bare gRPC call", m["single"]["p50_ms"], floor_p50, p50_goal, False, "ms")
        add(f"{mode}: single-query p99 / bare gRPC call", m["single"]["p99_ms"], floor_p99, GOALS["p99"], False, "ms")
        q32 = m["concurrent"].get("32", {}).get("qps", 0)
        add(f"{mode}: 32 clients QPS / bare echo server", q32, best_echo32, GOALS["qps32"], True, "QPS")
        add(f"{mode}: 32 clients QPS / in-process faiss one by one", q32, r["faiss"]["single"]["qps"], 0, True, "QPS")
        for nq, qps in m["batched"].items():
            add(
                f"{mode}: batched nq={nq} QPS / in-process faiss",
                qps,
                r["faiss"]["batched"][nq],
                GOALS["batched"],
                True,
                "QPS",
            )
        add(
            f"{mode}: ingest (Add x1,000, durable) / faiss add + fsync",
            m["ingest_vps"],
            r["faiss"]["ingest"]["vps"],
            GOALS["ingest"],
            True,
            "vec/s",
        )
    for row in r.get("memory", {}).get("rows", []):
        budget = GOALS["memory"] * row["faiss_index_bpv"] + 16
        for when, label in (("peak", "at the peak of a load"), ("rest", "at rest"), ("restarted", "after a restart")):
            add(
                f"{row['kind']}: anonymous memory {label} / (faiss bytes x1.2 + 16)",
                row[f"anon_{when}_bpv"],
                budget,
                1.0,
                False,
                "B/vector",
            )
    return out


def format_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    echo = r["echo"]
    lines = [
        f"# vecshard against its floors: {r['n']:,} x {r['dim']} synthetic, IVF_FLAT nlist {r['nlist']} nprobe "
        f"{r['nprobe']}, k={r['k']}, {r['shards']} shards",
        "",
        f"Machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, faiss {m['faiss']}; load average "
        f"{m['load_avg_start'][0]:.2f} at the start, {m['load_avg_end'][0]:.2f} at the end. Floors: bare unary gRPC "
        f"echo servers (own process) of the same payload sizes, p50 {echo['sync']['single']['p50_ms']:.3f} ms (sync "
        f"server) / {echo['aio']['single']['p50_ms']:.3f} ms (grpc.aio); in-process faiss "
        f"{r['faiss']['single']['p50_ms']:.3f} ms a query.",
        "",
        "| goal | vecshard | floor | ratio | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for g in r["ratios"]:
        target = f"{g['goal_op']} {g['goal']:g}" if g["goal"] else "(reported)"
        met = ("yes" if g["met"] else "**no**") if g["goal"] else ""
        lines.append(
            f"| {g['what']} | {g['value']:,.3g} {g['unit']} | {g['floor']:,.3g} | {g['ratio']:.2f}x | "
            f"{target} | {met} |"
        )
    lines += [
        "",
        "## Concurrency (asyncio tasks in one process; vecshard through AsyncClient, echo through a grpc.aio channel)",
        "",
        "| clients | " + " | ".join(f"{name} QPS (p50 ms)" for name in _series(r)) + " |",
        "|---:|" + "---:|" * len(_series(r)),
    ]
    for c in r["clients"]:
        cells = [f"{s[str(c)]['qps']:,.0f} ({s[str(c)]['p50_ms']:.2f})" for s in _series(r).values()]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += _breakdown_lines(r)
    if "memory" in r:
        lines += [
            "",
            f"## Memory per vector at {r['memory']['n']:,} (bytes; the process beyond its empty state)",
            "",
            "| kind | faiss own bytes | faiss in-process heap | anonymous peak | anonymous at rest | "
            "anonymous after a restart | file-backed peak | file-backed at rest | budget (1.2x + 16) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r["memory"]["rows"]:
            lines.append(
                f"| {row['kind']} | {row['faiss_index_bpv']:.0f} | {row['faiss_heap_bpv']:.0f} | "
                f"{row['anon_peak_bpv']:.0f} | {row['anon_rest_bpv']:.0f} | {row['anon_restarted_bpv']:.0f} | "
                f"{row['file_peak_bpv']:.0f} | "
                f"{row['file_rest_bpv']:.0f} | {1.2 * row['faiss_index_bpv'] + 16:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _breakdown_lines(r: dict[str, Any]) -> list[str]:
    local = next((m for m in r["modes"] if m["mode"] == "local" and "breakdown" in m), None)
    if local is None:
        return []
    b, end, echo = local["breakdown"], local["single"]["p50_ms"], r["echo"]["sync"]["single"]["p50_ms"]
    rows = [
        ("faiss search of every shard's partition, in turn", b["faiss"]),
        ("shards' Python around faiss (ties, checks)", b["shard engine"] - b["faiss"]),
        ("coordinator handler's Python (parse, plan, fan-out, merge, serialize)", b["handler"] - b["shard engine"]),
        ("gRPC transport, asyncio server plumbing and the SDK (end-to-end - handler)", end - b["handler"]),
    ]
    lines = [
        "",
        f"## Where a single query's {end:.3f} ms go (local shards; p50 of each layer timed alone in one process; "
        f"a bare gRPC call: {echo:.3f} ms)",
        "",
        "| layer | ms | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {what} | {ms:.3f} | {ms / end:.0%} |" for what, ms in rows]
    return lines


def _series(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {f"vecshard {m['mode']}": m["concurrent"] for m in r["modes"]}
    out.update({f"echo {name}": e["concurrent"] for name, e in r["echo"].items()})
    return out


def plot(r: dict[str, Any], path: Path) -> bool:
    """p50 latency and QPS against concurrent clients: vecshard's modes beside the bare echo floors."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (lat, qps) = plt.subplots(1, 2, figsize=(11, 4))
    for name, series in _series(r).items():
        style = "--" if name.startswith("echo") else "-o"
        xs = r["clients"]
        lat.plot(xs, [series[str(c)]["p50_ms"] for c in xs], style, label=name)
        qps.plot(xs, [series[str(c)]["qps"] for c in xs], style, label=name)
    faiss_qps = r["faiss"]["single"]["qps"]
    qps.axhline(faiss_qps, color="grey", linestyle=":", label="in-process faiss, one by one")
    for ax, title in ((lat, "p50 latency (ms)"), (qps, "queries/s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(r["clients"], [str(c) for c in r["clients"]])
        ax.set_xlabel("concurrent single-query clients")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    qps.legend(fontsize=8)
    fig.suptitle(
        f"vecshard vs bare gRPC floor: {r['n']:,} x {r['dim']}, IVF nprobe {r['nprobe']}, {r['shards']} shards"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True
