"""The coordinator's connections to its shards and the fan-out of one call to many of them.

Python gRPC does not forward deadlines: every shard call gets the caller's remaining time.
Shard failures become coordinator errors here, naming the shard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from vecshard.errors import Cancelled, DeadlineExceeded, Unavailable, VecshardError, error_for
from vecshard.v1 import shard_pb2_grpc
from vecshard_server.config import Settings

log = logging.getLogger(__name__)

# Per-shard failures that allow_partial tolerates; any other code fails the call.
TOLERABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass
class ShardHandle:
    index: int
    address: str
    channel: grpc.aio.Channel
    stub: shard_pb2_grpc.ShardStub

    @property
    def name(self) -> str:
        return f"shard-{self.index} ({self.address})"


@dataclass
class Fanout:
    """What a fan-out returned: results and failures by shard index."""

    results: dict[int, Any]
    failures: dict[int, grpc.aio.AioRpcError]


class ShardSet:
    """Channels to the shards, in placement order."""

    def __init__(self, addresses: list[str], settings: Settings) -> None:
        if not addresses:
            raise ValueError("a coordinator needs at least one shard address")
        self.settings = settings
        self.shards = [
            ShardHandle(
                i,
                addr,
                ch := grpc.aio.insecure_channel(addr, options=settings.grpc_options()),
                shard_pb2_grpc.ShardStub(ch),
            )
            for i, addr in enumerate(addresses)
        ]

    def __len__(self) -> int:
        return len(self.shards)

    async def close(self) -> None:
        await asyncio.gather(*(s.channel.close() for s in self.shards))

    async def wait_ready(self, timeout: float) -> list[str]:
        """Wait up to `timeout` seconds for every shard's channel; returns the names still not ready."""

        async def one(s: ShardHandle) -> str | None:
            try:
                await asyncio.wait_for(s.channel.channel_ready(), timeout)
                return None
            except TimeoutError:
                return s.name

        return [n for n in await asyncio.gather(*(one(s) for s in self.shards)) if n]

    def error(self, index: int, err: grpc.aio.AioRpcError) -> VecshardError:
        """The coordinator's error for a shard's failed call."""
        name = self.shards[index].name
        code = err.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(f"{name} is unavailable ({err.details()}); retry with backoff")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"{name} did not answer before the deadline; raise the call's timeout")
        if code == grpc.StatusCode.CANCELLED:
            return Cancelled(f"the call to {name} was cancelled")
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED):
            return error_for(code, f"{name}: {err.details()}")
        return error_for(code, err.details() or code.name)

    async def call(
        self,
        method: str,
        requests: Mapping[int, Any],
        timeout: float,
        *,
        fail_fast: bool = True,
    ) -> Fanout:
        """Call `method` on each shard index of `requests` concurrently.

        fail_fast: raise the first failure at once and cancel the other calls; otherwise wait for
        every call and return the failures beside the results.
        """
        if timeout <= 0:
            raise DeadlineExceeded("the call's deadline passed before the shards were asked")
        tasks = {
            asyncio.ensure_future(getattr(self.shards[i].stub, method)(req, timeout=timeout)): i
            for i, req in requests.items()
        }
        out = Fanout({}, {})
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    i = tasks[task]
                    try:
                        out.results[i] = task.result()
                    except grpc.aio.AioRpcError as err:
                        if fail_fast:
                            raise self.error(i, err) from None
                        out.failures[i] = err
        finally:
            for task in pending:
                task.cancel()
        return out

    def first_error(self, failures: Mapping[int, grpc.aio.AioRpcError]) -> VecshardError:
        i = min(failures)
        return self.error(i, failures[i])

    def all(self, request: Any) -> dict[int, Any]:
        """The same request for every shard."""
        return {s.index: request for s in self.shards}
