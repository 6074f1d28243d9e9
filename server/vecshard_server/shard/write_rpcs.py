"""The internal Shard RPCs that change a partition: each checks its request, then runs the write
through `_logged` (logged, applied, fsynced) on the write pool."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Unavailable,
)
from vecshard.payload import payload_from_proto
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.versions import MAX_VERSION
from vecshard_server.shard.add_inputs import add_inputs, upserts
from vecshard_server.shard.checks import (
    MAX_ABORTED,
    MAX_EPOCH,
    check_add,
    check_centroids,
    deadline_of,
)
from vecshard_server.shard.core import ShardCore, WriteConditions, vectorless_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class WriteRpcs(ShardCore):
    async def CreateCollection(
        self, request: types_pb2.CollectionConfig, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        return await self._run(self._writes, self._create, request, self._version(context))

    async def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropCollectionResponse:
        await self._run(self._writes, self._drop, request.name, self._version(context))
        return pb.DropCollectionResponse()

    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        part = self._get(request.collection)
        ids, vectors, payloads, rules = add_inputs(part.spec, request, live=True)
        upsert = upserts(request)
        version = self._version(context)
        if version in part.aborted:
            raise DeadlineExceeded("this Add was rolled back by its coordinator before it arrived: nothing written")
        added, replaced, skipped = await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(add=request, version=version),
            lambda journal: part.add(ids, vectors, upsert, journal, version, payloads, rules),
            WriteConditions(deadline=deadline_of(context), token=version, fence=self._known_epoch(context)),
        )
        return pb.AddResponse(added=added, replaced=replaced, count=part.count, skipped=skipped)

    async def UpdateVectors(
        self, request: pb.UpdateVectorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateVectorsResponse:
        part = self._get(request.collection)
        ids = wire.unpack_ids(request.ids)
        vectors = wire.unpack_matrix(request.vectors)
        check_add(part.spec, ids, vectors)
        keys = _keys_of(part.spec.string_ids, request.string_ids, ids.size)
        version = self._version(context)
        updated = await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(update_vectors=request, version=version),
            lambda journal: part.update_vectors(ids, vectors, keys, journal, version),
            WriteConditions(fence=self._known_epoch(context)),
        )
        return pb.UpdateVectorsResponse(updated=updated)

    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        part = self._get(request.collection)
        version = self._version(context)
        if request.HasField("filter"):
            resolved: list[np.ndarray] = []
            removed = await self._run(
                self._writes,
                self._logged,
                part,
                lambda: spb.WalRecord(
                    remove=pb.RemoveRequest(collection=part.spec.name, ids=wire.pack_ids(resolved[-1])), version=version
                ),
                lambda journal: part.remove_matching(request.filter, journal, version, resolved),
                WriteConditions(record_at_commit=True, fence=self._known_epoch(context)),
            )
            return pb.RemoveResponse(removed=removed)
        ids = wire.unpack_ids(request.ids)
        keys = _keys_of(part.spec.string_ids, request.string_ids, ids.size)
        removed = await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(remove=request, version=version),
            lambda journal: part.remove(ids, journal, version, keys=keys),
            WriteConditions(fence=self._known_epoch(context)),
        )
        return pb.RemoveResponse(removed=removed)

    async def RollbackAdd(
        self, request: spb.RollbackAddRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        if not request.write_token:
            raise InvalidArgument("write_token is 0: send the token the Add was tagged with")
        part = self._get(request.collection)
        if request.write_token > MAX_VERSION:
            raise InvalidArgument(f"write_token {request.write_token} is above 2**63 - 1: no Add has such a version")
        ids = wire.unpack_ids(request.ids)
        token = request.write_token
        part.forget_add(token, MAX_ABORTED)  # the Add, if it arrives after this, is refused
        removed = await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(
                remove=pb.RemoveRequest(collection=part.spec.name, ids=request.ids), version=token, rollback=True
            ),
            lambda journal: part.remove(ids, journal, token, rollback=True),
        )
        if removed:
            log.info("rolled back %d ids of a failed Add in %s", removed, part.spec.name)
        return pb.RemoveResponse(removed=removed)

    async def SetPayload(
        self, request: pb.SetPayloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPayloadResponse:
        part = self._get(request.collection)
        version = self._version(context)
        ids = wire.unpack_ids(request.ids) if not request.HasField("filter") else None
        f = request.filter if request.HasField("filter") else None
        string_ids = _keys_of(part.spec.string_ids, request.string_ids, ids.size if ids is not None else 0)
        patch = payload_from_proto(request.payload)
        keys = list(request.keys)
        resolved: list[np.ndarray] = []

        def record() -> spb.WalRecord:
            logged = pb.SetPayloadRequest(
                collection=part.spec.name,
                ids=wire.pack_ids(resolved[-1]),
                payload=request.payload,
                mode=request.mode,
                keys=keys,
            )
            return spb.WalRecord(set_payload=logged, version=version)

        updated = await self._run(
            self._writes,
            self._logged,
            part,
            record,
            lambda journal: part.set_payload(
                ids, f, request.mode, patch, keys, journal, version, resolved, string_ids=string_ids
            ),
            WriteConditions(record_at_commit=True, fence=self._known_epoch(context)),
        )
        return pb.SetPayloadResponse(updated=updated)

    async def CreatePayloadIndex(
        self, request: pb.CreatePayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(create_index=request),
            lambda journal: part.create_payload_index(
                request.field, request.type, journal, request.text if request.HasField("text") else None
            ),
        )
        return self._state(part)

    async def DropPayloadIndex(
        self, request: pb.DropPayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(drop_index=request),
            lambda journal: part.drop_payload_index(request.field, journal),
        )
        return self._state(part)

    async def Import(self, request: spb.ImportRequest, context: grpc.aio.ServicerContext) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        try:
            ids, vectors, versions, dead, dead_versions = self._entries(request.page)
        except Unavailable:
            raise InvalidArgument(
                "the page is malformed: ids, vectors, versions, payloads and tombstones must line up, as an "
                "Export page's do"
            ) from None
        if ids.size:
            less = vectorless_of(request.page, ids.size)
            check_add(part.spec, ids[~less], vectors[~less])
        if dead.size:
            wire.check_ids(dead)
        for v in (versions, dead_versions):
            if v.size and (v.min() <= 0 or v.max() > MAX_VERSION):
                raise InvalidArgument(f"versions must be between 1 and {MAX_VERSION}: send an Export page's")
        await self._run(self._writes, self._apply_page, part, request.page)
        return self._state(part)

    async def InstallQuantizer(
        self, request: spb.InstallQuantizerRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        mode = request.mode
        if mode not in (spb.INSTALL_MODE_ONE_STEP, spb.INSTALL_MODE_PREPARE, spb.INSTALL_MODE_ACTIVATE):
            raise InvalidArgument(f"mode {mode} is not an InstallMode: send ONE_STEP (0), PREPARE (1) or ACTIVATE (2)")
        if request.epoch >= MAX_EPOCH:
            raise InvalidArgument(
                f"epoch {request.epoch} is out of range: a collection's trainings are epochs 1, 2, ... below 2**63 "
                "(0: the shard's next)"
            )
        if mode == spb.INSTALL_MODE_PREPARE:
            centroids = wire.unpack_matrix(request.centroids, "centroids")
            check_centroids(part.spec, centroids)
            await self._run(
                self._writes,
                part.prepare_quantizer,
                centroids,
                request.epoch,
                request.train_id,
                request.decide,
                request.codec,
            )
            return self._state(part)
        epoch = request.epoch or part.train_epoch + 1
        if mode == spb.INSTALL_MODE_ACTIVATE:

            def record() -> spb.WalRecord:  # under the write lock: the prepared centroids go to the log
                centroids = part.prepared_centroids(epoch, request.train_id)
                return spb.WalRecord(
                    install=spb.InstallQuantizerRequest(
                        collection=part.spec.name,
                        centroids=wire.pack_matrix(centroids),
                        epoch=epoch,
                        train_id=request.train_id,
                        codec=part.prepared_codec(epoch, request.train_id),
                    )
                )

            await self._run(
                self._writes,
                self._logged,
                part,
                record,
                lambda journal: part.activate_quantizer(epoch, request.train_id, journal),
                WriteConditions(record_at_commit=True),
            )
        else:
            centroids = wire.unpack_matrix(request.centroids, "centroids")
            check_centroids(part.spec, centroids)
            logged = spb.InstallQuantizerRequest(
                collection=part.spec.name,
                centroids=request.centroids,
                epoch=epoch,
                train_id=request.train_id,
                codec=request.codec,
            )
            await self._run(
                self._writes,
                self._logged,
                part,
                lambda: spb.WalRecord(install=logged),
                lambda journal: part.install_quantizer(centroids, journal, epoch, request.train_id, request.codec),
            )
        log.info(
            "collection %s: installed training epoch %d (%d centroids), %d vectors re-indexed",
            part.spec.name,
            part.train_epoch,
            part.spec.nlist,
            part.count,
        )
        self._last_checkpoint = 0.0  # snapshot soon: replaying an install means re-indexing everything
        return self._state(part)


def _keys_of(string_ids: bool, keys: Sequence[str], n: int) -> list[str] | None:
    """The string ids a request names its points by (None: by int ids), one per id."""
    if not keys:
        return None
    if not string_ids or len(keys) != n:
        raise InvalidArgument("string_ids: one per id, and only for a string-id collection")
    return list(keys)
