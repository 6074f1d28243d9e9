"""Acknowledged data survives races, damaged bytes and failing disks, at the level of one shard's files.

Each test drives a real `ShardService` over a real data dir (real WAL, real snapshots, real faiss),
injects the fault (a delay between two steps, a flipped byte, a failing syscall), "crashes" by
starting a second service on the same files without closing the first, and checks that every start
either recovers everything acknowledged or refuses with the file named.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vecshard import NotFound, wire
from vecshard.v1 import shard_pb2, types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.shard.engine import SnapshotCorrupt
from vecshard_server.shard.service import ShardService
from vecshard_server.shard.wal import HEADER, MAGIC, Wal, WalCorrupt, scan, segments

from .support import open_shard, shard_add, shard_remove

DIM = 4


def vec(i: int) -> np.ndarray:
    return np.full((1, DIM), float(i), dtype=np.float32)


class Fatal(Exception):
    pass


def fatal(message: str) -> None:  # in production the process ends here
    raise Fatal(message)


def _config(name: str = "c") -> types_pb2.CollectionConfig:
    return types_pb2.CollectionConfig(name=name, dim=DIM, metric=1, index_type=1)


class _Context:
    """The two things a shard's Add handler reads from its gRPC context."""

    def __init__(self, remaining: float | None, token: int = 0) -> None:
        self.remaining, self.token = remaining, token

    def time_remaining(self) -> float | None:
        return self.remaining

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("x-vecshard-write-token", str(self.token))] if self.token else []


def _add(s: ShardService, name: str, i: int, context: _Context | None = None) -> pb.AddResponse:
    return shard_add(s, name, [i], vec(i), context=context)


def _remove(s: ShardService, name: str, i: int) -> None:
    shard_remove(s, name, [i])


def _stored(s: ShardService, name: str = "c") -> dict[int, float]:
    part = s.collections[name]
    got, found, _ = part.get(np.arange(0, 200))
    return {int(i): float(got[i, 0]) for i in np.flatnonzero(found)}


def test_checkpoint_racing_create_keeps_the_collection(tmp_path: Path) -> None:
    """A checkpoint between a create's fsync and its registration once deleted the segment holding
    the create and never saved the partition: the acknowledged collection was gone after a crash."""
    s = open_shard(tmp_path, fatal)
    assert s.wal is not None
    wal = s.wal
    slow_sync = threading.Event()
    real_sync = wal.sync

    def sync(lsn: int) -> None:
        real_sync(lsn)
        if not slow_sync.is_set():
            slow_sync.set()
            time.sleep(0.5)  # the create is logged and synced, not yet in the catalog

    wal.sync = sync  # type: ignore[method-assign]
    creator = threading.Thread(target=s._create, args=(_config(),))
    creator.start()
    assert slow_sync.wait(5)
    s.checkpoint()  # must not rotate the create's record away without saving the collection
    creator.join()
    wal.sync = real_sync  # type: ignore[method-assign]
    _add(s, "c", 7)
    s2 = open_shard(tmp_path, fatal)  # crash: no close
    assert "c" in s2.collections and _stored(s2) == {7: 7.0}


def test_add_racing_drop_and_recreate_is_refused_not_replayed(tmp_path: Path) -> None:
    """An Add that looked its partition up before a Drop + re-Create was acknowledged into the dropped
    partition and, after a crash, replayed into the new collection of the same name."""
    s = open_shard(tmp_path, fatal)
    s._create(_config())
    old = s.collections["c"]
    real_add = old.add
    entered = threading.Event()

    def slow_add(*args: object, **kw: object) -> tuple[int, int]:
        entered.set()
        time.sleep(0.5)
        return real_add(*args, **kw)  # type: ignore[arg-type]

    old.add = slow_add  # type: ignore[method-assign]
    outcome: list[object] = []

    def adder() -> None:
        try:
            outcome.append(_add(s, "c", 5))
        except NotFound as err:
            outcome.append(err)

    t = threading.Thread(target=adder)
    t.start()
    assert entered.wait(5)
    s._drop("c")
    s._create(_config())
    t.join()
    assert isinstance(outcome[0], NotFound), outcome  # refused, not acknowledged into the dropped one
    assert _stored(s) == {}
    s2 = open_shard(tmp_path, fatal)
    assert _stored(s2) == {}  # and never replayed into the new incarnation


def test_damaged_record_length_refuses_instead_of_truncating(tmp_path: Path) -> None:
    """Flipping the high byte of a mid-log record's length once made recovery take the rest of the
    log for a torn tail and truncate it: acknowledged writes gone, removed ones back."""
    s = open_shard(tmp_path, fatal)
    s._create(_config())
    for i in range(40):
        _add(s, "c", i)
    seg = segments(tmp_path / "wal")[-1]
    data = bytearray(seg.read_bytes())
    offsets = _record_offsets(data)
    target = offsets[len(offsets) // 2]
    data[target + 3] ^= 0x80  # the length's high byte
    seg.write_bytes(bytes(data))
    with pytest.raises(WalCorrupt, match=f"is damaged at byte {target}: the record header fails its checksum"):
        open_shard(tmp_path, fatal)
    assert seg.read_bytes() == bytes(data), "a refused start must not have truncated anything"


def _record_offsets(data: bytes | bytearray) -> list[int]:
    offsets, offset = [], len(MAGIC)
    while offset < len(data):
        offsets.append(offset)
        offset += HEADER.size + HEADER.unpack_from(data, offset)[0]
    return offsets


def _workload(tmp: Path) -> tuple[dict[int, float], set[int]]:
    """Two segments (a checkpoint between), a snapshot, adds and removes; returns what was acknowledged."""
    s = open_shard(tmp, fatal)
    s._create(_config())
    for i in range(12):
        _add(s, "c", i)
    _remove(s, "c", 3)
    s.checkpoint()
    for i in range(12, 20):
        _add(s, "c", i)
    _remove(s, "c", 14)
    assert s.wal is not None
    s.wal.rotate()
    for i in range(20, 24):
        _add(s, "c", i)
    expected = {i: float(i) for i in range(24) if i not in (3, 14)}
    assert _stored(s) == expected
    return expected, {3, 14}


def test_every_flipped_header_or_meta_byte_is_refused_or_harmless(tmp_path: Path) -> None:
    """Flip each byte of every record header, every segment marker and meta.json in turn: each start
    must refuse (naming the file) or recover everything acknowledged. 0 silent losses."""
    base = tmp_path / "base"
    expected, removed = _workload(base)
    targets: list[tuple[str, int]] = []
    for seg in segments(base / "wal"):
        data = seg.read_bytes()
        rel = str(seg.relative_to(base))
        targets += [(rel, b) for b in range(len(MAGIC))]
        for off in _record_offsets(data):
            targets += [(rel, off + b) for b in range(HEADER.size)]
    meta = base / "collections" / "c" / "meta.json"
    targets += [(str(meta.relative_to(base)), b) for b in range(meta.stat().st_size)]
    refused = recovered = 0
    silent: list[str] = []
    for rel, byte in targets:
        work = tmp_path / "work"
        _copytree(base, work)
        path = work / rel
        data = bytearray(path.read_bytes())
        data[byte] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            s = open_shard(work, fatal)
        except (WalCorrupt, SnapshotCorrupt) as err:
            assert str(work / rel).split("/")[-1] in str(err) or "meta.json" in str(err), err
            refused += 1
        else:
            got = _stored(s) if "c" in s.collections else {}
            if got != expected or removed & set(got):
                silent.append(f"{rel} byte {byte}: {len(set(expected) - set(got))} acknowledged ids missing")
            else:
                recovered += 1
            assert s.wal is not None
            s.wal.close()
        _rmtree(work)
    print(
        f"\nbyte-flip sweep: {len(targets)} flips, {refused} refused, {recovered} recovered all, "
        f"{len(silent)} silent losses"
    )
    assert silent == []
    assert refused > 0 and refused + recovered == len(targets)


def _copytree(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def test_snapshot_claiming_more_than_the_log_refuses(tmp_path: Path) -> None:
    """An lsn in an old (unchecksummed) meta.json beyond the log's end would skip acknowledged records."""
    expected, _ = _workload(tmp_path)
    meta_path = tmp_path / "collections" / "c" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("meta_sha256", "train_epoch", "train_id"):  # as written by an earlier version
        meta.pop(key, None)
    meta["lsn"] = 10_000
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SnapshotCorrupt, match="covers lsn 10000 but the log .* ends at lsn"):
        open_shard(tmp_path, fatal)


def test_failed_apply_after_logging_is_aborted_and_not_replayed(tmp_path: Path) -> None:
    s = open_shard(tmp_path, fatal)
    s._create(_config())
    _add(s, "c", 1)
    part = s.collections["c"]
    real = part._index.add_with_ids

    def broken(*args: object) -> None:
        raise RuntimeError("injected: out of memory in faiss")

    part._index.add_with_ids = broken
    with pytest.raises(Fatal, match="applying logged write lsn"):
        _add(s, "c", 2)
    part._index.add_with_ids = real
    records = list(scan(tmp_path / "wal"))
    assert records[-1].WhichOneof("op") == "abort" and records[-1].abort == records[-2].lsn
    s2 = open_shard(tmp_path, fatal)
    assert _stored(s2) == {1: 1.0}  # the client was told it failed: it must not come back


def test_failed_fsync_is_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed fsync Linux may drop the dirty pages: acknowledging later writes could lie."""
    calls: list[str] = []
    wal = Wal(tmp_path, 1, fsync=True, on_fatal=calls.append)
    wal.append(shard_pb2.WalRecord(drop="x"))

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        wal.sync(1)
    assert calls and "fsync of the log failed" in calls[0]


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.writev

    def dribble(fd: int, buffers: list[memoryview]) -> int:
        return real(fd, [bytes(buffers[0][:3])])  # at most 3 bytes per call

    wal = Wal(tmp_path, 1, fsync=False)
    monkeypatch.setattr(os, "writev", dribble)
    for i in range(5):
        wal.append(shard_pb2.WalRecord(drop=f"collection-{i}"))
    monkeypatch.undo()
    wal.close()
    assert [r.drop for r in scan(tmp_path)] == [f"collection-{i}" for i in range(5)]


def test_a_write_whose_deadline_passed_while_it_waited_is_refused(tmp_path: Path) -> None:
    """A shard once committed after its caller's deadline (waiting for the partition's lock), so the
    coordinator's rollback, sent when it gave up, could not cover it: half a batch stayed."""
    from vecshard import DeadlineExceeded

    s = open_shard(tmp_path, fatal)
    s._create(_config())
    part = s.collections["c"]
    locked = threading.Event()

    def hold() -> None:
        with part._lock.write():
            locked.set()
            time.sleep(0.6)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(5)
    with pytest.raises(DeadlineExceeded, match="before the write was committed"):
        _add(s, "c", 1, _Context(remaining=0.2))
    holder.join()
    assert _stored(s) == {}
    assert _stored(open_shard(tmp_path, fatal)) == {}


def test_rollback_before_its_add_arrives_refuses_the_add(tmp_path: Path) -> None:
    """The coordinator may roll back before a slow shard even sees the Add: that Add must not land."""
    from vecshard import DeadlineExceeded
    from vecshard.v1 import shard_pb2

    s = open_shard(tmp_path, fatal)
    s._create(_config())
    token = 12345
    rollback = shard_pb2.RollbackAddRequest(collection="c", write_token=token, ids=wire.pack_ids(np.array([1])))
    assert asyncio.run(s.RollbackAdd(rollback, None)).removed == 0  # type: ignore[arg-type]
    with pytest.raises(DeadlineExceeded, match="rolled back by its coordinator"):
        _add(s, "c", 1, _Context(remaining=None, token=token))
    _add(s, "c", 2, _Context(remaining=None, token=777))  # another Add is not affected
    assert asyncio.run(s.RollbackAdd(rollback, None)).removed == 0  # type: ignore[arg-type]
    other = shard_pb2.RollbackAddRequest(collection="c", write_token=777, ids=wire.pack_ids(np.array([2])))
    assert asyncio.run(s.RollbackAdd(other, None)).removed == 1  # type: ignore[arg-type]
    assert _stored(s) == {} and _stored(open_shard(tmp_path, fatal)) == {}


def test_writers_blocked_on_one_collection_do_not_starve_searches_of_another(tmp_path: Path) -> None:
    """Reads and writes once shared one small thread pool: writers waiting for one collection's lock
    took every thread, and searches of other collections queued behind them."""
    s = open_shard(tmp_path, fatal)
    s._create(_config("busy"))
    s._create(_config("other"))
    _add(s, "other", 1)
    busy = s.collections["busy"]
    release = threading.Event()
    locked = threading.Event()

    def hold() -> None:
        with busy._lock.write():
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(5)

    async def scenario() -> tuple[bool, int]:
        writes = [
            asyncio.ensure_future(
                s.Add(
                    pb.AddRequest(
                        collection="busy", ids=wire.pack_ids(np.array([i])), vectors=wire.pack_matrix(vec(i))
                    ),
                    None,  # type: ignore[arg-type]
                )
            )
            for i in range(16)  # more than there are threads for writes
        ]
        await asyncio.sleep(0.2)
        query = pb.SearchRequest(collection="other", queries=wire.pack_matrix(vec(1)), k=1)
        found = await asyncio.wait_for(s.Search(query, None), timeout=10)  # type: ignore[arg-type]
        still_blocked = not any(w.done() for w in writes)
        release.set()
        await asyncio.gather(*writes)
        return still_blocked, int(np.frombuffer(found.ids, dtype=np.int64)[0])

    still_blocked, hit = asyncio.run(scenario())
    holder.join()
    assert still_blocked and hit == 1  # the search was answered while every writer still waited
    assert _stored(s, "busy") == {i: float(i) for i in range(16)}


def test_a_damaged_checksum_key_does_not_turn_the_check_off(tmp_path: Path) -> None:
    """A bit flipped inside the "meta_sha256" key once made the file read as an old, unchecksummed one."""
    _workload(tmp_path)
    meta_path = tmp_path / "collections" / "c" / "meta.json"
    text = meta_path.read_text().replace('"meta_sha256"', '"meta_sha2S6"')
    meta_path.write_text(text)
    with pytest.raises(SnapshotCorrupt, match="checksum .meta_sha256. is missing"):
        open_shard(tmp_path, fatal)
