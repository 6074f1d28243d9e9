"""Where a single query's time goes, measured inside one process over a local cluster's data dir.

Each layer is timed alone, on the same queries, one query at a time:
- faiss: the partitions' own faiss index `search` (k + 1, as the shards ask), every shard in turn;
- shard engine: each shard's `ShardIndex.search_now` (faiss plus vecshard's tie handling), in turn;
- handler: the coordinator's Search handler as the gRPC server runs it (deserialize the request
  bytes, the error-mapping/metrics/auth wrapper, plan, fan-out to the in-process shards, merge,
  serialize the reply), awaited on an event loop with no gRPC server;
and beside them, from the same run: a bare gRPC echo call and the end-to-end SDK search. The
differences name each layer's share: end-to-end - handler = gRPC transport, the server's asyncio
plumbing and the SDK; handler - shard engine = the coordinator's Python (and the hops to the
shards); shard engine - faiss = the shard's Python.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import click
import faiss
import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.rpc import service_handlers
from vecshard_server.coordinator.local import LocalShards
from vecshard_server.coordinator.service import SERVICE_NAME, CoordinatorService
from vecshard_server.embedding.service import LocalEmbeddings

F32 = npt.NDArray[np.float32]


class _Context:
    """What the Search handler reads of a grpc.aio context, for an in-process call."""

    def time_remaining(self) -> float:
        return 60.0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:0"

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        raise RuntimeError(f"{code}: {details}")


def _p50(samples: list[float]) -> float:
    return float(np.percentile(samples, 50)) * 1e3


async def _layers(data_dir: Path, shards: int, name: str, queries: F32, k: int, nprobe: int, n: int) -> Any:
    settings = Settings()
    service = CoordinatorService(
        settings, [], LocalEmbeddings.from_file(None, settings), LocalShards(shards, settings, data_dir)
    )
    await service.start()
    try:
        handler = service_handlers(service, SERVICE_NAME)["Search"]
        raw = [
            pb.SearchRequest(
                collection=name, queries=wire.pack_matrix(queries[i : i + 1]), k=k, nprobe=nprobe
            ).SerializeToString()
            for i in range(len(queries))
        ]
        ctx = _Context()

        async def call(i: int) -> bytes:
            request = handler.request_deserializer(raw[i % len(raw)])
            reply = await handler.unary_unary(request, ctx)
            return bytes(handler.response_serializer(reply))

        parts = [s.collections[name] for s in service.local.services] if service.local else []
        params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
        out: dict[str, list[float]] = {"handler": [], "shard engine": [], "faiss": []}
        for i in range(n + 50):
            q = queries[i % len(queries) : i % len(queries) + 1]
            t0 = time.perf_counter()
            await call(i)
            t1 = time.perf_counter()
            for part in parts:
                part.search_now(q, k, nprobe)
            t2 = time.perf_counter()
            for part in parts:
                part._storage.index.search(q, k + 1, params=params)
            t3 = time.perf_counter()
            if i >= 50:
                out["handler"].append(t1 - t0)
                out["shard engine"].append(t2 - t1)
                out["faiss"].append(t3 - t2)
        return {key: _p50(v) for key, v in out.items()}
    finally:
        await service.close()


@click.command()
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--shards", required=True, type=click.IntRange(1))
@click.option("--collection", required=True)
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help=".npy")
@click.option("-k", required=True, type=click.IntRange(1))
@click.option("--nprobe", required=True, type=click.IntRange(1))
@click.option("-n", "n", default=2000, show_default=True, type=click.IntRange(1))
def main(data_dir: Path, shards: int, collection: str, queries: Path, k: int, nprobe: int, n: int) -> None:
    """Print the p50 ms of each in-process layer (see the module's doc) over a stopped local cluster's data dir."""
    q = np.load(queries).astype(np.float32)
    click.echo(json.dumps(asyncio.run(_layers(data_dir, shards, collection, q, k, nprobe, n))))


if __name__ == "__main__":
    main()
