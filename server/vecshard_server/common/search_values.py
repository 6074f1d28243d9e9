"""A shard search as typed values: what a coordinator asks one shard (`ShardQuery`) and what the shard
answers (`ShardHits`), numpy arrays throughout.

An in-process shard takes and gives these as they are; a remote one gets `ShardQuery.to_proto()`
(the internal `Shard.Search` RPC, whose wire format is unchanged) and answers a `SearchResponse`
that `ShardHits.from_proto` reads back. So protobuf is built only where bytes cross a process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import FailedPrecondition, InvalidArgument
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.payload_order import Key, key_to_value, value_key

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ShardQuery:
    """One shard's search: every shard of a collection gets the same one.

    refine: candidates per result (> 1 only for compressed kinds): the shard answers its best
    k * refine by code distance, each with its exact distance. with_vectors: each hit's stored
    vector too. group_by: the shard answers its best k groups of hits by this payload field, each
    with its best group_size hits (shard/groups.py); `exclude` then names one id per query row (-1:
    none) left out of that row's groups (a search by stored points: each point is not its own hit),
    sent as the request's query_ids; `only`: the values that may open groups (None: any), sent as
    the request's images, each a serialized Value (a shard gets no images otherwise).
    """

    collection: str
    queries: npt.NDArray[np.float32]
    k: int
    nprobe: int = 0
    refine: int = 1
    filter: ppb.Filter | None = None
    with_payload: ppb.PayloadSelector | None = None
    with_vectors: bool = False
    group_by: str = ""
    group_size: int = 0
    exclude: I64 | None = None
    only: tuple[Key, ...] | None = None
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
        req.with_vectors = self.with_vectors
        if self.group_by:
            req.group_by, req.group_size = self.group_by, self.group_size
            if self.exclude is not None:
                req.query_ids = wire.pack_ids(self.exclude)
            if self.only is not None:
                req.images.extend(key_to_value(k).SerializeToString() for k in self.only)
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
            with_vectors=request.with_vectors,
            group_by=request.group_by,
            group_size=request.group_size,
            exclude=wire.unpack_ids(request.query_ids, "query_ids") if request.query_ids else None,
            only=_keys(request.images) if request.group_by and request.images else None,
        )


def _keys(values: Sequence[bytes]) -> tuple[Key, ...]:
    out = []
    for data in values:
        key = value_key(ppb.Value.FromString(data))
        if key is None:
            raise InvalidArgument("a grouped search's values are scalars")
        out.append(key)
    return tuple(out)


@dataclass
class Group:
    """The hits of one value of a group_by field, best first: payloads (when asked for) and vectors
    (with_vectors: one row per hit) aligned with ids."""

    key: Key
    distances: F32
    ids: I64
    payloads: list[ppb.Payload] = field(default_factory=list)
    vectors: F32 | None = None

    def to_proto(self) -> pb.HitGroup:
        out = pb.HitGroup(
            value=key_to_value(self.key),
            ids=self.ids.astype(wire.I64, copy=False).tobytes(),
            distances=self.distances.astype(wire.F32, copy=False).tobytes(),
            payloads=self.payloads,
        )
        if self.vectors is not None:
            out.vectors.CopyFrom(wire.pack_matrix(self.vectors))
        return out

    @classmethod
    def from_proto(cls, g: pb.HitGroup) -> Group:
        key = value_key(g.value)
        if key is None:
            raise FailedPrecondition("a shard answered a group without a scalar value")
        vectors = wire.unpack_matrix(g.vectors) if g.HasField("vectors") else None
        ids = np.frombuffer(g.ids, dtype=wire.I64)
        return cls(key, np.frombuffer(g.distances, dtype=wire.F32), ids, list(g.payloads), vectors)


@dataclass(frozen=True)
class ShardHits:
    """One shard's answer: its best k * refine per query, best first (ties by id), id -1 padding.

    refined: with refine, each candidate's exact distance. payloads: one per (query, rank), row
    major, when asked for (empty otherwise). plans: how a filter was executed. vectors: with
    with_vectors, one row per (query, rank) (zeros for padding). groups: a grouped search's answer
    instead (distances and ids then have no columns): per query its groups, best first.
    """

    distances: npt.NDArray[np.float32]
    ids: npt.NDArray[np.int64]
    refined: npt.NDArray[np.float32] | None = None
    payloads: list[ppb.Payload] = field(default_factory=list)
    plans: list[ppb.FilterPlan] = field(default_factory=list)
    vectors: F32 | None = None
    groups: list[list[Group]] | None = None

    @classmethod
    def grouped(cls, groups: list[list[Group]], plans: list[ppb.FilterPlan]) -> ShardHits:
        nq = len(groups)
        return cls(np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64), plans=plans, groups=groups)

    def to_proto(self) -> pb.SearchResponse:
        nq, k = self.ids.shape
        if self.groups is not None:
            return pb.SearchResponse(
                nq=nq,
                plans=self.plans,
                groups=[pb.GroupedHits(groups=[g.to_proto() for g in row]) for row in self.groups],
            )
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
        if self.vectors is not None:
            resp.vectors.CopyFrom(wire.pack_matrix(self.vectors))
        return resp

    @classmethod
    def from_proto(cls, resp: pb.SearchResponse, nq: int, width: int) -> ShardHits:
        """A shard's reply read back; the shapes a shard must answer are checked (a reply of another
        shape is one from a shard holding the collection with another config)."""
        if nq and len(resp.groups) == nq and not resp.ids:
            groups = [[Group.from_proto(g) for g in row.groups] for row in resp.groups]
            return cls.grouped(groups, list(resp.plans))
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
        vectors = wire.unpack_matrix(resp.vectors) if resp.HasField("vectors") else None
        if vectors is not None and vectors.shape[0] != nq * width:
            raise FailedPrecondition(f"a shard answered {vectors.shape[0]} vectors for {nq * width} results")
        return cls(D.reshape(nq, width), I.reshape(nq, width), refined, list(resp.payloads), list(resp.plans), vectors)
