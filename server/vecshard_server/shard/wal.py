"""A shard's write-ahead log: framed, checksummed records in segment files, with group commit.

On disk: `wal/<first lsn, 20 digits>.wal` segments; each record is
`[u32 LE payload length][u32 LE CRC-32 of payload][payload = WalRecord protobuf]`.

Durability: a write is appended (under its collection's write lock, so log order is apply order)
and acknowledged only after `sync(lsn)` returns, i.e. after an fsync that covers it. Concurrent
writers share fsyncs (group commit): one fsync covers every record written before it started.

Recovery (`scan`): a last record that is cut short or fails its checksum at the very end of the
last segment is a torn write: it was never acknowledged, so it is dropped (the file is truncated
there) with a warning. Damage anywhere else is corruption: `WalCorrupt` is raised and the shard
refuses to start rather than silently lose acknowledged writes.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from vecshard.v1 import shard_pb2
from vecshard_server.common.observability import WAL_SYNC_SECONDS

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
MAX_RECORD = 1 << 31


class WalCorrupt(RuntimeError):
    """The log is damaged in a way that could hide acknowledged writes."""


def _segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}.wal"


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def scan(directory: Path) -> Iterator[shard_pb2.WalRecord]:
    """Every intact record in lsn order; truncates a torn tail of the last segment."""
    files = segments(directory)
    for n, path in enumerate(files):
        last = n == len(files) - 1
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            problem = ""
            if len(data) - offset < HEADER.size:
                problem = f"{len(data) - offset} stray bytes"
            else:
                length, crc = HEADER.unpack_from(data, offset)
                end = offset + HEADER.size + length
                if length > MAX_RECORD or end > len(data):
                    problem = f"a record of {length} bytes cut short"
                elif zlib.crc32(data[offset + HEADER.size : end]) != crc:
                    problem = "a record failing its checksum"
                    if end < len(data) or not last:
                        raise WalCorrupt(
                            f"{path} is corrupt at byte {offset} ({problem}) with more log after it: refusing to "
                            "start. Restore the data dir from a backup or a replica."
                        )
            if problem:
                if not last:
                    raise WalCorrupt(f"{path} ends with {problem} but later segments exist: refusing to start")
                log.warning(
                    "dropping a torn write at the end of %s: %s at byte %d (%d bytes); it was never acknowledged",
                    path, problem, offset, len(data) - offset,
                )  # fmt: skip
                with open(path, "r+b") as fh:
                    fh.truncate(offset)
                    os.fsync(fh.fileno())
                break
            record = shard_pb2.WalRecord()
            record.ParseFromString(data[offset + HEADER.size : end])
            yield record
            offset = end


class Wal:
    """The open log: appends records, syncs them, rotates and deletes segments."""

    def __init__(self, directory: Path, next_lsn: int, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # appends and rotation
        self._sync_lock = threading.Lock()  # one fsync at a time
        self.next_lsn = next_lsn
        self._written = next_lsn - 1
        self._synced = next_lsn - 1
        self.bytes_since_rotation = 0
        existing = segments(directory)
        self._path = existing[-1] if existing else directory / _segment_name(next_lsn)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(directory)

    def append(self, record: shard_pb2.WalRecord) -> int:
        """Write a record (not yet durable); returns its lsn. Callers hold their collection's lock."""
        with self._lock:
            lsn = self.next_lsn
            record.lsn = lsn
            payload = record.SerializeToString()
            os.write(self._fd, HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            self.next_lsn += 1
            self._written = lsn
            self.bytes_since_rotation += HEADER.size + len(payload)
            return lsn

    def sync(self, lsn: int) -> None:
        """Return once record `lsn` is on stable storage (shares fsyncs between writers)."""
        if not self.fsync or self._synced >= lsn:
            return
        with self._sync_lock:
            if self._synced >= lsn:
                return
            with self._lock:
                target, fd = self._written, self._fd
            started = time.perf_counter()
            os.fsync(fd)
            WAL_SYNC_SECONDS.observe(time.perf_counter() - started)
            self._synced = max(self._synced, target)

    def rotate(self) -> int:
        """Start a new segment; returns the last lsn of the previous ones (all synced)."""
        with self._sync_lock, self._lock:  # no fsync may be using the descriptor closed here
            os.fsync(self._fd)
            os.close(self._fd)
            last = self.next_lsn - 1
            self._synced = max(self._synced, last)
            self._path = self.directory / _segment_name(self.next_lsn)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self.bytes_since_rotation = 0
        _fsync_dir(self.directory)
        return last

    def delete_through(self, lsn: int) -> int:
        """Delete the segments whose records all have lsn <= `lsn` (never the open one)."""
        files = segments(self.directory)
        removed = 0
        for path, following in zip(files, files[1:], strict=False):
            if path != self._path and int(following.stem) - 1 <= lsn:
                path.unlink()
                removed += 1
        if removed:
            _fsync_dir(self.directory)
        return removed

    def close(self) -> None:
        with self._lock:
            os.fsync(self._fd)
            os.close(self._fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
