"""A partition's backup copy: the snapshot a checkpoint writes, frozen at the moment a backup's cut
asks for it, written to a folder outside the data dir.

The freeze is a checkpoint's (engine.ShardIndex.save): under the partition's write lock the faiss
index stops changing (later writes go to a delta), and the versions, tombstones and payloads are
frozen copy-on-write, in microseconds to milliseconds. The files are then written with no lock held
while reads and writes go on. Unlike a checkpoint it changes nothing of the partition's own
snapshot state (its snapshot lsn, its tombstones), so the data dir's next checkpoint is unaffected.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from vecshard_server.shard import snapshot
from vecshard_server.shard.engine import ShardIndex

# Called right after the freeze, with (the lsn the frozen state covers, its points).
Frozen = Callable[[int, int], None]


def save_frozen(part: ShardIndex, directory: Path, frozen: Frozen) -> None:
    """Write `part` as it is at the freeze into `directory` (snapshot files, published atomically);
    `frozen` runs as soon as the state is frozen, before any file is written."""
    # (the partition's private parts: this is ShardIndex.save without its bookkeeping)
    with part._save_lock:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = snapshot.fresh_dir(directory)
        try:
            with part._lock.write():
                index, held = part._storage.index, part._storage.freeze()
                epoch = {name: getattr(part, name) for name in snapshot.EPOCH_FIELDS}
                state = part._points.snapshot_state(part.applied_lsn, epoch)
                count = part.count
            frozen(state.lsn, count)
            try:
                snapshot.write_index(index, tmp)
            finally:
                with part._lock.write():
                    part._storage.thaw(held)
            snapshot.write_rest(directory, tmp, state, part._storage.raw, part._release_free)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
