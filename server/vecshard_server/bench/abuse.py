"""Probe latency while one caller abuses the service: `vecshard bench --abuse` (docs/limits.md).

Starts a local cluster (the first --shards, coordinator embedding in-process, API keys), loads -n
clustered vectors of --dim into a FLAT collection and an IVF_FLAT one (--nlist, --nprobe), then runs
a probe (a single-query k=10 search of the FLAT collection, one every `probe_every` seconds, each
timed from when it was due, and the coordinator's health check 4 times as often) in a process of its
own while each abuse case runs in turn:

  a  Search nq=100,000, k=55                      (FLAT)
  b  Search nq=1,000, k=4096                      (FLAT)
  c  8 concurrent ~60 MB Searches (nq≈117k, k=8)   (IVF)
  d  Embed 256 x 100,000 characters with a read key
  d2 Embed at the limit: max_embed_chars of 100,000-character texts, read key
  e  a max-size Add (~60 MB of vectors)

The abusing requests go through the SDK's raw stub (`Client.stub`), one request each, so that the
SDK's own splitting of big adds and embeds does not soften them. For each case: probe p50/p99/max,
how each abuse request ended (status codes), the peak RSS of each process during the case (VmHWM
after resetting it through /proc/PID/clear_refs; sampled VmRSS where that is not allowed). Goal:
probe p99 < 100 ms in every case.

`no_limits` raises every limit of docs/limits.md out of the way (and turns chunking and sub-batching
off): roughly the server before they existed, for a before/after on the same machine.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vecshard import Client, wire
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.bench.datasets import clustered
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.config import Settings

CASES = ("a", "b", "c", "d", "d2", "e")
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
TEXT_CHARS = 100_000

Timings = list[tuple[float, float, str]]  # (when due, latency in s, error code or "")
Call = Callable[[], Any]


class _Key(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details._replace(metadata=[*(details.metadata or ()), *self.metadata]), request)


def _client(address: str, key: list[tuple[str, str]], timeout: float) -> Client:
    """An SDK client whose channel sends `key` (an API key over plaintext loopback) with every call."""
    opts = [("grpc.max_send_message_length", MSG), ("grpc.max_receive_message_length", MSG)]
    channel = grpc.intercept_channel(grpc.insecure_channel(address, options=opts), _Key(key))
    return Client(address, channel=channel, timeout=timeout, max_message_bytes=MSG)


def _rss_kib(pid: int, field: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
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
            self.sampled[name] = max(self.sampled[name], _rss_kib(pid, "VmRSS"))

    def sample_until(self, done: threading.Event) -> None:
        while not done.wait(0.05):
            self.sample()

    def peaks_mib(self) -> dict[str, int]:
        return {n: max(self.sampled[n], _rss_kib(pid, "VmHWM")) // 1024 for n, pid in self.pids.items()}


def _paced(call: Call, every: float, stop: Any, out: Timings) -> None:
    """Run `call` every `every` seconds until `stop` is set, each timed from when it was due (a stall
    counts fully); after a long stall, no burst."""
    due = time.monotonic()
    while not stop.is_set():
        error = ""
        try:
            call()
        except grpc.RpcError as err:
            error = err.code().name
        out.append((due, time.monotonic() - due, error))
        due += every
        time.sleep(max(0.0, due - time.monotonic()))
        due = max(due, time.monotonic() - every)


def probe_process(address: str, dim: int, every: float, stop: Any, conn: Any) -> None:
    """The probes, in a process of their own (the abusing calls' (de)serialisation must not stall them
    through this process's GIL): sends back (the searches' timings, the health checks' timings)."""
    health: Timings = []
    checker_stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
    check = lambda: checker_stub.Check(health_pb2.HealthCheckRequest(), timeout=30)  # noqa: E731
    checker = threading.Thread(target=_paced, args=(check, every / 4, stop, health), daemon=True)
    checker.start()
    stub = _client(address, READ, 30).stub
    q = np.random.default_rng(9).random((1, dim), np.float32)
    request = pb.SearchRequest(collection="flat", queries=wire.pack_matrix(q), k=10)
    out: Timings = []
    _paced(lambda: stub.Search(request, timeout=30), every, stop, out)
    checker.join()
    conn.send((out, health))


def _outcome(call: Call) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as err:
        hint = dict(err.trailing_metadata() or ()).get("retry-after-ms")
        return str(err.code().name) + (" (retry-after)" if hint else "")


def _concurrently(calls: list[Call]) -> Counter[str]:
    results: list[str] = []
    threads = [threading.Thread(target=lambda c=c: results.append(_outcome(c))) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Counter(results)


def _load(sdk: Client, n: int, dim: int, nlist: int, nprobe: int) -> None:
    data = clustered(n, dim, seed=1)
    sdk.create_collection("flat", dim)
    sdk.add("flat", np.arange(n), data)
    sdk.create_collection("ivf", dim, index="ivf_flat", nlist=nlist, nprobe=nprobe, train_threshold=10**9)
    sdk.add("ivf", np.arange(n), data)
    sdk.train("ivf", max_training_points=8 * nlist)
    sdk.create_collection("sink", dim)
    sdk.embed(texts=["warm up the model"])  # load it before measuring


def _cases(admin: Any, reader: Any, dim: int, timeout: float) -> dict[str, tuple[str, Callable[[], list[Call]]]]:
    """Each case: its title, and what makes its requests (built before its window opens)."""
    rng = np.random.default_rng(2)

    def search(coll: str, nq: int, k: int) -> Call:
        q = pb.SearchRequest(collection=coll, queries=wire.pack_matrix(rng.random((nq, dim), np.float32)), k=k)
        return lambda: reader.Search(q, timeout=timeout)

    def embed(texts: list[str]) -> Call:
        return lambda: reader.Embed(types_pb2.EmbedRequest(texts=texts), timeout=timeout)

    def add(rows: int) -> Call:
        req = pb.AddRequest(
            collection="sink",
            ids=wire.pack_ids(np.arange(10**7, 10**7 + rows)),
            vectors=wire.pack_matrix(rng.random((rows, dim), np.float32)),
        )
        return lambda: admin.Add(req, timeout=timeout)

    big_nq = (60 * 1024 * 1024) // (4 * dim)
    text = ("lorem ipsum dolor sit amet " * 4000)[:TEXT_CHARS]
    at_limit = Settings.model_fields["max_embed_chars"].default // TEXT_CHARS
    return {
        "a": ("Search nq=100k k=55 (FLAT)", lambda: [search("flat", 100_000, 55)]),
        "b": ("Search nq=1000 k=4096 (FLAT)", lambda: [search("flat", 1000, 4096)]),
        "c": (f"8 x Search of 60 MB (nq={big_nq}, k=8, IVF)", lambda: [search("ivf", big_nq, 8) for _ in range(8)]),
        "d": ("Embed 256 x 100k chars (read key)", lambda: [embed([text] * 256)]),
        "d2": (f"Embed {at_limit} x 100k chars (at max_embed_chars, read key)", lambda: [embed([text] * at_limit)]),
        "e": (f"Add of {big_nq} x {dim} (60 MB)", lambda: [add(big_nq)]),
    }


def _percentiles(seconds: list[float]) -> tuple[float, float, float]:
    ms = np.array(seconds or [0.0]) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.max())


def _row(window: tuple[float, float], took: float, probes: Timings, checks: Timings) -> dict[str, Any]:
    """The probe's and the health check's figures over one window (by when each was due)."""
    t0, t1 = window
    lat = [lat for due, lat, _ in probes if t0 <= due < t1]
    p50, p99, mx = _percentiles(lat)
    h50, h99, hmx = _percentiles([lat for due, lat, _ in checks if t0 <= due < t1])
    return {
        "probes": len(lat),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": mx,
        "health_p50_ms": h50,
        "health_p99_ms": h99,
        "health_max_ms": hmx,
        "took_s": took,
    }


def run_abuse_bench(
    n: int,
    dim: int,
    nlist: int,
    nprobe: int,
    shards: int,
    *,
    cases: tuple[str, ...] = CASES,
    no_limits: bool = False,
    probe_every: float = 0.2,
    idle_s: float = 3.0,
    abuse_timeout: float = 120.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the cases in turn beside the probe (alone for `idle_s` first, the baseline)."""
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise ValueError(f"unknown abuse cases {unknown}; known: {', '.join(CASES)}")
    with tempfile.TemporaryDirectory(prefix="vecshard-abuse-") as tmp:
        keys = Path(tmp) / "keys.toml"
        keys.write_text('admin = ["admin-key"]\nread = ["read-key"]\n')
        env = {"VECSHARD_API_KEYS_FILE": str(keys), **(NO_LIMITS if no_limits else {})}
        with LocalCluster(shards=shards, env=env, log_level="WARNING") as cluster:
            admin, reader = _client(cluster.address, ADMIN, 600), _client(cluster.address, READ, 600)
            _load(admin, n, dim, nlist, nprobe)
            memory = Memory({p.name: p.popen.pid for p in cluster.processes()})
            made = _cases(admin.stub, reader.stub, dim, abuse_timeout)
            ctx = multiprocessing.get_context("spawn")
            stop = ctx.Event()
            receiver, sender = ctx.Pipe(duplex=False)
            prober = ctx.Process(target=probe_process, args=(cluster.address, dim, probe_every, stop, sender))
            prober.start()
            time.sleep(idle_s)
            windows = [("idle", "probe alone", (0.0, time.monotonic()), 0.0, Counter[str](), memory.peaks_mib())]
            for key in cases:
                title, prepare = made[key]
                calls = prepare()
                memory.reset()
                done = threading.Event()
                threading.Thread(target=memory.sample_until, args=(done,), daemon=True).start()
                t0 = time.monotonic()
                ended = _concurrently(calls)
                t1 = time.monotonic()
                time.sleep(probe_every * 2)  # the probe that was due during the case's end
                done.set()
                windows.append((key, title, (t0, t1 + probe_every), t1 - t0, ended, memory.peaks_mib()))
                log(f"{key}: done in {t1 - t0:.1f}s: {dict(ended)}")
                del calls
            stop.set()
            probes, checks = receiver.recv()
            prober.join()
            admin.close()
            reader.close()
    rows = []
    for key, title, window, took, ended, peaks in windows:
        row = _row(window, took, probes, checks)
        rows.append({"case": key, "title": title, **row, "ended": dict(ended), "peak_rss_mib": peaks})
    params: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "nlist": nlist,
        "nprobe": nprobe,
        "shards": shards,
        "probe_every_s": probe_every,
        "no_limits": no_limits,
        "cpus": os.cpu_count(),
        "abuse_timeout_s": abuse_timeout,
    }
    return {"params": params, "cases": rows, "probe_errors": dict(Counter(e for _, _, e in probes if e))}


def format_markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    mode = "limits OFF (before)" if p["no_limits"] else "limits ON (defaults)"
    lines = [
        f"# Abuse probe: {p['n']} x {p['dim']}, {p['shards']} shards, {mode}, cpus={p['cpus']}",
        "",
        f"Probe: a 1-query k=10 search of the FLAT collection every {p['probe_every_s']} s; health: the "
        f"coordinator's grpc.health.v1 Check every {p['probe_every_s'] / 4} s (ms, timed from when due).",
        "",
        "| case | probes | probe p50 / p99 / max | health p50 / p99 / max | took s | abuse ended | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["cases"]:
        rss = " ".join(f"{name}={mib}" for name, mib in r["peak_rss_mib"].items())
        lines.append(
            f"| {r['case']}: {r['title']} | {r['probes']} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['max_ms']:.1f} "
            f"| {r['health_p50_ms']:.1f} / {r['health_p99_ms']:.1f} / {r['health_max_ms']:.1f} | {r['took_s']:.1f} "
            f"| {r['ended'] or ''} | {rss} |"
        )
    if result["probe_errors"]:
        lines += ["", f"Probe errors: {result['probe_errors']}"]
    return "\n".join(lines) + "\n"
