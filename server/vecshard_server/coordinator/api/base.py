"""What every RPC family of the coordinator shares: the shards, the catalog, the trainer, admission
and embedding, and the shards' deadline derived from the caller's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc

from vecshard.errors import DeadlineExceeded, ResourceExhausted
from vecshard_server.common.admission import Admission
from vecshard_server.common.config import Settings
from vecshard_server.coordinator.catalog import Catalog
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.training import Trainer
from vecshard_server.embedding.service import Embeddings


def shard_timeout(settings: Settings, context: grpc.aio.ServicerContext) -> float:
    """The shards' deadline: the caller's remaining time less a small reserve, so a late shard
    times out while the coordinator can still answer (with partial results, or naming it)."""
    remaining = context.time_remaining()
    if remaining is None:
        return settings.shard_timeout_s
    if remaining <= 0:
        raise DeadlineExceeded("the call's deadline passed before the shards were asked")
    return float(remaining) - min(0.05, 0.1 * float(remaining))


@dataclass
class Core:
    """The coordinator's shared parts (built once by CoordinatorService)."""

    settings: Settings
    shards: ShardSet
    catalog: Catalog
    trainer: Trainer
    admission: Admission
    embeddings: Embeddings
    background: set[asyncio.Future[None]] = field(default_factory=set)


class Family:
    """Base of an RPC family: its handlers see the core's parts as attributes."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.settings = core.settings
        self.shards = core.shards
        self.catalog = core.catalog
        self.trainer = core.trainer
        self.admission = core.admission
        self.embeddings = core.embeddings
        self._background = core.background

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return shard_timeout(self.settings, context)

    def _check_reply(self, reply: Any, fix: str) -> None:
        size = reply.ByteSize()
        if size > self.settings.max_message_bytes:
            raise ResourceExhausted(
                f"the reply would be {size:,} bytes with its payloads, over the message limit "
                f"({self.settings.max_message_bytes:,}): {fix}"
            )
