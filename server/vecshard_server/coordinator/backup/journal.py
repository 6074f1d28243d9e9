"""A restore's journal: `ID/restores/TARGET.json` at the backup's location.

It records which collection instance the restore made (the incarnations, i.e. create versions, of
its hidden marker and of its staging partitions), so a rerun can tell its own half-restored
collection (resume it) or finished one (nothing to do) from an unrelated collection of that name
(refused).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass

from vecshard.errors import NotFound
from vecshard_server.common.backup_store import Store


@dataclass
class Journal:
    target: str
    shards: int
    state: str = "creating"  # creating, copying, done
    marker: int = 0  # incarnation of the marker partition TARGET (group 0)
    staging: int = 0  # incarnation of the staging partition TARGET@1 (group 0)


def key(backup_id: str, target: str) -> str:
    return f"{backup_id}/restores/{target}.json"


async def read(store: Store, backup_id: str, target: str) -> Journal | None:
    try:
        data = await asyncio.to_thread(store.get_bytes, key(backup_id, target))
    except NotFound:
        return None
    try:
        return Journal(**json.loads(data))
    except (ValueError, TypeError):
        return None  # (a damaged journal proves nothing: the target is then treated as foreign)


async def write(store: Store, backup_id: str, journal: Journal) -> None:
    data = json.dumps(asdict(journal)).encode()
    await asyncio.to_thread(store.put_bytes, key(backup_id, journal.target), data)


async def remove(store: Store, backup_id: str, target: str) -> None:
    await asyncio.to_thread(store.delete, key(backup_id, target))
