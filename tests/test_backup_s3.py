"""Backups to a real S3-compatible server (moto's standalone server on loopback), with every shard
replica its own process (remote mode, 3 groups x 2 replicas): a string-id collection and points
stored without a vector, backed up and restored onto 2 groups with 2 replicas, exactly."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import boto3
import numpy as np
import pytest
import requests

from vecshard import Client, FailedPrecondition
from vecshard_server.cluster.local import LocalCluster

from .support import free_port

DIM = 16
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (its endpoint URL), with a bucket `backups`."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(endpoint, timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("moto_server did not start") from None
            time.sleep(0.1)
    boto3.client("s3", endpoint_url=endpoint, **_aws()).create_bucket(Bucket="backups")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def _aws() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def cluster(s3: str) -> Iterator[LocalCluster]:
    env = {**AWS, "AWS_ENDPOINT_URL": s3}  # (boto3 reads AWS_ENDPOINT_URL itself)
    with LocalCluster(shards=3, replicas=2, shard_mode="remote", log_level="WARNING", env=env) as c:
        yield c


def test_s3_backup_and_restore_with_replicas(cluster: LocalCluster, s3: str) -> None:
    where = "s3://backups/nightly"
    rng = np.random.default_rng(3)
    with Client(cluster.address, timeout=120) as c:
        c.create_collection("sid", dim=DIM, id_type="string")
        keys = [f"doc-{i:05d}" for i in range(1500)]
        x = rng.random((1500, DIM), dtype=np.float32)
        c.add("sid", ids=keys, vectors=x, payloads=[{"k": i % 9, "title": f"t{i}"} for i in range(1500)])
        c.add("sid", ids=[f"novec-{i}" for i in range(20)], payloads=[{"only": i} for i in range(20)])
        c.create_payload_index("sid", "k", "integer")
        c.create_collection("ivf", dim=DIM, index="ivf_sq8", nlist=8, nprobe=8)
        c.add("ivf", ids=np.arange(1200), vectors=rng.random((1200, DIM), dtype=np.float32))
        c.train("ivf")

        made = c.create_backup(where)  # (the endpoint: the server's AWS_ENDPOINT_URL)
        assert made.phase == "DONE", made
        info = c.describe_backup(made.backup_id, where, s3_endpoint=s3)
        assert sorted(x.name for x in info.collections) == ["ivf", "sid"]
        assert {x.name: x.info.count for x in info.collections} == {"ivf": 1200, "sid": 1520}
        assert all(x.shards == 3 for x in info.collections)
        assert c.verify_backup(made.backup_id, where).ok
        objects = boto3.client("s3", endpoint_url=s3, **_aws()).list_objects_v2(Bucket="backups", Prefix="nightly/")
        assert f"nightly/{made.backup_id}/manifest.json" in {o["Key"] for o in objects["Contents"]}

        with pytest.raises(FailedPrecondition, match="has 2 replicas, not 3"):
            c.restore_backup(made.backup_id, where, collection="sid", as_name="sid2", shards=2, replicas=3)
        for name in ("sid", "ivf"):
            done = c.restore_backup(made.backup_id, where, collection=name, as_name=f"{name}2", shards=2, replicas=2)
            assert done.phase == "DONE", done
            a, b = c.describe(name), c.describe(f"{name}2")
            assert a.count == b.count and a.payload_indexes == b.payload_indexes and len(b.shards) == 2
            pa = {p.id: p.payload for p in c.scroll(name, page_size=2000)}
            pb_ = {p.id: p.payload for p in c.scroll(f"{name}2", page_size=2000)}
            assert pa == pb_ and len(pa) == a.count
            q = rng.random((20, DIM), dtype=np.float32)
            ra, rb = c.search(name, q, k=8), c.search(f"{name}2", q, k=8)
            np.testing.assert_array_equal(ra.ids, rb.ids)
            np.testing.assert_array_equal(ra.distances, rb.distances)
        kept = c.retrieve("sid2", ["doc-00042", "novec-3"], with_vectors=True)
        assert kept[0] is not None and kept[0].payload == {"k": 42 % 9, "title": "t42"}
        np.testing.assert_array_equal(kept[0].vector, x[42])
        assert kept[1] is not None and kept[1].payload == {"only": 3} and kept[1].vector is None
        assert c.count("sid2", "k = 4") == c.count("sid", "k = 4")

        # Every replica of every group holds the restored points (reads rotate over them).
        counts = {c.describe("sid2").count for _ in range(6)}
        assert counts == {1520}
        assert c.delete_backup(made.backup_id, where) > 0
        assert c.list_backups(where) == []
