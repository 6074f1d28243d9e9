"""A shard group: the R replicas holding the same partitions, and which of them a read asks first."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vecshard_server.coordinator.shard_api import ShardApi


@dataclass
class ShardGroup:
    index: int
    replicas: list[ShardApi]
    _next: int = field(default=0, repr=False)

    @property
    def name(self) -> str:
        return f"shard-{self.index} ({', '.join(r.address for r in self.replicas)})"

    def read_order(self, behind: frozenset[str] = frozenset()) -> list[ShardApi]:
        """Round-robin over the replicas, those recently found down last, without those `behind`
        (known to have missed acknowledged writes of the collection read) unless none is left."""
        n = len(self.replicas)
        self._next = (self._next + 1) % n
        ring = [self.replicas[(self._next + i) % n] for i in range(n)]
        now = time.monotonic()
        current = [r for r in ring if r.address not in behind] or ring
        return sorted(current, key=lambda r: r.down_until > now)
