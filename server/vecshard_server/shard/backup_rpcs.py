"""The shard's backup RPC: its partition of a collection written to a backup location.

A backup (coordinator/backup/) fences writes to the collection at the coordinator, then asks one
replica of every shard group to freeze its partition (BackupPartition without `wait`: the answer
comes once the state is frozen, so the coordinator can lift the fence), then waits for the files
(BackupPartition with `wait`). Files go straight into a directory location, or through a staging
folder (the data dir's `backup-staging/`, or the temp dir) to S3, each with its size and SHA-256.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from vecshard.errors import InvalidArgument, NotFound, Unavailable, VecshardError
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.backup_store import Store, open_store, sha256_file
from vecshard_server.shard.backup_save import save_frozen
from vecshard_server.shard.core import ShardCore
from vecshard_server.shard.engine import ShardIndex

log = logging.getLogger(__name__)


@dataclass
class _Writing:
    lsn: int
    count: int
    task: asyncio.Future[list[pb.BackupFile]]
    staging: Path | None


def check_backup_path(backup_id: str, path: str) -> None:
    """Refuse ids and paths that could leave the backup's folder."""
    for part in (backup_id, *path.split("/")):
        if not part or part in (".", "..") or "\\" in part or part.startswith("."):
            raise InvalidArgument(f"backup path {backup_id}/{path} is invalid: send the coordinator's")


class BackupRpcs(ShardCore):
    @property
    def _backups(self) -> dict[tuple[str, str], _Writing]:
        found: dict[tuple[str, str], _Writing] = self.__dict__.setdefault("_backups_writing", {})
        return found

    def _staging(self, backup_id: str, path: str) -> Path:
        base = self.data_dir / "backup-staging" if self.data_dir else Path(tempfile.gettempdir()) / "vecshard-staging"
        return base / backup_id / path

    async def BackupPartition(
        self, request: spb.BackupPartitionRequest, context: grpc.aio.ServicerContext
    ) -> spb.BackupPartitionResponse:
        check_backup_path(request.backup_id, request.path)
        key = (request.backup_id, request.collection)
        if request.abort:
            writing = self._backups.pop(key, None)
            if writing is not None:
                await asyncio.gather(writing.task, return_exceptions=True)
                if writing.staging is not None:
                    shutil.rmtree(writing.staging, ignore_errors=True)
            return spb.BackupPartitionResponse()
        if request.wait:
            writing = self._backups.pop(key, None)
            if writing is None:
                raise NotFound(
                    f"no backup {request.backup_id} of {request.collection!r} is being written here (did the shard "
                    "restart?): create the backup again"
                )
            files = await writing.task
            return spb.BackupPartitionResponse(lsn=writing.lsn, count=writing.count, files=files)
        part = self._get(request.collection)
        store = open_store(request.location.uri, request.location.s3_endpoint)
        loop = asyncio.get_running_loop()
        frozen: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_frozen(lsn: int, count: int) -> None:
            def settle() -> None:
                if not frozen.done():
                    frozen.set_result((lsn, count))

            loop.call_soon_threadsafe(settle)

        target = store.local_dir(f"{request.backup_id}/{request.path}")
        staging = None if target is not None else self._staging(request.backup_id, request.path)
        task = loop.run_in_executor(None, self._write_backup, part, store, request, target or staging, on_frozen)
        await asyncio.wait([frozen, task], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        if not frozen.done():
            await task  # (failed before the freeze: raises)
            raise AssertionError("a backup finished without freezing")
        lsn, count = frozen.result()
        self._backups[key] = _Writing(lsn, count, task, staging)
        return spb.BackupPartitionResponse(lsn=lsn, count=count)

    def _write_backup(
        self,
        part: ShardIndex,
        store: Store,
        request: spb.BackupPartitionRequest,
        directory: Path | None,
        on_frozen: Callable[[int, int], None],
    ) -> list[pb.BackupFile]:
        """The partition's files, frozen now, written to `directory` (and uploaded from there when
        the location is not a directory); their sizes and checksums."""
        assert directory is not None
        try:
            save_frozen(part, directory, on_frozen)
            files = []
            for f in sorted(directory.iterdir()):
                rel = f"{request.path}/{f.name}"
                files.append(pb.BackupFile(path=rel, size=f.stat().st_size, sha256=sha256_file(f)))
                if store.local_dir("") is None:
                    store.put_file(f, f"{request.backup_id}/{rel}")
            return files
        except VecshardError:
            raise
        except OSError as err:
            raise Unavailable(f"writing the backup of {request.collection!r} here failed: {err}") from None
        finally:
            if store.local_dir("") is None:
                shutil.rmtree(directory, ignore_errors=True)
