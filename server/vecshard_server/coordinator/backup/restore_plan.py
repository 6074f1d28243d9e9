"""A restore checked before it changes anything: the backup's manifest, the collections and their
target names, the target shard count and replicas, and what already exists under each target
name (nothing: a fresh restore; this restore's own unfinished or finished collection, by its
journal: resume or nothing to do; anything else: refused).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from vecshard.errors import FailedPrecondition, InvalidArgument, NotFound
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.backup_store import Store, open_store
from vecshard_server.common.placement import MAX_GROUPS, physical_name
from vecshard_server.common.spec import check_name
from vecshard_server.coordinator.backup import journal, manifest
from vecshard_server.coordinator.catalog import Catalog
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.local import LocalShards
from vecshard_server.coordinator.shard_api import DESCRIBE_COLLECTION

TIMEOUT_S = 60.0
MAX_LOCAL_GROUPS = 64  # as `vecshard serve --shards`
STAGING_EPOCH = 1  # the restored collection's placement epoch: its partitions are TARGET@1


@dataclass
class Target:
    source: pb.BackupCollection
    name: str
    mode: str  # "fresh", "resume" or "done"
    journal: journal.Journal


@dataclass
class RestorePlan:
    store: Store
    info: pb.BackupInfo
    shards: int
    targets: list[Target]


def _pick(info: pb.BackupInfo, request: pb.RestoreBackupRequest) -> list[tuple[pb.BackupCollection, str]]:
    chosen = [c for c in info.collections if not request.collection or c.config.name == request.collection]
    if not chosen:
        have = ", ".join(c.config.name for c in info.collections) or "none"
        raise NotFound(f"backup {info.id!r} holds no collection {request.collection!r} (it holds: {have})")
    if request.as_name:
        if len(chosen) != 1:
            raise InvalidArgument("as_name renames one collection: name it with `collection` too")
        check_name(request.as_name, "as_name")
        return [(chosen[0], request.as_name)]
    return [(c, c.config.name) for c in chosen]


async def plan(
    catalog: Catalog, shards: ShardSet, local: LocalShards | None, request: pb.RestoreBackupRequest
) -> RestorePlan:
    store = open_store(request.location.uri, request.location.s3_endpoint)
    info = await asyncio.to_thread(manifest.read, store, request.id)  # (NOT_FOUND, or FAILED_PRECONDITION)
    count = request.shards or len(shards)
    if not 1 <= count <= MAX_GROUPS:
        raise InvalidArgument(f"shards must be between 1 and {MAX_GROUPS} (0: every group of this cluster)")
    if count > len(shards):
        if local is None or count > MAX_LOCAL_GROUPS:
            raise FailedPrecondition(
                f"this coordinator knows {len(shards)} shard groups, fewer than {count}: start the new groups and "
                "add them to every coordinator's --shard list (Kubernetes: scale the shard StatefulSets), then "
                "restore again"
            )
        await local.grow(count, shards)
    if request.replicas:
        for g in shards.shards[:count]:
            if len(g.replicas) != request.replicas:
                raise FailedPrecondition(
                    f"{g.name} has {len(g.replicas)} replicas, not {request.replicas}: the replica count is the "
                    "cluster's (vecshard serve --replicas, the shard StatefulSets); restore onto a cluster deployed "
                    "with it, or leave replicas out"
                )
    await catalog.refresh(TIMEOUT_S)
    targets = []
    for source, name in _pick(info, request):
        targets.append(await _target(catalog, shards, store, info.id, source, name, count))
    return RestorePlan(store, info, count, targets)


async def _describe(shards: ShardSet, name: str) -> spb.ShardCollectionState | None:
    """Group 0's partition `name`, None when it does not hold one."""
    try:
        out = await shards.call(DESCRIBE_COLLECTION, {0: pb.DescribeCollectionRequest(name=name)}, TIMEOUT_S)
    except NotFound:
        return None
    return out.results[0]


async def _target(
    catalog: Catalog, shards: ShardSet, store: Store, backup_id: str, source: pb.BackupCollection, name: str, count: int
) -> Target:
    existing = catalog.collections.get(name)
    found = await journal.read(store, backup_id, name)
    if existing is None:
        return Target(source, name, "fresh", journal.Journal(name, count))
    refused = FailedPrecondition(
        f"collection {name!r} exists: drop it first, or restore beside it under another name (--as NEWNAME / as_name)"
    )
    if found is None:
        raise refused
    marker = await _describe(shards, name)
    staging = await _describe(shards, physical_name(name, STAGING_EPOCH))
    if staging is not None and found.staging and staging.incarnation == found.staging:
        mode = "done" if marker is None and not existing.reshard_phase else "resume"
    elif marker is not None and (
        marker.incarnation == found.marker or (found.state == "creating" and not marker.count)
    ):
        mode = "resume"
    else:
        raise refused
    if mode == "resume" and found.shards != count:
        raise FailedPrecondition(
            f"a restore of {name!r} onto {found.shards} shard groups was interrupted: run it again with "
            f"--shards {found.shards} to finish it (or drop {name!r} and start over)"
        )
    return Target(source, name, mode, found)
