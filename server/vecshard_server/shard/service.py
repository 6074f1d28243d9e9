"""The shard worker: serves `vecshard.v1.Shard` over one faiss partition of every collection.

Durability (with a data dir): every write is appended to the write-ahead log (wal.py) under its
collection's write lock and acknowledged after an fsync covering it. Checkpoints snapshot the
changed collections (engine.ShardIndex.save, each recording the last lsn it covers) and delete the
log segments they cover. On start: load the snapshots, replay the log records they do not cover,
and only then report SERVING.

The service is its concerns put together: core.py (the partitions, the log and `_logged`),
recovery.py (start, checkpoints, stop), peering.py (replicas catching up from each other),
write_rpcs.py, read_rpcs.py, keyword_rpcs.py and backup_rpcs.py (the handlers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc
from vecshard_server.common.config import Settings
from vecshard_server.common.memory import TRIM_EVERY_S, release_free_memory
from vecshard_server.common.observability import register_collections
from vecshard_server.common.rpc import Server
from vecshard_server.common.security import InternalAuth
from vecshard_server.shard.backup_rpcs import BackupRpcs
from vecshard_server.shard.core import ShardCore
from vecshard_server.shard.keyword_rpcs import KeywordRpcs
from vecshard_server.shard.peering import PeerSync
from vecshard_server.shard.read_rpcs import ReadRpcs
from vecshard_server.shard.recovery import Recovery
from vecshard_server.shard.write_rpcs import WriteRpcs

log = logging.getLogger(__name__)

SERVICE_NAME = spb.DESCRIPTOR.services_by_name["Shard"].full_name


class ShardService(
    WriteRpcs, ReadRpcs, KeywordRpcs, BackupRpcs, PeerSync, Recovery, ShardCore, shard_pb2_grpc.ShardServicer
):
    """Holds this shard's partitions; faiss work runs in worker threads (faiss releases the GIL)."""


async def maintain(services: Sequence[ShardService]) -> None:
    """Forever: snapshot each shard service whose checkpoint is due (checked every second), and give
    freed heap pages back every TRIM_EVERY_S seconds. One loop for a shard process, or for all the
    local shards of a coordinator."""
    ticks = 0
    while True:
        await asyncio.sleep(1.0)
        for service in services:
            if service.checkpoint_due():
                await asyncio.to_thread(service.checkpoint)
        ticks += 1
        if ticks % TRIM_EVERY_S == 0:
            await asyncio.to_thread(release_free_memory)


async def serve_shard(
    settings: Settings,
    host: str,
    port: int,
    data_dir: Path | None,
    name: str = "shard",
    port_file: Path | None = None,
    exit_with_parent: bool = False,
    peers: list[str] | None = None,
) -> None:
    service = ShardService(settings, data_dir, peers)
    register_collections(lambda: [(n, p.count, p.trained) for n, p in list(service.collections.items())])
    server = Server(settings, [SERVICE_NAME])
    token = settings.token
    server.add_service(service, SERVICE_NAME, lambda: service.ready, InternalAuth(token).check if token else None)
    bound = server.bind(host, port)
    loops: list[asyncio.Task[None]] = []

    async def peer_sync_loop() -> None:
        while True:
            await asyncio.sleep(settings.peer_sync_s)
            try:
                await asyncio.to_thread(service.peer_sync)
            except Exception:  # a peer down, a collection dropped meanwhile: the next round retries
                log.warning("peer sync round failed", exc_info=True)

    async def ready() -> None:
        log.info(
            "%s listening on %s:%d (data dir %s, trained IVF searches on %s); recovering",
            name,
            host,
            bound,
            data_dir or "none: in memory",
            service.accelerator.name if service.accelerator else "cpu",
        )
        await asyncio.to_thread(service.recover)
        loops.append(asyncio.create_task(maintain([service])))
        if service.peers and settings.peer_sync_s > 0:
            loops.append(asyncio.create_task(peer_sync_loop()))

    async def on_stop() -> None:
        for loop in loops:
            loop.cancel()
        await asyncio.to_thread(service.close)

    await server.run(ready=ready, on_stop=on_stop, port_file=port_file, exit_with_parent=exit_with_parent)
