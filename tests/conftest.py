"""Shared fixtures: real local clusters (shard processes + coordinator process on loopback, port 0)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from vecshard import Client
from vecshard_server.bench.datasets import clustered, load_sift5k
from vecshard_server.cluster.local import LocalCluster, Process

__all__ = ["clustered"]


_names = itertools.count()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port that was free a moment ago, for a process started next. Drawn below Linux's
    ephemeral range (32768-60999): a port-0 pick comes from that range, where the kernel also gives
    every outgoing connection its local port, so between the pick and the child's bind another
    connection could take it (CI once saw "Address already in use" for a shard's metrics port)."""
    import random
    import socket

    for _ in range(1000):
        port = random.randint(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port in 20000-32000")


def start_role(
    args: list[str], port_file: Path, env: dict[str, str] | None = None, timeout: float = 120, **output: Path
) -> Process:
    """One `vecshard` role process on 127.0.0.1, port 0, started and serving (stdout=/stderr= files)."""
    proc = Process(args[0], [*args, "--host", "127.0.0.1", "--port", "0"], port_file, env, **output)
    proc.wait_port(time.monotonic() + timeout)
    return proc


# Every test on the shared clusters runs in both shard modes: shards in their own processes over
# gRPC ("remote"), and inside the coordinator's process ("local", `vecshard serve`'s default).
# VECSHARD_TEST_SHARD_MODE=remote (or local) runs one of them only.
SHARD_MODES = [m for m in os.environ.get("VECSHARD_TEST_SHARD_MODE", "remote,local").split(",") if m]


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
