"""Checks of what a shard request carries, shared by the shard's RPC handlers."""

from __future__ import annotations

import re
import time
from typing import TypeVar

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import (
    InvalidArgument,
    ResourceExhausted,
)
from vecshard.types import Metric
from vecshard.v1 import shard_pb2 as spb
from vecshard_server.common.config import Settings
from vecshard_server.common.results import pad_distance
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.engine import ShardIndex

SERVICE_NAME = spb.DESCRIPTOR.services_by_name["Shard"].full_name
T = TypeVar("T")
MAX_ABORTED = 100_000  # rolled-back Add versions remembered per partition
MAX_EPOCH = 2**63  # epochs count 1, 2, ...: the shard's next of one near 2**64 overflowed (INTERNAL)
_PEER = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253})|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]{1,5})")
INLINE_REFINE = 4096  # refine candidates re-scored on the event loop (a thread hand-off costs more)


def record_versions(record: spb.WalRecord, n: int) -> int | np.ndarray:
    """The version of each of a logged add's or remove's `n` ids (0: logged by an older version)."""
    if record.versions:
        versions = np.frombuffer(record.versions, dtype="<i8").astype(np.int64)
        if versions.size != n:
            raise ValueError(f"log record lsn {record.lsn} has {versions.size} versions for {n} ids")
        return versions
    return int(record.version)


def check_add(spec: CollectionSpec, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Refuse what the coordinator refuses (it sends only valid batches; other callers of the
    internal API are told why): faiss failed on a wrong shape only once the write was logged, and a
    logged write that cannot be applied ends the process; an id twice in one batch leaves a stale
    copy in the index; NaN, Inf or overflowing values get no IVF list, so the id was counted but its
    vector not stored (every Get, Sample and training of the partition then failed); and a COSINE
    partition (an inner-product index) holding a vector that is not unit length ranks it above
    every exact match, with a "cosine similarity" above 1."""
    wire.check_ids(ids)
    if vectors.shape[0] != ids.size:
        raise InvalidArgument(f"got {ids.size} ids for {vectors.shape[0]} vectors: send one id per vector")
    wire.check_vectors(vectors, spec.dim)
    if spec.metric is Metric.COSINE:
        norms = np.linalg.norm(vectors, axis=1)
        off = np.flatnonzero(np.abs(norms - 1) > 1e-3)
        if off.size:
            raise InvalidArgument(
                f"vectors rows {off[:5].tolist()} have norms {np.round(norms[off[:5]], 4).tolist()}: collection "
                f"{spec.name!r} is COSINE, whose shards store L2-normalised vectors; normalise them (the coordinator "
                "does)"
            )


def check_search(settings: Settings, spec: CollectionSpec, queries: np.ndarray, k: int) -> None:
    """Refuse a search faiss cannot run (wrong dimension, k = 0: INTERNAL before) or whose results
    could not be held (a huge k or nq * k would allocate them all first), with the coordinator's limits."""
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(f"k must be between 1 and max_k={settings.max_k}, got {k}")
    if queries.shape[1] != spec.dim:
        raise InvalidArgument(
            f"queries have dimension {queries.shape[1]} but collection {spec.name!r} has dim {spec.dim}"
        )
    if queries.shape[0] * k > settings.max_results:
        raise ResourceExhausted(
            f"nq * k = {queries.shape[0] * k} results would exceed the message limit ({settings.max_results} "
            "results): send fewer queries per call or a smaller k"
        )


def check_centroids(spec: CollectionSpec, centroids: np.ndarray) -> None:
    """NaN, Inf or overflowing centroids give no vector an IVF list: the new index silently lost every
    vector, whose Get then failed (INTERNAL). The shape is the engine's to check."""
    if centroids.shape == (spec.nlist, spec.dim) and centroids.size:
        wire.check_vectors(centroids, spec.dim, "centroids")


def rows_that_fit(settings: Settings, row_bytes: int) -> int:
    """Rows of `row_bytes` (as encoded) that fit one reply, as the coordinator counts them."""
    return max(1, (settings.max_message_bytes - 64 * 1024) // row_bytes)


def check_reply_rows(settings: Settings, rows: int, row_bytes: int, dim: int, fix: str) -> None:
    """Refuse a reply over the message limit before building it: gRPC refused it only once it was
    built, with its own message ("Sent message larger than max") and an error logged here."""
    limit = rows_that_fit(settings, row_bytes)
    if rows > limit:
        raise ResourceExhausted(
            f"{rows} vectors of dim {dim} would exceed the message limit: {fix.format(limit=limit)}"
        )


def deadline_of(context: grpc.aio.ServicerContext | None) -> float | None:
    """The caller's deadline on this process's monotonic clock (None: no deadline)."""
    remaining = context.time_remaining() if context is not None else None
    return None if remaining is None else time.monotonic() + remaining


def check_peer(peer: str) -> None:
    """A Resync peer must be a plain host:port (a name, IPv4 or [IPv6]): no scheme, path or options."""
    match = _PEER.fullmatch(peer)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        shown = peer[:80] + ("..." if len(peer) > 80 else "")
        raise InvalidArgument(
            f"peer {shown!r} is not host:port: send the address of a replica of this group, e.g. 10.0.0.7:7001"
        )


def _without_removed(I: np.ndarray, exact: np.ndarray, part: ShardIndex) -> np.ndarray:
    """The candidates with those removed between the search and their re-scoring (the two take the
    read lock apart: refined gives them the padding distance) dropped, as -1."""
    return np.where(exact == pad_distance(part.spec.larger_is_better), -1, I)
