"""Timing loops and recall, shared by the vecshard benchmark and its peers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
WARMUP_S = 0.3


def recall_at_k(found: I64, truth: I64, k: int) -> float:
    hits = sum(len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth, strict=True))
    return float(hits / (k * truth.shape[0]))


def make_batches(queries: F32, batch: int) -> list[F32]:
    """Consecutive batches of `batch` queries, wrapping around, covering every query at least once."""
    nq = queries.shape[0]
    starts = range(0, math.ceil(nq / batch) * batch, batch)
    return [np.ascontiguousarray(queries[np.arange(s, s + batch) % nq]) for s in starts]


def timed_loop(call: Callable[[F32], object], batches: list[F32], duration_s: float) -> dict[str, float]:
    """Call `call` on the batches in turn for duration_s (after a warm-up): QPS and latency in ms."""
    warm_end = time.perf_counter() + min(WARMUP_S, duration_s)
    i = 0
    while time.perf_counter() < warm_end:
        call(batches[i % len(batches)])
        i += 1
    latencies: list[float] = []
    queries = 0
    start = time.perf_counter()
    end = start + duration_s
    i = 0
    while True:
        batch = batches[i % len(batches)]
        t0 = time.perf_counter()
        call(batch)
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        queries += batch.shape[0]
        i += 1
        if t1 >= end:
            break
    elapsed = time.perf_counter() - start
    p50, p95, p99 = (float(v) * 1e3 for v in np.percentile(latencies, [50, 95, 99]))
    calls = float(len(latencies))
    return {"qps": queries / elapsed, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "calls": calls}


def timed_concurrent(
    make_call: Callable[[], Callable[[F32], object]], batches: list[F32], duration_s: float, threads: int
) -> dict[str, float]:
    """`threads` callers (each with its own `make_call()`) looping over the batches for duration_s."""
    if threads == 1:
        return timed_loop(make_call(), batches, duration_s)
    calls = [make_call() for _ in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    queries = [0] * threads
    start_at = time.perf_counter() + min(WARMUP_S, duration_s)
    end_at = start_at + duration_s

    def run(t: int) -> None:
        i = t
        while True:
            batch = batches[i % len(batches)]
            t0 = time.perf_counter()
            calls[t](batch)
            t1 = time.perf_counter()
            if t1 >= start_at:
                latencies[t].append(t1 - t0)
                queries[t] += batch.shape[0]
            i += threads
            if t1 >= end_at:
                return

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = max(time.perf_counter() - start_at, 1e-9)
    flat = [x for per in latencies for x in per] or [0.0]
    p50, p95, p99 = (float(v) * 1e3 for v in np.percentile(flat, [50, 95, 99]))
    return {"qps": sum(queries) / elapsed, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "calls": float(len(flat))}
