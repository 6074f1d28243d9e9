"""Resharding: move a collection to another number of shard groups, online (docs/operations.md).

A collection's placement (common/placement.py) has an epoch; its partition at epoch e is `name@e`
on the shards. A reshard from epoch e to e + 1, per collection:

1. PREPARING: create the new partition on every group of either placement (on groups that only the
   old one uses, an empty marker), with the old one's training and payload indexes. From then on
   each shard holding both refuses writes to the old partition from a coordinator that does not know
   the new one (ABORTED: it refreshes and retries), so every write from then on goes to both
   placements (catalog.Collection.writers), at one version.
2. COPYING: every old group's entries (points with vectors, payloads and versions, and tombstones)
   are exported in pages, each page only the ids one new group owns, and imported there. Per id the
   newest version wins, so a copy racing a write cannot bring back an older value or a removed point.
3. CUTTING_OVER: the old partitions are dropped, group 0 first: the moment one is gone, every
   coordinator reads the new placement (a read of the old one fails NOT_FOUND, is re-routed and
   retried; never answered from a mix of the two).

Everything is state on the shards, so a reshard killed at any step (any process) is finished by
running it again, or undone by an abort (which drops the new partitions: the old one never stopped
being complete). This coordinator runs one reshard per collection at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, VecshardError
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.observability import RESHARD_ACTIVE, RESHARD_POINTS
from vecshard_server.common.placement import MAX_GROUPS, Placement, physical_name
from vecshard_server.coordinator.catalog import Catalog, Collection
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.local import LocalShards
from vecshard_server.coordinator.shard_api import (
    CREATE_COLLECTION,
    CREATE_PAYLOAD_INDEX,
    DESCRIBE_COLLECTION,
    DROP_COLLECTION,
    EXPORT,
    IMPORT,
    INSTALL_QUANTIZER,
)


def pages_by_owner(page: spb.ExportResponse, placement: Placement) -> dict[int, spb.ExportResponse]:
    """An export page split by the group each entry's id has under `placement`."""
    ids, dead = wire.unpack_ids(page.ids), wire.unpack_ids(page.tombstone_ids)
    vectors = wire.unpack_matrix(page.vectors) if ids.size else None
    versions, dead_versions = wire.unpack_ids(page.versions), wire.unpack_ids(page.tombstone_versions)
    owner, dead_owner = placement.owner(ids), placement.owner(dead)
    out = {}
    for b in sorted(set(owner.tolist()) | set(dead_owner.tolist())):
        live, gone = owner == b, dead_owner == b
        sub = spb.ExportResponse(
            ids=wire.pack_ids(ids[live]),
            versions=wire.pack_ids(versions[live]),
            tombstone_ids=wire.pack_ids(dead[gone]),
            tombstone_versions=wire.pack_ids(dead_versions[gone]),
            payloads=[page.payloads[j] for j in np.flatnonzero(live).tolist()] if page.payloads else [],
        )
        if vectors is not None and live.any():
            sub.vectors.CopyFrom(wire.pack_matrix(vectors[live]))
        out[b] = sub
    return out


log = logging.getLogger(__name__)

PAGE = 2_000  # points per copied page, by default
MAX_LOCAL_GROUPS = 64  # as `vecshard serve --shards`
RECOPY_IDS = 100  # points per Export of a recopy (their payloads within one message)
CALL_TIMEOUT_S = 120.0
FAILPOINT = "VECSHARD_FAILPOINT"  # tests only: "reshard-mid-cutover" ends the process after one drop


@dataclasses.dataclass
class Job:
    """One collection's reshard on this coordinator, and its progress."""

    collection: str
    target: int  # groups (0 with abort)
    abort: bool
    progress: pb.ReshardProgress
    task: asyncio.Task[None] | None = None


@dataclasses.dataclass
class LatencyAverage:
    """An exponential average of Search latency: a reshard's copy pauses while it is over budget."""

    seconds: float = 0.0

    def observe(self, seconds: float) -> None:
        self.seconds = 0.9 * self.seconds + 0.1 * seconds


class Resharder:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        shards: ShardSet,
        local: LocalShards | None,
        search_latency: LatencyAverage,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.shards = shards
        self.local = local
        self.search_latency = search_latency
        self.jobs: dict[str, Job] = {}

    async def handle(self, request: pb.ReshardRequest) -> pb.ReshardResponse:
        """The Reshard RPC: start (or join) the named reshards, report their progress."""
        try:
            await self.catalog.refresh(CALL_TIMEOUT_S)
        except Unavailable:
            if not request.status_only or not self.jobs:
                raise
            # (a group is down: the progress of this coordinator's reshards is still known)
            names = list(request.collections) or sorted(self.jobs)
            return pb.ReshardResponse(collections=[self.jobs[n].progress for n in names if n in self.jobs])
        names = list(request.collections) or sorted(self.catalog.collections)
        for name in names:
            if name not in self.catalog.collections:
                raise NotFound(f"collection {name!r} does not exist: name existing ones (ListCollections)")
        if request.status_only:
            return pb.ReshardResponse(collections=[self._status(n) for n in names])
        if not request.abort:
            await self._check_target(int(request.shards))
        jobs = []
        for name in names:
            job = self.jobs.get(name)
            if job is not None and job.task is not None and not job.task.done() and request.abort and not job.abort:
                job.task.cancel()  # an abort stops this coordinator's copy first (the shards keep its state)
                await asyncio.gather(job.task, return_exceptions=True)
                job.progress.phase = "ABORTED"
            if job is not None and job.task is not None and not job.task.done():
                if job.abort != request.abort or (not job.abort and job.target != request.shards):
                    raise FailedPrecondition(
                        f"a reshard of {name!r} to {job.target} groups{' (abort)' if job.abort else ''} runs on this "
                        "coordinator: wait for it (Reshard with status_only) or run the same command"
                    )
                jobs.append(job)
                continue
            coll = self.catalog.collections[name]
            job = Job(
                name,
                0 if request.abort else int(request.shards),
                request.abort,
                pb.ReshardProgress(
                    collection=name,
                    from_shards=coll.placement.shards,
                    from_epoch=coll.placement.epoch,
                    phase="PREPARING",
                ),
            )
            job.task = asyncio.ensure_future(self._run(job, request.max_points_per_s, request.page_size or PAGE))
            self.jobs[name] = job
            jobs.append(job)
        if request.wait:
            await asyncio.shield(asyncio.gather(*(j.task for j in jobs if j.task), return_exceptions=True))
        return pb.ReshardResponse(collections=[j.progress for j in jobs])

    def _status(self, name: str) -> pb.ReshardProgress:
        job = self.jobs.get(name)
        if job is not None:
            return job.progress
        coll = self.catalog.collections[name]
        phase = {"": "IDLE", "preparing": "PREPARING", "copying": "COPYING", "aborting": "ABORTING"}[coll.reshard_phase]
        return pb.ReshardProgress(
            collection=name,
            from_shards=coll.placement.shards,
            from_epoch=coll.placement.epoch,
            phase=phase,
            to_shards=coll.next.shards if coll.next else 0,
        )

    async def _check_target(self, shards: int) -> None:
        if not 1 <= shards <= MAX_GROUPS:
            raise InvalidArgument(
                f"shards must be between 1 and {MAX_GROUPS}: the number of shard groups to place the collections on"
            )
        have = len(self.shards)
        if shards > have:
            local = self.local
            if local is None:
                raise FailedPrecondition(
                    f"this coordinator knows {have} shard groups, fewer than {shards}: start the new groups and "
                    "add them to every coordinator's --shard list (Kubernetes: scale the shard StatefulSets and "
                    "add the new group to the coordinator's args), then run the reshard again"
                )
            if shards > MAX_LOCAL_GROUPS:
                raise InvalidArgument(
                    f"a coordinator holds at most {MAX_LOCAL_GROUPS} local shard groups, not {shards}: run shard "
                    "processes (--shard-mode remote) for more"
                )
            await local.grow(shards, self.shards)

    async def _run(self, job: Job, rate: int, page: int) -> None:
        name = job.collection
        RESHARD_ACTIVE.labels(name).set(1)
        try:
            if job.abort:
                await self._abort(job)
            else:
                await self._reshard(job, rate, page)
        except VecshardError as err:
            if not job.abort and await self._done_elsewhere(job):
                job.progress.phase = "DONE"
                log.info("reshard of %s was finished by another coordinator", name)
                return
            job.progress.phase, job.progress.error = "FAILED", err.details
            log.warning("reshard of %s failed: %s (run it again to resume)", name, err.details)
        except Exception as err:  # a bug: reported in the progress, the reshard can be resumed
            job.progress.phase, job.progress.error = "FAILED", f"{type(err).__name__}: {err}"
            log.exception("reshard of %s failed", name)
        finally:
            RESHARD_ACTIVE.labels(name).set(0)

    async def _done_elsewhere(self, job: Job) -> bool:
        """Whether the collection now sits on the target placement with nothing in progress: another
        coordinator ran the same reshard and cut over first (this one's copy then fails NOT_FOUND)."""
        try:
            coll = await self._coll(job.collection)
        except VecshardError:
            return False
        placed = coll.placement.shards == job.target and coll.placement.function == "jump"
        return placed and coll.placement.epoch > job.progress.from_epoch and not coll.reshard_phase

    async def _coll(self, name: str) -> Collection:
        await self.catalog.refresh(CALL_TIMEOUT_S)
        coll = self.catalog.collections.get(name)
        if coll is None:
            raise NotFound(f"collection {name!r} was dropped during its reshard")
        return coll

    async def _abort(self, job: Job) -> None:
        coll = await self._finish_cutover(await self._coll(job.collection))
        newer = coll.view.known_epoch
        if newer == coll.placement.epoch:
            job.progress.phase = "IDLE"  # nothing in progress
            return
        await self._drop(physical_name(coll.name, newer), range(len(self.shards)))
        await self._coll(job.collection)
        job.progress.phase = "ABORTED"
        log.info("reshard of %s aborted: back on %s", coll.name, coll.placement.describe())

    async def _finish_cutover(self, coll: Collection) -> Collection:
        """Drop what an interrupted cutover left (older partitions, markers beyond the placement)."""
        if not coll.leftovers:
            return coll
        for name, g in coll.leftovers:
            await self._drop(name, [g])
        log.info("%s: dropped %d partitions an interrupted reshard left", coll.name, len(coll.leftovers))
        return await self._coll(coll.name)

    async def _reshard(self, job: Job, rate: int, page: int) -> None:
        coll = await self._coll(job.collection)
        finished = bool(coll.leftovers)
        coll = await self._finish_cutover(coll)
        if coll.reshard_phase == "aborting":  # an abort was interrupted: finish it first
            await self._drop(physical_name(coll.name, coll.view.known_epoch), range(len(self.shards)))
            coll = await self._coll(job.collection)
        old = coll.placement
        if coll.next is not None:
            if coll.next.shards != job.target:
                raise FailedPrecondition(
                    f"collection {coll.name!r} is being resharded to {coll.next.shards} groups: run the reshard with "
                    f"--shards {coll.next.shards} to finish it, or abort it first"
                )
            target = coll.next
        elif old.shards == job.target and old.function == "jump":
            job.progress.phase, job.progress.to_shards = "DONE" if finished else "UNCHANGED", job.target
            return
        else:
            target = old.next(job.target)
        if coll.training:
            raise FailedPrecondition(f"collection {coll.name!r} is training: reshard it when the training is done")
        p = job.progress
        p.from_shards, p.to_shards, p.from_epoch, p.phase = old.shards, target.shards, old.epoch, "PREPARING"
        log.info("resharding %s: %s -> %s", coll.name, old.describe(), target.describe())
        await self._prepare(coll, target)
        coll = await self._coll(job.collection)
        if coll.next != target:
            raise FailedPrecondition(f"the reshard of {coll.name!r} was aborted or changed meanwhile: run it again")
        p.phase, p.total = "COPYING", coll.count
        RESHARD_POINTS.labels(coll.name, "total").set(p.total)
        await self._copy(coll, old, target, job, rate, page)
        p.phase = "CUTTING_OVER"
        # The old placement's partitions go, group 0 first (from then on every coordinator reads the
        # new one), then the new placement's markers on groups it does not use.
        for g in range(old.shards):
            await self._drop(coll.spec.name, [g])
            if os.environ.get(FAILPOINT) == "reshard-mid-cutover":  # tests: a kill -9 at the worst moment
                os._exit(137)
        new_name = physical_name(coll.name, target.epoch)
        await self._drop(new_name, range(target.shards, max(old.shards, target.shards)))
        await self._coll(job.collection)
        p.phase = "DONE"
        log.info(
            "resharded %s to %s: %d points scanned, %d moved to another group",
            coll.name,
            target.describe(),
            p.copied,
            p.moved,
        )

    async def _prepare(self, coll: Collection, target: Placement) -> None:
        """The new placement's partitions, on every group either placement uses, trained as the old."""
        spec = dataclasses.replace(
            coll.spec,
            name=physical_name(coll.name, target.epoch),
            placement_function=target.function,
            placement_shards=target.shards,
            placement_epoch=target.epoch,
        )
        groups = range(max(coll.placement.shards, target.shards))
        version = self.shards.clock.next()
        out = await self.shards.call(
            CREATE_COLLECTION, {g: spec.to_proto() for g in groups}, CALL_TIMEOUT_S, version=version
        )
        desc = await coll.view.call(
            DESCRIBE_COLLECTION,
            {0: pb.DescribeCollectionRequest(name=coll.spec.name, include_centroids=True)},
            CALL_TIMEOUT_S,
        )
        state = desc.results[0]
        if state.trained:
            install = spb.InstallQuantizerRequest(
                collection=spec.name,
                centroids=state.centroids,
                epoch=state.train_epoch,
                train_id=state.train_id,
                mode=spb.INSTALL_MODE_ONE_STEP,
                codec=state.codec,
            )
            behind = {g: install for g in groups if out.results[g].train_epoch != state.train_epoch}
            if behind:
                await self.shards.call(INSTALL_QUANTIZER, behind, CALL_TIMEOUT_S)
        text = {f: x.text for indexes in coll.shard_text.values() for f, x in indexes.items()}
        for field, kind in sorted({x for indexes in coll.shard_indexes.values() for x in indexes}):
            req = pb.CreatePayloadIndexRequest(collection=spec.name, field=field, type=kind)  # type: ignore[arg-type]
            if field in text:  # a TEXT index: the same analyzer and BM25 parameters
                req.text.CopyFrom(text[field])
            await self.shards.call(CREATE_PAYLOAD_INDEX, {g: req for g in groups}, CALL_TIMEOUT_S)

    async def _copy(self, coll: Collection, old: Placement, target: Placement, job: Job, rate: int, page: int) -> None:
        """Every old group's entries to their new groups, a page at a time (throttled)."""
        new_name = physical_name(coll.name, target.epoch)
        p = job.progress
        started = time.monotonic()
        for a in range(old.shards):
            for b in range(target.shards):
                after = -1
                while True:
                    export = spb.ExportRequest(
                        collection=coll.spec.name,
                        after_id=after,
                        limit=page,
                        include_tombstones=True,
                        owned_by=target.to_proto(),
                        owner=b,
                    )
                    out = await self.shards.call(EXPORT, {a: export}, CALL_TIMEOUT_S)
                    reply: spb.ExportResponse = out.results[a]
                    n = len(reply.ids) // 8
                    if n or reply.tombstone_ids:
                        await self.shards.call(
                            IMPORT, {b: spb.ImportRequest(collection=new_name, page=reply)}, CALL_TIMEOUT_S
                        )
                    p.copied += n
                    if a != b:
                        p.moved += n
                    RESHARD_POINTS.labels(coll.name, "scanned").set(p.copied)
                    RESHARD_POINTS.labels(coll.name, "moved").set(p.moved)
                    await self._throttle(p.copied, rate, started)
                    if reply.complete or reply.scanned_to <= after:
                        break
                    after = reply.scanned_to

    async def recopy(self, coll: Collection, ids: npt.NDArray[np.int64], timeout: float) -> None:
        """Copy these points (whole: vectors, payloads, versions; tombstones of removed ones) from the
        collection's current placement to the one a reshard fills."""
        if coll.next is None or coll.next_shards is None or coll.next_spec is None or not ids.size:
            return
        new_name = coll.next_spec.name
        for chunk in np.array_split(ids, max(1, -(-ids.size // RECOPY_IDS))):
            for a, pos in enumerate(coll.placement.split(chunk)):
                if not pos.size:
                    continue
                export = spb.ExportRequest(collection=coll.spec.name, ids=wire.pack_ids(chunk[pos]))
                reply: spb.ExportResponse = (await coll.view.call(EXPORT, {a: export}, timeout)).results[a]
                for b, page in pages_by_owner(reply, coll.next).items():
                    await coll.next_shards.call(IMPORT, {b: spb.ImportRequest(collection=new_name, page=page)}, timeout)

    async def _throttle(self, copied: int, rate: int, started: float) -> None:
        """Sleep to keep under `rate` points/s, and while searches are slower than the budget."""
        if rate:
            ahead = copied / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        budget = self.settings.reshard_search_budget_ms / 1000
        waited = 0.0
        while budget and self.search_latency.seconds > budget and waited < 5.0:
            await asyncio.sleep(0.05)
            waited += 0.05
            self.search_latency.seconds *= 0.9  # (decays while no search reports: never stuck)
        await asyncio.sleep(0)

    async def _drop(self, name: str, groups: Any) -> None:
        """Drop partition `name` on `groups` in order, one group after the other (group 0 first)."""
        for g in groups:
            await self.shards.call(DROP_COLLECTION, {g: pb.DropCollectionRequest(name=name)}, CALL_TIMEOUT_S)
