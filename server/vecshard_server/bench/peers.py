"""Peers for `vecshard bench --peers milvus --peers chroma` (the `bench` extra; never needed by tests).

- Milvus Lite (pymilvus + milvus-lite): the same data, index type (IVF_FLAT, same nlist and nprobe)
  and queries.
- Chroma, run as a local server: HNSW only, so it is measured at several search ef values and
  compared with vecshard at the smallest nprobe that reaches the same recall.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard_server.bench.measure import make_batches, recall_at_k, timed_loop

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


@contextlib.contextmanager
def chroma_server() -> Iterator[Any]:
    """A Chroma server (`chroma run`) on a free port with its data in a temporary dir: yields a
    connected chromadb.HttpClient, or a string saying why there is none."""
    try:
        import chromadb
    except ImportError:
        yield "chromadb not installed: pip install 'vecshard[bench]'"
        return
    chroma_bin = shutil.which("chroma") or shutil.which("chroma", path=str(Path(sys.executable).parent))
    if chroma_bin is None:
        yield "the chroma command is not on PATH"
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [chroma_bin, "run", "--path", tmp, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = None
            deadline = time.monotonic() + 60
            while client is None:
                try:
                    client = chromadb.HttpClient(host="127.0.0.1", port=port)
                    client.heartbeat()
                except Exception:  # not up yet
                    client = None
                    if time.monotonic() > deadline or server.poll() is not None:
                        yield "chroma run did not start"
                        return
                    time.sleep(0.5)
            yield client
        finally:
            server.terminate()
            server.wait(30)


def chroma(
    base: F32, queries: F32, gt: I64, k: int, duration_s: float, efs: Sequence[int] = (16, 64, 256)
) -> dict[str, Any]:
    """Chroma as a local server (`chroma run`), HNSW at several search ef values: recall@k and QPS
    of batches of 1 and 64, to compare with vecshard at equal recall."""
    with chroma_server() as client:
        if isinstance(client, str):
            return {"skipped": client}
        ids = [str(i) for i in range(len(base))]
        points = []
        insert_vps = 0.0
        for ef in efs:
            col = client.create_collection(
                f"bench_{ef}", metadata={"hnsw:space": "l2", "hnsw:search_ef": ef, "hnsw:construction_ef": 200}
            )
            start = time.perf_counter()
            for s in range(0, len(base), 1000):
                col.add(ids=ids[s : s + 1000], embeddings=base[s : s + 1000].tolist())
            insert_vps = len(base) / (time.perf_counter() - start)

            def search(q: F32, col: Any = col) -> I64:
                res = col.query(query_embeddings=q.tolist(), n_results=k, include=[])
                return np.array([[int(i) for i in row] + [-1] * (k - len(row)) for row in res["ids"]])

            found = np.vstack([search(b) for b in make_batches(queries, 64)])[: len(queries)]
            points.append(
                {
                    "ef": ef,
                    "recall": recall_at_k(found, gt, k),
                    "qps_batch1": timed_loop(search, make_batches(queries, 1), duration_s)["qps"],
                    "qps_batch64": timed_loop(search, make_batches(queries, 64), duration_s)["qps"],
                }
            )
    return {"points": points, "insert_vps": insert_vps}
