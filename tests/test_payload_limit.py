"""The payload size limit is a server setting (max_payload_bytes, default 1 MiB): payloads over the old
64 KiB fixed limit are stored whole by default, and `vecshard serve --max-payload-bytes` lowers it
for the whole cluster (its coordinator checks it in either shard mode), refusing a larger payload
with INVALID_ARGUMENT and writing nothing."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from vecshard import Client
from vecshard.errors import InvalidArgument
from vecshard_server.cluster.local import LocalCluster

from .support import serve_process

DIM = 8


def test_a_payload_over_the_old_64_kib_limit_is_stored_whole_by_default(
    cluster_of: Callable[[int], LocalCluster],
) -> None:
    big = {"text": "x" * 200_000, "n": 7}
    with Client(cluster_of(2).address, timeout=30) as c:
        c.create_collection("payload_limit_default", DIM)
        try:
            c.add("payload_limit_default", [1], np.ones((1, DIM), np.float32), payloads=[big])
            (point,) = c.retrieve("payload_limit_default", [1])
            assert point.payload == big
        finally:
            c.drop_collection("payload_limit_default")


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_serve_max_payload_bytes_refuses_a_bigger_payload_and_writes_nothing(tmp_path: Path, mode: str) -> None:
    proc, address, _ = serve_process(tmp_path / "data", "--shard-mode", mode, "--max-payload-bytes", "4096")
    try:
        with Client(address, timeout=30) as c:
            c.create_collection("small", DIM)
            vectors = np.ones((2, DIM), np.float32)
            with pytest.raises(InvalidArgument, match="max_payload_bytes=4,096") as err:
                c.add("small", [1, 2], vectors, payloads=[{"a": "x" * 100}, {"a": "x" * 5000}])
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert c.count("small") == 0  # nothing written: the whole Add was refused
            c.add("small", [1, 2], vectors, payloads=[{"a": "x" * 100}, {"a": "x" * 3000}])
            assert [len(p.payload["a"]) for p in c.retrieve("small", [1, 2])] == [100, 3000]
            with pytest.raises(InvalidArgument, match="max_payload_bytes"):
                c.set_payload("small", {"a": "y" * 5000}, ids=[1])
            assert len(c.retrieve("small", [1])[0].payload["a"]) == 100
            # A store_text collection: the stored text counts toward the limit.
            c.create_collection("texts", 0, metric=None, model="minilm", store_text=True)
            with pytest.raises(InvalidArgument, match="max_payload_bytes"):
                c.add("texts", [1, 2], texts=["short", "word " * 1000])
            assert c.count("texts") == 0
            c.add("texts", [1], texts=["word " * 500])
            assert c.retrieve("texts", [1])[0].payload == {"text": "word " * 500}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
