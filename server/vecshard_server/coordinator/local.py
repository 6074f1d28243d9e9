"""Local shards: shard services in the coordinator's own process, called without gRPC.

As Qdrant's local and remote shards: a `LocalReplica` stands where a remote replica would, with the
same calls (`stub.Method(request, timeout=, metadata=)`, and raw calls for pre-encoded requests),
so the fan-out, merging, training and every write path run unchanged. A call goes straight to the
shard service's own guarded handler (the same error mapping, admission and batching as over
gRPC), on the coordinator's event loop, with the request object as it is: no serialization, no
loopback hop, no second process. faiss releases the GIL, so shards still search in parallel on
their own thread pools.

Each local shard keeps its own data dir (WAL and snapshots), exactly as a shard process would: a
kill -9 of the one process loses nothing acknowledged. Replicas need separate processes to fail
independently, so local shards have one replica each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from vecshard_server.common.config import Settings
from vecshard_server.common.rpc import service_handlers
from vecshard_server.coordinator.fanout import ShardGroup
from vecshard_server.shard.service import SERVICE_NAME, ShardService, maintain

log = logging.getLogger(__name__)


class LocalAbort(grpc.aio.AbortError):  # type: ignore[misc]
    """What `LocalContext.abort` raises: the handler's status, turned into an AioRpcError for the
    caller (an AbortError passes the handler's own error mapping untouched)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str]]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, tuple(trailing)


class LocalContext:
    """The part of grpc.aio.ServicerContext the shard handlers use."""

    def __init__(self, metadata: Sequence[tuple[str, str]], timeout: float | None) -> None:
        self._metadata = tuple(metadata)
        self._deadline = time.monotonic() + timeout if timeout is not None else None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise LocalAbort(code, details, tuple(trailing_metadata or ()))

    def peer(self) -> str:
        return "local"


def _rpc_error(err: LocalAbort) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(err.code, grpc.aio.Metadata(), grpc.aio.Metadata(*err.trailing), details=err.details)


class _LocalStub:
    def __init__(self, replica: LocalReplica) -> None:
        self._replica = replica

    def __getattr__(self, method: str) -> Any:
        async def call(request: Any, timeout: float | None = None, metadata: Any = None) -> Any:
            return await self._replica.call(method, request, timeout, metadata)

        return call


@dataclass
class LocalReplica:
    """A shard service in this process, in a ShardGroup's place of a remote replica."""

    address: str
    service: ShardService
    down_until: float = 0.0
    channel: Any = None  # (none: nothing to connect or close)
    _handlers: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._handlers = service_handlers(self.service, SERVICE_NAME, lambda: self.service.ready)
        self.stub = _LocalStub(self)

    async def call(self, method: str, request: Any, timeout: float | None, metadata: Any) -> Any:
        """The handler's reply to `request` (a message, or an `Encoded` one: its message is used as
        it is, and with raw_reply the reply comes back serialized, as a remote call's would)."""
        message = getattr(request, "message", request)
        handler = self._handlers[method].unary_unary
        context = LocalContext(list(metadata or ()), timeout)
        try:
            async with asyncio.timeout(timeout):  # (no task of its own, unlike wait_for)
                reply = await handler(message, context)
        except LocalAbort as err:
            raise _rpc_error(err) from None
        except TimeoutError:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), details="Deadline Exceeded"
            ) from None
        if getattr(request, "raw_reply", False):
            return reply.SerializeToString()
        return reply

    @property
    def serving(self) -> bool:
        return bool(self.service.ready)


class LocalShards:
    """The coordinator's in-process shard services: one per group, each with its own data dir
    (`data_dir/shard-i`, as `vecshard serve` lays them out; None: in memory), recovered at start,
    checkpointed in the background, snapshotted at stop."""

    def __init__(self, count: int, settings: Settings, data_dir: Path | None) -> None:
        self.settings = settings
        self.data_dir = data_dir
        # A reshard may have added groups since `count` was chosen: serve every group the data dir has.
        existing = [int(p.name[6:]) + 1 for p in data_dir.glob("shard-*") if p.name[6:].isdigit()] if data_dir else []
        count = max([count, *existing])
        self.services = [
            ShardService(settings, data_dir / f"shard-{i}" if data_dir is not None else None) for i in range(count)
        ]
        self.replicas = [LocalReplica(f"local-shard-{i}", s) for i, s in enumerate(self.services)]
        self._loops: list[asyncio.Task[None]] = []

    async def grow(self, groups: int, shards: Any) -> None:
        """Add local shard groups until `shards` (the coordinator's ShardSet) has `groups` (a reshard
        to more groups): each with its own data dir, kept across restarts (see __init__)."""
        while len(shards.shards) < groups:
            i = len(self.services)
            service = ShardService(self.settings, self.data_dir / f"shard-{i}" if self.data_dir is not None else None)
            await asyncio.to_thread(service.recover)
            replica = LocalReplica(f"local-shard-{i}", service)
            self.services.append(service)
            self.replicas.append(replica)
            shards.shards.append(ShardGroup(len(shards.shards), [replica]))  # type: ignore[list-item]
            log.info("added local shard group %d (%s)", i, service.data_dir or "in memory")

    async def start(self) -> None:
        for s in self.services:
            await asyncio.to_thread(s.recover)
        self._loops.append(asyncio.create_task(maintain(self.services)))

    async def close(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for s in self.services:
            await asyncio.to_thread(s.close)
