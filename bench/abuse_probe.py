"""Probe latency while one caller abuses the service: `python bench/abuse_probe.py` (docs/limits.md).

Starts a local cluster (2 shards, coordinator embedding in-process, API keys), loads --n random
vectors of --dim into a FLAT collection and an IVF_FLAT one (nlist 256, nprobe 16), then runs a
probe (a single-query k=10 search of the FLAT collection, one every --probe-every seconds, each
timed from when it was due) while each abuse case runs in turn:

  a  Search nq=100,000, k=55                      (FLAT)
  b  Search nq=1,000, k=4096                      (FLAT)
  c  8 concurrent ~60 MB Searches (nq≈117k, k=8)   (IVF)
  d  Embed 256 x 100,000 characters with a read key
  d2 Embed at the limit: max_embed_chars of 100,000-character texts, read key
  e  a max-size Add (~60 MB of vectors)

For each case: probe p50/p99/max, how each abuse request ended (status codes), the peak RSS of each
process during the case (VmHWM after resetting it through /proc/PID/clear_refs; sampled VmRSS where
that is not allowed). Goal: probe p99 < 100 ms in every case.

--no-limits raises every limit of docs/limits.md out of the way (and turns chunking and sub-batching
off): roughly the server before they existed, for a before/after on the same machine (--cases to
pick a few; abuse requests get --abuse-timeout seconds).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from vecshard import Client, wire  # noqa: E402
from vecshard.v1 import types_pb2  # noqa: E402
from vecshard.v1 import vector_search_pb2 as pb  # noqa: E402
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc  # noqa: E402
from vecshard_server.bench.datasets import clustered  # noqa: E402
from vecshard_server.cli.cluster import LocalCluster  # noqa: E402

ADMIN, READ = [("x-api-key", "admin-key")], [("x-api-key", "read-key")]
MSG = 64 * 1024 * 1024
NO_LIMITS = {
    "VECSHARD_MAX_SEARCH_RESULTS": str(10**12),
    "VECSHARD_MAX_SEARCH_SCAN": str(10**15),
    "VECSHARD_MAX_EMBED_CHARS": str(10**10),
    "VECSHARD_MAX_INFLIGHT_BYTES": str(10**15),
    "VECSHARD_MAX_INFLIGHT_SMALL_BYTES": str(10**15),
    "VECSHARD_MAX_INFLIGHT_EMBED_CHARS": str(10**12),
    "VECSHARD_SEARCH_CHUNK_WORK": str(10**15),
    "VECSHARD_EMBED_CHUNK_CHARS": str(10**12),
}


class _Key(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details._replace(metadata=[*(details.metadata or ()), *self.metadata]), request)


def channel(address: str, key: list[tuple[str, str]]) -> grpc.Channel:
    opts = [("grpc.max_send_message_length", MSG), ("grpc.max_receive_message_length", MSG)]
    return grpc.intercept_channel(grpc.insecure_channel(address, options=opts), _Key(key))


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Memory:
    """Peak RSS per process during a case: VmHWM reset through clear_refs, else sampled VmRSS."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.sampled: dict[str, int] = dict.fromkeys(pids, 0)

    def reset(self) -> None:
        self.sampled = dict.fromkeys(self.pids, 0)
        for pid in self.pids.values():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.sampled[name] = max(self.sampled[name], rss_kib(pid, "VmRSS"))

    def peaks_mib(self) -> dict[str, int]:
        return {n: max(self.sampled[n], rss_kib(pid, "VmHWM")) // 1024 for n, pid in self.pids.items()}


def health_probe(address: str, every: float, stop: Any, out: list[tuple[float, float, str]]) -> None:
    """The coordinator's health check (what a liveness probe calls), timed from when it was due."""
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    due = time.monotonic()
    while not stop.is_set():
        error = ""
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
        except grpc.RpcError as err:
            error = err.code().name
        out.append((due, time.monotonic() - due, error))
        due += every
        time.sleep(max(0.0, due - time.monotonic()))
        due = max(due, time.monotonic() - every)


def probe_process(address: str, dim: int, every: float, stop: Any, conn: Any) -> None:
    """The probes, in a process of its own (the abusing calls' (de)serialisation must not stall them
    through this script's GIL): sends back ([(due, latency, error code or "")] of the searches, the
    same of the health checks (4 times as often))."""
    health: list[tuple[float, float, str]] = []
    checker = threading.Thread(target=health_probe, args=(address, every / 4, stop, health), daemon=True)
    checker.start()
    stub = pb_grpc.VectorSearchStub(channel(address, READ))
    q = np.random.default_rng(9).random((1, dim), np.float32)
    request = pb.SearchRequest(collection="flat", queries=wire.pack_matrix(q), k=10)
    out: list[tuple[float, float, str]] = []
    due = time.monotonic()
    while not stop.is_set():
        error = ""
        try:
            stub.Search(request, timeout=30)
        except grpc.RpcError as err:
            error = err.code().name
        out.append((due, time.monotonic() - due, error))  # from when it was due: a stall counts fully
        due += every
        time.sleep(max(0.0, due - time.monotonic()))
        due = max(due, time.monotonic() - every)  # after a long stall, do not burst
    checker.join()
    conn.send((out, health))


def sample_until(memory: Memory, done: threading.Event) -> None:
    while not done.wait(0.05):
        memory.sample()


def outcome(call: Callable[[], Any]) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as err:
        hint = dict(err.trailing_metadata() or ()).get("retry-after-ms")
        return err.code().name + (" (retry-after)" if hint else "")


def concurrently(calls: list[Callable[[], Any]]) -> Counter[str]:
    results: list[str] = []
    threads = [threading.Thread(target=lambda c=c: results.append(outcome(c))) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Counter(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--probe-every", type=float, default=0.2)
    ap.add_argument("--cases", default="a,b,c,d,d2,e")
    ap.add_argument("--no-limits", action="store_true")
    ap.add_argument("--abuse-timeout", type=float, default=120.0)
    ap.add_argument("--idle-s", type=float, default=3.0, help="probe alone first, for a baseline")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="abuse-"))
    (tmp / "keys.toml").write_text('admin = ["admin-key"]\nread = ["read-key"]\n')
    env = {"VECSHARD_API_KEYS_FILE": str(tmp / "keys.toml"), **(NO_LIMITS if args.no_limits else {})}
    n, dim, T = args.n, args.dim, args.abuse_timeout
    with LocalCluster(shards=2, env=env, log_level="WARNING") as cluster:
        admin = pb_grpc.VectorSearchStub(channel(cluster.address, ADMIN))
        reader = pb_grpc.VectorSearchStub(channel(cluster.address, READ))
        sdk = Client(cluster.address, channel=channel(cluster.address, ADMIN), timeout=600)
        data = clustered(n, dim, seed=1)
        sdk.create_collection("flat", dim)
        sdk.add("flat", np.arange(n), data)
        sdk.create_collection("ivf", dim, index="ivf_flat", nlist=256, nprobe=16, train_threshold=10**9)
        sdk.add("ivf", np.arange(n), data)
        sdk.train("ivf", max_training_points=8 * 256)
        sdk.create_collection("sink", dim)
        sdk.embed(texts=["warm up the model"])  # load it before measuring
        pids = {p.name: p.popen.pid for p in cluster.processes()}
        memory = Memory(pids)
        rng = np.random.default_rng(2)

        def search(stub: Any, coll: str, nq: int, k: int) -> Callable[[], Any]:
            q = pb.SearchRequest(collection=coll, queries=wire.pack_matrix(rng.random((nq, dim), np.float32)), k=k)
            return lambda: stub.Search(q, timeout=T)

        def embed(texts: list[str]) -> Callable[[], Any]:
            return lambda: reader.Embed(types_pb2.EmbedRequest(texts=texts), timeout=T)

        def add(rows: int) -> Callable[[], Any]:
            req = pb.AddRequest(
                collection="sink",
                ids=wire.pack_ids(np.arange(10**7, 10**7 + rows)),
                vectors=wire.pack_matrix(rng.random((rows, dim), np.float32)),
            )
            return lambda: admin.Add(req, timeout=T)

        big_nq = (60 * 1024 * 1024) // (4 * dim)
        text = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
        at_limit = 2_000_000 // 100_000
        # Each case: a title, and what makes its requests (built before its window opens).
        cases: dict[str, tuple[str, Callable[[], list[Callable[[], Any]]]]] = {
            "a": ("Search nq=100k k=55 (FLAT)", lambda: [search(reader, "flat", 100_000, 55)]),
            "b": ("Search nq=1000 k=4096 (FLAT)", lambda: [search(reader, "flat", 1000, 4096)]),
            "c": (
                f"8 x Search of 60 MB (nq={big_nq}, k=8, IVF)",
                lambda: [search(reader, "ivf", big_nq, 8) for _ in range(8)],
            ),
            "d": ("Embed 256 x 100k chars (read key)", lambda: [embed([text] * 256)]),
            "d2": (f"Embed {at_limit} x 100k chars (at max_embed_chars, read key)", lambda: [embed([text] * at_limit)]),
            "e": (f"Add of {big_nq} x {dim} (60 MB)", lambda: [add(big_nq)]),
        }
        ctx = multiprocessing.get_context("spawn")
        stop = ctx.Event()
        receiver, sender = ctx.Pipe(duplex=False)
        prober = ctx.Process(target=probe_process, args=(cluster.address, dim, args.probe_every, stop, sender))
        prober.start()
        time.sleep(args.idle_s)
        windows: list[tuple[str, str, float, float, Counter[str], dict[str, int]]] = []
        windows.append(("idle", "probe alone", 0.0, time.monotonic(), Counter(), memory.peaks_mib()))
        for key in args.cases.split(","):
            title, prepare = cases[key]
            calls = prepare()
            memory.reset()
            t0 = time.monotonic()
            sampler = threading.Event()
            threading.Thread(target=sample_until, args=(memory, sampler), daemon=True).start()
            ended = concurrently(calls)
            t1 = time.monotonic()
            time.sleep(args.probe_every * 2)  # the probe that was due during the case's end
            sampler.set()
            windows.append((key, title, t0, t1 + args.probe_every, ended, memory.peaks_mib()))
            print(f"{key}: done in {t1 - t0:.1f}s: {dict(ended)}", file=sys.stderr, flush=True)
            del calls
        stop.set()
        probes, checks = receiver.recv()
        prober.join()
        sdk.close()
    mode = "limits OFF (before)" if args.no_limits else "limits ON (defaults)"
    print(f"\nprobe: 1-query k=10 search of {n}x{dim} FLAT every {args.probe_every}s; {mode}; cpus={os.cpu_count()}")
    print(f"health: the coordinator's grpc.health.v1 Check every {args.probe_every / 4}s (p50/p99/max ms)")
    print(
        f"{'case':4} {'probes':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'health p50/p99/max':>20} {'took s':>6}  "
        "abuse ended  | peak RSS MiB"
    )
    errors = Counter(e for _, _, e in probes if e)
    for key, title, t0, t1, ended, peaks in windows:
        lat = [lat for due, lat, _ in probes if t0 <= due < t1]
        ms = np.array(lat or [0.0]) * 1000
        p50, p99, mx = np.percentile(ms, 50), np.percentile(ms, 99), ms.max()
        rss = " ".join(f"{name}={mib}" for name, mib in peaks.items())
        took = 0.0 if key == "idle" else t1 - t0 - args.probe_every
        hms = np.array([lat for due, lat, _ in checks if t0 <= due < t1] or [0.0]) * 1000
        health = f"{np.percentile(hms, 50):.1f}/{np.percentile(hms, 99):.1f}/{hms.max():.1f}"
        print(
            f"{key:4} {len(lat):6d} {p50:7.1f} {p99:7.1f} {mx:7.1f} {health:>20} {took:6.1f}  {dict(ended)} | {rss}"
            f"   # {title}"
        )
    if errors:
        print(f"probe errors: {dict(errors)}")


if __name__ == "__main__":
    main()
