"""Micro-batching: concurrent searches of one partition with the same (k, nprobe) are coalesced into
one faiss call. faiss answers a batch of queries much faster per query than the same queries one
call at a time (one pass over the inverted lists, BLAS for flat scans, one thread hand-off), so
under concurrent single-query traffic a shard can beat in-process one-by-one search.

Requests that arrive while a batch is running wait for the next one; a batch is flushed as soon as
the event loop is free, so a lone request is not delayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
SearchFn = Callable[[F32, int, int], tuple[F32, I64]]


@dataclass
class _Batch:
    queries: list[F32] = field(default_factory=list)
    waiters: list[asyncio.Future[tuple[F32, I64]]] = field(default_factory=list)
    rows: int = 0


class SearchBatcher:
    """Coalesces `search(queries, k, nprobe)` calls per (k, nprobe)."""

    def __init__(self, search: SearchFn, owner: object = None, max_rows: int = 4096) -> None:
        self._search = search
        self.owner = owner
        self._max_rows = max_rows
        self._open: dict[tuple[int, int], _Batch] = {}
        self._running: set[tuple[int, int]] = set()

    @property
    def busy(self) -> bool:
        """A batch is being searched (a search arriving now would wait for the next)."""
        return bool(self._running)

    async def search(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64]:
        if queries.shape[0] >= self._max_rows:  # already a big batch: nothing to gain
            return await asyncio.to_thread(self._search, queries, k, nprobe)
        key = (k, nprobe)
        batch = self._open.setdefault(key, _Batch())
        waiter: asyncio.Future[tuple[F32, I64]] = asyncio.get_running_loop().create_future()
        batch.queries.append(queries)
        batch.waiters.append(waiter)
        batch.rows += queries.shape[0]
        if key not in self._running:
            self._running.add(key)
            asyncio.get_running_loop().call_soon(self._start, key)
        return await waiter

    def _start(self, key: tuple[int, int]) -> None:
        asyncio.ensure_future(self._drain(key))

    async def _drain(self, key: tuple[int, int]) -> None:
        try:
            while (batch := self._open.pop(key, None)) is not None:
                try:
                    x = batch.queries[0] if len(batch.queries) == 1 else np.vstack(batch.queries)
                    D, I = await asyncio.to_thread(self._search, x, key[0], key[1])
                except BaseException as err:  # every waiter of this batch gets the error
                    for w in batch.waiters:
                        if not w.done():
                            w.set_exception(err)
                    continue
                start = 0
                for q, w in zip(batch.queries, batch.waiters, strict=True):
                    n = q.shape[0]
                    if not w.done():
                        w.set_result((D[start : start + n], I[start : start + n]))
                    start += n
        finally:
            self._running.discard(key)
