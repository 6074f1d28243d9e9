"""Helpers shared by the tests (fixtures live in conftest.py and use these).

- processes: a free loopback port, one `vecshard` role process, `vecshard serve`, a `vecshard` command
  that is expected to exit;
- gRPC: a service's methods, the status a call must fail with, health, and which outcomes of a call
  are answers at all (the fuzz tests' notion: never INTERNAL or UNKNOWN, never a hang);
- one shard service over a data dir, driven without gRPC;
- the coordinator's parts in this process (`ShardBackend`): its ShardSet over shard groups that are
  shard processes ("remote") or shard services in this process ("local"), or a whole
  CoordinatorService, so a test can run against both shard modes;
- small numeric helpers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vecshard import wire
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster, Process
from vecshard_server.common.config import Settings

if TYPE_CHECKING:  # (imported where used: every test imports this module, few run these parts)
    from vecshard_server.coordinator.fanout import ShardSet
    from vecshard_server.coordinator.local import LocalShards
    from vecshard_server.coordinator.service import CoordinatorService
    from vecshard_server.shard.service import ShardService

C = grpc.StatusCode

# Every test on the shared clusters runs in both shard modes: shards in their own processes over
# gRPC ("remote"), and inside the coordinator's process ("local", `vecshard serve`'s default).
# VECSHARD_TEST_SHARD_MODE=remote (or local) runs one of them only.
SHARD_MODES = [m for m in os.environ.get("VECSHARD_TEST_SHARD_MODE", "remote,local").split(",") if m]


# -- processes -------------------------------------------------------------------------------------

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port that was free a moment ago, for a process started next. Drawn below Linux's
    ephemeral range (32768-60999): a port-0 pick comes from that range, where the kernel also gives
    every outgoing connection its local port, so between the pick and the child's bind another
    connection could take it (CI once saw "Address already in use" for a shard's metrics port)."""
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


def run_vecshard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m vecshard_server ARGS` run to its end (a command expected to exit, e.g. refusing to
    start), its stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "vecshard_server", *args], capture_output=True, text=True, timeout=timeout
    )


SERVING_LINE = re.compile(r"vecshard is serving on (\S+) \(shards: ([^;]+);")


def serve_process(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, lines: list[str] | None = None
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`vecshard serve` on port 0 over data_dir, started: (the process, its address, the shards its
    startup line names). Its startup log lines are appended to `lines`; its stderr stays a pipe (read
    the rest with communicate())."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vecshard_server", "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    lines = [] if lines is None else lines
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        found = SERVING_LINE.search(line)
        if found:
            return proc, found.group(1), found.group(2).split(", ")
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("vecshard serve did not start:\n" + "".join(lines))


# -- gRPC ------------------------------------------------------------------------------------------


def service_methods(service: str) -> list[tuple[str, type[Message], type[Message]]]:
    """(name, request class, reply class) of each method of a registered gRPC service."""
    desc = descriptor_pool.Default().FindServiceByName(service)
    return [
        (m.name, message_factory.GetMessageClass(m.input_type), message_factory.GetMessageClass(m.output_type))
        for m in desc.methods
    ]


def expect_status(
    code: grpc.StatusCode, call: Callable[..., Any], request: Any, match: str = "", timeout: float = 30, **kw: Any
) -> str:
    """Call `call(request)`; it must fail with `code` and a message containing `match` (any case).
    Returns the message."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=timeout, **kw)
    err = info.value
    assert err.code() == code, f"{err.code()}: {err.details()}"
    assert match.lower() in (err.details() or "").lower(), err.details()
    return str(err.details())


def serving(address: str, timeout: float = 20) -> bool:
    """Whether the process at `address` answers grpc health Check with SERVING."""
    with grpc.insecure_channel(address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


# Never an answer: an exception no handler mapped to a status (a bug).
NEVER = frozenset({C.INTERNAL, C.UNKNOWN})


def not_an_answer(code: grpc.StatusCode, details: str) -> str:
    """Why a call's outcome is no answer a client can act on ("" when it is one): INTERNAL or UNKNOWN,
    the client's own deadline (the server hung: a server-side deadline says what timed out), a reply
    the server built past the message limit (gRPC refused to send it), or an error without a message."""
    if code in NEVER:
        return f"{code.name}"
    if code == C.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
        return "no answer before the client's deadline (hung)"
    if "Sent message larger than max" in details:
        return "a reply built past the message limit"
    if code != C.OK and not details:
        return f"{code.name} without a message"
    return ""


# -- one shard service, in this process --------------------------------------------------------------


def open_shard(data_dir: Path | None, on_fatal: Callable[[str], None] | None = None, **settings: Any) -> ShardService:
    """A shard service over data_dir (None: in memory), recovered from what it holds. on_fatal: what
    it does instead of ending the process (for its log, too)."""
    from vecshard_server.shard.service import ShardService

    s = ShardService(Settings(**settings), data_dir)
    if on_fatal is not None:
        s.on_fatal = on_fatal
    s.recover()
    if on_fatal is not None:
        assert s.wal is not None
        s.wal.on_fatal = on_fatal
    return s


def shard_add(
    s: ShardService, collection: str, ids: Any, x: np.ndarray, upsert: bool = False, context: Any = None
) -> pb.AddResponse:
    """The shard's Add handler, called directly (context: a stand-in for the gRPC one, or None)."""
    req = pb.AddRequest(
        collection=collection,
        ids=wire.pack_ids(np.asarray(ids, dtype=np.int64)),
        vectors=wire.pack_matrix(x),
        upsert=upsert,
    )
    return asyncio.run(s.Add(req, context))


def shard_remove(s: ShardService, collection: str, ids: Any) -> pb.RemoveResponse:
    """The shard's Remove handler, called directly."""
    req = pb.RemoveRequest(collection=collection, ids=wire.pack_ids(np.asarray(ids, dtype=np.int64)))
    return asyncio.run(s.Remove(req, None))


# -- the coordinator's parts, in this process --------------------------------------------------------


def partition_config(
    name: str,
    dim: int,
    groups: int,
    index: str = "flat",
    nlist: int = 0,
    epoch: int = 0,
    train_threshold: int | None = None,
    metric: str = "l2",
) -> types_pb2.CollectionConfig:
    """A collection's config as a coordinator creates it on the shards: validated, placed on `groups`
    groups by jump hash at placement `epoch` (its partition name then `name@epoch`). An IVF one trains
    when told to (train_threshold: by default out of reach)."""
    from vecshard.types import IndexType, Metric
    from vecshard_server.common.placement import JUMP, physical_name
    from vecshard_server.common.spec import CollectionSpec

    cfg = types_pb2.CollectionConfig(
        name=name,
        dim=dim,
        metric=Metric(metric).to_proto(),
        index_type=IndexType(index).to_proto(),
        nlist=nlist,
        train_threshold=(10**9 if nlist else 0) if train_threshold is None else train_threshold,
    )
    spec = CollectionSpec.validate(cfg, Settings())
    spec = dataclasses.replace(
        spec,
        name=physical_name(name, epoch),
        placement_function=JUMP,
        placement_shards=groups,
        placement_epoch=epoch,
    )
    return spec.to_proto()


def routed_adds(
    collection: str, ids: np.ndarray, x: np.ndarray, groups: int, upsert: bool = False
) -> dict[int, pb.AddRequest]:
    """One Add per group of a collection placed on `groups` groups (jump hash, as created): the ids
    (and rows of x) that group stores."""
    from vecshard_server.common.placement import Placement

    ids = np.asarray(ids, dtype=np.int64)
    return {
        g: pb.AddRequest(
            collection=collection, ids=wire.pack_ids(ids[pos]), vectors=wire.pack_matrix(x[pos]), upsert=upsert
        )
        for g, pos in enumerate(Placement("jump", groups).split(ids))
        if pos.size
    }


class NoDeadline:
    """What the coordinator's handlers use of grpc.aio.ServicerContext: a call without a deadline."""

    def time_remaining(self) -> float | None:
        return None


@dataclass
class ShardBackend:
    """Shard groups for a coordinator run in this process: `groups` shard processes of `cluster`
    ("remote": shared by the tests that use it, so each uses its own collection names), or as many
    shard services in this process ("local": new for each ShardSet, in memory or in `data_dir`)."""

    mode: str
    groups: int
    cluster: LocalCluster | None = None

    @classmethod
    def of(cls, cluster: LocalCluster) -> ShardBackend:
        """The shard processes of a running (remote mode) cluster."""
        return cls("remote", cluster.num_shards, cluster)

    @asynccontextmanager
    async def local_shards(self, settings: Settings, data_dir: Path | None = None) -> AsyncIterator[LocalShards]:
        """The groups as shard services in this process, started (recovered from data_dir)."""
        from vecshard_server.coordinator.local import LocalShards

        local = LocalShards(self.groups, settings, data_dir)
        await local.start()
        try:
            yield local
        finally:
            await local.close()

    @asynccontextmanager
    async def shard_set(self, settings: Settings | None = None) -> AsyncIterator[ShardSet]:
        """A coordinator's ShardSet over the groups, every group serving."""
        from vecshard_server.coordinator.fanout import ShardSet

        settings = settings or Settings()
        if self.cluster is not None:
            shards = ShardSet(self.cluster.shard_addresses, settings)
            try:
                assert not await shards.wait_serving(60)
                yield shards
            finally:
                await shards.close()
            return
        async with self.local_shards(settings) as local:
            shards = ShardSet([], settings, local.replicas)
            try:
                yield shards
            finally:
                await shards.close()

    @asynccontextmanager
    async def coordinator(
        self, settings: Settings | None = None, data_dir: Path | None = None
    ) -> AsyncIterator[CoordinatorService]:
        """A started CoordinatorService over the groups (local ones keep their data in data_dir)."""
        from vecshard_server.coordinator.local import LocalShards
        from vecshard_server.coordinator.service import CoordinatorService
        from vecshard_server.embedding.service import LocalEmbeddings

        settings = settings or Settings()
        embeddings = LocalEmbeddings.from_file(None, settings)
        local = LocalShards(self.groups, settings, data_dir) if self.cluster is None else None
        addresses = self.cluster.shard_addresses if self.cluster is not None else []
        service = CoordinatorService(settings, addresses, embeddings, local)
        await service.start()
        try:
            yield service
        finally:
            await service.close()


def start_backend(mode: str, groups: int, **cluster: Any) -> tuple[ShardBackend, LocalCluster | None]:
    """A ShardBackend of `groups` groups in `mode`; for "remote", the started cluster it uses (stop it
    after use). cluster: more LocalCluster arguments (replicas, env, ...)."""
    if mode == "remote":
        started = LocalCluster(shards=groups, log_level="ERROR", **cluster).start()
        return ShardBackend.of(started), started
    return ShardBackend(mode, groups), None


# -- numbers ---------------------------------------------------------------------------------------


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row of a with the same row of b."""
    return np.asarray((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


def string_id_collision(bits: int, prefix: str = "id-") -> tuple[str, str]:
    """Two different string ids whose `bits`-wide hashes are equal (to force a collision)."""
    from vecshard_server.common.string_ids import string_id_hash

    seen: dict[int, str] = {}
    for i in itertools.count():
        s = f"{prefix}{i}"
        other = seen.setdefault(string_id_hash(s, bits), s)
        if other != s:
            return other, s
    raise AssertionError
