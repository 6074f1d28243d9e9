"""The fan-out of one shard operation to many shard groups.

A shard group is R replicas holding the same partition (groups.py). Writes go to every replica and
succeed once `write_quorum` of them (default: all) have persisted them. Reads go to one replica, taken
round-robin among those not recently found down; when it fails with UNAVAILABLE or
DEADLINE_EXCEEDED the next replica is asked, and when it has not answered after `hedge_delay_s`
another is asked too (the first answer wins). A group fails only when no replica can answer.

Replicas are `ShardApi`s (remote.py, local.py) called through typed `Op`s (shard_api.py). Python
gRPC does not forward deadlines: every shard call gets the caller's remaining time. Shard failures
become coordinator errors here, naming the group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from vecshard.errors import Cancelled, DeadlineExceeded, Unavailable, VecshardError, error_for
from vecshard_server.common.config import Settings
from vecshard_server.common.observability import SHARD_CALL_SECONDS, span
from vecshard_server.common.placement import Placement
from vecshard_server.common.search_values import ShardQuery
from vecshard_server.common.versions import WriteClock
from vecshard_server.coordinator.groups import ShardGroup
from vecshard_server.coordinator.remote import RemoteShard
from vecshard_server.coordinator.replication import Replication
from vecshard_server.coordinator.shard_api import CallMeta, Encoded, Op, ShardApi

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

# Per-shard failures that allow_partial tolerates (and reads retry on another replica); any other
# code fails the call.
TOLERABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
DOWN_FOR_S = 1.0  # a replica that answered UNAVAILABLE is tried last for this long

# Called when a write reached fewer replicas of a group than its quorum, with the group, the request
# as the group got it, the replicas that applied it and the call's timeout: the write path's chance
# to take it back (a non-upsert Add does). When given, those replicas are not resynced.
Unacknowledged = Callable[[ShardGroup, Any, list[ShardApi], float], Awaitable[None]]


@dataclass
class Fanout(Generic[Resp]):
    """What a fan-out returned: results and failures by shard group index."""

    results: dict[int, Resp]
    failures: dict[int, grpc.aio.AioRpcError]


def collection_of(request: Any) -> str:
    """The collection a shard request is about ("" for none, e.g. ListCollections)."""
    message = request.message if isinstance(request, Encoded) else request
    for name in ("collection", "name"):
        value = getattr(message, name, "")
        if isinstance(value, str) and value:
            return value
    return ""


class ShardSet:
    """The shard groups, in placement order, and the fan-out of calls to them."""

    def __init__(self, groups: list[str], settings: Settings, local: Sequence[ShardApi] = ()) -> None:
        """groups: each group's replica addresses, comma-separated. local: in-process shards
        (`coordinator.local.LocalShard`), one group each, after those."""
        if not groups and not local:
            raise ValueError("a coordinator needs at least one shard address")
        self.settings = settings
        self.shards = [
            ShardGroup(i, [RemoteShard(a.strip(), settings) for a in group.split(",") if a.strip()])
            for i, group in enumerate(groups)
        ]
        self.shards += [ShardGroup(len(groups) + i, [replica]) for i, replica in enumerate(local)]
        self.replication = Replication(self.shards)
        self.clock = WriteClock()  # the versions of this coordinator's writes

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def remote(self) -> bool:
        """Whether any replica is in another process (requests to it are worth encoding once)."""
        return any(isinstance(r, RemoteShard) for g in self.shards for r in g.replicas)

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for g in self.shards for r in g.replicas))

    async def wait_serving(self, timeout: float) -> list[str]:
        """Wait up to `timeout` seconds for a SERVING replica in every group; returns the groups without."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        async def one(g: ShardGroup) -> str | None:
            while loop.time() < deadline:
                if any(await asyncio.gather(*(r.serving() for r in g.replicas))):
                    return None
                await asyncio.sleep(0.1)
            return g.name

        return [n for n in await asyncio.gather(*(one(g) for g in self.shards)) if n]

    def error(self, index: int, err: grpc.aio.AioRpcError) -> VecshardError:
        """The coordinator's error for a group's failed call."""
        name = self.shards[index].name
        code = err.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(f"{name} is unavailable ({err.details()}); retry with backoff")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"{name} did not answer before the deadline; raise the call's timeout")
        if code == grpc.StatusCode.CANCELLED:
            return Cancelled(f"the call to {name} was cancelled")
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED):
            return error_for(code, f"{name}: {err.details()}")
        return error_for(code, err.details() or code.name)

    def first_error(self, failures: Mapping[int, grpc.aio.AioRpcError]) -> VecshardError:
        i = min(failures)
        return self.error(i, failures[i])

    def all(self, request: Req) -> dict[int, Req]:
        """The same request for every shard group."""
        return {g.index: request for g in self.shards}

    async def _ask(self, replica: ShardApi, op: Op[Req, Resp], request: Req, meta: CallMeta) -> Resp:
        started = time.perf_counter()
        try:
            with span(f"shard/{op.name}", attributes={"vecshard.shard": replica.address}):
                return await op.call(replica, request, meta)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                replica.down_until = time.monotonic() + DOWN_FOR_S
            raise
        finally:
            SHARD_CALL_SECONDS.labels(replica.address, op.name).observe(time.perf_counter() - started)

    async def _read(self, group: ShardGroup, op: Op[Req, Resp], request: Req, meta: CallMeta) -> Resp:
        order = group.read_order(self.replication.lagging(group.index, collection_of(request)))
        if len(order) == 1:
            return await self._ask(order[0], op, request, meta)
        assert meta.timeout is not None
        deadline = time.monotonic() + meta.timeout
        pending: set[asyncio.Future[Resp]] = set()
        asked = 0
        last: grpc.aio.AioRpcError | None = None

        def ask_next() -> None:
            nonlocal asked
            call = self._ask(order[asked], op, request, meta.with_timeout(deadline - time.monotonic()))
            pending.add(asyncio.ensure_future(call))
            asked += 1

        ask_next()
        try:
            while pending:
                hedge = self.settings.hedge_delay_s if asked < len(order) else None
                done, _ = await asyncio.wait(pending, timeout=hedge, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    ask_next()  # slow: hedge to another replica
                    continue
                for task in done:
                    pending.discard(task)
                    try:
                        return task.result()
                    except grpc.aio.AioRpcError as err:
                        if err.code() not in TOLERABLE:
                            raise
                        last = err
                if not pending and asked < len(order):
                    ask_next()
        finally:
            for task in pending:
                task.cancel()
        assert last is not None
        raise last

    async def _write(
        self,
        group: ShardGroup,
        op: Op[Req, Resp],
        request: Req,
        meta: CallMeta,
        unacknowledged: Unacknowledged | None,
    ) -> Resp:
        if len(group.replicas) == 1:
            return await self._ask(group.replicas[0], op, request, meta)
        collection = collection_of(request)
        try:
            outcomes = await asyncio.gather(
                *(self._ask(r, op, request, meta) for r in group.replicas), return_exceptions=True
            )
        except asyncio.CancelledError:
            # The caller gave up with the replicas' outcomes unknown: some may have applied the write.
            # Make them equal again: the others are resynced from the first replica.
            if collection and op.resync_when_cancelled:
                for r in group.replicas[1:]:
                    self.replication.missed(group.index, r.address, collection)
            raise
        ok = [(r, o) for r, o in zip(group.replicas, outcomes, strict=True) if not isinstance(o, BaseException)]
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        refused = [e for e in errors if not isinstance(e, grpc.aio.AioRpcError) or e.code() not in TOLERABLE]
        quorum = min(self.settings.write_quorum or len(group.replicas), len(group.replicas))
        acknowledged = not refused and len(ok) >= quorum
        taken_back = not acknowledged and unacknowledged is not None
        if ok and errors and not taken_back and collection:
            # Some replicas applied it and some may not have (timed out, unreachable): whether the
            # write is acknowledged or not, they must end up equal. Resync those from one that has it.
            for r, o in zip(group.replicas, outcomes, strict=True):
                if isinstance(o, grpc.aio.AioRpcError) and o.code() in TOLERABLE:
                    self.replication.missed(group.index, r.address, collection)
        if acknowledged:
            if errors:
                log.warning(
                    "%s on %s: %d of %d replicas (quorum %d)", op.name, group.name, len(ok), len(group.replicas), quorum
                )
            return ok[0][1]
        if taken_back and ok and unacknowledged is not None and meta.timeout is not None:
            await unacknowledged(group, request, [r for r, _ in ok], meta.timeout)
        raise (refused or errors)[0]  # e.g. ALREADY_EXISTS from a replica, or too few replicas

    async def call(
        self,
        op: Op[Req, Resp],
        requests: Mapping[int, Req],
        timeout: float,
        *,
        fail_fast: bool = True,
        version: int = 0,
        train_epoch: int | None = None,
        placement_epoch: int | None = None,
        unacknowledged: Unacknowledged | None = None,
    ) -> Fanout[Resp]:
        """Run `op` on each shard group of `requests` concurrently.

        requests: by group index (for ops that take them, `Encoded` ones are sent as their bytes).
        fail_fast: raise the first failure at once and cancel the other calls; otherwise wait for
            every call and return the failures beside the results.
        version: of a versioned write; by default the next of this coordinator's clock.
        train_epoch: the training a search expects the shards at (None: any).
        placement_epoch: for routed writes, the newest placement the caller knows.
        unacknowledged: for writes, what to do with a group's replicas that applied a write that
            missed its quorum (see Unacknowledged).
        """
        if timeout <= 0:
            raise DeadlineExceeded("the call's deadline passed before the shards were asked")
        meta = CallMeta(
            timeout,
            version=(version or self.clock.next()) if op.versioned else 0,
            train_epoch=train_epoch,
            placement_epoch=placement_epoch if op.routed else None,
        )
        tasks = {
            asyncio.ensure_future(
                self._write(self.shards[i], op, req, meta, unacknowledged)
                if op.write
                else self._read(self.shards[i], op, req, meta)
            ): i
            for i, req in requests.items()
        }
        out: Fanout[Resp] = Fanout({}, {})
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    i = tasks[task]
                    try:
                        out.results[i] = task.result()
                    except grpc.aio.AioRpcError as err:
                        if fail_fast:
                            raise self.error(i, err) from None
                        out.failures[i] = err
        finally:
            for task in pending:
                task.cancel()
            # A fail-fast raise leaves the errors of calls that finished at the same time unread: read
            # them, or asyncio logs each as "Task exception was never retrieved" (with a traceback).
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()
        return out


class ShardView:
    """One placement of one collection: `ShardSet`'s calls over that placement's groups (0 to S - 1),
    with requests that name the collection renamed to its partition at that placement (`name@epoch`),
    and routed writes tagged with the newest placement epoch the coordinator knows of it (so a shard
    fencing a reshard accepts them: common/placement.py)."""

    def __init__(
        self,
        base: ShardSet,
        placement: Placement,
        public: str,
        physical: str,
        known_epoch: int,
        present: frozenset[int] | None = None,
    ) -> None:
        self.base = base
        self.placement = placement
        self.public, self.physical = public, physical
        self.known_epoch = known_epoch
        # Groups holding the partition (None: all): while a reshard creates its partitions, writes
        # skip the groups not reached yet (the copy, which starts after, brings them what they miss).
        self.present = present
        self.clock = base.clock

    @property
    def shards(self) -> list[ShardGroup]:
        return self.base.shards[: self.placement.shards]

    def __len__(self) -> int:
        return self.placement.shards

    def all(self, request: Req) -> dict[int, Req]:
        """The same request for every group of the placement."""
        return {i: request for i in range(self.placement.shards)}

    def _renamed(self, request: Any) -> Any:
        if self.physical == self.public or isinstance(request, Encoded):
            return request  # (Encoded requests are built with the partition's name)
        if isinstance(request, ShardQuery):
            return dataclasses.replace(request, collection=self.physical)
        for name in ("collection", "name"):
            if getattr(request, name, None) == self.public:
                copy = type(request)()
                copy.CopyFrom(request)
                setattr(copy, name, self.physical)
                return copy
        return request

    async def call(
        self,
        op: Op[Req, Resp],
        requests: Mapping[int, Req],
        timeout: float,
        *,
        fail_fast: bool = True,
        version: int = 0,
        train_epoch: int | None = None,
        unacknowledged: Unacknowledged | None = None,
    ) -> Fanout[Resp]:
        """`ShardSet.call` over this placement's groups."""
        present = self.present
        renamed: dict[int, Any] = {}
        once: dict[int, Any] = {}  # (the same request for many groups is renamed once: encoded once)
        for i, r in requests.items():
            if present is None or i in present:
                if id(r) not in once:
                    once[id(r)] = self._renamed(r)
                renamed[i] = once[id(r)]
        return await self.base.call(
            op,
            renamed,
            timeout,
            fail_fast=fail_fast,
            version=version,
            train_epoch=train_epoch,
            placement_epoch=self.known_epoch,
            unacknowledged=unacknowledged,
        )

    def error(self, index: int, err: grpc.aio.AioRpcError) -> VecshardError:
        return self.base.error(index, err)

    def first_error(self, failures: Mapping[int, grpc.aio.AioRpcError]) -> VecshardError:
        return self.base.first_error(failures)
