"""The coordinator's connections to its shard groups and the fan-out of one call to many of them.

A shard group is R replicas holding the same partition. Writes go to every replica and succeed
once `write_quorum` of them (default: all) have persisted them. Reads go to one replica, taken
round-robin among those not recently found down; when it fails with UNAVAILABLE or
DEADLINE_EXCEEDED the next replica is asked, and when it has not answered after `hedge_delay_s`
another is asked too (the first answer wins). A group fails only when no replica can answer.

Python gRPC does not forward deadlines: every shard call gets the caller's remaining time.
Shard failures become coordinator errors here, naming the group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vecshard.errors import Cancelled, DeadlineExceeded, Unavailable, VecshardError, error_for
from vecshard.v1 import shard_pb2, shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.observability import (
    REPLICAS_DIVERGED,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    SHARD_CALL_SECONDS,
    span,
    trace_headers,
)
from vecshard_server.common.placement import Placement
from vecshard_server.common.rpc import (
    PLACEMENT_EPOCH,
    PLACEMENT_EPOCH_HEADER,
    TRAIN_EPOCH,
    TRAIN_EPOCH_HEADER,
    WRITE_TOKEN,
    WRITE_TOKEN_HEADER,
)
from vecshard_server.common.security import internal_metadata, shard_channel
from vecshard_server.common.versions import WriteClock

log = logging.getLogger(__name__)

# Per-shard failures that allow_partial tolerates (and reads retry on another replica); any other
# code fails the call.
TOLERABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
WRITES = frozenset(
    {
        "CreateCollection",
        "DropCollection",
        "Add",
        "Remove",
        "InstallQuantizer",
        "RollbackAdd",
        "SetPayload",
        "CreatePayloadIndex",
        "DropPayloadIndex",
        "Import",
    }
)
# Writes a shard fences during a reshard (x-vecshard-placement-epoch; ShardService._fenced).
ROUTED = frozenset({"Add", "Remove", "SetPayload"})
DOWN_FOR_S = 1.0  # a replica that answered UNAVAILABLE is tried last for this long
_SHARD_SERVICE = shard_pb2.DESCRIPTOR.services_by_name["Shard"]


@dataclass(frozen=True)
class Encoded:
    """A shard request already serialized (on a worker thread, when it is big): sent as these bytes
    to every shard it goes to, instead of being serialized again, on the event loop, per call.

    raw_reply: the reply comes back as its bytes, for the caller to parse where it chooses (a big
    reply takes tens of milliseconds to parse: too long for the event loop).
    """

    message: Any
    data: bytes
    raw_reply: bool = False

    @classmethod
    def of(cls, message: Any, raw_reply: bool = False) -> Encoded:
        return cls(message, message.SerializeToString(), raw_reply)


@dataclass
class Replica:
    address: str
    channel: grpc.aio.Channel
    stub: shard_pb2_grpc.ShardStub
    down_until: float = 0.0
    _raw: dict[tuple[str, bool], Any] = field(default_factory=dict, repr=False)

    def raw(self, method: str, raw_reply: bool) -> Any:
        """`method` taking already serialized request bytes (for `Encoded` requests), and giving back
        the reply's bytes when `raw_reply`."""
        call = self._raw.get((method, raw_reply))
        if call is None:
            output = message_factory.GetMessageClass(_SHARD_SERVICE.methods_by_name[method].output_type)
            call = self._raw[method, raw_reply] = self.channel.unary_unary(
                f"/{_SHARD_SERVICE.full_name}/{method}",
                request_serializer=None,  # bytes go out as they are
                response_deserializer=None if raw_reply else output.FromString,
                _registered_method=True,
            )
        return call


@dataclass
class ShardGroup:
    index: int
    replicas: list[Replica]
    _next: int = field(default=0, repr=False)

    @property
    def name(self) -> str:
        return f"shard-{self.index} ({', '.join(r.address for r in self.replicas)})"

    def read_order(self, behind: frozenset[str] = frozenset()) -> list[Replica]:
        """Round-robin over the replicas, those recently found down last, without those `behind`
        (known to have missed acknowledged writes of the collection read) unless none is left."""
        n = len(self.replicas)
        self._next = (self._next + 1) % n
        ring = [self.replicas[(self._next + i) % n] for i in range(n)]
        now = time.monotonic()
        current = [r for r in ring if r.address not in behind] or ring
        return sorted(current, key=lambda r: r.down_until > now)


@dataclass
class Fanout:
    """What a fan-out returned: results and failures by shard group index."""

    results: dict[int, Any]
    failures: dict[int, grpc.aio.AioRpcError]


# Writes that carry a version (x-vecshard-write-token): per id, or per collection (incarnations and
# drops), replicas keep the newest (docs/operations.md, Write versions).
VERSIONED = frozenset({"Add", "Remove", "CreateCollection", "DropCollection", "SetPayload"})

REPAIR_TIMEOUT_S = 300.0


def collection_of(request: Any) -> str:
    """The collection a shard request is about ("" for none, e.g. ListCollections)."""
    message = request.message if isinstance(request, Encoded) else request
    for name in ("collection", "name"):
        value = getattr(message, name, "")
        if isinstance(value, str) and value:
            return value
    return ""


class ShardSet:
    """Channels to the shard groups, in placement order."""

    def __init__(self, groups: list[str], settings: Settings, local: Sequence[Any] = ()) -> None:
        """groups: each group's replica addresses, comma-separated. local: in-process shards
        (`coordinator.local.LocalReplica`), one group each, after those."""
        if not groups and not local:
            raise ValueError("a coordinator needs at least one shard address")
        self.settings = settings
        self.shards = [
            ShardGroup(i, [self._replica(addr.strip()) for addr in group.split(",") if addr.strip()])
            for i, group in enumerate(groups)
        ]
        self.shards += [ShardGroup(len(groups) + i, [replica]) for i, replica in enumerate(local)]
        # (group, replica address, collection) -> acknowledged writes that replica missed since its
        # last resync; reads avoid it, `repair` resyncs it from a replica that has them.
        self.behind: dict[tuple[int, str, str], int] = {}
        self._internal = internal_metadata(settings)
        self.clock = WriteClock()  # the versions of this coordinator's writes
        self.repair_needed = asyncio.Event()

    async def repair(self) -> None:
        """Forever: resync every replica known to have missed acknowledged writes from a peer that
        has them (Resync RPC), retrying every second while it cannot be reached."""
        while True:
            await self.repair_needed.wait()
            self.repair_needed.clear()
            for (g, address, collection), misses in list(self.behind.items()):
                group = self.shards[g]
                peers = [
                    r for r in group.replicas if r.address != address and (g, r.address, collection) not in self.behind
                ]
                target = next((r for r in group.replicas if r.address == address), None)
                if not peers or target is None:
                    continue
                try:
                    await target.stub.Resync(
                        shard_pb2.ResyncRequest(collection=collection, peer=peers[0].address),
                        timeout=REPAIR_TIMEOUT_S,
                        metadata=self._internal or None,
                    )
                    done = True
                except grpc.aio.AioRpcError as err:
                    done = err.code() == grpc.StatusCode.NOT_FOUND  # dropped everywhere meanwhile
                    if not done:
                        log.warning(
                            "resync of %s on %s from %s failed: %s",
                            collection,
                            address,
                            peers[0].address,
                            err.details(),
                        )
                if done and self.behind.get((g, address, collection)) == misses:  # none missed since
                    del self.behind[(g, address, collection)]
                    log.info("replica %s of %s is in sync again for %s", address, group.name, collection)
            if self.behind:
                await asyncio.sleep(1.0)
                self.repair_needed.set()

    async def anti_entropy(self, every_s: float) -> None:
        """Forever, every `every_s`: compare the replicas of each group collection by collection
        (count, digest, training epoch). A difference seen twice, a second apart, with nothing changed
        in between, is divergence (a replica missed writes while its coordinator died, say): each
        replica then merges every other one (Resync: per id the newest version wins, so the merge
        loses no acknowledged write whichever replica missed it). A difference that outlives the
        merges is shown as vecshard_replicas_diverged."""
        while every_s > 0:
            await asyncio.sleep(every_s)
            for group in self.shards:
                if len(group.replicas) > 1:
                    try:
                        await self._compare(group)
                    except grpc.aio.AioRpcError:
                        pass  # a replica is down: nothing to compare now

    async def _states(self, group: ShardGroup) -> list[dict[str, tuple[int, int, int]]]:
        answers = await asyncio.gather(
            *(
                r.stub.ListCollections(pb.ListCollectionsRequest(), timeout=10, metadata=self._internal or None)
                for r in group.replicas
            )
        )
        return [{s.config.name: (s.count, s.digest, s.train_epoch) for s in a.collections} for a in answers]

    async def _compare(self, group: ShardGroup) -> None:
        first = await self._states(group)
        names = set().union(*first)
        suspects = {n for n in names if len({st.get(n) for st in first}) > 1}
        if not suspects:
            for n in names:
                REPLICAS_DIVERGED.labels(str(group.index), n).set(0)
            return
        await asyncio.sleep(1.0)
        second = await self._states(group)
        for n in sorted(suspects):
            now = [st.get(n) for st in second]
            if now != [st.get(n) for st in first] or len(set(now)) == 1:
                continue  # writes in flight, or converged
            if any((group.index, r.address, n) in self.behind for r in group.replicas):
                continue  # being repaired
            log.warning("%s: replicas differ on %s (count, digest, epoch: %s): merging them", group.name, n, now)
            merged = await self.merge_replicas(group, n)
            REPLICAS_DIVERGED.labels(str(group.index), n).set(0 if merged else 1)

    async def merge_replicas(self, group: ShardGroup, collection: str) -> bool:
        """Make the group's replicas of `collection` equal: each merges every other (Resync; the first
        replica then holds all, and every later one merges it). False if a merge failed."""
        ok = True
        for target in group.replicas:
            for peer in group.replicas:
                if peer is target:
                    continue
                try:
                    await target.stub.Resync(
                        shard_pb2.ResyncRequest(collection=collection, peer=peer.address),
                        timeout=REPAIR_TIMEOUT_S,
                        metadata=self._internal or None,
                    )
                except grpc.aio.AioRpcError as err:
                    ok = False
                    log.warning(
                        "merge of %s into %s from %s failed: %s",
                        collection,
                        target.address,
                        peer.address,
                        err.details(),
                    )
        return ok

    def _replica(self, address: str) -> Replica:
        # Reconnect within a second of a replica coming back (gRPC's default backoff grows to 120 s).
        options = [
            *self.settings.grpc_options(),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        channel = shard_channel(address, self.settings, options)
        return Replica(address, channel, shard_pb2_grpc.ShardStub(channel))

    def __len__(self) -> int:
        return len(self.shards)

    async def close(self) -> None:
        await asyncio.gather(*(r.channel.close() for g in self.shards for r in g.replicas if r.channel is not None))

    async def wait_serving(self, timeout: float) -> list[str]:
        """Wait up to `timeout` seconds for a SERVING replica in every group; returns the groups without."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        async def serving(r: Replica) -> bool:
            if r.channel is None:  # a local shard
                return bool(getattr(r, "serving", False))
            try:
                resp = await health_pb2_grpc.HealthStub(r.channel).Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
            except grpc.aio.AioRpcError:
                return False

        async def one(g: ShardGroup) -> str | None:
            while loop.time() < deadline:
                if any(await asyncio.gather(*(serving(r) for r in g.replicas))):
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

    async def _ask(self, replica: Replica, method: str, request: Any, timeout: float) -> Any:
        started = time.perf_counter()
        try:
            with span(f"shard/{method}", attributes={"vecshard.shard": replica.address}):
                metadata = [*trace_headers(), *([(REQUEST_ID_HEADER, REQUEST_ID.get())] if REQUEST_ID.get() else [])]
                metadata.extend(self._internal)
                if method in VERSIONED and WRITE_TOKEN.get():
                    metadata.append((WRITE_TOKEN_HEADER, str(WRITE_TOKEN.get())))
                if method == "Search" and TRAIN_EPOCH.get() is not None:
                    metadata.append((TRAIN_EPOCH_HEADER, str(TRAIN_EPOCH.get())))
                if method in ROUTED and PLACEMENT_EPOCH.get() is not None:
                    metadata.append((PLACEMENT_EPOCH_HEADER, str(PLACEMENT_EPOCH.get())))
                if replica.channel is None:  # a local shard: the request object as it is, no gRPC
                    return await cast(Any, replica).call(method, request, timeout, metadata)
                if isinstance(request, Encoded):
                    call = replica.raw(method, request.raw_reply)
                    return await call(request.data, timeout=timeout, metadata=metadata or None)
                return await getattr(replica.stub, method)(request, timeout=timeout, metadata=metadata or None)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                replica.down_until = time.monotonic() + DOWN_FOR_S
            raise
        finally:
            SHARD_CALL_SECONDS.labels(replica.address, method).observe(time.perf_counter() - started)

    async def _read(self, group: ShardGroup, method: str, request: Any, timeout: float) -> Any:
        collection = collection_of(request)
        behind = frozenset(a for g, a, c in self.behind if g == group.index and c == collection)
        order = group.read_order(behind)
        if len(order) == 1:
            return await self._ask(order[0], method, request, timeout)
        deadline = time.monotonic() + timeout
        pending: set[asyncio.Task[Any]] = set()
        asked = 0
        last: grpc.aio.AioRpcError | None = None

        def ask_next() -> None:
            nonlocal asked
            pending.add(asyncio.ensure_future(self._ask(order[asked], method, request, deadline - time.monotonic())))
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

    async def _write(self, group: ShardGroup, method: str, request: Any, timeout: float) -> Any:
        if len(group.replicas) == 1:
            return await self._ask(group.replicas[0], method, request, timeout)
        try:
            outcomes = await asyncio.gather(
                *(self._ask(r, method, request, timeout) for r in group.replicas), return_exceptions=True
            )
        except asyncio.CancelledError:
            # The caller gave up with the replicas' outcomes unknown: some may have applied the write.
            # Make them equal again: the others are resynced from the first replica.
            collection = collection_of(request)
            if collection and method != "RollbackAdd":
                for r in group.replicas[1:]:
                    key = (group.index, r.address, collection)
                    self.behind[key] = self.behind.get(key, 0) + 1
                self.repair_needed.set()
            raise
        ok = [(r, o) for r, o in zip(group.replicas, outcomes, strict=True) if not isinstance(o, BaseException)]
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        refused = [e for e in errors if not isinstance(e, grpc.aio.AioRpcError) or e.code() not in TOLERABLE]
        quorum = min(self.settings.write_quorum or len(group.replicas), len(group.replicas))
        acknowledged = not refused and len(ok) >= quorum
        message = request.message if isinstance(request, Encoded) else request
        rolled_back = not acknowledged and method == "Add" and not message.upsert and bool(WRITE_TOKEN.get())
        if ok and errors and not rolled_back:
            # Some replicas applied it and some may not have (timed out, unreachable): whether the
            # write is acknowledged or not, they must end up equal. Resync those from one that has it.
            collection = collection_of(request)
            for r, o in zip(group.replicas, outcomes, strict=True):
                if isinstance(o, grpc.aio.AioRpcError) and o.code() in TOLERABLE and collection:
                    key = (group.index, r.address, collection)
                    self.behind[key] = self.behind.get(key, 0) + 1
                    self.repair_needed.set()
        if acknowledged:
            if errors:
                log.warning(
                    "%s on %s: %d of %d replicas (quorum %d)", method, group.name, len(ok), len(group.replicas), quorum
                )
            return ok[0][1]
        if rolled_back and ok:
            # Not acknowledged: take this Add's ids back out of the replicas that stored them.
            undo = shard_pb2.RollbackAddRequest(
                collection=message.collection, write_token=WRITE_TOKEN.get(), ids=message.ids
            )
            await asyncio.gather(*(self._ask(r, "RollbackAdd", undo, timeout) for r, _ in ok), return_exceptions=True)
        raise (refused or errors)[0]  # e.g. ALREADY_EXISTS from a replica, or too few replicas

    async def call(
        self,
        method: str,
        requests: Mapping[int, Any],
        timeout: float,
        *,
        fail_fast: bool = True,
        version: int = 0,
    ) -> Fanout:
        """Call `method` on each shard group of `requests` concurrently.

        requests: by group index, a message or an `Encoded` one (sent as its bytes; with raw_reply,
            the results are the replies' bytes).
        fail_fast: raise the first failure at once and cancel the other calls; otherwise wait for
        every call and return the failures beside the results.
        version: of a write (VERSIONED), sent to the shards with it; by default the next of this
            coordinator's clock.
        """
        if timeout <= 0:
            raise DeadlineExceeded("the call's deadline passed before the shards were asked")
        each = self._write if method in WRITES else self._read
        stamped = WRITE_TOKEN.set(version or self.clock.next()) if method in VERSIONED else None
        try:  # the tasks copy the context as they are created: they send the version
            tasks = {
                asyncio.ensure_future(each(self.shards[i], method, req, timeout)): i for i, req in requests.items()
            }
        finally:
            if stamped is not None:
                WRITE_TOKEN.reset(stamped)
        out = Fanout({}, {})
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

    def first_error(self, failures: Mapping[int, grpc.aio.AioRpcError]) -> VecshardError:
        i = min(failures)
        return self.error(i, failures[i])

    def all(self, request: Any) -> dict[int, Any]:
        """The same request for every shard group."""
        return {g.index: request for g in self.shards}


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

    def all(self, request: Any) -> dict[int, Any]:
        """The same request for every group of the placement."""
        return {i: request for i in range(self.placement.shards)}

    def _renamed(self, request: Any) -> Any:
        if self.physical == self.public or isinstance(request, Encoded):
            return request  # (Encoded requests are built with the partition's name)
        for name in ("collection", "name"):
            if getattr(request, name, None) == self.public:
                copy = type(request)()
                copy.CopyFrom(request)
                setattr(copy, name, self.physical)
                return copy
        return request

    async def call(
        self, method: str, requests: Mapping[int, Any], timeout: float, *, fail_fast: bool = True, version: int = 0
    ) -> Fanout:
        """`ShardSet.call` over this placement's groups."""
        present = self.present
        renamed = {i: self._renamed(r) for i, r in requests.items() if present is None or i in present}
        token = PLACEMENT_EPOCH.set(self.known_epoch)
        try:
            return await self.base.call(method, renamed, timeout, fail_fast=fail_fast, version=version)
        finally:
            PLACEMENT_EPOCH.reset(token)

    def error(self, index: int, err: grpc.aio.AioRpcError) -> VecshardError:
        return self.base.error(index, err)

    def first_error(self, failures: Mapping[int, grpc.aio.AioRpcError]) -> VecshardError:
        return self.base.first_error(failures)
