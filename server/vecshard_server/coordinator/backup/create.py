"""Taking a backup: the cut (a brief write fence), then every shard group's files, then the manifest.

1. FENCING: the collections' write fence closes (fence.py: writes in flight finish, new ones wait),
   the coordinator's clock gives the cut version, and one replica of every shard group of every
   collection freezes its partition (shard BackupPartition): a checkpoint's freeze, milliseconds.
   The fence opens: reads never stopped, writes resume.
2. WRITING: each replica writes its frozen partition's snapshot files to the location (directly into
   a directory; through a staging folder to S3, multipart), with sizes and SHA-256.
3. The manifest goes last: a backup without one is incomplete, never listed nor restored.

Replica choice: a group's replicas all hold every acknowledged write with the default write quorum
(all); with a lower quorum, the replica taken is one this coordinator does not know to be behind
(as reads choose). A failure or a cancel aborts the shards' writing and deletes what was written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import TypeVar

import grpc

from vecshard.errors import FailedPrecondition, Unavailable, VecshardError
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.backup_store import Store
from vecshard_server.coordinator.backup import manifest
from vecshard_server.coordinator.backup.fence import WriteFence
from vecshard_server.coordinator.catalog import Catalog, Collection
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.jobs import Job
from vecshard_server.coordinator.shard_api import CallMeta, ShardApi

log = logging.getLogger(__name__)
T = TypeVar("T")

CALL_TIMEOUT_S = 3600.0  # a partition's files (the wait for them)
FREEZE_TIMEOUT_S = 60.0


async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Every call's result; when one fails, the first failure, once all have ended (so what the
    others started is known to the cleanup)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]


class BackupWriter:
    def __init__(self, catalog: Catalog, shards: ShardSet, fence: WriteFence) -> None:
        self.catalog = catalog
        self.shards = shards
        self.fence = fence

    async def collections(self, names: list[str]) -> list[Collection]:
        """The collections to back up (every one when `names` is empty), refusing those mid-change."""
        await self.catalog.refresh(FREEZE_TIMEOUT_S)
        names = names or sorted(self.catalog.collections)
        out = []
        for name in names:
            coll = await self.catalog.get(name, lambda: FREEZE_TIMEOUT_S, "name an existing collection")
            if coll.reshard_phase or coll.leftovers:
                raise FailedPrecondition(
                    f"collection {name!r} is being resharded: back it up when the reshard is done (or aborted)"
                )
            if coll.training:
                raise FailedPrecondition(f"collection {name!r} is training: back it up when the training is done")
            out.append(coll)
        return out

    async def run(self, job: Job, store: Store, colls: list[Collection], backup_id: str) -> pb.BackupInfo:
        parts = [(coll, g.index) for coll in colls for g in coll.view.shards]
        started: list[tuple[ShardApi, spb.BackupPartitionRequest]] = []
        job.total, job.phase = len(parts), "FENCING"
        try:
            async with self.fence.hold([c.name for c in colls]):
                fenced = time.perf_counter()
                cut = self.shards.clock.next()
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                frozen = await _all(self._freeze(c, g, store, backup_id, started) for c, g in parts)
                fence_ms = (time.perf_counter() - fenced) * 1000
            log.info("backup %s: cut at version %d, writes paused %.1f ms", backup_id, cut, fence_ms)
            job.phase = "WRITING"
            order = {req.path: (r, req) for r, req in started}  # (in the order of `parts`)
            written = await _all(self._wait(job, *order[f"{c.name}/g{g}"]) for c, g in parts)
            info = pb.BackupInfo(
                id=backup_id, created=created, cut_version=cut, fence_ms=fence_ms, format=manifest.FORMAT
            )
            for coll in colls:
                info.collections.append(self._described(coll, parts, frozen, written, started))
            info.files = sum(len(c.files) for c in info.collections)
            info.bytes = sum(f.size for c in info.collections for f in c.files)
            await asyncio.to_thread(store.put_bytes, f"{backup_id}/{manifest.MANIFEST}", manifest.dump(info))
            return info
        except BaseException:
            await self._clean(store, backup_id, started)
            raise

    def _pick(self, coll: Collection, group: int) -> list[ShardApi]:
        """The group's replicas in the order to try: those not known to be behind first."""
        lagging = self.shards.replication.lagging(group, coll.spec.name)
        return self.shards.shards[group].read_order(lagging)

    async def _freeze(
        self,
        coll: Collection,
        group: int,
        store: Store,
        backup_id: str,
        started: list[tuple[ShardApi, spb.BackupPartitionRequest]],
    ) -> spb.BackupPartitionResponse:
        req = spb.BackupPartitionRequest(
            collection=coll.spec.name,
            backup_id=backup_id,
            location=pb.BackupLocation(uri=store.uri, s3_endpoint=getattr(store, "endpoint", "")),
            path=f"{coll.name}/g{group}",
        )
        failure: VecshardError | None = None
        for replica in self._pick(coll, group):
            try:
                reply = await replica.backup_partition(req, CallMeta(FREEZE_TIMEOUT_S))
            except grpc.aio.AioRpcError as err:
                failure = self.shards.error(group, err)
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    continue  # another replica of the group
                raise failure from None
            started.append((replica, req))
            return reply
        raise failure or Unavailable(f"no replica of shard group {group} answered")

    async def _wait(self, job: Job, replica: ShardApi, req: spb.BackupPartitionRequest) -> list[pb.BackupFile]:
        wait = spb.BackupPartitionRequest()
        wait.CopyFrom(req)
        wait.wait = True
        try:
            reply = await replica.backup_partition(wait, CallMeta(CALL_TIMEOUT_S))
        except grpc.aio.AioRpcError as err:
            raise Unavailable(f"writing {req.path} on {replica.address} failed: {err.details()}") from None
        job.done += 1
        return list(reply.files)

    def _described(
        self,
        coll: Collection,
        parts: list[tuple[Collection, int]],
        frozen: list[spb.BackupPartitionResponse],
        written: list[list[pb.BackupFile]],
        started: list[tuple[ShardApi, spb.BackupPartitionRequest]],
    ) -> pb.BackupCollection:
        info = self.catalog.info(coll, {})
        out = pb.BackupCollection(
            config=info.config,
            shards=coll.placement.shards,
            trained=coll.trained,
            train_epoch=coll.epoch or 0,
            payload_indexes=info.payload_indexes,
        )
        by_path = {req.path: replica.address for replica, req in started}
        for (c, g), state, files in zip(parts, frozen, written, strict=True):
            if c is coll:
                out.count += state.count
                out.files.extend(files)
                out.replicas.append(by_path.get(f"{coll.name}/g{g}", ""))
                out.lsns.append(state.lsn)
        return out

    async def _clean(
        self, store: Store, backup_id: str, started: list[tuple[ShardApi, spb.BackupPartitionRequest]]
    ) -> None:
        """After a failure or a cancel: the shards stop, and what was written goes."""
        for replica, req in started:
            abort = spb.BackupPartitionRequest()
            abort.CopyFrom(req)
            abort.abort = True
            try:
                await replica.backup_partition(abort, CallMeta(CALL_TIMEOUT_S))
            except grpc.aio.AioRpcError:
                log.warning("backup %s: %s did not confirm the abort of %s", backup_id, replica.address, req.path)
        try:
            await asyncio.to_thread(store.delete_prefix, backup_id)
        except VecshardError as err:
            log.warning("backup %s: its partial files could not be deleted: %s", backup_id, err.details)
