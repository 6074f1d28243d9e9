"""Write versions: every write of an id carries one, and replicas keep, per id, the newest.

A version is a hybrid clock reading: microseconds since the epoch in the high bits and a node
number in the low 8 bits, so two coordinators never hand out the same version and versions grow
with time across them (last writer wins between concurrent writes of one id, the way Cassandra
and Qdrant order replica writes). Each clock also moves past every version it sees, so a write
issued after another was seen is ordered after it even across skewed clocks.

With versions, replicas converge whatever order writes reach them in, and a replica that missed
writes is repaired by pulling every entry a peer holds at a newer version (a merge, never a copy
that could undo the writes the copy's source missed). A removed id keeps a tombstone (its
removal's version) so that an older copy of it cannot come back. At equal versions a tombstone
wins: a rolled-back Add leaves one at the Add's own version.
"""

from __future__ import annotations

import secrets
import threading
import time

NODE_BITS = 8
MAX_VERSION = (1 << 63) - 1


def version_time_s(version: int) -> float:
    """The wall-clock time (seconds since the epoch) a version was issued at."""
    return (version >> NODE_BITS) / 1e6


class WriteClock:
    """Hands out strictly increasing versions (thread-safe)."""

    def __init__(self, node: int | None = None) -> None:
        self.node = (secrets.randbits(NODE_BITS) if node is None else node) & ((1 << NODE_BITS) - 1)
        self._last_us = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        """A version newer than every one this clock issued or saw."""
        with self._lock:
            self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
            return (self._last_us << NODE_BITS) | self.node

    def observe(self, version: int) -> None:
        """Move past a version seen elsewhere (a shard's newest, a peer's)."""
        with self._lock:
            self._last_us = max(self._last_us, min(version, MAX_VERSION) >> NODE_BITS)
