"""Restoring a backup's collections, onto any number of shard groups, invisibly until complete.

Per target collection T (restore_plan.py decided fresh, resume or done):
1. VERIFYING (before anything changes): every file of the backup's partitions is read (downloaded
   to a local folder first from S3) and checked against the manifest's size and SHA-256; a missing
   or damaged file refuses the restore, naming it.
2. A hidden staging placement, as a reshard's: an empty marker partition T on group 0 (T is then an
   empty collection to reads), and T@1 on the M target groups (placement: jump hash over M, epoch
   1), with the backup's trained quantizer installed and its payload indexes created, before any
   point arrives. The journal (journal.py) records both incarnations.
3. RESTORING: each backed-up partition is loaded here (its snapshot files, checked again), read in
   pages of points with their versions, payloads and tombstones, and each page split by the target
   placement and Imported there (per id the newest version wins: a rerun re-imports harmlessly).
4. Cut over: the marker is dropped; from that moment every coordinator reads T@1, whole (as the
   end of a reshard). The journal says done.
A kill -9 at any step leaves the marker hiding the partial copy; the same restore resumes it. A
cancel drops what the restore made (before the cutover).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vecshard import wire
from vecshard.errors import FailedPrecondition, NotFound
from vecshard.payload import payload_to_proto
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.backup_store import sha256_file
from vecshard_server.common.config import Settings
from vecshard_server.common.placement import JUMP, Placement, physical_name
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator.backup import journal
from vecshard_server.coordinator.backup.restore_plan import STAGING_EPOCH, RestorePlan, Target
from vecshard_server.coordinator.catalog import Catalog
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.jobs import Job
from vecshard_server.coordinator.shard_api import (
    CREATE_COLLECTION,
    CREATE_PAYLOAD_INDEX,
    DROP_COLLECTION,
    IMPORT,
    INSTALL_QUANTIZER,
)
from vecshard_server.shard.engine import ShardIndex, SnapshotCorrupt

log = logging.getLogger(__name__)

PAGE = 2_000
FAILPOINT = "VECSHARD_FAILPOINT"  # tests only: "restore-mid-copy" ends the process after one page
TIMEOUT_S = 300.0


def split_page(
    ids: np.ndarray,
    vectors: np.ndarray,
    versions: np.ndarray,
    dead: np.ndarray,
    dead_versions: np.ndarray,
    payloads: list[Any],
    placement: Placement,
) -> dict[int, spb.ExportResponse]:
    """An exported page of a backed-up partition as Import pages, by target group."""
    less = np.isnan(vectors[:, 0]) if ids.size and vectors.shape[1] else np.zeros(ids.size, dtype=bool)
    vectors = np.where(less[:, None], np.float32(0), vectors) if less.any() else vectors
    versions, dead_versions = np.maximum(versions, 1), np.maximum(dead_versions, 1)  # (snapshots before versions)
    owner, dead_owner = placement.owner(ids), placement.owner(dead)
    out = {}
    for b in sorted(set(owner.tolist()) | set(dead_owner.tolist())):
        live, gone = owner == b, dead_owner == b
        rows = np.flatnonzero(live).tolist()
        page = spb.ExportResponse(
            ids=wire.pack_ids(ids[live]),
            vectors=wire.pack_matrix(np.ascontiguousarray(vectors[live], dtype=np.float32)),
            versions=wire.pack_ids(versions[live]),
            tombstone_ids=wire.pack_ids(dead[gone]),
            tombstone_versions=wire.pack_ids(dead_versions[gone]),
            payloads=[payload_to_proto(payloads[j], stored=True) for j in rows],
        )
        if less[live].any():
            page.vectorless = less[live].astype(np.uint8).tobytes()
        out[b] = page
    return out


class Restorer:
    def __init__(self, settings: Settings, catalog: Catalog, shards: ShardSet) -> None:
        self.settings = settings
        self.catalog = catalog
        self.shards = shards

    async def run(self, job: Job, plan: RestorePlan) -> None:
        job.total = sum(t.source.count for t in plan.targets if t.mode != "done")
        job.phase = "VERIFYING"
        local, temporary = await asyncio.to_thread(self._local_copy, plan)
        try:
            job.phase = "RESTORING"
            for target in plan.targets:
                if target.mode == "done":
                    log.info("restore of %s from %s: already done", target.name, plan.info.id)
                    continue
                await self._restore(job, plan, target, local)
        finally:
            if temporary:
                shutil.rmtree(local, ignore_errors=True)

    def _local_copy(self, plan: RestorePlan) -> tuple[Path, bool]:
        """A local folder holding the backup's files of the targets' collections, every one checked
        against the manifest (from S3: downloaded into a temporary folder first)."""
        root = plan.store.local_dir(plan.info.id)
        temporary = root is None
        base = Path(tempfile.mkdtemp(prefix="vecshard-restore-")) if root is None else root
        try:
            for target in plan.targets:
                if target.mode == "done":
                    continue
                groups = {f.path.split("/")[1] for f in target.source.files}
                missing = [g for g in range(target.source.shards) if f"g{g}" not in groups]
                if missing:
                    raise FailedPrecondition(
                        f"backup {plan.info.id} is incomplete: its manifest lists no files of "
                        f"{target.source.config.name}/g{missing[0]}; nothing was restored"
                    )
                for f in target.source.files:
                    self._check_file(plan, base, f, temporary)
        except BaseException:
            if temporary:
                shutil.rmtree(base, ignore_errors=True)
            raise
        return base, temporary

    @staticmethod
    def _check_file(plan: RestorePlan, base: Path, f: pb.BackupFile, download: bool) -> None:
        where = f"{plan.store.uri.rstrip('/')}/{plan.info.id}/{f.path}"
        path = base / f.path
        if download:
            try:
                plan.store.get_file(f"{plan.info.id}/{f.path}", path)
            except NotFound:
                raise FailedPrecondition(f"backup file {where} is missing; nothing was restored") from None
        if not path.is_file():
            raise FailedPrecondition(f"backup file {where} is missing; nothing was restored")
        if path.stat().st_size != f.size or sha256_file(path) != f.sha256:
            raise FailedPrecondition(
                f"backup file {where} is damaged: it does not match its size and SHA-256 in the manifest; nothing "
                "was restored (`vecshard backup verify` lists every problem)"
            )

    def _specs(self, target: Target, shards: int) -> tuple[CollectionSpec, CollectionSpec, Placement]:
        spec = CollectionSpec.from_proto(target.source.config)
        placement = Placement(JUMP, shards, STAGING_EPOCH)
        marker = dataclasses.replace(
            spec, name=target.name, placement_function=JUMP, placement_shards=1, placement_epoch=0
        )
        staging = dataclasses.replace(
            spec,
            name=physical_name(target.name, STAGING_EPOCH),
            placement_function=JUMP,
            placement_shards=shards,
            placement_epoch=STAGING_EPOCH,
        )
        return marker, staging, placement

    async def _restore(self, job: Job, plan: RestorePlan, target: Target, local: Path) -> None:
        marker, staging, placement = self._specs(target, plan.shards)
        record = target.journal
        groups = range(plan.shards)
        if target.mode == "fresh":
            record.state = "creating"
            await journal.write(plan.store, plan.info.id, record)
            made = await self.shards.call(CREATE_COLLECTION, {0: marker.to_proto()}, TIMEOUT_S)
            record.marker = made.results[0].incarnation
        made = await self.shards.call(CREATE_COLLECTION, {g: staging.to_proto() for g in groups}, TIMEOUT_S)
        record.staging, record.state = made.results[0].incarnation, "copying"
        await journal.write(plan.store, plan.info.id, record)
        parts = [local / target.source.config.name / f"g{g}" for g in range(target.source.shards)]
        first = await asyncio.to_thread(self._load, parts[0])
        await self._prepare(target, staging, first, plan.shards)
        for i, path in enumerate(parts):
            part = first if i == 0 else await asyncio.to_thread(self._load, path)
            await self._copy(job, part, staging.name, placement)
            del part
        del first
        # The cutover: from the marker's drop on, T is its restored placement, whole.
        await self.shards.call(DROP_COLLECTION, {0: pb.DropCollectionRequest(name=target.name)}, TIMEOUT_S)
        record.state = "done"
        await journal.write(plan.store, plan.info.id, record)
        await self.catalog.refresh(TIMEOUT_S)
        log.info("restored %s from backup %s onto %d groups", target.name, plan.info.id, plan.shards)

    def _load(self, path: Path) -> ShardIndex:
        try:
            return ShardIndex.load(path, self.settings.max_vectors_per_shard)
        except SnapshotCorrupt as err:
            raise FailedPrecondition(f"backup partition {path} cannot be restored: {err}") from None

    async def _prepare(self, target: Target, staging: CollectionSpec, first: ShardIndex, shards: int) -> None:
        """The backup's training and payload indexes on the staging partitions, before any point."""
        groups = range(shards)
        if first.trained and first.centroids is not None:
            install = spb.InstallQuantizerRequest(
                collection=staging.name,
                centroids=wire.pack_matrix(first.centroids),
                epoch=first.train_epoch or target.source.train_epoch or 1,
                train_id=first.train_id,
                mode=spb.INSTALL_MODE_ONE_STEP,
                codec=first.codec,
            )
            await self.shards.call(INSTALL_QUANTIZER, {g: install for g in groups}, TIMEOUT_S)
        for index in target.source.payload_indexes:
            req = pb.CreatePayloadIndexRequest(collection=staging.name, field=index.field, type=index.type)
            if index.HasField("text"):
                req.text.CopyFrom(index.text)
            await self.shards.call(CREATE_PAYLOAD_INDEX, {g: req for g in groups}, TIMEOUT_S)

    async def _copy(self, job: Job, part: ShardIndex, name: str, placement: Placement) -> None:
        after = -1
        while True:
            ids, vectors, versions, dead, dead_versions, payloads = await asyncio.to_thread(
                part.export_page, after, PAGE, True
            )
            if not ids.size and not dead.size:
                return
            pages = split_page(ids, vectors, versions, dead, dead_versions, list(payloads), placement)
            await self.shards.call(
                IMPORT, {b: spb.ImportRequest(collection=name, page=p) for b, p in pages.items()}, TIMEOUT_S
            )
            job.done += int(ids.size)
            if os.environ.get(FAILPOINT) == "restore-mid-copy":  # tests: a kill -9 mid-restore
                os._exit(137)
            after = max(int(ids[-1]) if ids.size else -1, int(dead[-1]) if dead.size else -1)

    async def cancel(self, plan: RestorePlan) -> None:
        """Drop what an unfinished restore made (a finished target is kept)."""
        for target in plan.targets:
            record = await journal.read(plan.store, plan.info.id, target.name)
            if record is None or record.state == "done":
                continue
            name = physical_name(target.name, STAGING_EPOCH)
            for partition, groups in ((name, range(plan.shards)), (target.name, range(1))):
                for g in groups:
                    try:
                        drop = pb.DropCollectionRequest(name=partition)
                        await self.shards.call(DROP_COLLECTION, {g: drop}, TIMEOUT_S)
                    except NotFound:
                        pass
            await journal.remove(plan.store, plan.info.id, target.name)
            await self.catalog.refresh(TIMEOUT_S)
