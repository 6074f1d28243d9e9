"""Training the one coarse quantizer that every shard of an IVF collection shares.

The coordinator samples the shards in proportion to their counts, runs k-means once (exactly as
`IndexIVFFlat.train` would), and installs the same centroids on every shard. Training starts by
itself when a collection reaches its train threshold, or on an explicit Train.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from vecshard import wire
from vecshard.errors import FailedPrecondition
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.coordinator.catalog import Catalog, Collection
from vecshard_server.coordinator.inputs import rows_per_message
from vecshard_server.shard.engine import train_centroids

log = logging.getLogger(__name__)

DEFAULT_SEED = 1234


class Trainer:
    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self.catalog = catalog
        self.shards = catalog.shards
        self.settings = settings

    def maybe_auto_train(self, coll: Collection) -> None:
        """Start training in the background once an untrained collection reaches its threshold."""
        spec = coll.spec
        if (
            spec.is_ivf
            and not coll.trained
            and not coll.training
            and coll.count >= spec.train_threshold
            and (coll.auto_train is None or coll.auto_train.done())
        ):
            coll.auto_train = asyncio.create_task(self._auto_train(coll))

    async def _auto_train(self, coll: Collection) -> None:
        try:
            if not coll.trained:
                await self.train(coll, 0, 0)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # retried at the next Add; the collection keeps answering exactly
            log.warning("automatic training of %s failed: %s", coll.spec.name, err)

    async def train(self, coll: Collection, max_points: int, seed: int) -> None:
        """Sample, run k-means once, install the centroids on every shard."""
        spec = coll.spec
        seed = seed or DEFAULT_SEED
        timeout = self.settings.train_timeout_s
        async with coll.train_lock:
            coll.training = True
            started = time.perf_counter()
            try:
                info = await self.catalog.describe(coll, timeout)
                counts = [s.count for s in info.shards]
                total = sum(counts)
                if total < spec.nlist:
                    raise FailedPrecondition(
                        f"collection {spec.name!r} holds {total} vectors but nlist={spec.nlist} needs at least "
                        f"{spec.nlist} to train ({39 * spec.nlist} recommended): add more vectors first"
                    )
                n = min(total, max_points or 256 * spec.nlist)
                quotas = [min(q, rows_per_message(self.settings, spec.dim)) for q in sample_quotas(counts, n)]
                out = await self.shards.call(
                    "Sample",
                    {
                        s: pb.SampleRequest(collection=spec.name, max_points=q, seed=shard_seed(seed, s))
                        for s, q in enumerate(quotas)
                        if q
                    },
                    timeout,
                )
                sample = np.vstack([wire.unpack_matrix(out.results[s].vectors, "sample") for s in sorted(out.results)])
                centroids = await asyncio.to_thread(train_centroids, sample, spec, seed)
                install = spb.InstallQuantizerRequest(collection=spec.name, centroids=wire.pack_matrix(centroids))
                done = await self.shards.call("InstallQuantizer", self.shards.all(install), timeout)
                self.catalog.info(coll, done.results)
                log.info(
                    "trained %s: %d centroids from %d of %d vectors in %.2fs",
                    spec.name,
                    spec.nlist,
                    sample.shape[0],
                    total,
                    time.perf_counter() - started,
                )
            finally:
                coll.training = False


def shard_seed(seed: int, shard: int) -> int:
    """Each shard's sampling seed: the request's plus the shard index, wrapped to uint64 (a seed near
    2**64 once overflowed the proto field: INTERNAL)."""
    return (seed + shard) % 2**64


def sample_quotas(counts: list[int], n: int) -> list[int]:
    """Split a sample of n points over shards in proportion to their counts (largest remainder)."""
    total = sum(counts)
    exact = [c * n / total for c in counts]
    quotas = [int(e) for e in exact]
    for i in sorted(range(len(counts)), key=lambda i: exact[i] - quotas[i], reverse=True)[: n - sum(quotas)]:
        quotas[i] += 1
    return [min(q, c) for q, c in zip(quotas, counts, strict=True)]
