"""Payloads are as durable as vectors: in the WAL and snapshots across kill -9, and merged between
replicas (catch-up, resync, anti-entropy) by per-id versions, with payload indexes following."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from vecshard import Client, wire
from vecshard.payload import payload_from_proto, payload_to_proto
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

DIM = 8


def _payloads(n: int) -> list[dict[str, Any]]:
    return [
        {"i": i, "lang": ["en", "fr", "de"][i % 3], "big": (1 << 62) + i, "tags": ["x"] * (i % 2)} for i in range(n)
    ]


def _apply_writes(c: Client, name: str, model: dict[int, dict[str, Any]], timeout: float = 30) -> None:
    """Every kind of payload write, mirrored in `model` (id -> payload). (With a stopped replica and
    quorum 1, a write waits its whole deadline for that replica: a short one keeps the test short.)"""
    fr = sum(p["lang"] == "fr" for p in model.values())
    assert c.set_payload(name, {"seen": True}, filter='lang = "fr"', timeout=timeout) == fr
    for p in model.values():
        if p["lang"] == "fr":
            p["seen"] = True
    c.overwrite_payload(name, {"only": 1}, ids=[3], timeout=timeout)
    model[3] = {"only": 1}
    c.delete_payload_keys(name, ["tags"], ids=[5, 7], timeout=timeout)
    for i in (5, 7):
        model[i].pop("tags", None)
    removed = [i for i, p in model.items() if p.get("lang") == "de" and p["i"] < 30]
    assert c.delete(name, 'lang = "de" and i < 30', timeout=timeout) == len(removed)
    for i in removed:
        del model[i]


def _check(c: Client, name: str, model: dict[int, dict[str, Any]]) -> None:
    got = {p.id: p.payload for p in c.scroll(name, page_size=50)}
    assert got == model
    assert c.count(name, "seen = true") == sum(bool(p.get("seen")) for p in model.values())


def test_payloads_survive_kill_9_from_the_log_and_from_snapshots(tmp_path: Path, name: str) -> None:
    env = {"VECSHARD_CHECKPOINT_INTERVAL_S": "1"}
    with LocalCluster(shards=2, data_dir=tmp_path, env=env, log_level="WARNING") as cluster:
        x = np.random.default_rng(0).standard_normal((90, DIM)).astype(np.float32)
        payloads = _payloads(90)
        model = {i: dict(p) for i, p in enumerate(payloads)}
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, DIM)
            c.add(name, np.arange(60), x[:60], payloads=payloads[:60])
            c.create_payload_index(name, "lang", "keyword")
            time.sleep(2.5)  # a checkpoint snapshots the first 60 (and the index)
            c.add(name, np.arange(60, 90), x[60:], payloads=payloads[60:])  # these only in the log
            _apply_writes(c, name, model)
            for shard in cluster.shards:
                shard.kill()
            for shard in cluster.shards:
                shard.restart()
            _check(c, name, model)
            assert c.describe(name).payload_indexes == {"lang": "keyword"}
            res = c.search(name, x[61], k=1, filter='lang = "en" or lang = "fr"', with_payload=True)
            hit = next(res.hits())[0]
            assert hit.id == 61 and hit.payload == model[61] and hit.payload["big"] == (1 << 62) + 61
            assert all(not p.unindexed_fields for p in res.plans)
        assert any((tmp_path / "shard-0").rglob("payloads.npy")), "no snapshot held payloads"


def _export(address: str, name: str) -> tuple[list[int], list[dict[str, Any]], list[int]]:
    with grpc.insecure_channel(address) as ch:
        page = shard_pb2_grpc.ShardStub(ch).Export(
            spb.ExportRequest(collection=name, after_id=-1, limit=10_000), timeout=10
        )
    return (
        wire.unpack_ids(page.ids).tolist(),
        [payload_from_proto(p) for p in page.payloads],
        wire.unpack_ids(page.versions).tolist(),
    )


def _digest(address: str, name: str) -> int:
    with grpc.insecure_channel(address) as ch:
        state = shard_pb2_grpc.ShardStub(ch).DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=10)
    return int(state.digest)


def _wait_equal(r0: Any, r1: Any, name: str, what: str) -> None:
    deadline = time.monotonic() + 40
    while _export(r0.address, name) != _export(r1.address, name):
        assert time.monotonic() < deadline, f"{what}: the replicas' payloads never converged"
        time.sleep(0.3)
    assert _digest(r0.address, name) == _digest(r1.address, name)


def test_a_replica_that_missed_payload_writes_catches_up_and_drift_is_merged(tmp_path: Path, name: str) -> None:
    env = {
        "VECSHARD_WRITE_QUORUM": "1",
        "VECSHARD_HEDGE_DELAY_S": "5",
        "VECSHARD_PEER_SYNC_S": "1",
        "VECSHARD_ANTI_ENTROPY_S": "1",
    }
    with LocalCluster(shards=1, replicas=2, data_dir=tmp_path, env=env, log_level="ERROR") as cluster:
        r0, r1 = cluster.groups[0]
        x = np.random.default_rng(1).standard_normal((60, DIM)).astype(np.float32)
        payloads = _payloads(60)
        model = {i: dict(p) for i, p in enumerate(payloads)}
        with Client(cluster.address, timeout=30) as c:
            c.create_collection(name, DIM)
            c.add(name, np.arange(60), x, payloads=payloads)
            r0.popen.send_signal(signal.SIGSTOP)  # r0 misses every payload write below (quorum 1)
            try:
                _apply_writes(c, name, model, timeout=2.0)
                c.create_payload_index(name, "i", "integer", timeout=2.0)
            finally:
                r0.kill()
            r0.restart()
            _wait_equal(r0, r1, name, "catch-up")
            ids, got, _ = _export(r0.address, name)
            assert dict(zip(ids, got, strict=True)) == model
            with grpc.insecure_channel(r0.address) as ch:
                listed = shard_pb2_grpc.ShardStub(ch).ListCollections(pb.ListCollectionsRequest(), timeout=10)
            assert [(i.field) for s in listed.collections for i in s.payload_indexes] == ["i"]
        # a payload write only r1 got (its coordinator died): the digests differ, and the replicas merge
        with grpc.insecure_channel(r1.address) as ch:
            req = pb.SetPayloadRequest(
                collection=name, ids=wire.pack_ids(np.array([10])), payload=payload_to_proto({"drift": "only on r1"})
            )
            assert shard_pb2_grpc.ShardStub(ch).SetPayload(req, timeout=10).updated == 1
        _wait_equal(r0, r1, name, "anti-entropy")
        ids, got, _ = _export(r0.address, name)
        assert dict(zip(ids, got, strict=True))[10] == {**model[10], "drift": "only on r1"}


def test_a_damaged_payload_snapshot_refuses_to_start_and_names_it(tmp_path: Path) -> None:
    """One flipped byte anywhere in payloads.npy (header, index or payload bytes) is caught by its
    checksum: the shard refuses to start rather than serve wrong payloads."""
    import pytest

    from vecshard.v1 import types_pb2
    from vecshard_server.common.config import Settings
    from vecshard_server.shard.engine import SnapshotCorrupt
    from vecshard_server.shard.service import ShardService

    s = ShardService(Settings(), tmp_path)
    s.recover()
    s._create(
        types_pb2.CollectionConfig(name="c", dim=DIM, metric=types_pb2.METRIC_L2, index_type=types_pb2.INDEX_TYPE_FLAT)
    )
    x = np.random.default_rng(3).standard_normal((5, DIM)).astype(np.float32)
    s.collections["c"].add(np.arange(5), x, True, None, 1, [payload_to_proto(p) for p in _payloads(5)])
    s.checkpoint()
    s.close()
    path = tmp_path / "collections" / "c" / "payloads.npy"
    good = path.read_bytes()
    for at in (10, len(good) // 2, len(good) - 1):
        data = bytearray(good)
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(SnapshotCorrupt, match="payloads.npy"):
            ShardService(Settings(), tmp_path).recover()
    path.write_bytes(good)
    again = ShardService(Settings(), tmp_path)
    again.recover()
    assert again.collections["c"].get(np.arange(5), True)[2] == _payloads(5)
