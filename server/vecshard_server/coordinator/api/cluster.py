"""DescribeCluster: shard groups, replicas, placements and jobs, as this coordinator sees them.

Every replica is asked for its list of partitions (the internal ListCollections, which also reports
its process's memory) at once, each within the call's deadline: one that fails or is late is
reported unhealthy with the reason, never failing the call. Per-collection counts come from those
same lists (the first healthy replica of each group), so they are as fresh as the call. A replica
gets at most REPLICA_TIMEOUT_S: a hung one does not hold the answer up.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time

import grpc

from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.placement import parse_physical
from vecshard_server.common.process import rss_bytes, uptime_s
from vecshard_server.coordinator.api.base import Core
from vecshard_server.coordinator.catalog import Collection
from vecshard_server.coordinator.jobs import Jobs
from vecshard_server.coordinator.local import LocalShard, LocalShards
from vecshard_server.coordinator.reshard import Resharder
from vecshard_server.coordinator.shard_api import CallMeta, ShardApi

LOCAL_ADDRESS = "local"  # (ReplicaInfo.address of a shard in the coordinator's process)
REPLICA_TIMEOUT_S = 2.0  # a replica that has not answered by then is reported unhealthy (it may hang)


def _version() -> str:
    try:
        return importlib.metadata.version("vecshard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Cluster:
    def __init__(self, core: Core, resharder: Resharder, jobs: Jobs, local: LocalShards | None) -> None:
        self.core, self.resharder, self.jobs, self.local = core, resharder, jobs, local
        # When this coordinator first saw each (kind, collection) job it does not time itself.
        self._since: dict[tuple[str, str], float] = {}

    async def describe(self, timeout: float) -> pb.ClusterInfo:
        groups = self.core.shards.shards
        asked = [[self._ask(r, timeout) for r in g.replicas] for g in groups]
        flat = await asyncio.gather(*(a for group in asked for a in group))
        info = pb.ClusterInfo(
            shard_mode="local" if self.local is not None and not self.core.shards.remote else "remote",
            version=_version(),
            uptime_s=uptime_s(),
            rss_bytes=rss_bytes(),
        )
        lists: list[spb.ShardListResponse | None] = []  # per group: its first healthy replica's list
        at = 0
        for g in groups:
            replies = flat[at : at + len(g.replicas)]
            at += len(g.replicas)
            group = info.groups.add(index=g.index)
            for replica, (reply, error) in zip(g.replicas, replies, strict=True):
                group.replicas.append(self._replica(replica, reply, error))
            lists.append(next((r for r, e in replies if r is not None), None))
        for name in sorted(self.core.catalog.collections):
            info.collections.append(self._placement(self.core.catalog.collections[name], lists))
        info.jobs.extend(self._jobs())
        return info

    async def _ask(self, replica: ShardApi, timeout: float) -> tuple[spb.ShardListResponse | None, str]:
        timeout = min(timeout, REPLICA_TIMEOUT_S)
        try:
            reply = await asyncio.wait_for(
                replica.list_collections(pb.ListCollectionsRequest(), CallMeta(timeout)), timeout
            )
            return reply, ""
        except grpc.aio.AioRpcError as err:
            return None, f"{err.code().name}: {err.details()}"
        except TimeoutError:
            return None, f"no answer in {timeout:.1f}s"

    def _replica(self, replica: ShardApi, reply: spb.ShardListResponse | None, error: str) -> pb.ReplicaInfo:
        local = isinstance(replica, LocalShard)
        out = pb.ReplicaInfo(address=LOCAL_ADDRESS if local else replica.address, healthy=reply is not None)
        out.error = error
        if reply is not None:
            out.rss_bytes = reply.rss_bytes or (rss_bytes() if local else 0)
            out.points = sum(s.count for s in reply.collections)
            out.collections = len({parse_physical(s.config.name)[0] for s in reply.collections})
        return out

    def _placement(self, coll: Collection, lists: list[spb.ShardListResponse | None]) -> pb.CollectionPlacement:
        counts = list(coll.shard_counts)  # (the catalog's, where a group did not answer now)
        for g in range(min(len(counts), len(lists))):
            reply = lists[g]
            state = next((s for s in reply.collections if s.config.name == coll.spec.name), None) if reply else None
            if state is not None:
                counts[g] = state.count
        return pb.CollectionPlacement(
            collection=coll.name,
            shards=coll.placement.shards,
            epoch=coll.placement.epoch,
            count=sum(counts),
            shard_counts=counts,
        )

    def _jobs(self) -> list[pb.JobInfo]:
        out: list[pb.JobInfo] = []
        now, seen = time.time(), set()

        def add(kind: str, name: str, phase: str, done: int = 0, total: int = 0, error: str = "") -> None:
            seen.add((kind, name))
            since = self._since.setdefault((kind, name), now)
            out.append(pb.JobInfo(kind=kind, collection=name, phase=phase, done=done, total=total, error=error))
            out[-1].started_unix = since

        for name, job in sorted(self.resharder.jobs.items()):
            if job.task is not None and not job.task.done():
                p = job.progress
                add("reshard", name, p.phase, p.copied, max(p.total, p.copied), p.error)
        for name, coll in sorted(self.core.catalog.collections.items()):
            if coll.reshard_phase and ("reshard", name) not in seen:  # (run by another coordinator)
                add("reshard", name, coll.reshard_phase.upper())
            if coll.training:
                add("train", name, "TRAINING")
        self._since = {k: v for k, v in self._since.items() if k in seen}
        for j in self.jobs.listed():
            out.append(
                pb.JobInfo(
                    kind=j.kind,
                    collection=j.collection,
                    phase=j.phase,
                    done=j.done,
                    total=j.total,
                    started_unix=j.started,
                    id=j.id,
                    error=j.error,
                )
            )
        return out
