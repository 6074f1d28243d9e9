"""Training the one coarse quantizer that every shard of an IVF collection shares.

The coordinator samples the shards in proportion to their counts, runs k-means once (exactly as
`IndexIVFFlat.train` would), and installs the same centroids on every shard. Training starts by
itself when a collection reaches its train threshold, or on an explicit Train.

A shard's part of the sample can be larger than one message, so it arrives in pages (see
`Trainer.sample`): any sample size works, e.g. 39 points per centroid for a large nlist.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import time
from typing import Any

import numpy as np

from vecshard import wire
from vecshard.errors import FailedPrecondition
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator import offload
from vecshard_server.coordinator.catalog import Catalog, Collection
from vecshard_server.coordinator.inputs import page_row_bytes, rows_per_message
from vecshard_server.coordinator.shard_api import DESCRIBE_COLLECTION, EXPORT, INSTALL_QUANTIZER, SAMPLE, Encoded, Op
from vecshard_server.shard.engine import train_state

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
            and not coll.reshard_phase  # (a reshard copies the training it started with)
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
                _, sample = await self.sample(spec, counts, sample_quotas(counts, n), seed, timeout)
                # k-means on the default executor, not offload's pool: it may run for minutes.
                centroids, codec = await asyncio.to_thread(train_state, sample, spec, seed)
                await self.install(coll, centroids, timeout, codec)
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

    async def install(self, coll: Collection, centroids: wire.FloatArray, timeout: float, codec: bytes = b"") -> None:
        """Install `centroids` (and a compressed kind's `codec`) as the collection's next training,
        one decision for all shards.

        Every group PREPAREs the new index beside the serving one (the deciding group 0 first: it
        refuses a second training of the same epoch, so two coordinators training at once cannot
        leave shards with different centroids), then every group ACTIVATEs it (group 0 first). A
        search meanwhile names the epoch it expects; a shard at another one refuses it, and the
        coordinator waits out the switch (milliseconds) or, after a crash in between, completes it
        (`settle`). Nothing is logged until activation.
        """
        spec = coll.spec
        await self.catalog.describe(coll, timeout)
        epoch, train_id = max([*coll.shard_epochs, *coll.shard_prepared]) + 1, secrets.randbits(63) | 1

        def request(mode: spb.InstallMode, **extra: Any) -> spb.InstallQuantizerRequest:
            return spb.InstallQuantizerRequest(collection=spec.name, epoch=epoch, train_id=train_id, mode=mode, **extra)

        packed = wire.pack_matrix(centroids)
        prepare = request(spb.INSTALL_MODE_PREPARE, centroids=packed, codec=codec)
        deciding = request(spb.INSTALL_MODE_PREPARE, centroids=packed, decide=True, codec=codec)
        others = range(1, len(coll.view))
        try:
            await coll.view.call(INSTALL_QUANTIZER, {0: Encoded.of(deciding)}, timeout)
        except FailedPrecondition as err:
            raise FailedPrecondition(
                f"collection {spec.name!r} is being trained by another coordinator ({err.details}): describe it "
                "to see when it is trained, or Train again later"
            ) from None
        if others:
            encoded = Encoded.of(prepare)
            await coll.view.call(INSTALL_QUANTIZER, {s: encoded for s in others}, timeout)
        activate = request(spb.INSTALL_MODE_ACTIVATE)
        first = await coll.view.call(INSTALL_QUANTIZER, {0: activate}, timeout)
        rest = await coll.view.call(INSTALL_QUANTIZER, {s: activate for s in others}, timeout) if others else None
        self.catalog.info(coll, {**first.results, **(rest.results if rest else {})})

    async def settle(self, coll: Collection, timeout: float) -> None:
        """Make every shard of an IVF collection search with the same training: wait out a switch in
        progress (activation takes milliseconds), else complete the newest training on the shards
        behind it (a coordinator died between activations, or a replica restarted from an older
        snapshot). The shards decide: an install of a superseded training is refused."""
        for attempt in range(10):
            await self.catalog.describe(coll, timeout)
            if coll.epoch is not None:
                return
            await asyncio.sleep(0.02 * (attempt + 1))
        async with coll.heal_lock:
            await self.catalog.describe(coll, timeout)
            if coll.epoch is not None:
                return
            newest = max(range(len(coll.view)), key=lambda s: coll.shard_epochs[s])
            req = pb.DescribeCollectionRequest(name=coll.spec.name, include_centroids=True)
            state = (await coll.view.call(DESCRIBE_COLLECTION, {newest: req}, timeout)).results[newest]
            install = spb.InstallQuantizerRequest(
                collection=coll.spec.name,
                centroids=state.centroids,
                epoch=state.train_epoch,
                train_id=state.train_id,
                mode=spb.INSTALL_MODE_ONE_STEP,
                codec=state.codec,
            )
            behind = {s: install for s in range(len(coll.view)) if coll.shard_epochs[s] < state.train_epoch}
            log.warning(
                "collection %s: shards %s are behind training epoch %d: completing it",
                coll.spec.name,
                sorted(behind),
                state.train_epoch,
            )
            done = await coll.view.call(INSTALL_QUANTIZER, behind, timeout, fail_fast=False)
            self.catalog.info(coll, done.results)

    async def sample(
        self, spec: CollectionSpec, counts: list[int], quotas: list[int], seed: int, timeout: float
    ) -> tuple[wire.IdArray, wire.FloatArray]:
        """quotas[s] of shard s's points (holding counts[s]), each shard's a uniform random sample
        without replacement; concatenated in shard order, each shard's part by ascending id.

        A part that fits one message is one shard Sample, as always. A larger one comes in pages
        of one message each (sized from the real encoding: page_row_bytes): while it is at most
        half of the shard, independent Samples with distinct seeds until together they hold enough
        distinct points, then a uniform choice among those (a union of uniform samples is uniform:
        every set of its size is equally likely); above half, Export pages of the whole partition,
        then the same choice. Reproducible: the same seed and data give the same sample.
        """
        page = rows_per_message(self.settings, page_row_bytes(spec.dim))
        parts = await asyncio.gather(
            *(self._shard_sample(spec, s, q, counts[s], page, seed, timeout) for s, q in enumerate(quotas) if q)
        )
        heavy = sum(quotas) * page_row_bytes(spec.dim) > offload.INLINE_BYTES
        return await offload.run(heavy, _concat, spec.dim, list(parts))

    async def _shard_sample(
        self, spec: CollectionSpec, s: int, quota: int, count: int, page: int, seed: int, timeout: float
    ) -> tuple[wire.IdArray, wire.FloatArray]:
        if quota <= page:
            req = pb.SampleRequest(collection=spec.name, max_points=quota, seed=shard_seed(seed, s))
            return await self._page(SAMPLE, s, req, spec.dim, timeout)
        pages: list[tuple[wire.IdArray, wire.FloatArray]] = []
        if 2 * quota <= count:
            distinct = 0
            for j in itertools.count(1):
                # Ask for about what is still missing, allowing for points drawn again.
                size = min(page, count, math.ceil((quota - distinct) * count / max(1, count - distinct) * 1.02) + 16)
                req = pb.SampleRequest(collection=spec.name, max_points=size, seed=page_seed(seed, s, j))
                pages.append(await self._page(SAMPLE, s, req, spec.dim, timeout))
                before = distinct
                distinct = await offload.run(distinct + size > offload.INLINE_BYTES // 8, _distinct, pages)
                # Enough; or nothing new or less than asked for: the partition shrank, take what it has.
                if distinct >= quota or distinct == before or pages[-1][0].size < size:
                    break
        else:
            after = -1
            while not pages or pages[-1][0].size == page:
                req = spb.ExportRequest(collection=spec.name, after_id=after, limit=page)
                pages.append(await self._page(EXPORT, s, req, spec.dim, timeout))
                after = int(pages[-1][0][-1]) if pages[-1][0].size else after
        heavy = sum(p[0].size for p in pages) * page_row_bytes(spec.dim) > offload.INLINE_BYTES
        return await offload.run(heavy, _choose, pages, quota, spec.dim, page_seed(seed, s, 0))

    async def _page(
        self, op: Op[Any, spb.ExportResponse], s: int, request: Any, dim: int, timeout: float
    ) -> tuple[wire.IdArray, wire.FloatArray]:
        """One Sample or Export page of shard s: (ids, vectors)."""
        out = await self.shards.call(op, {s: request}, timeout)
        return await offload.run(True, _unpack, out.results[s], dim)  # (copying the page's bytes is slow)


def _unpack(resp: spb.ExportResponse, dim: int) -> tuple[wire.IdArray, wire.FloatArray]:
    ids = wire.unpack_ids(resp.ids)
    vectors = wire.unpack_matrix(resp.vectors, "sample") if ids.size else np.empty((0, dim), np.float32)
    return ids, vectors


def _distinct(pages: list[tuple[wire.IdArray, wire.FloatArray]]) -> int:
    return int(np.unique(np.concatenate([p[0] for p in pages])).size)


def _choose(
    pages: list[tuple[wire.IdArray, wire.FloatArray]], quota: int, dim: int, seed: int
) -> tuple[wire.IdArray, wire.FloatArray]:
    """A uniform choice of `quota` distinct points among the pages' (all when fewer), by ascending id."""
    ids, first = np.unique(np.concatenate([p[0] for p in pages]), return_index=True)
    vectors = np.concatenate([p[1] for p in pages])[first] if ids.size else np.empty((0, dim), np.float32)
    if ids.size > quota:
        keep = np.sort(np.random.default_rng(seed).choice(ids.size, size=quota, replace=False))
        ids, vectors = ids[keep], vectors[keep]
    return ids, np.ascontiguousarray(vectors, dtype=np.float32)


def _concat(dim: int, parts: list[tuple[wire.IdArray, wire.FloatArray]]) -> tuple[wire.IdArray, wire.FloatArray]:
    if not parts:
        return np.empty(0, np.int64), np.empty((0, dim), np.float32)
    return np.concatenate([p[0] for p in parts]), np.vstack([p[1] for p in parts])


def shard_seed(seed: int, shard: int) -> int:
    """Each shard's sampling seed: the request's plus the shard index, wrapped to uint64 (a seed near
    2**64 once overflowed the proto field: INTERNAL)."""
    return (seed + shard) % 2**64


def page_seed(seed: int, shard: int, page: int) -> int:
    """The seed of a shard's `page`-th sample page (page 0: its seed for choosing among the pages)."""
    return (shard_seed(seed, shard) + page * 0x9E3779B97F4A7C15) % 2**64


def sample_quotas(counts: list[int], n: int) -> list[int]:
    """Split a sample of n points over shards in proportion to their counts (largest remainder)."""
    total = sum(counts)
    exact = [c * n / total for c in counts]
    quotas = [int(e) for e in exact]
    for i in sorted(range(len(counts)), key=lambda i: exact[i] - quotas[i], reverse=True)[: n - sum(quotas)]:
        quotas[i] += 1
    return [min(q, c) for q, c in zip(quotas, counts, strict=True)]
