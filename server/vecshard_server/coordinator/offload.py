"""Keeping the coordinator's event loop free: heavy work runs on worker threads.

The event loop answers every RPC, health checks included (a Kubernetes liveness probe is a
grpc.health.v1 Health/Check on this port). Anything that holds it for long, e.g. merging one k=4096
search's nq*k*S results (seconds) or assigning a big sample to IVF lists, delays every call and can
get the coordinator restarted. So work heavier than about a millisecond runs here, on a small pool
of threads; work below the thresholds stays on the loop, where a single query's latency does not
pay the thread hop (~50-100 us).

numpy and faiss release the GIL in their loops, so the loop keeps answering while a worker sorts or
searches. Copying big protobuf bytes fields holds it (~20-60 ms per 64 MiB message): that part is
kept to one copy per field where the code can choose.

The pool is small on purpose: concurrent heavy requests queue for it instead of all competing with
the loop for the CPUs (and the GIL). Training's k-means runs on asyncio's default executor instead,
so a long training never holds up searches.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

# Below these sizes work takes well under a millisecond and stays on the loop.
INLINE_BYTES = 1 << 20  # bytes of vectors or ids checked, copied, packed or unpacked
INLINE_RESULTS = 4096  # (distance, id) entries merged: nq * k * shards (1 x 4096 x 2 takes ~1.4 ms)
INLINE_FLOPS = 1 << 22  # multiply-adds of a nearest-centroid assignment: n * nlist * dim

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    """The coordinator's pool for heavy request work (created on first use)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="vecshard-work")
    return _executor


async def run(heavy: bool, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """fn(*args, **kwargs): on the pool when `heavy`, else right here on the loop.

    The worker runs in a copy of the caller's context (request id, tracing span), as
    asyncio.to_thread does. A cancelled caller stops waiting; the work itself finishes.
    """
    if not heavy:
        return fn(*args, **kwargs)
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor(), call)
