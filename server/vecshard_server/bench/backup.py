"""Backup and restore throughput (docs/backup.md): n x dim vectors with payloads on a local cluster of
`shards` groups, backed up to a directory and to a local S3 server (moto), then each backup restored
onto 2 groups. MB/s are the backup's bytes (the one collection's files) over each step's wall time.

    vecshard bench --workload backup -n 1000000 --dim 128 --out DIR
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vecshard import Client
from vecshard_server.cluster.local import LocalCluster

AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def _moto(port: int) -> subprocess.Popen[bytes]:
    """moto's standalone S3 server on 127.0.0.1:port, accepting connections."""
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return moto
        except OSError:
            if time.monotonic() > deadline or moto.poll() is not None:
                moto.kill()
                raise RuntimeError(f"moto's S3 server did not start on port {port}") from None
            time.sleep(0.2)


def run_backup_bench(
    n: int, dim: int, shards: int = 3, s3_port: int = 50701, log: Callable[[str], None] = print
) -> dict[str, Any]:
    import boto3

    tmp = Path(tempfile.mkdtemp(prefix="vecshard-bench-backup-"))
    endpoint = f"http://127.0.0.1:{s3_port}"
    moto = _moto(s3_port)
    rows: list[dict[str, Any]] = []
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_credentials())
        s3.create_bucket(Bucket="bench")
        env = {**AWS, "AWS_ENDPOINT_URL": endpoint}
        with LocalCluster(shards=shards, shard_mode="local", log_level="WARNING", env=env, data_dir=tmp / "d") as cl:
            with Client(cl.address, timeout=3600) as c:
                c.create_collection("bench", dim=dim)
                rng = np.random.default_rng(0)
                for a in range(0, n, 20_000):
                    ids = np.arange(a, min(n, a + 20_000))
                    x = rng.random((ids.size, dim), dtype=np.float32)
                    c.add("bench", ids=ids, vectors=x, payloads=[{"n": int(i), "tag": f"t{i % 100}"} for i in ids])
                for where in (str(tmp / "backups"), "s3://bench/b"):
                    t = time.perf_counter()
                    p = c.create_backup(where, collections=["bench"])  # (not the copies restored here)
                    backup_s = time.perf_counter() - t
                    size = c.describe_backup(p.backup_id, where).bytes
                    t = time.perf_counter()
                    c.restore_backup(p.backup_id, where, collection="bench", as_name=f"r{len(rows)}", shards=2)
                    restore_s = time.perf_counter() - t
                    row = {
                        "location": "directory" if len(rows) == 0 else "S3 (moto)",
                        "bytes": size,
                        "backup_s": backup_s,
                        "restore_s": restore_s,
                    }
                    log(f"{row['location']}: {size / 1e6:.0f} MB, backup {backup_s:.1f} s, restore {restore_s:.1f} s")
                    rows.append(row)
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"n": n, "dim": dim, "shards": shards, "rows": rows}


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"]}


def format_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Backup and restore: {r['n']:,} x {r['dim']} with payloads, {r['shards']} groups, restored onto 2",
        "",
        "| location | backup size | backup | restore |",
        "|---|---:|---:|---:|",
    ]
    for row in r["rows"]:
        mb = row["bytes"] / 1e6
        lines.append(
            f"| {row['location']} | {mb:,.0f} MB | {row['backup_s']:.1f} s ({mb / row['backup_s']:.0f} MB/s) | "
            f"{row['restore_s']:.1f} s ({mb / row['restore_s']:.0f} MB/s) |"
        )
    return "\n".join(lines) + "\n"
