"""Shared fixtures: real local clusters (shard processes + coordinator process on loopback, port 0)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from vecshard import Client
from vecshard_server.cluster import LocalCluster

SIFT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sift5k"

_names = itertools.count()


@pytest.fixture(scope="session")
def cluster_of() -> Iterator[Callable[[int], LocalCluster]]:
    """cluster_of(S): a running cluster with S shards, started once per session and shared."""
    clusters: dict[int, LocalCluster] = {}

    def get(shards: int) -> LocalCluster:
        if shards not in clusters:
            clusters[shards] = LocalCluster(shards=shards, log_level="WARNING").start()
        return clusters[shards]

    yield get
    for c in clusters.values():
        c.stop()


@pytest.fixture(scope="session")
def client_of(cluster_of: Callable[[int], LocalCluster]) -> Iterator[Callable[[int], Client]]:
    """client_of(S): an SDK client connected to the S-shard cluster."""
    clients: dict[int, Client] = {}

    def get(shards: int) -> Client:
        if shards not in clients:
            clients[shards] = Client(cluster_of(shards).address, timeout=120)
        return clients[shards]

    yield get
    for c in clients.values():
        c.close()


@pytest.fixture
def client(client_of: Callable[[int], Client]) -> Client:
    """A client of the default 2-shard cluster."""
    return client_of(2)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A collection name unique to this test."""
    base = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:40].strip("_")
    return f"t{next(_names)}_{base}"


def read_vecs(path: Path) -> np.ndarray:
    """Read TEXMEX .fvecs/.ivecs (each row: int32 d, then d values)."""
    a = np.fromfile(path, dtype="<i4")
    d = int(a[0])
    rows = a.reshape(-1, d + 1)[:, 1:]
    return rows.view("<f4").copy() if path.suffix == ".fvecs" else rows.copy()


@pytest.fixture(scope="session")
def sift5k() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base 5000x128, queries 100x128, exact top-100 ground truth): skips where ../shared is absent."""
    if not (SIFT_DIR / "base.fvecs").exists():
        pytest.skip(f"sift5k data not found at {SIFT_DIR} (it lives in the project's shared/ folder)")
    return read_vecs(SIFT_DIR / "base.fvecs"), read_vecs(SIFT_DIR / "query.fvecs"), read_vecs(SIFT_DIR / "groundtruth.ivecs")


def clustered(n: int, d: int, centers: int = 20, seed: int = 0) -> np.ndarray:
    """Deterministic clustered float32 data (Gaussian blobs): realistic for IVF, free of ties."""
    rng = np.random.default_rng(seed)
    c = rng.normal(0, 4, size=(centers, d))
    labels = rng.integers(0, centers, size=n)
    return (c[labels] + rng.normal(0, 1, size=(n, d))).astype(np.float32)
