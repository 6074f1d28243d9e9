"""Add, Remove and SetPayload: checked whole, placed by id, written to every placement a
collection has (two during a reshard) at one version; a failed non-upsert Add is taken back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import (
    FailedPrecondition,
    InvalidArgument,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common import string_ids
from vecshard_server.common.placement import Placement
from vecshard_server.common.rpc import request_bytes
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator import offload
from vecshard_server.coordinator.admission import (
    add_cost,
    ids_cost,
    input_rows,
)
from vecshard_server.coordinator.api.base import Core, Family
from vecshard_server.coordinator.catalog import Collection
from vecshard_server.coordinator.fanout import Fanout, ShardView, Unacknowledged
from vecshard_server.coordinator.groups import ShardGroup
from vecshard_server.coordinator.id_inputs import RequestIds, conflict_mode, request_ids_of
from vecshard_server.coordinator.inputs import (
    normalize_rows,
    request_vectors,
)
from vecshard_server.coordinator.payload_inputs import check_filter, check_keys, check_payloads
from vecshard_server.coordinator.reshard import Resharder
from vecshard_server.coordinator.shard_api import (
    ADD,
    GET,
    REMOVE,
    ROLLBACK_ADD,
    SCROLL,
    SET_PAYLOAD,
    CallMeta,
    Encoded,
    ShardApi,
    message_of,
)
from vecshard_server.embedding.service import (
    check_embed_inputs,
)

log = logging.getLogger(__name__)

MAX_SCROLL = 10_000  # points per Scroll page
ROLLBACK_TIMEOUT_S = 5.0  # one RollbackAdd round
COALESCE_ROWS = 16  # searches of at most this many queries share fan-outs with concurrent ones
ROLLBACK_RETRY_S = 120.0  # unreachable groups are retried in the background this long


class Writes(Family):
    def __init__(self, core: Core, resharder: Resharder) -> None:
        super().__init__(core)
        self.resharder = resharder

    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if request.texts or request.images:  # per-request limits before anything is embedded or written
            check_embed_inputs(request.texts, request.images, self.settings)
        size = request_bytes(context)
        n = input_rows(request.vectors, len(request.texts), len(request.images), coll.spec.dim, size)
        check_payloads(request.payloads, len(request.string_ids) or len(request.ids) // 8, self.settings)
        with self.admission.admit(add_cost(request, coll.spec.dim, size), f"an Add of {n} vectors"):
            return await self._add(coll, request, context)

    async def _add(self, coll: Collection, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        mode = conflict_mode(request)
        id_bytes = request.ids
        heavy = len(id_bytes) + 4 * request.vectors.rows * request.vectors.cols > offload.INLINE_BYTES
        rids = await offload.run(
            heavy, request_ids_of, self.settings, coll.spec, id_bytes, request.string_ids, unique=True
        )
        vectors: wire.FloatArray | None = None
        given = False
        if payload_only(request):
            if len(request.payloads) != rids.size:
                raise InvalidArgument(
                    f"got {rids.size} ids for {len(request.payloads)} payloads: points without a vector need one "
                    "payload per id (an empty one is fine)"
                )
        else:
            vectors, given = await request_vectors(
                self.embeddings,
                coll.spec,
                request.vectors,
                request.texts,
                request.images,
                request.model_fingerprint,
                types_pb2.INPUT_ROLE_PASSAGE,
                "vectors",
                self._timeout(context),
                request_bytes(context),
            )
            heavy = heavy or vectors.nbytes > offload.INLINE_BYTES
        if rids.strings is not None and mode != pb.ON_CONFLICT_FAIL:  # (FAIL: a collision rolls the Add back)
            await self._check_string_ids(coll, rids, self._timeout(context))
        routed = []  # (the placement a reshard fills takes the Add as an upsert: see below)
        for n, (view, place, spec) in enumerate(coll.writers):
            part_mode = mode if n == 0 or mode == pb.ON_CONFLICT_SKIP else pb.ON_CONFLICT_REPLACE
            encode = heavy and self.shards.remote
            requests = await offload.run(
                heavy, self._add_requests, request, spec, place, rids, vectors, given, encode, part_mode
            )
            routed.append((view, requests))
        timeout = self._timeout(context)  # after embedding, which may have taken most of it
        # Every write carries a version (replicas keep the newest per id). A non-upsert Add is all or
        # nothing: shards commit only before their deadline, and a failure anywhere takes back, on
        # every group, exactly what this request wrote (its version). During a reshard the current
        # placement decides (ALREADY_EXISTS there refuses the Add); the new one then takes it as an
        # upsert of the same version.
        version = self.shards.clock.next()
        token = version if mode == pb.ON_CONFLICT_FAIL else 0

        async def commit() -> tuple[ShardView, Fanout[pb.AddResponse]]:
            done: list[tuple[ShardView, dict[int, Any]]] = []
            for n, (view, requests) in enumerate(routed):
                undo = _undo_add(token) if token and n == 0 else None  # (a group short of its quorum)
                out = await view.call(ADD, requests, timeout, fail_fast=False, version=version, unacknowledged=undo)
                done.append((view, requests))
                if n == 0:
                    # Concurrent Adds' replies arrive in any order: a group's count only grows by an Add
                    # (an older reply's smaller count once made a parallel upload report 4,644 of 5,000).
                    for s, resp in out.results.items():
                        coll.shard_counts[s] = max(coll.shard_counts[s], resp.count)
                    first = out
                if out.failures:
                    if token:
                        for v, reqs in done:
                            await self._rollback_add(coll, v, reqs, token, counted=v is coll.view)
                    return view, out
            return coll.view, first

        # Shielded: a caller that gives up (its deadline may pass before the shards' reserve-shortened
        # one) must not leave the fan-out or its rollback half done.
        view, out = await asyncio.shield(asyncio.ensure_future(commit()))
        if out.failures:
            raise view.first_error(out.failures)
        self.trainer.maybe_auto_train(coll)
        return pb.AddResponse(
            added=sum(r.added for r in out.results.values()),
            replaced=sum(r.replaced for r in out.results.values()),
            count=coll.count,
            skipped=sum(r.skipped for r in out.results.values()),
        )

    async def _check_string_ids(self, coll: Collection, rids: RequestIds, timeout: float) -> None:
        """FailedPrecondition when a string id's hash is held by another stored string (checked before a
        SKIP or REPLACE Add writes anything; the shards check again as they write)."""
        assert rids.strings is not None
        selector = ppb.PayloadSelector(enable=True, fields=[string_ids.KEY])
        requests, positions = {}, {}
        for s, pos in enumerate(coll.placement.split(rids.ids)):
            if pos.size:
                positions[s] = pos
                requests[s] = pb.GetRequest(
                    collection=coll.spec.name,
                    ids=wire.pack_ids(rids.ids[pos]),
                    allow_missing=True,
                    with_payload=selector,
                )
        out = await coll.view.call(GET, requests, timeout, fail_fast=False)
        if out.failures:
            raise self.shards.first_error(out.failures)
        for s, resp in out.results.items():
            for j, payload in zip(positions[s].tolist(), resp.payloads, strict=False):
                have, new = string_ids.key_of(payload), rids.strings[j]
                if have is not None and have != new:
                    raise FailedPrecondition(
                        f"string id {new!r} cannot be stored in collection {coll.spec.name!r}: its 64-bit hash is "
                        f"held by the stored id {have!r} (a hash collision); store it under another id"
                    )

    def _add_requests(
        self,
        request: pb.AddRequest,
        spec: CollectionSpec,
        placement: Placement,
        rids: RequestIds,
        vectors: wire.FloatArray | None,
        given: bool,
        encode: bool,
        mode: int,
    ) -> dict[int, pb.AddRequest | Encoded[pb.AddRequest]]:
        """Check the vectors and split the Add by shard (each part encoded here, when big)."""
        ids = rids.ids
        cosine = spec.metric.value == "cosine"
        if vectors is not None:
            if vectors.shape[0] != ids.size:
                raise InvalidArgument(f"got {ids.size} ids for {vectors.shape[0]} vectors: send one id per vector")
            wire.check_vectors(vectors, spec.dim)
            if cosine:
                vectors = normalize_rows(vectors, "vectors")
        parts = placement.split(ids)
        payloads: Any = request.payloads
        if spec.store_text and request.texts:
            payloads = [with_text(payloads[i] if payloads else None, t) for i, t in enumerate(request.texts)]
            check_payloads(payloads, ids.size, self.settings)  # (the stored text counts toward the limit)
        same = spec.name == request.collection and mode == conflict_mode(request) and rids.strings is None
        requests: dict[int, pb.AddRequest] = {}
        for s, pos in enumerate(parts):
            if pos.size == ids.size and given and not cosine and same:
                requests = {s: request}  # everything on one shard: forward the bytes as they came
                break
            if pos.size:
                requests[s] = pb.AddRequest(
                    collection=spec.name,
                    ids=wire.pack_ids(ids[pos]),
                    vectors=wire.pack_matrix(vectors[pos]) if vectors is not None else None,
                    upsert=mode == pb.ON_CONFLICT_REPLACE,
                    on_conflict=mode,  # type: ignore[arg-type]
                    payloads=[payloads[j] for j in pos.tolist()] if payloads else None,
                    string_ids=rids.part(pos).strings,
                )
        return {s: Encoded.of(r) if encode else r for s, r in requests.items()}

    async def _rollback_add(
        self, coll: Collection, view: ShardView, requests: dict[int, Any], token: int, counted: bool = True
    ) -> None:
        """Take a failed non-upsert Add back out of every group it was sent to: only the ids whose last
        write is still this Add (a concurrent acknowledged upsert of the same id stays). A shard also
        remembers the token as rolled back, so the Add arriving there later is refused: the order of
        the two does not matter. Groups that cannot be reached now are retried in the background."""
        pending = {
            s: spb.RollbackAddRequest(collection=message_of(req).collection, write_token=token, ids=message_of(req).ids)
            for s, req in requests.items()
        }
        counts = coll.shard_counts if counted else [0] * len(view)
        if await self._rollback_round(view, counts, pending):
            retry = asyncio.ensure_future(self._rollback_retries(view, counts, pending))
            self._background.add(retry)
            retry.add_done_callback(self._background.discard)

    async def _rollback_round(
        self, view: ShardView, counts: list[int], pending: dict[int, spb.RollbackAddRequest]
    ) -> bool:
        """One RollbackAdd to each pending group; drops the groups that answered. True if any remain."""
        out = await view.call(ROLLBACK_ADD, pending, ROLLBACK_TIMEOUT_S, fail_fast=False)
        for s, resp in out.results.items():
            counts[s] = max(0, counts[s] - resp.removed)
            del pending[s]
        return bool(pending)

    async def _rollback_retries(
        self, view: ShardView, counts: list[int], pending: dict[int, spb.RollbackAddRequest]
    ) -> None:
        deadline = time.monotonic() + ROLLBACK_RETRY_S
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            if not await self._rollback_round(view, counts, pending):
                return
        names = ", ".join(self.shards.shards[s].name for s in pending)
        log.error(
            "rollback of a failed Add could not reach %s for %.0fs: ids of that Add may remain there; remove "
            "them or retry the Add with upsert",
            names,
            ROLLBACK_RETRY_S,
        )

    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if request.HasField("filter"):
            if request.ids or request.string_ids:
                raise InvalidArgument("send ids or a filter, not both")
            check_filter(request.filter, self.settings, write="Remove")
            if coll.next is not None:  # a reshard copies: remove the matching ids from both placements
                ids = await self._matching_ids(coll, request.filter, self._timeout(context))
                return await self._remove_ids_everywhere(coll, RequestIds(ids, None), context)
            requests = coll.view.all(pb.RemoveRequest(collection=coll.spec.name, filter=request.filter))
            return self._removed(
                coll, [await coll.view.call(REMOVE, requests, self._timeout(context), fail_fast=False)]
            )
        if not request.ids and not request.string_ids:
            raise InvalidArgument("ids is empty: send the ids to remove, or a filter")
        n = len(request.ids) // 8 or len(request.string_ids)
        with self.admission.admit(ids_cost(8 * n), f"a Remove of {n} ids"):
            return await self._remove(coll, request, context)

    async def _remove(
        self, coll: Collection, request: pb.RemoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        id_bytes = request.ids
        rids = await offload.run(
            len(id_bytes) > offload.INLINE_BYTES // 8,
            request_ids_of,
            self.settings,
            coll.spec,
            id_bytes,
            request.string_ids,
            unique=False,
        )
        return await self._remove_ids_everywhere(coll, rids, context)

    async def _remove_ids_everywhere(
        self, coll: Collection, ids: RequestIds, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        """Remove `ids` from every placement the collection is written to (a removal of an id a reshard
        has not copied yet leaves a tombstone, which the copy cannot overtake)."""
        version = self.shards.clock.next()  # (one version for both placements of a reshard)
        outs = await asyncio.gather(
            *(
                view.call(
                    REMOVE,
                    self._remove_requests(spec, place, ids),
                    self._timeout(context),
                    fail_fast=False,
                    version=version,
                )
                for view, place, spec in coll.writers
            )
        )
        return self._removed(coll, outs)

    def _removed(self, coll: Collection, outs: Sequence[Fanout[pb.RemoveResponse]]) -> pb.RemoveResponse:
        """The current placement's answer (during a reshard, the new one's must have succeeded too)."""
        removed = 0
        for s, resp in outs[0].results.items():
            coll.shard_counts[s] = max(0, coll.shard_counts[s] - resp.removed)
            removed += resp.removed
        for out in outs:
            if out.failures:
                raise self.shards.first_error(out.failures)
        return pb.RemoveResponse(removed=removed)

    @staticmethod
    def _remove_requests(spec: CollectionSpec, placement: Placement, ids: RequestIds) -> dict[int, pb.RemoveRequest]:
        return {
            s: pb.RemoveRequest(collection=spec.name, ids=wire.pack_ids(ids.ids[pos]), string_ids=ids.part(pos).strings)
            for s, pos in enumerate(placement.split(ids.ids))
            if pos.size
        }

    async def SetPayload(
        self, request: pb.SetPayloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPayloadResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))  # NOT_FOUND first
        by_filter = request.HasField("filter")
        if by_filter == bool(request.ids or request.string_ids):
            raise InvalidArgument("send exactly one of ids and filter: the points whose payload to write")
        if request.mode not in pb.SetPayloadMode.values():
            raise InvalidArgument(f"mode {request.mode} is not MERGE, OVERWRITE or DELETE_KEYS")
        if request.mode == pb.SET_PAYLOAD_MODE_DELETE_KEYS:
            if not request.keys or request.payload.fields:
                raise InvalidArgument("DELETE_KEYS takes the keys to delete in `keys`, and no payload")
            check_keys(request.keys, "keys")
        elif request.keys:
            raise InvalidArgument("keys are for DELETE_KEYS; MERGE and OVERWRITE take a payload")
        check_payloads([request.payload], 1, self.settings)
        if by_filter:
            check_filter(request.filter, self.settings, write="SetPayload")
        rids = None
        if not by_filter:
            rids = request_ids_of(self.settings, coll.spec, request.ids, request.string_ids, unique=False)
        ids = rids.ids if rids is not None else None

        def requests_of(view: ShardView, placement: Placement) -> dict[int, Any]:
            if rids is None:
                return view.all(request)
            requests = {}
            for s, pos in enumerate(placement.split(rids.ids)):
                if pos.size:
                    part = pb.SetPayloadRequest()
                    part.CopyFrom(request)
                    part.ids = wire.pack_ids(rids.ids[pos])
                    del part.string_ids[:]
                    part.string_ids.extend(rids.part(pos).strings or ())
                    requests[s] = part
            return requests

        version = self.shards.clock.next()
        with self.admission.admit(ids_cost(8 * (rids.size if rids is not None else 0)), "a SetPayload"):
            if coll.next is not None:
                # A reshard copies: a partial write on the new placement could land on a point not
                # copied yet (ignored there) or copied from before it. Write the current placement,
                # then copy the points it changed (whole, with their versions) to the new one.
                if ids is None:
                    ids = await self._matching_ids(coll, request.filter, self._timeout(context))
                out = await coll.view.call(
                    SET_PAYLOAD,
                    requests_of(coll.view, coll.placement),
                    self._timeout(context),
                    fail_fast=False,
                    version=version,
                )
                if out.failures:
                    raise self.shards.first_error(out.failures)
                await self.resharder.recopy(coll, ids, self._timeout(context))
                return pb.SetPayloadResponse(updated=sum(r.updated for r in out.results.values()))
            outs = await asyncio.gather(
                *(
                    view.call(
                        SET_PAYLOAD, requests_of(view, place), self._timeout(context), fail_fast=False, version=version
                    )
                    for view, place, _ in coll.writers
                )
            )
        for out in outs:
            if out.failures:
                raise self.shards.first_error(out.failures)
        return pb.SetPayloadResponse(updated=sum(r.updated for r in outs[0].results.values()))

    async def _matching_ids(self, coll: Collection, f: ppb.Filter, timeout: float) -> wire.IdArray:
        """Every id of the collection's current placement whose payload matches `f` (Scroll pages)."""
        found: list[wire.IdArray] = []
        for s in range(len(coll.view)):
            start = 0
            while True:
                req = pb.ScrollRequest(collection=coll.spec.name, filter=f, start_id=start, limit=MAX_SCROLL)
                page = (await coll.view.call(SCROLL, {s: req}, timeout)).results[s]
                found.append(wire.unpack_ids(page.ids))
                if page.done or not page.ids:
                    break
                start = page.next_start_id
        return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)


def payload_only(request: pb.AddRequest) -> bool:
    """An Add of points without a vector: payloads, and no vectors, texts or images."""
    return (
        not request.vectors.rows
        and not request.vectors.data
        and not request.texts
        and not request.images
        and bool(request.payloads)
    )


def with_text(payload: ppb.Payload | None, text: str) -> ppb.Payload:
    """The payload of a point added from `text` to a store_text collection: "text" set unless given."""
    out = ppb.Payload()
    if payload is not None:
        out.CopyFrom(payload)
    if "text" not in out.fields:
        out.fields["text"].string_value = text
    return out


def _undo_add(token: int) -> Unacknowledged:
    """What a non-upsert Add does with the replicas of a group that applied it when the group's
    write quorum was not reached: takes it back out of them (RollbackAdd of its version)."""

    async def undo(group: ShardGroup, request: Any, applied: list[ShardApi], timeout: float) -> None:
        message = message_of(request)
        rollback = spb.RollbackAddRequest(collection=message.collection, write_token=token, ids=message.ids)
        await asyncio.gather(*(r.rollback_add(rollback, CallMeta(timeout)) for r in applied), return_exceptions=True)

    return undo
