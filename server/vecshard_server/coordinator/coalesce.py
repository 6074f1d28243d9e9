"""Coalescing concurrent searches: many clients' small searches of one collection, one fan-out.

Under concurrent single-query traffic, each client call would cost one shard call per group, and a
shard call (request, handler, reply) costs far more than the search it carries. Searches that
arrive while one of the same shape (collection, k, nprobe, refine, allow_partial) is in flight
wait for the next round and go out together: their queries stacked into one shard request per
group, merged once, and split back by rows. A search with nothing of its shape in flight goes at
once, in its own task: a lone client pays nothing for this.

Only plain searches coalesce (no filter, no payloads): their answers depend on nothing but their
own query rows, so sharing a round cannot change them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
# run(key, stacked queries, the callers' contexts) -> (distances, ids, fields for every caller's reply)
Run = Callable[[Any, F32, list[Any]], Awaitable[tuple[F32, npt.NDArray[np.int64], dict[str, Any]]]]


class Identity:
    """A key part equal only to the same object (e.g. a collection: not a value, and not hashable)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.obj is self.obj


@dataclass
class _Round:
    queries: list[F32] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    waiters: list[asyncio.Future[tuple[F32, npt.NDArray[np.int64], dict[str, Any]]]] = field(default_factory=list)
    rows: int = 0


class Coalescer:
    """`search(key, queries, context)`: this caller's rows of a round shared with concurrent callers."""

    def __init__(self, run: Run, max_rows: int = 256) -> None:
        self._run = run
        self._max_rows = max_rows
        self._queues: dict[Hashable, deque[_Round]] = {}  # rounds waiting, per key
        self._running: set[Hashable] = set()
        self.rounds = 0  # fan-outs made
        self.searches = 0

    async def search(
        self, key: Hashable, queries: F32, context: Any
    ) -> tuple[F32, npt.NDArray[np.int64], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        self.searches += 1
        if key not in self._running:  # nothing in flight of this shape: go now, in this task
            self._running.add(key)
            self.rounds += 1
            try:
                return await self._run(key, queries, [context])
            finally:
                self._running.discard(key)
                if self._queues.get(key):  # others arrived meanwhile: their round starts
                    self._running.add(key)
                    loop.call_soon(self._start, key)
        waiter: asyncio.Future[tuple[F32, npt.NDArray[np.int64], dict[str, Any]]] = loop.create_future()
        queue = self._queues.setdefault(key, deque())
        if not queue or queue[-1].rows + queries.shape[0] > self._max_rows:
            queue.append(_Round())
        pending = queue[-1]
        pending.queries.append(queries)
        pending.contexts.append(context)
        pending.waiters.append(waiter)
        pending.rows += queries.shape[0]
        if key not in self._running:
            self._running.add(key)
            loop.call_soon(self._start, key)
        return await waiter

    def _start(self, key: Hashable) -> None:
        asyncio.ensure_future(self._drain(key))

    async def _drain(self, key: Hashable) -> None:
        queue = self._queues[key]
        try:
            while queue:
                batch = queue.popleft()
                live = [i for i, w in enumerate(batch.waiters) if not w.done()]  # (cancelled callers drop out)
                if live:
                    await self._answer(key, batch, live)
        finally:
            self._running.discard(key)
            if queue:  # (a round failed to start: let the next call start it)
                self._running.add(key)
                asyncio.get_running_loop().call_soon(self._start, key)
            else:
                self._queues.pop(key, None)

    async def _answer(self, key: Hashable, batch: _Round, live: list[int]) -> None:
        qs = [batch.queries[i] for i in live]
        x = qs[0] if len(qs) == 1 else np.vstack(qs)
        self.rounds += 1
        try:
            D, I, extra = await self._run(key, x, [batch.contexts[i] for i in live])
        except BaseException as err:  # every caller of the round gets the error
            for i in live:
                if not batch.waiters[i].done():
                    batch.waiters[i].set_exception(err)
            if isinstance(err, asyncio.CancelledError):
                raise
            return
        start = 0
        for i, q in zip(live, qs, strict=True):
            n = q.shape[0]
            if not batch.waiters[i].done():
                batch.waiters[i].set_result((D[start : start + n], I[start : start + n], extra))
            start += n
