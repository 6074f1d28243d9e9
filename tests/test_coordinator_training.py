"""The coordinator's Trainer (coordinator/training.py): how a sample is split over the shards and
seeded, and a real training of an IVF collection over shards in both modes: every shard installs
the same centroids, exactly faiss's k-means of the sample, at the next training epoch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from vecshard import wire
from vecshard.errors import FailedPrecondition
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.placement import JUMP, Placement
from vecshard_server.coordinator.catalog import Catalog
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.shard_api import ADD, CREATE_COLLECTION, DESCRIBE_COLLECTION, DROP_COLLECTION
from vecshard_server.coordinator.training import Trainer, page_seed, sample_quotas, shard_seed
from vecshard_server.shard.engine import train_state

from .conftest import clustered
from .support import ShardBackend, partition_config, routed_adds

T = 60.0
DIM, NLIST, N = 8, 8, 2000


@pytest.mark.parametrize(
    ("counts", "n", "quotas"),
    [
        ([10, 0, 30], 20, [5, 0, 15]),  # in proportion; an empty shard gives nothing
        ([1, 1, 1], 2, [1, 1, 0]),  # equal remainders: the first shards
        ([5, 5], 10, [5, 5]),  # everything
        ([3, 7], 50, [3, 7]),  # more than there is: all of each
        ([100, 200, 700], 0, [0, 0, 0]),
    ],
)
def test_sample_quotas_examples(counts: list[int], n: int, quotas: list[int]) -> None:
    assert sample_quotas(counts, n) == quotas


def test_sample_quotas_are_the_largest_remainder_split() -> None:
    rng = np.random.default_rng(4)
    for _ in range(500):
        counts = rng.integers(0, 1000, size=int(rng.integers(1, 9))).tolist()
        counts[0] += 1  # (some points to sample)
        total = sum(counts)
        n = int(rng.integers(0, total + 1))
        quotas = sample_quotas(counts, n)
        assert sum(quotas) == n, (counts, n, quotas)  # exactly the sample's size ...
        for q, c in zip(quotas, counts, strict=True):
            assert 0 <= q <= c and abs(q - c * n / total) < 1, (counts, n, quotas)  # ... each in proportion


def test_shard_and_page_seeds_are_distinct_and_wrap_to_uint64() -> None:
    for seed in (0, 1, 1234, 2**63, 2**64 - 1):
        seeds = [shard_seed(seed, s) for s in range(16)]
        pages = [page_seed(seed, s, p) for s in range(16) for p in range(16)]
        assert len(set(seeds)) == 16 and len(set(pages)) == 256
        assert all(0 <= x < 2**64 for x in seeds + pages)  # fits the proto's uint64
        assert [page_seed(seed, s, 0) for s in range(16)] == seeds  # page 0: the shard's own
        assert seeds == [shard_seed(seed, s) for s in range(16)]  # a function of its inputs alone
    assert shard_seed(2**64 - 1, 1) == 0 and shard_seed(2**64 - 2, 1) == 2**64 - 1


def run(backend: ShardBackend, scenario: Callable[[ShardSet, Trainer], Awaitable[None]]) -> None:
    async def main() -> None:
        async with backend.shard_set(Settings(train_timeout_s=T)) as shards:
            catalog = Catalog(shards)
            await scenario(shards, Trainer(catalog, shards.settings))

    asyncio.run(main())


async def filled(shards: ShardSet, trainer: Trainer, name: str, n: int = N, **cfg: object):  # type: ignore[no-untyped-def]
    """An IVF collection of n clustered points (ids 0..n-1) on every group: (its catalog entry, data)."""
    config = partition_config(name, DIM, len(shards), index="ivf_flat", nlist=NLIST, **cfg)  # type: ignore[arg-type]
    await shards.call(CREATE_COLLECTION, shards.all(config), T)
    data = clustered(n, DIM, seed=3)
    if n:
        await shards.call(ADD, routed_adds(name, np.arange(n), data, len(shards)), T)
    return await trainer.catalog.get(name, lambda: T), data


async def epochs_and_centroids(shards: ShardSet, name: str) -> list[tuple[int, np.ndarray | None]]:
    """Each group's training epoch and centroids (None before the first training)."""
    req = pb.DescribeCollectionRequest(name=name, include_centroids=True)
    out = await shards.call(DESCRIBE_COLLECTION, shards.all(req), T)
    states = [out.results[g] for g in range(len(shards))]
    return [(s.train_epoch, wire.unpack_matrix(s.centroids) if s.HasField("centroids") else None) for s in states]


def test_a_sample_is_its_quotas_of_stored_points_and_reproducible(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet, trainer: Trainer) -> None:
        coll, data = await filled(shards, trainer, name)
        counts = list(coll.shard_counts)
        quotas = sample_quotas(counts, 500)
        ids, vectors = await trainer.sample(coll.spec, counts, quotas, 5, T)
        assert ids.size == 500 == np.unique(ids).size
        owner = Placement(JUMP, 2).owner(ids)
        assert np.bincount(owner, minlength=2).tolist() == quotas  # shard by shard, as many as their quotas
        assert (np.diff(owner) >= 0).all() and all((np.diff(ids[owner == s]) > 0).all() for s in range(2))
        np.testing.assert_array_equal(vectors, data[ids])  # the stored vectors of those ids

        again_ids, again = await trainer.sample(coll.spec, counts, quotas, 5, T)
        np.testing.assert_array_equal(again_ids, ids)
        np.testing.assert_array_equal(again, vectors)
        other, _ = await trainer.sample(coll.spec, counts, quotas, 6, T)
        assert not np.array_equal(other, ids)  # another seed, another sample
        await shards.call(DROP_COLLECTION, shards.all(pb.DropCollectionRequest(name=name)), T)

    run(backend, scenario)


def test_training_installs_the_k_means_of_the_sample_on_every_shard(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet, trainer: Trainer) -> None:
        coll, _ = await filled(shards, trainer, name)
        assert [epoch for epoch, _ in await epochs_and_centroids(shards, name)] == [0, 0]
        counts = list(coll.shard_counts)
        for epoch, seed in ((1, 7), (2, 8)):  # a retraining is the next epoch
            await trainer.train(coll, 0, seed)
            assert coll.trained and not coll.training and coll.epoch == epoch
            # By default 256 points per centroid; here that is every point.
            _, sample = await trainer.sample(coll.spec, counts, sample_quotas(counts, min(N, 256 * NLIST)), seed, T)
            want, _ = train_state(sample, coll.spec, seed)
            (epoch0, got), (epoch1, got1) = await epochs_and_centroids(shards, name)
            assert epoch0 == epoch1 == epoch and got is not None and got1 is not None
            np.testing.assert_array_equal(got1, got)  # one training, everywhere ...
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # ... k-means of the sample
        await shards.call(DROP_COLLECTION, shards.all(pb.DropCollectionRequest(name=name)), T)

    run(backend, scenario)


def test_training_needs_at_least_nlist_points(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet, trainer: Trainer) -> None:
        coll, _ = await filled(shards, trainer, name, n=NLIST - 1)
        with pytest.raises(FailedPrecondition, match=f"holds {NLIST - 1} vectors but nlist={NLIST} needs at least"):
            await trainer.train(coll, 0, 0)
        assert not coll.training and not coll.trained
        assert [epoch for epoch, _ in await epochs_and_centroids(shards, name)] == [0, 0]
        await shards.call(DROP_COLLECTION, shards.all(pb.DropCollectionRequest(name=name)), T)

    run(backend, scenario)


def test_training_starts_by_itself_at_the_threshold(backend: ShardBackend, name: str) -> None:
    async def scenario(shards: ShardSet, trainer: Trainer) -> None:
        coll, _ = await filled(shards, trainer, name, n=400, train_threshold=500)
        trainer.maybe_auto_train(coll)
        assert coll.auto_train is None  # 400 < 500
        await shards.call(ADD, routed_adds(name, np.arange(400, 600), clustered(200, DIM, seed=4), 2), T)
        await trainer.catalog.describe(coll, T)
        assert coll.count == 600
        trainer.maybe_auto_train(coll)
        assert coll.auto_train is not None
        await coll.auto_train
        assert coll.trained and coll.epoch == 1
        trainer.maybe_auto_train(coll)  # trained: nothing more
        assert coll.auto_train.done()
        await shards.call(DROP_COLLECTION, shards.all(pb.DropCollectionRequest(name=name)), T)

    run(backend, scenario)
