"""Which ids a partition's paged reads return: Export pages (replication, reshards), exports of given
ids, Scroll pages and random samples (training).

Pure functions over the partition's id -> version maps (`idmap.IdVersions`, sorted arrays underneath);
the partition (`engine.ShardIndex`) reads them under its read lock and adds vectors and payloads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from vecshard_server.shard.idmap import IdVersions

I64 = npt.NDArray[np.int64]
Keep = Callable[[I64], npt.NDArray[np.bool_]]
Scanned = list[tuple[int, bool]]  # (the highest id scanned, whether the scan reached the end) per page
# (ids, versions) of the stored entries, (ids, versions) of the tombstones
Entries = tuple[I64, I64, I64, I64]


def export_page(
    stored: IdVersions,
    tombs: IdVersions | None,
    after_id: int,
    limit: int,
    keep: Keep | None,
    scanned: Scanned | None,
) -> Entries:
    """The first `limit` entries with id > after_id, in ascending id order, of `stored` and `tombs`
    (None: no tombstones).

    keep: of those entries, only the ids it accepts (a reshard's pages: the ids of one group under
    the new placement); `scanned` then receives (the highest id scanned, whether the scan reached
    the end)."""
    # Sorted (id, version) arrays: a binary search to after_id, a slice of `limit`.
    live, versions = stored.arrays()
    dead, dead_versions = tombs.arrays() if tombs is not None else (np.empty(0, np.int64),) * 2
    a, b = np.searchsorted(live, after_id, side="right"), np.searchsorted(dead, after_id, side="right")
    live, versions = live[a : a + limit], versions[a : a + limit]
    dead, dead_versions = dead[b : b + limit], dead_versions[b : b + limit]
    if live.size + dead.size > limit:
        cut = np.partition(np.concatenate([live, dead]), limit - 1)[limit - 1]
        keep_live, keep_dead = live <= cut, dead <= cut
        live, versions = live[keep_live], versions[keep_live]
        dead, dead_versions = dead[keep_dead], dead_versions[keep_dead]
    live, versions = np.array(live), np.array(versions)  # (copies: the arrays may be the map's own)
    dead, dead_versions = np.array(dead), np.array(dead_versions)
    if keep is not None:
        seen = live.size + dead.size
        last = max(int(live[-1]) if live.size else after_id, int(dead[-1]) if dead.size else after_id)
        if scanned is not None:
            scanned.append((last, seen < limit))
        mine, mine_dead = keep(live), keep(dead)
        live, versions = live[mine], versions[mine]
        dead, dead_versions = dead[mine_dead], dead_versions[mine_dead]
    return live, versions, dead, dead_versions


def entries_of(ids: I64, stored: IdVersions, tombs: IdVersions) -> Entries:
    """The entries of exactly `ids` (ascending, distinct): those stored, and those removed (their
    tombstones); ids never seen are left out."""
    ids = np.unique(ids)
    live = [(i, v) for i in ids.tolist() if (v := stored.get(i)) is not None]
    dead = [(i, v) for i in ids.tolist() if i not in stored and (v := tombs.get(i, 0))]
    return (
        np.array([i for i, _ in live], dtype=np.int64),
        np.array([v for _, v in live], dtype=np.int64),
        np.array([i for i, _ in dead], dtype=np.int64),
        np.array([v for _, v in dead], dtype=np.int64),
    )


def scroll_ids(matching: I64, start_id: int, limit: int) -> tuple[I64, bool]:
    """The first `limit` of the `matching` ids >= start_id, ascending, and whether more follow them."""
    ids = matching[matching >= start_id]
    more = ids.size > limit
    if more:  # the `limit` smallest, without sorting them all
        ids = np.partition(ids, limit - 1)[:limit]
    return np.ascontiguousarray(np.sort(ids)), bool(more)


def sample_ids(stored: IdVersions, max_points: int, seed: int) -> I64:
    """A uniform random sample (without replacement) of at most max_points stored ids, ascending."""
    ids = stored.arrays()[0]  # ascending
    rng = np.random.default_rng(seed)
    n = min(max_points, ids.size)
    return np.sort(rng.choice(ids, size=n, replace=False)) if n < ids.size else ids.copy()
