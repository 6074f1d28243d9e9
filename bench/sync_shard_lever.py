"""One latency lever, as a prototype: a synchronous gRPC shard server vs today's grpc.aio shard server.

`.venv/bin/python bench/sync_shard_lever.py` (under a minute; --json FILE also writes the numbers).

Data: sift5k (5000 x 128 float32, its 100 queries), in two collections: "flat" (FLAT) and "ivf"
(IVF_FLAT, nlist 64, nprobe 8, trained once here with the engine's own k-means), L2, k = 10.

Servers, each a process of its own on 127.0.0.1, all with the environment LocalCluster gives a
cluster's only shard (OMP_WAIT_POLICY=PASSIVE, MALLOC_ARENA_MAX=2, OMP_NUM_THREADS=<cores>):
  async         the real shard (`vecshard shard`, started as LocalCluster starts one), the collections
                created, filled and trained through the shard RPCs (CreateCollection, Add,
                InstallQuantizer ONE_STEP).
  async-inline  a second real shard with VECSHARD_INLINE_SEARCH_WORK=1000000, "flat" only: its FLAT
                searches (640,000 multiply-adds, over the default 300,000) run on the event loop, as
                the "ivf" ones of every real shard do, not through the search batcher's thread: how
                much of the gap is that thread hand-off.
  sync          the prototype: grpc.server(ThreadPoolExecutor(max_workers=4)) with a generic handler
                for /vecshard.v1.Shard/Search over engine.ShardIndex partitions of the same specs and
                data; the handler parses the real SearchRequest, runs the shard's own checks
                (wire.unpack_matrix, service.check_search), calls ShardIndex.search in the handler
                thread and packs the SearchResponse as ShardService.Search does. It has none of the
                real server's per-call wrapper (common.rpc._guarded: readiness, auth, request id,
                metrics, tracing span, error mapping beyond VecshardError) nor its train-epoch check.
  floors        a bare unary call carrying the same bytes as a Search each way (the serialized
                request in, a canned reply of the SearchResponse's size out), on a sync grpc server
                (the prototype's process and 4-thread pool) and on a grpc.aio server.
Also, as a reference: ShardIndex.search called in this process, no gRPC.

The client is this process: a sync grpc channel per server (shared by the client threads). Each
round measures every (server, collection) cell one after the other, in an order rotated each round,
so that noise from the machine (2 shared cores here; other work may run) hits every cell alike:
  1 client   --n / --rounds single-query Search calls one by one: latency, calls/s;
  N clients  --clients threads, --calls-per-client calls each per round: calls/s, latency.
Server CPU is the server process's utime + stime (/proc/<pid>/stat, every thread) across a cell,
summed over the rounds and divided by their calls (the clock ticks are 10 ms); latencies and calls/s
are the medians of the per-round values. Every server answers the 100 queries as the real shard
does (checked first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import faiss
import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import NotFound, VecshardError
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc, types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.bench.datasets import load_sift5k
from vecshard_server.cli.cluster import Process
from vecshard_server.common.config import Settings
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.accel import detect
from vecshard_server.shard.engine import ShardIndex, train_centroids
from vecshard_server.shard.service import check_search

K = 10
NLIST, NPROBE = 64, 8
SEED = 1234
# A second real shard runs with this inline_search_work (default 300,000): a FLAT search of sift5k
# (640,000 multiply-adds) then runs on its event loop, as the ivf one does, not via a thread.
INLINE_WORK = 1_000_000
SHARD_SERVICE = "vecshard.v1.Shard"
ECHO_SERVICE = "vecshard.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- what both search servers hold ----------------------------------------------------------------


def collection_configs(settings: Settings, dim: int) -> dict[str, types_pb2.CollectionConfig]:
    """The configs a coordinator would send its shards (validated, defaults filled in)."""
    given = [
        types_pb2.CollectionConfig(
            name="flat", dim=dim, metric=types_pb2.METRIC_L2, index_type=types_pb2.INDEX_TYPE_FLAT
        ),
        types_pb2.CollectionConfig(
            name="ivf",
            dim=dim,
            metric=types_pb2.METRIC_L2,
            index_type=types_pb2.INDEX_TYPE_IVF_FLAT,
            nlist=NLIST,
            nprobe=NPROBE,
        ),
    ]
    return {c.name: CollectionSpec.validate(c, settings).to_proto() for c in given}


def local_parts(
    settings: Settings, configs: dict[str, types_pb2.CollectionConfig], base: np.ndarray, centroids: np.ndarray
) -> dict[str, ShardIndex]:
    """The partitions the sync prototype holds (also built in this process for the in-process row)."""
    accelerator = detect(settings.device)
    parts: dict[str, ShardIndex] = {}
    for name, cfg in configs.items():
        part = ShardIndex(CollectionSpec.from_proto(cfg), settings.max_vectors_per_shard, accelerator)
        part.add(np.arange(base.shape[0], dtype=np.int64), base, upsert=False)
        if part.spec.is_ivf:
            part.install_quantizer(centroids)
        parts[name] = part
    return parts


def echo_reply() -> bytes:
    """Bytes of a Search reply's size (one query, k results)."""
    size = pb.SearchResponse(nq=1, k=K, distances=bytes(4 * K), ids=bytes(8 * K)).ByteSize()
    return bytes(size)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [*settings.grpc_options(), ("grpc.so_reuseport", 0)]  # as common.rpc.Server


def write_port(port_file: Path, port: int) -> None:
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)


def wait_for_parent() -> None:
    """Block until the parent closes our stdin (it ended, or is done with us)."""
    sys.stdin.buffer.read()


# -- child: the sync prototype (plus the sync echo floor) -----------------------------------------


def serve_sync(port_file: Path, centroids_file: Path, workers: int) -> None:
    settings = Settings()
    base, _, _ = load_sift5k()
    parts = local_parts(settings, collection_configs(settings, base.shape[1]), base, np.load(centroids_file))

    def search(request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        try:
            part = parts.get(request.collection)
            if part is None:
                raise NotFound(f"collection {request.collection!r} does not exist on this shard")
            queries = wire.unpack_matrix(request.queries, "queries")
            check_search(settings, part.spec, queries, request.k)
            D, I = part.search(queries, request.k, request.nprobe)  # here, in the handler thread
        except VecshardError as err:
            context.abort(err.code, err.details)
        return pb.SearchResponse(  # packed as ShardService.Search packs it
            nq=queries.shape[0],
            k=request.k,
            distances=D.astype(wire.F32, copy=False).tobytes(),
            ids=I.astype(wire.I64, copy=False).tobytes(),
        )

    reply = echo_reply()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=server_options(settings))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SHARD_SERVICE,
                {
                    "Search": grpc.unary_unary_rpc_method_handler(
                        search,
                        request_deserializer=pb.SearchRequest.FromString,
                        response_serializer=pb.SearchResponse.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: reply)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    write_port(port_file, port)
    wait_for_parent()
    server.stop(0)


# -- child: the grpc.aio echo floor ---------------------------------------------------------------


async def serve_aio_echo(port_file: Path) -> None:
    reply = echo_reply()

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return reply

    server = grpc.aio.server(options=server_options(Settings()))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    write_port(port_file, port)
    await asyncio.to_thread(wait_for_parent)
    await server.stop(0)


# -- parent: start, fill, measure -----------------------------------------------------------------


def server_env() -> dict[str, str]:
    """What LocalCluster gives a cluster's only shard process (unless the environment says otherwise);
    every server here gets the same."""
    defaults = {"OMP_WAIT_POLICY": "PASSIVE", "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


def proc_cpu(pid: int) -> float:
    """Seconds of CPU (user + system, every thread) process `pid` has used."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


class Child:
    """A server process running this script with --serve."""

    def __init__(self, role: str, port_file: Path, extra: list[str], env: dict[str, str]) -> None:
        self.port_file = port_file
        args = [sys.executable, str(Path(__file__).resolve()), "--serve", role, "--port-file", str(port_file), *extra]
        self.popen = subprocess.Popen(args, stdin=subprocess.PIPE, env={**os.environ, **env})
        self.pid = self.popen.pid
        self.port = 0

    def wait_port(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.port_file.stem} server exited with code {self.popen.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.port_file.stem} server did not start")
            time.sleep(0.02)
        self.port = int(self.port_file.read_text())
        return self.port

    def stop(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def fill_real_shard(
    address: str, configs: dict[str, types_pb2.CollectionConfig], base: np.ndarray, centroids: np.ndarray
) -> None:
    """Create, fill and train the collections on the real shard through its RPCs."""
    with grpc.insecure_channel(address) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        ids = np.arange(base.shape[0], dtype=np.int64)
        for name, cfg in configs.items():
            stub.CreateCollection(cfg, timeout=30)
            for start in range(0, base.shape[0], 1000):
                stub.Add(
                    pb.AddRequest(
                        collection=name,
                        ids=wire.pack_ids(ids[start : start + 1000]),
                        vectors=wire.pack_matrix(base[start : start + 1000]),
                    ),
                    timeout=30,
                )
            if cfg.index_type != types_pb2.INDEX_TYPE_FLAT:
                stub.InstallQuantizer(
                    spb.InstallQuantizerRequest(
                        collection=name, centroids=wire.pack_matrix(centroids), mode=spb.INSTALL_MODE_ONE_STEP
                    ),
                    timeout=60,
                )
            state = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=30)
            assert state.count == base.shape[0], state


Call = Callable[[Any], Any]


def search_call(channel: grpc.Channel) -> Call:
    stub = shard_pb2_grpc.ShardStub(channel)
    return lambda request: stub.Search(request, timeout=30)


def echo_call(channel: grpc.Channel) -> Call:
    echo = channel.unary_unary(ECHO_METHOD)  # bytes in, bytes out
    return lambda request: echo(request, timeout=30)


def check_same_results(calls: dict[str, Call], requests: dict[str, list[pb.SearchRequest]]) -> None:
    for name, reqs in requests.items():
        for req in reqs:
            a = calls["async"](req)
            for other in ("sync", "async-inline") if name == "flat" else ("sync",):
                b = calls[other](req)
                if a.ids != b.ids or not np.allclose(
                    np.frombuffer(a.distances, dtype=wire.F32), np.frombuffer(b.distances, dtype=wire.F32)
                ):
                    raise AssertionError(f"{name}: the async shard and {other} answer differently")


def one_client(call: Call, reqs: list[Any], n: int, pid: int) -> dict[str, Any]:
    lat = np.empty(n, dtype=np.int64)
    cpu0, me0 = proc_cpu(pid), self_cpu()
    t0 = time.perf_counter()
    for i in range(n):
        started = time.perf_counter_ns()
        call(reqs[i % len(reqs)])
        lat[i] = time.perf_counter_ns() - started
    wall = time.perf_counter() - t0
    return {"lat_ns": lat, "wall": wall, "calls": n, "cpu": proc_cpu(pid) - cpu0, "client_cpu": self_cpu() - me0}


def many_clients(call: Call, reqs: list[Any], clients: int, per_client: int, pid: int) -> dict[str, Any]:
    lat = np.empty((clients, per_client), dtype=np.int64)
    go = threading.Barrier(clients + 1)

    def work(j: int) -> None:
        go.wait()
        for i in range(per_client):
            started = time.perf_counter_ns()
            call(reqs[(j * 13 + i) % len(reqs)])
            lat[j, i] = time.perf_counter_ns() - started

    threads = [threading.Thread(target=work, args=(j,)) for j in range(clients)]
    for t in threads:
        t.start()
    cpu0, me0 = proc_cpu(pid), self_cpu()
    t0 = time.perf_counter()
    go.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "lat_ns": lat.ravel(),
        "wall": wall,
        "calls": clients * per_client,
        "cpu": proc_cpu(pid) - cpu0,
        "client_cpu": self_cpu() - me0,
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of p50, p99 and calls/s; CPU per call pooled over the rounds."""
    p50 = [float(np.percentile(r["lat_ns"], 50)) / 1e6 for r in rounds]
    p99 = [float(np.percentile(r["lat_ns"], 99)) / 1e6 for r in rounds]
    qps = [r["calls"] / r["wall"] for r in rounds]
    calls = sum(r["calls"] for r in rounds)
    return {
        "p50_ms": statistics.median(p50),
        "p99_ms": statistics.median(p99),
        "qps": statistics.median(qps),
        "p50_ms_range": [min(p50), max(p50)],
        "qps_range": [min(qps), max(qps)],
        "server_cpu_us": 1e6 * sum(r["cpu"] for r in rounds) / calls,
        "client_cpu_us": 1e6 * sum(r["client_cpu"] for r in rounds) / calls,
        "calls": calls,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    base, queries, _ = load_sift5k()
    configs = collection_configs(settings, base.shape[1])
    centroids = train_centroids(base, CollectionSpec.from_proto(configs["ivf"]), SEED)
    env = server_env()
    run_dir = Path(tempfile.mkdtemp(prefix="vecshard-sync-lever-"))
    np.save(run_dir / "centroids.npy", centroids)
    children: list[Child] = []
    shards: list[Process] = []
    channels: list[grpc.Channel] = []
    try:
        for name, extra in (("shard", {}), ("shard-inline", {"VECSHARD_INLINE_SEARCH_WORK": str(INLINE_WORK)})):
            shards.append(
                Process(
                    name,
                    [
                        "shard",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        "0",
                        "--name",
                        name,
                        "--log-level",
                        "WARNING",
                        "--metrics-port",
                        "0",
                    ],
                    run_dir / f"{name}.port",
                    {**env, **extra},
                )
            )
        shard, inline = shards
        sync = Child(
            "sync",
            run_dir / "sync.port",
            ["--centroids", str(run_dir / "centroids.npy"), "--workers", str(args.workers)],
            env,
        )
        aio_echo = Child("aio-echo", run_dir / "aio-echo.port", [], env)
        children += [sync, aio_echo]
        for proc in shards:
            proc.wait_port(time.monotonic() + 120)
        for child in children:
            child.wait_port()
        fill_real_shard(shard.address, configs, base, centroids)
        fill_real_shard(inline.address, {"flat": configs["flat"]}, base, centroids)

        options = settings.grpc_options()
        addresses = {"async": shard.address, "sync": f"127.0.0.1:{sync.port}", "async-inline": inline.address}
        addresses |= {"echo-sync": addresses["sync"], "echo-aio": f"127.0.0.1:{aio_echo.port}"}
        pids = {
            "async": shard.popen.pid,
            "sync": sync.pid,
            "async-inline": inline.popen.pid,
            "echo-sync": sync.pid,
            "echo-aio": aio_echo.pid,
        }
        calls: dict[str, Call] = {}
        for server, address in addresses.items():
            channel = grpc.insecure_channel(address, options=options)
            channels.append(channel)
            calls[server] = echo_call(channel) if server.startswith("echo") else search_call(channel)

        requests = {
            name: [
                pb.SearchRequest(collection=name, queries=wire.pack_matrix(q[None, :]), k=K) for q in queries
            ]  # nprobe 0: the collection's (8 for ivf)
            for name in configs
        }
        echo_requests = [r.SerializeToString() for r in requests["flat"]]
        check_same_results(calls, requests)

        cells = [(s, c) for c in configs for s in ("async", "sync")] + [("async-inline", "flat")]
        cells += [("echo-sync", ""), ("echo-aio", "")]

        def reqs_of(server: str, collection: str) -> list[Any]:
            return echo_requests if server.startswith("echo") else requests[collection]

        idle = {}
        for server in ("async", "async-inline", "sync", "echo-aio"):
            idle[server] = proc_cpu(pids[server])
        time.sleep(2.0)
        idle_cpu = {s: 100 * (proc_cpu(pids[s]) - v) / 2.0 for s, v in idle.items()}

        for server, collection in cells:  # warm up: connections, faiss, the shard's batcher
            one_client(calls[server], reqs_of(server, collection), 300, pids[server])
            many_clients(calls[server], reqs_of(server, collection), args.clients, 20, pids[server])

        local = local_parts(settings, configs, base, centroids)  # the engine alone, in this process

        def inproc(collection: str, n: int) -> dict[str, Any]:
            part = local[collection]
            reqs = [wire.unpack_matrix(r.queries, "queries") for r in requests[collection]]
            return one_client(lambda q: part.search(q, K, 0), reqs, n, os.getpid())

        for collection in configs:
            inproc(collection, 300)

        results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        per_round = max(1, args.n // args.rounds)
        load = [os.getloadavg()[0]]
        for r in range(args.rounds):
            order = cells[r % len(cells) :] + cells[: r % len(cells)]
            for server, collection in order:
                out = one_client(calls[server], reqs_of(server, collection), per_round, pids[server])
                results.setdefault((server, collection, "1"), []).append(out)
            for collection in configs:
                results.setdefault(("inproc", collection, "1"), []).append(inproc(collection, per_round))
            for server, collection in order:
                out = many_clients(
                    calls[server], reqs_of(server, collection), args.clients, args.calls_per_client, pids[server]
                )
                results.setdefault((server, collection, str(args.clients)), []).append(out)
            load.append(os.getloadavg()[0])
        return {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "grpc": grpc.__version__,
                "faiss": faiss.__version__,
                "server_env": env,
                "loadavg_1m": load,
                "idle_server_cpu_percent": idle_cpu,
            },
            "params": {
                "n": per_round * args.rounds,
                "rounds": args.rounds,
                "clients": args.clients,
                "calls_per_client": args.calls_per_client,
                "workers": args.workers,
                "k": K,
                "nlist": NLIST,
                "nprobe": NPROBE,
            },
            "cells": {"|".join(key): summarize(rounds) for key, rounds in results.items()},
        }
    finally:
        for channel in channels:
            channel.close()
        for child in children:
            child.stop()
        for proc in shards:
            proc.terminate()
        for proc in shards:
            proc.wait(30)
        shutil.rmtree(run_dir, ignore_errors=True)


def report(data: dict[str, Any]) -> str:
    p, m = data["params"], data["machine"]
    c = p["clients"]
    cells = data["cells"]
    lines = [
        f"sift5k 5000x128, k={p['k']}; 1 client: {p['n']} calls per row in {p['rounds']} rounds; {c} clients: "
        f"{c} x {p['calls_per_client']} calls per round. {m['cpus']} CPUs, grpc {m['grpc']}, faiss {m['faiss']}, "
        f"Python {m['python']}; load avg (1 min) per round {', '.join(f'{x:.2f}' for x in m['loadavg_1m'])}; "
        f"idle server CPU % {', '.join(f'{k} {v:.1f}' for k, v in m['idle_server_cpu_percent'].items())}",
        "",
        f"| collection | server | p50 ms | p99 ms | server CPU us/call | calls/s | {c} clients calls/s "
        f"| {c} clients p50 ms | {c} clients p99 ms | {c} clients server CPU us/call |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "async": "async (real shard)",
        "async-inline": f"async, inline_search_work={INLINE_WORK:,}",
        "sync": "sync prototype",
        "inproc": "ShardIndex.search in-process (no gRPC)",
        "echo-sync": "floor: sync echo",
        "echo-aio": "floor: aio echo",
    }
    rank = {s: i for i, s in enumerate(labels)}
    keys = [k for k in cells if k.endswith("|1")]
    keys.sort(key=lambda k: (k.split("|")[1] == "", k.split("|")[1], rank[k.split("|")[0]]))
    for key in keys:
        server, collection, _ = key.split("|")
        one, many = cells[key], cells.get(f"{server}|{collection}|{c}")
        row = f"| {collection or '-'} | {labels[server]} | {one['p50_ms']:.3f} | {one['p99_ms']:.3f} "
        row += f"| {one['server_cpu_us']:.0f} | {one['qps']:,.0f} |"
        if many is None:
            row += " | | | |"
        else:
            row += f" {many['qps']:,.0f} | {many['p50_ms']:.3f} | {many['p99_ms']:.3f} | {many['server_cpu_us']:.0f} |"
        lines.append(row)
    lines.append("")
    for collection in ("flat", "ivf"):
        a1, s1 = cells[f"async|{collection}|1"], cells[f"sync|{collection}|1"]
        an, sn = cells[f"async|{collection}|{c}"], cells[f"sync|{collection}|{c}"]
        lines.append(
            f"{collection}: sync/async p50 {s1['p50_ms'] / a1['p50_ms']:.2f}x "
            f"({1e3 * (s1['p50_ms'] - a1['p50_ms']):+.0f} us), "
            f"CPU/call {s1['server_cpu_us'] / a1['server_cpu_us']:.2f}x, "
            f"{c}-client calls/s {sn['qps'] / an['qps']:.2f}x, {c}-client p99 {sn['p99_ms'] / an['p99_ms']:.2f}x; "
            f"1-client p50 range over rounds: async {a1['p50_ms_range'][0]:.3f}-{a1['p50_ms_range'][1]:.3f}, "
            f"sync {s1['p50_ms_range'][0]:.3f}-{s1['p50_ms_range'][1]:.3f} ms"
        )
    a1, i1, s1 = (cells[f"{s}|flat|1"] for s in ("async", "async-inline", "sync"))
    an, i_n, sn = (cells[f"{s}|flat|{c}"] for s in ("async", "async-inline", "sync"))
    lines.append(
        f"flat, inline on the loop vs async: p50 {i1['p50_ms'] / a1['p50_ms']:.2f}x, CPU/call "
        f"{i1['server_cpu_us'] / a1['server_cpu_us']:.2f}x, {c}-client calls/s {i_n['qps'] / an['qps']:.2f}x; "
        f"sync vs inline: p50 {s1['p50_ms'] / i1['p50_ms']:.2f}x, {c}-client calls/s {sn['qps'] / i_n['qps']:.2f}x"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="single-client calls per row, over all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8, help="client threads of the concurrent phase")
    parser.add_argument("--calls-per-client", type=int, default=100, help="per round, concurrent phase")
    parser.add_argument("--workers", type=int, default=4, help="threads of the sync prototype's pool")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--serve", choices=["sync", "aio-echo"], help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--centroids", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "sync":
        serve_sync(args.port_file, args.centroids, args.workers)
        return
    if args.serve == "aio-echo":
        asyncio.run(serve_aio_echo(args.port_file))
        return
    env = server_env()
    if any(os.environ.get(k) != v for k, v in env.items()):
        # This process too (its in-process row): faiss's OpenMP reads these when it loads, and with
        # the default (spinning) wait policy a one-query FLAT search here cost 0.5-5 ms of CPU.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})
    data = run(args)
    print(report(data))
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
