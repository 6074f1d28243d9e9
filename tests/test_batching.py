"""Micro-batching: concurrent searches are coalesced into fewer faiss calls, and every caller still
gets exactly its own answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import faiss
import numpy as np

from vecshard import Client
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.shard.batching import SearchBatcher

from .conftest import clustered


def test_batcher_coalesces_and_splits_exactly() -> None:
    data = clustered(5000, 16, seed=1)
    index = faiss.IndexFlatL2(16)
    index.add(data)
    calls: list[int] = []

    def search(q: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(q.shape[0])
        return index.search(q, k)

    batcher = SearchBatcher(search)
    queries = [data[i : i + 1 + i % 3] + 0.01 for i in range(40)]

    async def run() -> list[tuple[np.ndarray, np.ndarray]]:
        return await asyncio.gather(*(batcher.search(q, 5 if i % 2 else 7, 0) for i, q in enumerate(queries)))

    results = asyncio.run(run())
    assert len(calls) < len(queries)  # coalesced (one batch per k, plus stragglers)
    assert sum(calls) == sum(q.shape[0] for q in queries)
    for i, (q, (D, I)) in enumerate(zip(queries, results, strict=True)):
        rD, rI = index.search(q, 5 if i % 2 else 7)
        np.testing.assert_array_equal(I, rI)
        np.testing.assert_array_equal(D, rD)


def test_concurrent_mixed_searches_equal_sequential(cluster_of: Callable[[int], LocalCluster], name: str) -> None:
    address = cluster_of(2).address
    data = clustered(4000, 16, seed=2)
    with Client(address) as c:
        c.create_collection(name, 16, index="ivf_flat", nlist=16, train_threshold=10**6)
        c.add(name, np.arange(4000), data)
        c.train(name)
        rng = np.random.default_rng(0)
        jobs = [
            (
                data[rng.integers(0, 4000, size=int(rng.integers(1, 4)))] + 0.05,
                int(rng.choice([1, 5, 10])),
                int(rng.choice([1, 4, 8])),
            )
            for _ in range(120)
        ]
        expected = [c.search(name, q, k=k, nprobe=p).ids for q, k, p in jobs]
        got: list[np.ndarray | None] = [None] * len(jobs)

        def worker(offset: int) -> None:
            with Client(address) as wc:
                for j in range(offset, len(jobs), 12):
                    q, k, p = jobs[j]
                    got[j] = wc.search(name, q, k=k, nprobe=p).ids

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g, e)
        c.drop_collection(name)
