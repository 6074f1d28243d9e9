"""Shared fixtures: real local clusters (shard processes + coordinator process on loopback, port 0).

Helpers that are no fixtures live in support.py."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from vecshard import Client
from vecshard_server.bench.datasets import clustered, load_sift5k
from vecshard_server.cluster.local import LocalCluster

from .support import SHARD_MODES, ShardBackend, start_backend

__all__ = ["clustered"]


_names = itertools.count()


@pytest.fixture(scope="session", params=SHARD_MODES)
def cluster_of(request: pytest.FixtureRequest) -> Iterator[Callable[[int], LocalCluster]]:
    """cluster_of(S): a running cluster with S shards, started once per session (and shard mode)
    and shared."""
    clusters: dict[int, LocalCluster] = {}

    def get(shards: int) -> LocalCluster:
        if shards not in clusters:
            clusters[shards] = LocalCluster(shards=shards, log_level="WARNING", shard_mode=request.param).start()
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


@pytest.fixture(scope="session")
def sift5k() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base 5000x128 float32, queries 100x128 float32, exact top-100 ground-truth ids int64): the
    sift5k data shipped in vecshard_server/bench/data/sift5k (never skips)."""
    return load_sift5k()


@pytest.fixture
def remote_cluster() -> Iterator[LocalCluster]:
    """A 2-shard cluster of this test's own, each shard its own process (to kill, stop or inspect)."""
    with LocalCluster(shards=2, log_level="ERROR") as c:
        yield c


@pytest.fixture(params=SHARD_MODES)
def served_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A 2-shard cluster of this test's own, in each shard mode (the test runs once per mode):
    `cluster.shard_mode` says which; only "remote" has shard processes (`cluster.shards`)."""
    with LocalCluster(shards=2, log_level="ERROR", shard_mode=request.param) as c:
        yield c


@pytest.fixture(scope="module", params=SHARD_MODES)
def backend(request: pytest.FixtureRequest) -> Iterator[ShardBackend]:
    """2 shard groups for coordinator parts run in this process (support.ShardBackend), in each shard
    mode: shard processes of one cluster shared by the module ("remote"), or shard services in this
    process, new for each ShardSet ("local")."""
    b, cluster = start_backend(request.param, 2)
    yield b
    if cluster is not None:
        cluster.stop()
