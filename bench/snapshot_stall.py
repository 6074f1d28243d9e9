"""Search latency while a partition is snapshotted: `python bench/snapshot_stall.py --n 1000000 --dim 128`.

Builds one partition (a `ShardIndex`: --index ivf, trained over --nlist centroids, or flat) of --n
random vectors, then runs single-query searches in a loop from one thread (paced: one every
--interval seconds, each timed from when it was due, so that a stall counts once for every search
it delays, not once) and a trickle of adds (one new vector every --add-interval seconds; a share
--upserts of them replace a stored vector instead) from another, and measures search (and add)
latency for --seconds while idle, then during
--saves back-to-back snapshots (`ShardIndex.save` into a temporary directory). Prints p50/p99/max
of both phases and the ratio snapshot/idle, the time searches and adds spent waiting for the
partition's lock, and a control phase: a file of the index's size written, fsynced and hashed
with no partition involved (on a small shared machine a snapshot's CPU and disk use alone slow
searches down; the control shows how much).

--baseline DIR also measures another version of the engine on the same data, first: DIR holds its
engine.py and locks.py, e.g. the committed ones:
    mkdir -p /tmp/base && for f in engine locks; do
        git show HEAD:server/vecshard_server/shard/$f.py > /tmp/base/$f.py; done
    python bench/snapshot_stall.py --n 1000000 --dim 128 --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from vecshard.types import IndexType, Metric  # noqa: E402
from vecshard_server.common.spec import CollectionSpec  # noqa: E402
from vecshard_server.shard import engine as current_engine  # noqa: E402


def load_engine(directory: Path) -> ModuleType:
    """The engine.py in `directory`, importing the locks.py beside it as its RWLock."""

    def load(name: str, path: Path) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    key = "vecshard_server.shard.locks"
    saved = sys.modules[key]
    sys.modules[key] = load("baseline_locks", directory / "locks.py")
    try:
        return load("baseline_engine", directory / "engine.py")
    finally:
        sys.modules[key] = saved


def stats(samples: list[float]) -> str:
    if not samples:
        return f"{0:>8} {'-':>8} {'-':>8} {'-':>8}"
    a = np.asarray(samples) * 1e3
    return f"{a.size:>8} {np.percentile(a, 50):>8.2f} {np.percentile(a, 99):>8.2f} {a.max():>8.1f}"


def p99(samples: list[float]) -> float:
    return float(np.percentile(samples, 99)) if samples else float("nan")


def build(eng: ModuleType, spec: CollectionSpec, data: np.ndarray, centroids: np.ndarray | None) -> Any:
    part = eng.ShardIndex(spec, 10 * data.shape[0])
    if centroids is not None:
        part.install_quantizer(centroids)
    step = 100_000
    for start in range(0, data.shape[0], step):
        chunk = data[start : start + step]
        part.add(np.arange(start, start + chunk.shape[0], dtype=np.int64), chunk, False)
    return part


class TimedLock:
    """Wraps a partition's RWLock: how long the calling thread last waited to get it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.local = threading.local()

    @contextmanager
    def read(self) -> Iterator[None]:
        t0 = time.perf_counter()
        with self.inner.read():
            self.local.wait = time.perf_counter() - t0
            yield

    @contextmanager
    def write(self) -> Iterator[None]:
        t0 = time.perf_counter()
        with self.inner.write():
            self.local.wait = time.perf_counter() - t0
            yield


def like_a_save(path: Path, nbytes: int) -> None:
    """What a snapshot costs the machine (a file of the index's size written, fsynced, hashed), with
    no partition involved: the contention for CPU and disk alone."""
    block = np.random.default_rng(3).integers(0, 255, 1 << 24, dtype=np.uint8).tobytes()
    with open(path, "wb") as fh:
        for _ in range(max(1, nbytes // len(block))):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    path.unlink()


Sample = tuple[float, float, float, float]  # (due, start, end, seconds waiting for the partition's lock)


def measure(name: str, part: Any, args: argparse.Namespace, data: np.ndarray, work: Path) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    queries = data[rng.integers(0, data.shape[0], 4096)] + rng.normal(0, 0.05, (4096, data.shape[1])).astype(np.float32)
    searches: list[Sample] = []
    adds: list[Sample] = []
    stop = threading.Event()
    next_id = [data.shape[0]]
    lock = part._lock = TimedLock(part._lock)

    if args.interval is None:  # a tenth of the thread's time, idle: a backlog only forms when searches stall
        took = []
        for q in queries[:100]:
            t0 = time.perf_counter()
            part.search(q[None], args.k, args.nprobe)
            took.append(time.perf_counter() - t0)
        args.interval = 10 * float(np.median(took))  # kept for the engine measured next
    interval = args.interval
    print(f"[{name}] one search every {interval * 1e3:.2f} ms")

    def search_loop() -> None:
        """Searches paced at `interval`, each timed from when it was due (not from when the loop
        got to it): a search stalled for 800 ms delays every search due meanwhile, as it would delay
        every request arriving then."""
        due = time.perf_counter()
        i = 0
        while not stop.is_set():
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            q = queries[i % len(queries) : i % len(queries) + 1]
            t0 = time.perf_counter()
            part.search(q, args.k, args.nprobe)
            searches.append((due, t0, time.perf_counter(), lock.local.wait))
            due += interval
            i += 1

    def add_loop() -> None:
        r = np.random.default_rng(2)
        while not stop.wait(args.add_interval):
            if r.random() < args.upserts:
                ids = np.array([r.integers(0, data.shape[0])], dtype=np.int64)
                upsert = True
            else:
                ids, upsert = np.array([next_id[0]], dtype=np.int64), False
                next_id[0] += 1
            x = data[r.integers(0, data.shape[0], 1)] + np.float32(0.01)
            t0 = time.perf_counter()
            part.add(ids, x, upsert)
            adds.append((t0, t0, time.perf_counter(), lock.local.wait))

    def repeat(what: Callable[[], None]) -> list[tuple[float, float]]:
        windows = []
        for i in range(args.saves):
            t0 = time.perf_counter()
            what()
            windows.append((t0, time.perf_counter()))
            if i + 1 < args.saves:
                time.sleep(args.pause)
        return windows

    threads = [threading.Thread(target=search_loop, daemon=True), threading.Thread(target=add_loop, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # warm up
    idle = [(time.perf_counter(), time.perf_counter() + args.seconds)]
    time.sleep(args.seconds)
    nbytes = 4 * data.shape[0] * (data.shape[1] + 2)
    control = repeat(lambda: like_a_save(work / f"{name}-control", nbytes)) if args.control else []
    time.sleep(args.pause)
    saves = repeat(lambda: part.save(work / f"{name}-c"))
    stop.set()
    for t in threads:
        t.join()
    shutil.rmtree(work / f"{name}-c", ignore_errors=True)

    def latency(s: Sample) -> float:
        return s[2] - s[0]

    def service(s: Sample) -> float:
        return s[2] - s[1]

    def wait(s: Sample) -> float:
        return s[3]

    def within(
        samples: list[Sample], windows: list[tuple[float, float]], field: Callable[[Sample], float]
    ) -> list[float]:
        return [field(s) for s in samples if any(a <= s[0] < b for a, b in windows)]

    phases = [("idle", idle), ("during a file write+hash", control), ("during saves", saves)]
    rows = [
        ("search latency (from due)", searches, latency),
        ("search service time", searches, service),
        ("search lock wait", searches, wait),
        ("add", adds, service),
        ("add lock wait", adds, wait),
    ]
    print(f"\n[{name}] {args.saves} saves took {', '.join(f'{b - a:.2f}' for a, b in saves)} s")
    print(f"[{name}] {'':<52} {'count':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for what, samples, field in rows:
        for phase, windows in phases:
            if windows:
                print(f"[{name}] {what + ', ' + phase:<52} {stats(within(samples, windows, field))}")
    ratios = []
    for what, field in (("latency", latency), ("service time", service)):
        idle_s, save_s = within(searches, idle, field), within(searches, saves, field)
        ratios.append(p99(save_s) / p99(idle_s))
        line = f"[{name}] search {what} p99 during saves / idle = {ratios[-1]:.2f}x"
        if save_s and idle_s:
            line += f" (max {max(save_s) / max(idle_s):.2f}x)"
        if control:
            line += f"; during a file write+hash / idle = {p99(within(searches, control, field)) / p99(idle_s):.2f}x"
        print(line)
    return ratios[0], ratios[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--index", choices=["ivf", "flat"], default="ivf")
    ap.add_argument("--metric", choices=["l2", "inner_product"], default="l2")
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0, help="idle measurement (default 10)")
    ap.add_argument("--saves", type=int, default=3, help="snapshots measured, back to back (default 3)")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between two saves (default 0.5)")
    ap.add_argument("--add-interval", type=float, default=0.01, help="seconds between two adds (default 0.01)")
    ap.add_argument("--upserts", type=float, default=0.0, help="share of the adds that replace a stored id")
    ap.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between two searches (default: 10x a search's median idle time)",
    )
    ap.add_argument("--omp-threads", type=int, default=1, help="faiss OpenMP threads (default 1)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where snapshots go (default: a temp dir)")
    ap.add_argument("--baseline", type=Path, default=None, help="also measure the engine.py + locks.py in DIR")
    ap.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip the control phase (a file of the index's size written, fsynced and hashed)",
    )
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.omp_threads)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vecshard-snapshot-stall-"))
    rng = np.random.default_rng(0)
    print(
        f"n={args.n} dim={args.dim} index={args.index} metric={args.metric} nlist={args.nlist} nprobe={args.nprobe}"
        f" k={args.k} cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} omp={args.omp_threads}"
    )
    t0 = time.perf_counter()
    centers = rng.normal(0, 1, (max(16, args.nlist), args.dim)).astype(np.float32)
    data = centers[rng.integers(0, centers.shape[0], args.n)]
    data += rng.normal(0, 0.3, data.shape).astype(np.float32)
    ivf = args.index == "ivf"
    spec = CollectionSpec(
        "bench",
        args.dim,
        Metric(args.metric),
        IndexType.IVF_FLAT if ivf else IndexType.FLAT,
        nlist=args.nlist if ivf else 0,
        nprobe=args.nprobe if ivf else 0,
        train_threshold=10**12 if ivf else 0,
    )
    centroids = None
    if ivf:
        sample = data[rng.choice(args.n, size=min(args.n, 40 * args.nlist), replace=False)]
        centroids = current_engine.train_centroids(sample, spec, seed=1)
    print(f"data and centroids in {time.perf_counter() - t0:.1f}s")

    engines: list[tuple[str, ModuleType]] = []
    if args.baseline is not None:
        engines.append(("before", load_engine(args.baseline)))
    engines.append(("after", current_engine))
    results = {}
    try:
        for name, eng in engines:
            t0 = time.perf_counter()
            part = build(eng, spec, data, centroids)
            took = time.perf_counter() - t0
            print(f"\n[{name}] built {part.count} vectors in {took:.1f}s; load={os.getloadavg()[0]:.2f}")
            results[name] = measure(name, part, args, data, work)
            del part
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for name, (ratio, ratio_service) in results.items():
        print(
            f"{name}: search p99 during snapshots / idle = {ratio:.2f}x (latency), {ratio_service:.2f}x (service time)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
