"""The public API's replies as the dashboard's JSON: only what the pages show, never a secret (the
replies of the public API carry none), enums by name, int64 values beyond JavaScript's exact range as
strings."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vecshard import build
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb

JS_SAFE = 2**53 - 1


def _enum(enum: Any, value: int, prefix: str) -> str:
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def json_value(v: Any) -> Any:
    """A payload value for JSON: ints beyond 2^53 as strings, non-finite floats as strings."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v if -JS_SAFE <= v <= JS_SAFE else str(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_value(x) for x in v]
    return str(v)


def cluster(info: pb.ClusterInfo) -> dict[str, Any]:
    return {
        "shard_mode": info.shard_mode,
        "version": info.version,
        "uptime_s": info.uptime_s,
        "rss_bytes": info.rss_bytes,
        "groups": [
            {
                "index": g.index,
                "replicas": [
                    {
                        "address": r.address,
                        "healthy": r.healthy,
                        "error": r.error,
                        "rss_bytes": r.rss_bytes,
                        "points": r.points,
                        "collections": r.collections,
                    }
                    for r in g.replicas
                ],
            }
            for g in info.groups
        ],
        "collections": [
            {
                "name": c.collection,
                "shards": c.shards,
                "epoch": c.epoch,
                "count": c.count,
                "shard_counts": list(c.shard_counts),
            }
            for c in info.collections
        ],
        "jobs": [
            {
                "kind": j.kind,
                "collection": j.collection,
                "phase": j.phase,
                "done": j.done,
                "total": j.total,
                "started_unix": j.started_unix,
                "id": j.id,
                "error": j.error,
            }
            for j in info.jobs
        ],
    }


def _index(x: ppb.PayloadIndex) -> dict[str, Any]:
    out: dict[str, Any] = {"field": x.field, "type": _enum(ppb.PayloadIndexType, x.type, "PAYLOAD_INDEX_TYPE_")}
    if x.type == ppb.PAYLOAD_INDEX_TYPE_TEXT:
        out["text"] = {
            "stemmer": x.text.stemmer,
            "stopwords": x.text.stopwords,
            "documents": x.text_stats.documents,
            "terms": x.text_stats.terms,
        }
    return out


def collection(info: pb.CollectionInfo) -> dict[str, Any]:
    c = info.config
    return {
        "name": c.name,
        "dim": c.dim,
        "metric": _enum(types_pb2.Metric, c.metric, "METRIC_"),
        "index_type": _enum(types_pb2.IndexType, c.index_type, "INDEX_TYPE_"),
        "nlist": c.nlist,
        "nprobe": c.nprobe,
        "id_type": _enum(types_pb2.IdType, c.id_type, "ID_TYPE_"),
        "model": c.embedding_model,
        "store_text": c.store_text,
        "training": _enum(pb.TrainingState, info.training_state, "TRAINING_STATE_"),
        "count": info.count,
        "shards": [{"name": s.name, "count": s.count, "trained": s.trained} for s in info.shards],
        "placement": {"shards": c.placement.shards, "epoch": c.placement.epoch},
        "payload_indexes": [_index(x) for x in info.payload_indexes],
    }


def _id(i: Any) -> Any:
    return json_value(int(i)) if isinstance(i, int | np.integer) else i


def _vector(v: Any) -> list[float] | None:
    return None if v is None else [round(float(x), 6) for x in v]


def points(resp: pb.ScrollResponse, with_vectors: bool) -> dict[str, Any]:
    page = build.scroll_page(resp, with_vectors)
    return {
        "points": [
            {"id": _id(p.id), "payload": json_value(p.payload), "vector": _vector(p.vector) if with_vectors else None}
            for p in page
        ],
        "next_cursor": resp.next_cursor.hex(),
        "done": resp.done,
    }


def hits(resp: pb.SearchResponse) -> dict[str, Any]:
    result = build.search_result(resp)
    out = []
    if result.ids.shape[0]:
        payloads = result.payloads[0] if result.payloads else [None] * result.ids.shape[1]
        for rank, (i, d, p) in enumerate(zip(result.ids[0], result.distances[0], payloads, strict=True), 1):
            if i is None or (not isinstance(i, str) and int(i) < 0):
                continue  # padding
            out.append({"rank": rank, "id": _id(i), "score": float(d), "payload": json_value(p)})
    return {"hits": out, "higher_is_better": result.higher_is_better}
