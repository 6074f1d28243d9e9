"""The backup RPCs of the coordinator (admin only: none is a read method), and the jobs they run.

CreateBackup and RestoreBackup check their request, then run in this coordinator's background as a
job (coordinator/jobs.py: DescribeCluster lists it), answering at once or, with `wait`, when done.
BackupStatus follows or cancels a job; ListBackups, DescribeBackup, VerifyBackup and DeleteBackup
read the location.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from vecshard.errors import FailedPrecondition, NotFound, VecshardError
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.backup_store import open_store
from vecshard_server.common.config import Settings
from vecshard_server.coordinator.backup import manifest, restore_plan
from vecshard_server.coordinator.backup.create import BackupWriter
from vecshard_server.coordinator.backup.fence import WriteFence
from vecshard_server.coordinator.backup.restore import Restorer
from vecshard_server.coordinator.catalog import Catalog
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.jobs import Job, Jobs
from vecshard_server.coordinator.local import LocalShards

log = logging.getLogger(__name__)


@dataclass
class _Run:
    job: Job
    backup_id: str
    collections: list[str]
    task: asyncio.Future[None] | None = None
    failure: BaseException | None = None
    targets: list[str] = field(default_factory=list)


class Backups:
    def __init__(
        self, settings: Settings, catalog: Catalog, shards: ShardSet, jobs: Jobs, local: LocalShards | None
    ) -> None:
        self.catalog = catalog
        self.shards = shards
        self.jobs = jobs
        self.local = local
        self.fence = WriteFence()
        self.writer = BackupWriter(catalog, shards, self.fence)
        self.restorer = Restorer(settings, catalog, shards)
        self.runs: dict[str, _Run] = {}

    @staticmethod
    def progress(run: _Run) -> pb.BackupProgress:
        job = run.job
        return pb.BackupProgress(
            job=job.id,
            kind=job.kind,
            backup_id=run.backup_id,
            phase=job.phase,
            done=job.done,
            total=job.total,
            error=job.error,
            collections=run.collections,
        )

    def _launch(self, run: _Run, work: asyncio.Future[None]) -> None:
        def finished(task: asyncio.Future[None]) -> None:
            if task.cancelled():
                self.jobs.finish(run.job, phase="CANCELLED")
                return
            err = task.exception()
            run.failure = err
            if err is None:
                self.jobs.finish(run.job)
            else:
                detail = err.details if isinstance(err, VecshardError) else f"{type(err).__name__}: {err}"
                if not isinstance(err, VecshardError):
                    log.error("%s %s failed", run.job.kind, run.job.id, exc_info=err)
                self.jobs.finish(run.job, error=detail)

        run.task = work
        work.add_done_callback(finished)
        self.runs[run.job.id] = run

    async def _answer(self, run: _Run, wait: bool) -> pb.BackupProgress:
        if wait and run.task is not None:
            await asyncio.wait([run.task])  # (wait never cancels it: the job goes on if the caller leaves)
            if isinstance(run.failure, VecshardError):
                raise run.failure
        return self.progress(run)

    async def create(self, request: pb.CreateBackupRequest) -> pb.BackupProgress:
        store = open_store(request.location.uri, request.location.s3_endpoint)
        await asyncio.to_thread(store.check)
        colls = await self.writer.collections(list(request.collections))
        backup_id = manifest.new_id()
        names = [c.name for c in colls]
        run = _Run(self.jobs.start("backup", ",".join(names), id=backup_id, total=0), backup_id, names)

        async def work() -> None:
            await self.writer.run(run.job, store, colls, backup_id)

        self._launch(run, asyncio.ensure_future(work()))
        return await self._answer(run, request.wait)

    async def restore(self, request: pb.RestoreBackupRequest) -> pb.BackupProgress:
        manifest.check_id(request.id)
        plan = await restore_plan.plan(self.catalog, self.shards, self.local, request)
        targets = [t.name for t in plan.targets]
        for other in self.runs.values():
            busy = set(other.targets) & set(targets)
            if busy and other.task is not None and not other.task.done():
                raise FailedPrecondition(
                    f"a restore into {sorted(busy)[0]!r} runs on this coordinator (job {other.job.id}): wait for it "
                    "(BackupStatus) or cancel it"
                )
        job_id = f"restore-{request.id}-{'-'.join(targets)}"[:200]
        run = _Run(self.jobs.start("restore", ",".join(targets), id=job_id), request.id, targets, targets=targets)

        async def work() -> None:
            try:
                await self.restorer.run(run.job, plan)
            except asyncio.CancelledError:
                await asyncio.shield(self.restorer.cancel(plan))
                raise

        self._launch(run, asyncio.ensure_future(work()))
        return await self._answer(run, request.wait)

    async def status(self, request: pb.BackupStatusRequest) -> pb.BackupProgress:
        run = self.runs.get(request.job)
        if run is None:
            raise NotFound(
                f"no backup or restore job {request.job!r} on this coordinator (jobs are listed by DescribeCluster "
                "for 10 minutes after they end; ask the coordinator that started it)"
            )
        if request.cancel and run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        return self.progress(run)

    async def list(self, request: pb.ListBackupsRequest) -> pb.ListBackupsResponse:
        store = open_store(request.location.uri, request.location.s3_endpoint)

        def found() -> list[pb.BackupInfo]:
            out = []
            for name in store.children():
                if not manifest.ID_RE.fullmatch(name) or store.size(f"{name}/{manifest.MANIFEST}") is None:
                    continue
                try:
                    out.append(manifest.summary(manifest.read(store, name)))
                except (FailedPrecondition, NotFound) as err:
                    log.warning("backup %s at %s is not listed: %s", name, store.uri, err.details)
            return out

        backups = await asyncio.to_thread(found)
        backups.sort(key=lambda b: (b.created, b.id), reverse=True)
        return pb.ListBackupsResponse(backups=backups)

    async def describe(self, request: pb.DescribeBackupRequest) -> pb.BackupInfo:
        store = open_store(request.location.uri, request.location.s3_endpoint)
        return await asyncio.to_thread(manifest.read, store, request.id)

    async def verify(self, request: pb.VerifyBackupRequest) -> pb.VerifyBackupResponse:
        store = open_store(request.location.uri, request.location.s3_endpoint)
        try:
            info = await asyncio.to_thread(manifest.read, store, request.id)
        except FailedPrecondition as err:
            return pb.VerifyBackupResponse(id=request.id, problems=[err.details])
        problems, files, read = await asyncio.to_thread(manifest.verify, store, info)
        return pb.VerifyBackupResponse(id=info.id, files_checked=files, bytes_checked=read, problems=problems)

    async def delete(self, request: pb.DeleteBackupRequest) -> pb.DeleteBackupResponse:
        store = open_store(request.location.uri, request.location.s3_endpoint)
        manifest.check_id(request.id)

        def delete() -> int:
            had = store.size(f"{request.id}/{manifest.MANIFEST}") is not None
            if had:  # (first: a half-deleted backup is never listed)
                store.delete(f"{request.id}/{manifest.MANIFEST}")
            n = store.delete_prefix(request.id)
            if not had and not n:
                raise NotFound(f"backup {request.id!r} does not exist at {store.uri}")
            return n + int(had)

        return pb.DeleteBackupResponse(files_deleted=await asyncio.to_thread(delete))
