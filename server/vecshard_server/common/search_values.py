"""A shard search as typed values: what a coordinator asks one shard (`ShardQuery`) and what the shard
answers (`ShardHits`), numpy arrays throughout.

An in-process shard takes and gives these as they are; a remote one gets `ShardQuery.to_proto()`
(the internal `Shard.Search` RPC, whose wire format is unchanged) and answers a `SearchResponse`
that `ShardHits.from_proto` reads back. So protobuf is built only where bytes cross a process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import FailedPrecondition
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb


@dataclass(frozen=True)
class ShardQuery:
    """One shard's search: every shard of a collection gets the same one.

    refine: candidates per result (> 1 only for compressed kinds): the shard answers its best
    k * refine by code distance, each with its exact distance.
    """

    collection: str
    queries: npt.NDArray[np.float32]
    k: int
    nprobe: int = 0
    refine: int = 1
    filter: ppb.Filter | None = None
    with_payload: ppb.PayloadSelector | None = None
    _encoded: list[bytes] = field(default_factory=list, init=False, repr=False, compare=False)  # (replace: anew)

    @property
    def nq(self) -> int:
        return int(self.queries.shape[0])

    @property
    def payloads_wanted(self) -> bool:
        return self.with_payload is not None and self.with_payload.enable

    def to_proto(self) -> pb.SearchRequest:
        req = pb.SearchRequest(
            collection=self.collection,
            queries=wire.pack_matrix(self.queries),
            k=self.k,
            nprobe=self.nprobe,
            refine_factor=self.refine if self.refine > 1 else 0,
        )
        if self.filter is not None:
            req.filter.CopyFrom(self.filter)
        if self.with_payload is not None:
            req.with_payload.CopyFrom(self.with_payload)
        return req

    def encoded(self) -> bytes:
        """The request's bytes, serialized once however many remote shards it goes to."""
        if not self._encoded:
            self._encoded.append(self.to_proto().SerializeToString())
        return self._encoded[0]

    @classmethod
    def from_proto(cls, request: pb.SearchRequest) -> ShardQuery:
        """The query of a `Shard.Search` request (the queries' bytes are unpacked and checked)."""
        return cls(
            collection=request.collection,
            queries=wire.unpack_matrix(request.queries, "queries"),
            k=request.k,
            nprobe=request.nprobe,
            refine=max(1, request.refine_factor),
            filter=request.filter if request.HasField("filter") else None,
            with_payload=request.with_payload if request.HasField("with_payload") else None,
        )


@dataclass(frozen=True)
class ShardHits:
    """One shard's answer: its best k * refine per query, best first (ties by id), id -1 padding.

    refined: with refine, each candidate's exact distance. payloads: one per (query, rank), row
    major, when asked for (empty otherwise). plans: how a filter was executed.
    """

    distances: npt.NDArray[np.float32]
    ids: npt.NDArray[np.int64]
    refined: npt.NDArray[np.float32] | None = None
    payloads: list[ppb.Payload] = field(default_factory=list)
    plans: list[ppb.FilterPlan] = field(default_factory=list)

    def to_proto(self) -> pb.SearchResponse:
        nq, k = self.ids.shape
        resp = pb.SearchResponse(
            nq=nq,
            k=k,
            distances=self.distances.astype(wire.F32, copy=False).tobytes(),
            ids=self.ids.astype(wire.I64, copy=False).tobytes(),
            plans=self.plans,
            payloads=self.payloads,
        )
        if self.refined is not None:
            resp.refined_distances = self.refined.astype(wire.F32, copy=False).tobytes()
        return resp

    @classmethod
    def from_proto(cls, resp: pb.SearchResponse, nq: int, width: int) -> ShardHits:
        """A shard's reply read back; the shapes a shard must answer are checked (a reply of another
        shape is one from a shard holding the collection with another config)."""
        D = np.frombuffer(resp.distances, dtype=wire.F32)
        I = np.frombuffer(resp.ids, dtype=wire.I64)
        if D.size != nq * width or I.size != nq * width:
            raise FailedPrecondition(
                f"a shard answered {I.size} results for {nq} queries of {width}: it holds the collection with "
                "another config; drop it (DropCollection reaches every shard) and create it again"
            )
        refined = (
            np.frombuffer(resp.refined_distances, dtype=wire.F32).reshape(nq, width) if resp.refined_distances else None
        )
        return cls(D.reshape(nq, width), I.reshape(nq, width), refined, list(resp.payloads), list(resp.plans))
