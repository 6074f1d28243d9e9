"""QPS and p50/p99 latency per RPC over the last minutes, from this process's own Prometheus registry.

A sampler reads the RPC latency histogram (vecshard_rpc_seconds, every public RPC this process
served) every `every_s` seconds into a ring buffer. Between two samples, a method's QPS is the
growth of its count over the seconds between them, and its quantiles come from the growth of each
bucket, interpolated linearly inside the bucket the quantile falls in (as PromQL's
histogram_quantile does).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry

METRIC = "vecshard_rpc_seconds"
SHARD_ROLE = "shard"  # (a coordinator with local shards also times their calls: not public RPCs)


@dataclass(frozen=True)
class Sample:
    at: float  # Unix seconds
    # method -> (count, [(upper bound, cumulative count), ...] ascending, +Inf last)
    methods: dict[str, tuple[float, list[tuple[float, float]]]]


def read(registry: CollectorRegistry = REGISTRY) -> dict[str, tuple[float, list[tuple[float, float]]]]:
    counts: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in registry.collect():
        if family.name != METRIC:
            continue
        for s in family.samples:
            role, method = s.labels.get("role", ""), s.labels.get("method", "")
            if role == SHARD_ROLE or not method:
                continue
            if s.name.endswith("_count"):
                counts[method] = counts.get(method, 0.0) + s.value
            elif s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                rows = buckets.setdefault(method, [])
                rows.append((le, s.value))
    out = {}
    for method, count in counts.items():
        merged: dict[float, float] = {}
        for le, v in buckets.get(method, []):
            merged[le] = merged.get(le, 0.0) + v
        out[method] = (count, sorted(merged.items()))
    return out


def quantile(q: float, rows: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram (upper bound, count) ascending, +Inf last."""
    if not rows or rows[-1][1] <= 0:
        return None
    rank = q * rows[-1][1]
    lower, below = 0.0, 0.0
    for le, cum in rows:
        if cum >= rank:
            if math.isinf(le):
                return lower  # beyond the highest finite bound: report that bound
            inside = cum - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cum
    return lower


def _delta(
    new: tuple[float, list[tuple[float, float]]], old: tuple[float, list[tuple[float, float]]] | None
) -> tuple[float, list[tuple[float, float]]]:
    if old is None:
        return new
    before = dict(old[1])
    return new[0] - old[0], [(le, cum - before.get(le, 0.0)) for le, cum in new[1]]


class Sampler:
    """The ring buffer and the task filling it."""

    def __init__(self, every_s: float = 5.0, keep_s: float = 900.0, registry: CollectorRegistry = REGISTRY) -> None:
        self.every_s = every_s
        self.registry = registry
        self.samples: deque[Sample] = deque(maxlen=max(2, int(keep_s / every_s) + 1))
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        self.samples.append(Sample(time.time(), read(self.registry)))

    def start(self) -> None:
        self.sample()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self.sample()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def series(self, minutes: float = 15.0) -> dict[str, Any]:
        """Per method, per interval between samples: its end time, QPS, p50 and p99 (milliseconds;
        null where nothing was served), over the last `minutes`."""
        cutoff = time.time() - 60 * minutes
        samples = [s for s in self.samples if s.at >= cutoff]
        methods = sorted({m for s in samples for m in s.methods})
        times = [s.at for s in samples[1:]]
        out: dict[str, dict[str, list[float | None]]] = {}
        for m in methods:
            qps: list[float | None] = []
            p50: list[float | None] = []
            p99: list[float | None] = []
            for prev, cur in zip(samples, samples[1:], strict=False):
                count, rows = _delta(cur.methods[m], prev.methods.get(m)) if m in cur.methods else (0.0, [])
                qps.append(count / max(cur.at - prev.at, 1e-9))
                q50, q99 = quantile(0.5, rows), quantile(0.99, rows)
                p50.append(None if q50 is None else 1000 * q50)
                p99.append(None if q99 is None else 1000 * q99)
            out[m] = {"qps": qps, "p50_ms": p50, "p99_ms": p99}
        start = samples[0].at if samples else None  # (where the first interval begins)
        return {"every_s": self.every_s, "start": start, "times": times, "methods": out}
