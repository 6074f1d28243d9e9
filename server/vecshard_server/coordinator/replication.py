"""Keeping a shard group's replicas equal: resyncing those known to have missed acknowledged writes,
and anti-entropy for the differences nobody saw happen.

The fan-out (fanout.py) records which replica missed which collection's writes (`behind`); reads
avoid such a replica until `repair` has resynced it from a peer that has them (Resync RPC: per id
the newest version wins, so a merge loses no acknowledged write whichever replica missed it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.observability import REPLICAS_DIVERGED
from vecshard_server.coordinator.groups import ShardGroup
from vecshard_server.coordinator.shard_api import CallMeta, ShardApi

log = logging.getLogger(__name__)

REPAIR_TIMEOUT_S = 300.0


class Replication:
    """What each replica missed, and the background loops that bring replicas back in line."""

    def __init__(self, groups: Sequence[ShardGroup]) -> None:
        self.groups = groups
        # (group, replica address, collection) -> acknowledged writes that replica missed since its
        # last resync; reads avoid it, `repair` resyncs it from a replica that has them.
        self.behind: dict[tuple[int, str, str], int] = {}
        self.repair_needed = asyncio.Event()

    def missed(self, group: int, replica: str, collection: str) -> None:
        """`replica` of `group` may lack a write to `collection` that others applied: resync it."""
        key = (group, replica, collection)
        self.behind[key] = self.behind.get(key, 0) + 1
        self.repair_needed.set()

    def lagging(self, group: int, collection: str) -> frozenset[str]:
        """The replicas of `group` known to have missed writes to `collection` (reads avoid them)."""
        return frozenset(a for g, a, c in self.behind if g == group and c == collection)

    async def _resync(self, target: ShardApi, peer: ShardApi, collection: str) -> None:
        await target.resync(spb.ResyncRequest(collection=collection, peer=peer.address), CallMeta(REPAIR_TIMEOUT_S))

    async def repair(self) -> None:
        """Forever: resync every replica known to have missed acknowledged writes from a peer that
        has them (Resync RPC), retrying every second while it cannot be reached."""
        while True:
            await self.repair_needed.wait()
            self.repair_needed.clear()
            for (g, address, collection), misses in list(self.behind.items()):
                group = self.groups[g]
                peers = [
                    r for r in group.replicas if r.address != address and (g, r.address, collection) not in self.behind
                ]
                target = next((r for r in group.replicas if r.address == address), None)
                if not peers or target is None:
                    continue
                try:
                    await self._resync(target, peers[0], collection)
                    done = True
                except grpc.aio.AioRpcError as err:
                    done = err.code() == grpc.StatusCode.NOT_FOUND  # dropped everywhere meanwhile
                    if not done:
                        log.warning(
                            "resync of %s on %s from %s failed: %s",
                            collection,
                            address,
                            peers[0].address,
                            err.details(),
                        )
                if done and self.behind.get((g, address, collection)) == misses:  # none missed since
                    del self.behind[(g, address, collection)]
                    log.info("replica %s of %s is in sync again for %s", address, group.name, collection)
            if self.behind:
                await asyncio.sleep(1.0)
                self.repair_needed.set()

    async def anti_entropy(self, every_s: float) -> None:
        """Forever, every `every_s`: compare the replicas of each group collection by collection
        (count, digest, training epoch). A difference seen twice, a second apart, with nothing changed
        in between, is divergence (a replica missed writes while its coordinator died, say): each
        replica then merges every other one (Resync: per id the newest version wins, so the merge
        loses no acknowledged write whichever replica missed it). A difference that outlives the
        merges is shown as vecshard_replicas_diverged."""
        while every_s > 0:
            await asyncio.sleep(every_s)
            for group in self.groups:
                if len(group.replicas) > 1:
                    try:
                        await self._compare(group)
                    except grpc.aio.AioRpcError:
                        pass  # a replica is down: nothing to compare now

    async def _states(self, group: ShardGroup) -> list[dict[str, tuple[int, int, int]]]:
        answers = await asyncio.gather(
            *(r.list_collections(pb.ListCollectionsRequest(), CallMeta(10.0)) for r in group.replicas)
        )
        return [{s.config.name: (s.count, s.digest, s.train_epoch) for s in a.collections} for a in answers]

    async def _compare(self, group: ShardGroup) -> None:
        first = await self._states(group)
        names = set().union(*first)
        suspects = {n for n in names if len({st.get(n) for st in first}) > 1}
        if not suspects:
            for n in names:
                REPLICAS_DIVERGED.labels(str(group.index), n).set(0)
            return
        await asyncio.sleep(1.0)
        second = await self._states(group)
        for n in sorted(suspects):
            now = [st.get(n) for st in second]
            if now != [st.get(n) for st in first] or len(set(now)) == 1:
                continue  # writes in flight, or converged
            if any((group.index, r.address, n) in self.behind for r in group.replicas):
                continue  # being repaired
            log.warning("%s: replicas differ on %s (count, digest, epoch: %s): merging them", group.name, n, now)
            merged = await self.merge_replicas(group, n)
            REPLICAS_DIVERGED.labels(str(group.index), n).set(0 if merged else 1)

    async def merge_replicas(self, group: ShardGroup, collection: str) -> bool:
        """Make the group's replicas of `collection` equal: each merges every other (Resync; the first
        replica then holds all, and every later one merges it). False if a merge failed."""
        ok = True
        for target in group.replicas:
            for peer in group.replicas:
                if peer is target:
                    continue
                try:
                    await self._resync(target, peer, collection)
                except grpc.aio.AioRpcError as err:
                    ok = False
                    log.warning(
                        "merge of %s into %s from %s failed: %s",
                        collection,
                        target.address,
                        peer.address,
                        err.details(),
                    )
        return ok
