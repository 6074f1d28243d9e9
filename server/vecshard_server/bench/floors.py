"""The floors a vecshard request is measured against: bare unary gRPC calls of the same payload sizes
(a sync server on a thread pool and a grpc.aio server, each its own process, answering a canned reply
of a search reply's size), called one at a time by a sync channel and by N concurrent asyncio tasks
over one grpc.aio channel (as one Python application runs them); and the durability floor of ingest
(faiss `add` plus an fsynced append of the same bytes).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from concurrent import futures
    import grpc

    port_file, reply_bytes, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    REPLY = b"x" * reply_bytes

    def handler(fn):
        return grpc.method_handlers_generic_handler("bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(fn)})

    if mode == "sync":
        def echo(request, context):
            return REPLY
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        server.add_generic_rpc_handlers((handler(echo),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        open(port_file, "w").write(str(port))
        server.wait_for_termination()
    else:
        async def echo(request, context):
            return REPLY

        async def main():
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((handler(echo),))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            open(port_file, "w").write(str(port))
            await server.wait_for_termination()

        asyncio.run(main())
    """
)


def latencies(call: Callable[[], object], n: int, warmup: int = 50) -> dict[str, float]:
    """p50/p99 (ms) and calls/s of `call` made n times one after another."""
    for _ in range(min(warmup, n)):
        call()
    lat = np.empty(n)
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call()
        lat[i] = time.perf_counter() - t0
    elapsed = time.perf_counter() - start
    p50, p99 = (float(v) * 1e3 for v in np.percentile(lat, [50, 99]))
    return {"p50_ms": p50, "p99_ms": p99, "qps": n / elapsed}


async def concurrent_calls(
    call: Callable[[int], Any], clients: int, duration_s: float, warmup: int = 20
) -> dict[str, float]:
    """`clients` asyncio tasks, each awaiting `call(i)` one at a time for duration_s: QPS, p50, p99."""
    for i in range(warmup):
        await call(i)
    lat: list[float] = []
    end = time.perf_counter() + duration_s

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await call(i)
            lat.append(time.perf_counter() - t0)
            i += clients

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - start
    p50, p99 = (float(v) * 1e3 for v in np.percentile(lat, [50, 99]))
    return {"qps": len(lat) / elapsed, "p50_ms": p50, "p99_ms": p99}


@contextmanager
def echo_server(mode: str, reply_bytes: int) -> Iterator[str]:
    """A bare echo server process ("sync" or "aio"); yields its address."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port_file), str(reply_bytes), mode])
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the {mode} echo server did not start")
                time.sleep(0.02)
            yield f"127.0.0.1:{port_file.read_text()}"
        finally:
            proc.kill()
            proc.wait()


def echo_floor(
    mode: str, request_bytes: int, reply_bytes: int, single: int, clients: Sequence[int], duration_s: float
) -> dict[str, Any]:
    """One echo server: single-call p50/p99 (a sync channel) and, per client count, QPS/p50/p99 of that
    many concurrent asyncio tasks over one grpc.aio channel."""
    import grpc

    payload = b"q" * request_bytes
    with echo_server(mode, reply_bytes) as address:
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary("/bench.Echo/Call")
            out: dict[str, Any] = {"single": latencies(lambda: call(payload, timeout=10), single)}

        async def many(m: int) -> dict[str, float]:
            async with grpc.aio.insecure_channel(address) as ch:
                acall = ch.unary_unary("/bench.Echo/Call")
                return await concurrent_calls(lambda i: acall(payload, timeout=10), m, duration_s)

        out["concurrent"] = {str(m): asyncio.run(many(m)) for m in clients}
    return out


def ingest_floor(index: Any, base: F32, batch: int, workdir: Path) -> dict[str, float]:
    """Vectors/s of faiss `add` in batches plus an fsynced append of each batch's ids and vectors:
    what a durable ingest cannot beat on this machine."""
    path = workdir / "ingest-floor.bin"
    ids = np.arange(base.shape[0], dtype=np.int64)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t0 = time.perf_counter()
        for a in range(0, base.shape[0], batch):
            rows = np.ascontiguousarray(base[a : a + batch])
            index.add_with_ids(rows, ids[a : a + batch])
            os.write(fd, ids[a : a + batch].tobytes() + rows.tobytes())
            os.fsync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"vps": base.shape[0] / elapsed}
