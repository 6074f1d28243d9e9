"""UpdateVectors: new vectors for stored points (a point added without one, or a re-embedding),
keeping their payloads; placed and versioned like an Add's upsert."""

from __future__ import annotations

import asyncio

import grpc

from vecshard import wire
from vecshard.errors import InvalidArgument
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.rpc import request_bytes
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.coordinator import offload
from vecshard_server.coordinator.admission import input_rows
from vecshard_server.coordinator.api.base import Family
from vecshard_server.coordinator.id_inputs import RequestIds, request_ids_of
from vecshard_server.coordinator.inputs import normalize_rows, request_vectors
from vecshard_server.coordinator.shard_api import UPDATE_VECTORS
from vecshard_server.embedding.service import check_embed_inputs


class VectorUpdates(Family):
    async def UpdateVectors(
        self, request: pb.UpdateVectorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateVectorsResponse:
        coll = await self.catalog.get(request.collection, lambda: self._timeout(context))
        if request.texts or request.images:
            check_embed_inputs(request.texts, request.images, self.settings)
        spec = coll.spec
        rids = request_ids_of(self.settings, spec, request.ids, request.string_ids, unique=True)
        size = request_bytes(context)
        n = input_rows(request.vectors, len(request.texts), len(request.images), spec.dim, size)
        if not n:
            raise InvalidArgument("send the new vectors (or texts/images for a model-bound collection), one per id")
        with self.admission.admit(8 * rids.size + 4 * n * spec.dim, f"an UpdateVectors of {n} vectors"):
            vectors, _ = await request_vectors(
                self.embeddings,
                spec,
                request.vectors,
                request.texts,
                request.images,
                request.model_fingerprint,
                types_pb2.INPUT_ROLE_PASSAGE,
                "vectors",
                self._timeout(context),
                size,
            )
            if vectors.shape[0] != rids.size:
                raise InvalidArgument(f"got {rids.size} ids for {vectors.shape[0]} vectors: send one id per vector")
            vectors = await offload.run(vectors.nbytes > offload.INLINE_BYTES, _checked, spec, vectors)
            version = self.shards.clock.next()
            outs = await asyncio.gather(
                *(
                    view.call(
                        UPDATE_VECTORS,
                        _requests(s, place.split(rids.ids), rids, vectors),
                        self._timeout(context),
                        fail_fast=False,
                        version=version,
                    )
                    for view, place, s in coll.writers
                )
            )
        for out in outs:
            if out.failures:
                raise self.shards.first_error(out.failures)
        return pb.UpdateVectorsResponse(updated=sum(r.updated for r in outs[0].results.values()))


def _checked(spec: CollectionSpec, vectors: wire.FloatArray) -> wire.FloatArray:
    wire.check_vectors(vectors, spec.dim)
    return normalize_rows(vectors, "vectors") if spec.metric.value == "cosine" else vectors


def _requests(
    spec: CollectionSpec, parts: list[wire.IdArray], rids: RequestIds, vectors: wire.FloatArray
) -> dict[int, pb.UpdateVectorsRequest]:
    return {
        s: pb.UpdateVectorsRequest(
            collection=spec.name,
            ids=wire.pack_ids(rids.ids[pos]),
            string_ids=rids.part(pos).strings,
            vectors=wire.pack_matrix(vectors[pos]),
        )
        for s, pos in enumerate(parts)
        if pos.size
    }
