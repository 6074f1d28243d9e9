"""Per-id write versions: replicas converge whatever order writes reach them in, a merge of two
replicas that each missed writes loses none, and versions and tombstones are as durable as vectors.

Before versions, replicas applied writes in arrival order and a repair copied one replica over the
other: two concurrent upserts of one id could leave the replicas different, and a copy from the
replica that missed writes undid acknowledged ones (the nemesis found both, see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecshard import wire
from vecshard.types import IndexType, Metric
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.common.versions import NODE_BITS, WriteClock
from vecshard_server.shard.engine import ShardIndex, SnapshotCorrupt
from vecshard_server.shard.service import ShardService

DIM = 4
IDS = 12


def vec(i: int, v: int) -> np.ndarray:
    return np.array([[i, v % 1000, 1.0, -1.0]], dtype=np.float32)


def spec(ivf: bool = False) -> CollectionSpec:
    if ivf:
        return CollectionSpec("c", DIM, Metric.L2, IndexType.IVF_FLAT, nlist=2, nprobe=2)
    return CollectionSpec("c", DIM, Metric.L2, IndexType.FLAT, nlist=0, nprobe=0)


Op = tuple[str, int, int]  # (kind, id, version)


def apply(part: ShardIndex, op: Op) -> None:
    kind, i, v = op
    ids = np.array([i], dtype=np.int64)
    if kind == "upsert":
        part.add(ids, vec(i, v), True, None, v)
    else:
        part.remove(ids, None, v)


def state(part: ShardIndex) -> tuple[dict[int, tuple[int, tuple[float, ...]]], dict[int, int], int]:
    ids, x, versions, dead, dead_versions, _ = part.export_page(-1, 10**6)
    live = {i: (v, tuple(row)) for i, v, row in zip(ids.tolist(), versions.tolist(), x.tolist(), strict=True)}
    return live, dict(zip(dead.tolist(), dead_versions.tolist(), strict=True)), part.digest


def expected(ops: list[Op]) -> dict[int, tuple[int, tuple[float, ...]]]:
    """The reference: per id, the op of the highest version decides."""
    last: dict[int, Op] = {}
    for op in ops:
        if op[1] not in last or op[2] > last[op[1]][2]:
            last[op[1]] = op
    return {i: (v, tuple(vec(i, v)[0].tolist())) for i, (kind, _, v) in last.items() if kind == "upsert"}


ops_strategy = st.lists(
    st.tuples(st.sampled_from(["upsert", "upsert", "remove"]), st.integers(0, IDS - 1)), min_size=1, max_size=60
).map(lambda ops: [(kind, i, n + 1) for n, (kind, i) in enumerate(ops)])  # unique versions, issue order


@settings(max_examples=150, deadline=None)
@given(ops=ops_strategy, seed=st.integers(0, 2**32 - 1))
def test_any_arrival_order_gives_the_state_of_the_newest_write_per_id(ops: list[Op], seed: int) -> None:
    in_order, shuffled = ShardIndex(spec(), 10**6), ShardIndex(spec(), 10**6)
    for op in ops:
        apply(in_order, op)
    order = np.random.default_rng(seed).permutation(len(ops))
    for n in order.tolist():
        apply(shuffled, ops[n])
    assert state(in_order)[0] == expected(ops)
    assert state(shuffled) == state(in_order)


def merge(into: ShardIndex, peer: ShardIndex, page: int) -> None:
    """What Resync does with a peer's export, page by page."""
    after = -1
    while True:
        ids, x, versions, dead, dead_versions, _ = peer.export_page(after, page)
        if not ids.size and not dead.size:
            return
        if ids.size:
            into.add(ids, x, True, None, versions)
        if dead.size:
            into.remove(dead, None, dead_versions)
        after = int(max(ids[-1] if ids.size else -1, dead[-1] if dead.size else -1))


@settings(max_examples=150, deadline=None)
@given(ops=ops_strategy, seed=st.integers(0, 2**32 - 1), page=st.integers(1, 7), ivf=st.booleans())
def test_merging_two_replicas_that_each_missed_writes_loses_none(
    ops: list[Op], seed: int, page: int, ivf: bool
) -> None:
    """Each write reached one replica or both (a random split); merged both ways, both hold exactly
    what a replica that got every write holds."""
    rng = np.random.default_rng(seed)
    a, b, full = ShardIndex(spec(ivf), 10**6), ShardIndex(spec(ivf), 10**6), ShardIndex(spec(ivf), 10**6)
    if ivf:
        centroids = np.array([[0, 0, 1, -1], [IDS, 500, 1, -1]], dtype=np.float32)
        for part in (a, b, full):
            part.install_quantizer(centroids, None, 1, 7)
    for op in ops:
        apply(full, op)
        where = rng.integers(0, 3)  # 0: a only, 1: b only, 2: both
        if where != 1:
            apply(a, op)
        if where != 0:
            apply(b, op)
    merge(a, b, page)
    merge(b, a, page)
    assert state(a)[0] == state(b)[0] == state(full)[0] == expected(ops)
    assert a.digest == b.digest == full.digest
    assert a.count == b.count == full.count


def test_a_rollback_wins_over_its_add_in_either_order_and_spares_other_writes() -> None:
    at_first, at_last = ShardIndex(spec(), 10**6), ShardIndex(spec(), 10**6)
    ids = np.array([1, 2], dtype=np.int64)
    x = np.vstack([vec(1, 10), vec(2, 10)])
    at_first.add(ids[1:], vec(2, 5), True, None, 5)  # id 2 holds an older write the Add (10) was refused over
    at_last.add(ids[1:], vec(2, 5), True, None, 5)
    at_first.remove(ids, None, 10, rollback=True)  # the rollback arrives before its Add
    assert at_first.add(ids[:1], x[:1], False, None, 10) == (0, 0, 0)  # stores nothing: tombstone at 10
    at_last.add(ids[:1], x[:1], False, None, 10)
    assert at_last.remove(ids, None, 10, rollback=True) == 1  # takes 1 back, leaves 2 (written at 5)
    assert state(at_first)[:2] == state(at_last)[:2]
    assert state(at_last)[0] == {2: (5, tuple(vec(2, 5)[0].tolist()))}
    at_last.add(ids[:1], vec(1, 11), True, None, 11)  # a later upsert is not blocked by the tombstone
    assert at_last.get(ids[:1])[1].all()


def test_a_non_upsert_add_is_refused_over_another_write_and_idempotent_over_itself() -> None:
    from vecshard import AlreadyExists

    part = ShardIndex(spec(), 10**6)
    ids = np.array([1, 2], dtype=np.int64)
    x = np.vstack([vec(1, 3), vec(2, 3)])
    assert part.add(ids, x, False, None, 3) == (2, 0, 0)
    assert part.add(ids, x, False, None, 3) == (0, 0, 0)  # the same Add again (a retry, a replay)
    with pytest.raises(AlreadyExists):
        part.add(ids, x, False, None, 4)
    with pytest.raises(AlreadyExists):
        part.add(ids, x, False, None, 2)
    assert part.writes == 1


# -- durability through a shard service with a data dir ------------------------------------------


class _Context:
    def __init__(self, version: int) -> None:
        self.version = version

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("x-vecshard-write-token", str(self.version))]


def _service(path: Path) -> ShardService:
    s = ShardService(Settings(), path)
    s.recover()
    return s


def _config() -> types_pb2.CollectionConfig:
    return types_pb2.CollectionConfig(
        name="c", dim=DIM, metric=types_pb2.METRIC_L2, index_type=types_pb2.INDEX_TYPE_FLAT
    )


def _write(s: ShardService, kind: str, i: int, version: int) -> Any:
    ids = wire.pack_ids(np.array([i]))
    if kind == "remove":
        return asyncio.run(s.Remove(pb.RemoveRequest(collection="c", ids=ids), _Context(version)))  # type: ignore[arg-type]
    if kind == "rollback":
        req = spb.RollbackAddRequest(collection="c", write_token=version, ids=ids)
        return asyncio.run(s.RollbackAdd(req, None))  # type: ignore[arg-type]
    req = pb.AddRequest(collection="c", ids=ids, vectors=wire.pack_matrix(vec(i, version)), upsert=kind == "upsert")
    return asyncio.run(s.Add(req, _Context(version)))  # type: ignore[arg-type]


@pytest.mark.parametrize("checkpoint", [False, True], ids=["log", "snapshot"])
def test_versions_and_tombstones_survive_a_restart(tmp_path: Path, checkpoint: bool) -> None:
    """A tombstone that is only in memory is lost at a crash, and then an older copy of the id
    (a peer's, or a delayed write) comes back: removes of absent ids are logged, and snapshots
    keep both maps."""
    t = WriteClock().next()  # versions of today (tombstones older than tombstone_ttl_s are forgotten)
    s = _service(tmp_path)
    s._create(_config())
    _write(s, "add", 1, t + 100)
    _write(s, "upsert", 2, t + 100)
    _write(s, "remove", 1, t + 200)
    _write(s, "remove", 3, t + 200)  # never stored here: the tombstone alone matters
    _write(s, "rollback", 4, t + 150)
    if checkpoint:
        s.checkpoint()
        assert json.loads((tmp_path / "collections" / "c" / "meta.json").read_text())["max_version"] == t + 200
    s.wal.close()  # type: ignore[union-attr]
    again = _service(tmp_path)
    part = again.collections["c"]
    assert state(part)[1] == {1: t + 200, 3: t + 200, 4: t + 150}
    assert part.max_version == t + 200
    for i in (1, 3, 4):  # older writes of removed ids store nothing
        assert _write(again, "upsert", i, t + 120).added == 0
    assert _write(again, "upsert", 2, t + 50).replaced == 0  # older than the stored one
    assert _write(again, "upsert", 3, t + 300).added == 1  # a newer write is a write
    assert again.clock.next() > t + 300  # the shard's own clock moved past what it saw


def test_tombstones_older_than_their_ttl_are_forgotten_at_a_snapshot(tmp_path: Path) -> None:
    t = WriteClock().next()
    s = ShardService(Settings(tombstone_ttl_s=3600), tmp_path)
    s.recover()
    s._create(_config())
    _write(s, "remove", 1, t - (7200 * 10**6 << NODE_BITS))  # removed two hours ago
    _write(s, "remove", 2, t)
    s.checkpoint()
    assert state(s.collections["c"])[1] == {2: t}


def test_a_damaged_versions_file_refuses_to_start_and_names_it(tmp_path: Path) -> None:
    s = _service(tmp_path)
    s._create(_config())
    _write(s, "upsert", 2, 100)
    s.checkpoint()
    s.wal.close()  # type: ignore[union-attr]
    path = tmp_path / "collections" / "c" / "versions.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt, match="versions.npy"):
        _service(tmp_path)


def test_a_remove_listing_an_id_twice_removes_it_once_at_its_newest_version() -> None:
    """The fuzz found it: a shard's Remove of [i, i] deleted i twice, and the failed apply of a logged
    write ends the process (the coordinator dedups; direct callers of the internal API need not)."""
    part = ShardIndex(spec(), 10**6)
    part.add(np.array([5]), vec(5, 1), True, None, 1)
    assert part.remove(np.array([5, 5, 6, 6]), None, np.array([3, 4, 7, 2])) == 1
    assert state(part)[1] == {5: 4, 6: 7}


def test_a_frozen_id_map_is_the_map_at_the_freeze_whatever_is_written_after() -> None:
    """Snapshots write the map frozen with the index; writes after the freeze copy the part they touch."""
    from vecshard_server.shard.idmap import IdVersions, pairs_of

    ids = np.arange(0, 1000, 3, dtype=np.int64)
    m = IdVersions.from_arrays(ids, ids * 10)
    frozen = m.freeze()
    m[1] = 5
    del m[3]
    m.pop(6)
    m[9] = 7
    pairs = pairs_of(frozen)
    assert dict(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True)) == {i: i * 10 for i in ids.tolist()}
    assert len(m) == ids.size - 1 and m.get(1) == 5 and 3 not in m and m[9] == 7 and m.get(6, 0) == 0
    assert dict(m.items()) == {**{i: i * 10 for i in ids.tolist() if i not in (3, 6)}, 1: 5, 9: 7}


def test_a_damaged_dropped_json_refuses_to_start_and_names_it(tmp_path: Path) -> None:
    """dropped.json decides which collections a peer may bring back: damage must not pass silently."""
    s = _service(tmp_path)
    s._create(_config())
    s._drop("c", WriteClock().next())
    s.wal.close()  # type: ignore[union-attr]
    assert "c" in json.loads((tmp_path / "dropped.json").read_text())
    assert "c" in _service(tmp_path).dropped  # remembered across a restart
    (tmp_path / "dropped.json").write_text('{"c": 12')  # cut short
    with pytest.raises(SnapshotCorrupt, match="dropped.json"):
        _service(tmp_path)
