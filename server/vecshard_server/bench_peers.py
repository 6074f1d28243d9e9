"""Peers for `vecshard bench --peers milvus`: Milvus Lite (pymilvus + milvus-lite, the `bench` extra)
measured on the same data, index type (IVF_FLAT, same nlist and nprobe) and queries.

Chroma is not measured yet: it offers HNSW only, so "equal recall" needs an ef sweep of its own.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def milvus_lite(
    base: F32, queries: F32, gt: I64, nlist: int, nprobe: int, k: int, batch_sizes: Sequence[int], duration_s: float
) -> dict[str, Any]:
    """Recall@k, search QPS per batch size and insert throughput of Milvus Lite."""
    try:
        from pymilvus import DataType, MilvusClient
    except ImportError:
        return {"skipped": "pymilvus/milvus-lite not installed: pip install 'vecshard[bench]'"}
    from vecshard_server.bench import make_batches, recall_at_k, timed_loop

    with tempfile.TemporaryDirectory() as tmp:
        mc = MilvusClient(str(Path(tmp) / "milvus.db"))
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=base.shape[1])
        index = mc.prepare_index_params()
        index.add_index(field_name="v", index_type="IVF_FLAT", metric_type="L2", params={"nlist": nlist})
        mc.create_collection("bench", schema=schema, index_params=index)
        start = time.perf_counter()
        for s in range(0, len(base), 1000):
            mc.insert("bench", [{"id": s + i, "v": row.tolist()} for i, row in enumerate(base[s : s + 1000])])
        insert_vps = len(base) / (time.perf_counter() - start)
        mc.load_collection("bench")
        params = {"metric_type": "L2", "params": {"nprobe": nprobe}}

        def search(q: F32) -> I64:
            hits = mc.search("bench", data=q.tolist(), limit=k, search_params=params, output_fields=["id"])
            return np.array([[h["id"] for h in row] + [-1] * (k - len(row)) for row in hits], dtype=np.int64)

        found = np.vstack([search(b) for b in make_batches(queries, 64)])[: len(queries)]
        rows = [{"batch": b, **timed_loop(search, make_batches(queries, b), duration_s)} for b in batch_sizes]
        mc.close()
    return {"recall": recall_at_k(found, gt, k), "insert_vps": insert_vps, "search": rows}
