"""A shard's write-ahead log: framed, checksummed records in segment files, with group commit.

On disk: `wal/<first lsn, 20 digits>.wal` segments. Format 2 (every segment this version writes)
starts with the magic `VSWAL2\\n\\0`; each record is

    [u32 LE payload length][u64 LE lsn][u32 LE CRC-32 of payload][u32 LE CRC-32 of the 16 bytes before]
    [payload = WalRecord protobuf, its lsn field unset]

The header has its own checksum, so a damaged length or lsn is detected instead of being taken for
the end of the log. Format 1 segments (no magic; `[u32 length][u32 CRC-32][payload with lsn]`),
written by earlier versions, are still read; new records always go to a new format 2 segment.

Durability: a write is appended (under its collection's write lock, so log order is apply order)
and acknowledged only after `sync(lsn)` returns, i.e. after an fsync that covers it. Concurrent
writers share fsyncs (group commit). The payload is serialised and checksummed by the caller
before any lock is taken; under the lock only the 20-byte header is made. A failed fsync is fatal
(`on_fatal`): on Linux the kernel may drop the dirty pages, so retrying could acknowledge lost data.

Recovery (`scan`): lsns must run on without a gap, from segment to segment, each segment's first
record matching its name. The only damage accepted is a torn write: the very last record of the
last segment cut short (or a zero-filled tail), with nothing readable after it; it was never
acknowledged, so it is dropped (the file is truncated there) with a warning. Any other damage
raises `WalCorrupt`, naming the file and byte, and the shard refuses to start.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from google.protobuf.message import DecodeError

from vecshard.v1 import shard_pb2
from vecshard_server.common.observability import WAL_SYNC_SECONDS

log = logging.getLogger(__name__)

MAGIC = b"VSWAL2\n\0"
HEADER = struct.Struct("<IQII")  # length, lsn, payload crc, header crc (over the first 16 bytes)
HEADER_V1 = struct.Struct("<II")
MAX_RECORD = 1 << 31

WAY_OUT = (
    "Refusing to start, since this could hide acknowledged writes. Restore the shard's data dir from a "
    "backup, or, with replicas, delete this replica's data dir and restart it (it catches up from its "
    "peers). To start anyway and lose the records from this point on: truncate the file to this byte "
    "(`truncate -s BYTE FILE`) and delete the later segments (see docs/operations.md)."
)


class WalCorrupt(RuntimeError):
    """The log is damaged in a way that could hide acknowledged writes."""


def _segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}.wal"


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def frame(payload: bytes, lsn: int, payload_crc: int) -> bytes:
    """The format 2 header of a record."""
    head = struct.pack("<IQI", len(payload), lsn, payload_crc)
    return head + struct.pack("<I", zlib.crc32(head))


def _corrupt(path: Path, offset: int, problem: str) -> WalCorrupt:
    return WalCorrupt(f"{path} is damaged at byte {offset}: {problem}. " + WAY_OUT.replace("BYTE", str(offset)))


def _truncate(path: Path, offset: int, problem: str, size: int) -> None:
    log.warning(
        "dropping a torn write at the end of %s: %s at byte %d (%d bytes); it was never acknowledged",
        path,
        problem,
        offset,
        size - offset,
    )
    with open(path, "r+b") as fh:
        fh.truncate(offset)
        os.fsync(fh.fileno())


def scan(directory: Path) -> Iterator[shard_pb2.WalRecord]:
    """Every intact record in lsn order; truncates a torn tail of the last segment, raises
    `WalCorrupt` on any other damage."""
    files = segments(directory)
    expected: int | None = None  # the lsn the next record must have
    for n, path in enumerate(files):
        last = n == len(files) - 1
        data = path.read_bytes()
        if data.startswith(MAGIC):
            records = _scan_v2(path, data, last, int(path.stem) if expected is None else expected)
        elif len(data) < len(MAGIC) and MAGIC.startswith(data):
            if not last and data:
                raise _corrupt(path, 0, f"a segment of {len(data)} bytes (a torn start) before later segments")
            continue  # created, then the process died before (or while) writing the magic
        elif _looks_v2(data):
            raise _corrupt(path, 0, "the segment's format marker is damaged")
        else:
            records = _scan_v1(path, data, last)
        for record in records:
            if expected is not None and record.lsn != expected:
                raise _corrupt(path, 0, f"lsn {record.lsn} follows lsn {expected - 1} (records are missing)")
            expected = record.lsn + 1
            yield record


def _looks_v2(data: bytes) -> bool:
    """A format 2 segment whose magic is damaged: a valid format 2 header follows where it should."""
    head = data[len(MAGIC) : len(MAGIC) + HEADER.size]
    return len(head) == HEADER.size and zlib.crc32(head[:16]) == HEADER.unpack(head)[3]


def _scan_v2(path: Path, data: bytes, last: bool, first_lsn: int) -> Iterator[shard_pb2.WalRecord]:
    offset = len(MAGIC)
    expected = first_lsn
    if int(path.stem) != first_lsn:
        raise _corrupt(path, 0, f"the segment is named for lsn {int(path.stem)} but lsn {first_lsn} comes next")
    while offset < len(data):
        rest = data[offset:]
        torn_zeros = not any(rest)  # a zero-filled tail: blocks allocated, never written
        if len(rest) < HEADER.size or torn_zeros:
            if last:
                _truncate(path, offset, "an incomplete record header" if not torn_zeros else "zero bytes", len(data))
                return
            raise _corrupt(path, offset, f"{len(rest)} stray bytes at the end of a segment with later segments")
        length, lsn, payload_crc, header_crc = HEADER.unpack_from(data, offset)
        if zlib.crc32(data[offset : offset + 16]) != header_crc:
            raise _corrupt(path, offset, "the record header fails its checksum")
        if lsn != expected:
            raise _corrupt(path, offset, f"the record has lsn {lsn} where lsn {expected} comes next")
        start = offset + HEADER.size
        end = start + length
        if end > len(data):
            if last:
                _truncate(path, offset, f"a record of {length} bytes cut short", len(data))
                return
            raise _corrupt(path, offset, f"a record of {length} bytes is cut short before later segments")
        payload = data[start:end]
        if zlib.crc32(payload) != payload_crc:
            zero_tail = last and end == len(data) and payload.endswith(b"\0" * min(len(payload), 512))
            if zero_tail:
                _truncate(path, offset, "a record whose end was never written (zeros)", len(data))
                return
            raise _corrupt(path, offset, f"the payload of lsn {lsn} fails its checksum")
        record = shard_pb2.WalRecord()
        try:
            record.ParseFromString(payload)
        except DecodeError as err:
            raise _corrupt(path, offset, f"the payload of lsn {lsn} is no WalRecord ({err})") from None
        record.lsn = lsn
        yield record
        expected += 1
        offset = end


def _scan_v1(path: Path, data: bytes, last: bool) -> Iterator[shard_pb2.WalRecord]:
    """Segments written before format 2: no header checksum, lsn inside the payload."""
    offset = 0
    while offset < len(data):
        problem = ""
        if len(data) - offset < HEADER_V1.size:
            problem = f"{len(data) - offset} stray bytes"
        else:
            length, crc = HEADER_V1.unpack_from(data, offset)
            end = offset + HEADER_V1.size + length
            if length > MAX_RECORD or end > len(data):
                problem = f"a record of {length} bytes cut short"
            elif zlib.crc32(data[offset + HEADER_V1.size : end]) != crc:
                if end < len(data) or not last:
                    raise _corrupt(path, offset, "a record failing its checksum with more log after it")
                problem = "a record failing its checksum"
        if problem:
            if not last:
                raise _corrupt(path, offset, f"{problem} but later segments exist")
            _truncate(path, offset, problem, len(data))
            return
        record = shard_pb2.WalRecord()
        record.ParseFromString(data[offset + HEADER_V1.size : end])
        yield record
        offset = end


def _die(message: str) -> None:
    log.critical("%s: exiting so that recovery replays from the log", message)
    logging.shutdown()
    os._exit(70)


class Wal:
    """The open log: appends records, syncs them, rotates and deletes segments.

    on_fatal: called when the log can no longer promise durability (a failed fsync or write); the
    default ends the process at once.
    """

    def __init__(
        self, directory: Path, next_lsn: int, fsync: bool = True, on_fatal: Callable[[str], None] = _die
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.on_fatal = on_fatal
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # appends and rotation
        self._sync_lock = threading.Lock()  # one fsync at a time
        self.next_lsn = next_lsn
        self._written = next_lsn - 1
        self._synced = next_lsn - 1
        self.bytes_since_rotation = 0
        self._path, self._fd = self._open_segment(next_lsn)

    def _open_segment(self, first_lsn: int) -> tuple[Path, int]:
        """A new format 2 segment (reusing an empty or magic-only file of that name)."""
        path = self.directory / _segment_name(first_lsn)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.fstat(fd).st_size < len(MAGIC):
            os.ftruncate(fd, 0)
            self._write(fd, [MAGIC])
            self._fsync(fd)
        _fsync_dir(self.directory)
        return path, fd

    def _write(self, fd: int, parts: list[bytes | memoryview]) -> None:
        """Write every byte of `parts` (os.writev may write less than asked)."""
        views = [memoryview(p) for p in parts if len(p)]
        try:
            while views:
                n = os.writev(fd, views)
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if views and n:
                    views[0] = views[0][n:]
        except OSError as err:
            self.on_fatal(f"write to the log {self._path if hasattr(self, '_path') else ''} failed: {err}")
            raise

    def _fsync(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as err:
            self.on_fatal(f"fsync of the log failed: {err}")
            raise

    def append(self, record: shard_pb2.WalRecord) -> int:
        """Write a record (not yet durable); returns its lsn."""
        return self.append_payload(*payload_of(record))

    def append_payload(self, payload: bytes, payload_crc: int) -> int:
        """Write a serialised record (see `payload_of`: made before any lock); returns its lsn.
        Callers hold their collection's lock, so log order is apply order."""
        with self._lock:
            lsn = self.next_lsn
            self._write(self._fd, [frame(payload, lsn, payload_crc), payload])
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
            self._fsync(fd)
            WAL_SYNC_SECONDS.observe(time.perf_counter() - started)
            self._synced = max(self._synced, target)

    def rotate(self) -> int:
        """Start a new segment; returns the last lsn of the previous ones (all synced)."""
        with self._sync_lock, self._lock:  # no fsync may be using the descriptor closed here
            self._fsync(self._fd)
            os.close(self._fd)
            last = self.next_lsn - 1
            self._synced = max(self._synced, last)
            self._path, self._fd = self._open_segment(self.next_lsn)
            self.bytes_since_rotation = 0
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
            self._fsync(self._fd)
            os.close(self._fd)


def payload_of(record: shard_pb2.WalRecord) -> tuple[bytes, int]:
    """A record's payload and its CRC-32, made outside every lock (a 60 MB Add takes ~0.2 s)."""
    payload = record.SerializeToString()
    return payload, zlib.crc32(payload)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
