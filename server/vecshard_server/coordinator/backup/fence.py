"""The write fence of a backup's cut, per collection, in this coordinator.

Every write handler (Add, Remove, UpdateVectors, SetPayload, payload index changes) runs inside
`writing(collection)`. A cut closes the fence of its collections (`hold`): new writes wait at the
gate, writes in flight are waited for (each was acknowledged, or failed, by then), the shards
freeze their partitions, and the fence opens again. So a backup holds exactly the writes this
coordinator acknowledged before the cut, and none that began after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from vecshard.errors import Unavailable

DRAIN_S = 30.0  # the longest a cut waits for the writes in flight


class WriteFence:
    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}
        self._closed: dict[str, asyncio.Event] = {}  # set when the fence opens again
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def writing(self, collection: str) -> AsyncIterator[None]:
        """Around one write to `collection`: waits while a cut holds the collection's fence."""
        while (opened := self._closed.get(collection)) is not None:
            await opened.wait()
        self._inflight[collection] = self._inflight.get(collection, 0) + 1
        try:
            yield
        finally:
            left = self._inflight[collection] - 1
            if left:
                self._inflight[collection] = left
            else:
                del self._inflight[collection]
                async with self._changed:
                    self._changed.notify_all()

    @asynccontextmanager
    async def hold(self, collections: Iterable[str], drain_s: float = DRAIN_S) -> AsyncIterator[None]:
        """Close the fence of `collections`, wait for their writes in flight, and open it again at
        the end of the block (however it ends)."""
        names = sorted(set(collections))
        for name in names:  # (another cut holding one: wait for it)
            while (opened := self._closed.get(name)) is not None:
                await opened.wait()
        mine = {name: asyncio.Event() for name in names}
        self._closed.update(mine)
        try:
            async with self._changed:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: not any(self._inflight.get(n) for n in names)), drain_s
                    )
                except TimeoutError:
                    raise Unavailable(
                        f"writes to {', '.join(names)} did not finish within {drain_s:.0f} s of the backup's cut: "
                        "create the backup again (when writes are lighter)"
                    ) from None
            yield
        finally:
            for name, opened in mine.items():
                del self._closed[name]
                opened.set()
