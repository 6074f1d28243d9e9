"""Backup and restore throughput (docs/backup.md): N x dim vectors with payloads on a local cluster,
backed up to a directory and to a local S3 server (moto), then restored onto another shard count.
MB/s are the backup's bytes (the one collection's files) over each step's wall time.

    python -m vecshard_server.bench.backup -n 1000000 --dim 128
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vecshard import Client
from vecshard_server.cluster.local import LocalCluster


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--s3-port", type=int, default=50701)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vecshard-bench-backup-"))
    aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    endpoint = f"http://127.0.0.1:{args.s3_port}"
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(args.s3_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import socket

        import boto3

        deadline = time.monotonic() + 30
        while True:  # until moto's server accepts connections
            try:
                socket.create_connection(("127.0.0.1", args.s3_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or moto.poll() is not None:
                    raise SystemExit(f"moto's S3 server did not start on port {args.s3_port}") from None
                time.sleep(0.2)

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="bench")
        env = {**aws, "AWS_ENDPOINT_URL": endpoint}
        with LocalCluster(
            shards=args.shards, shard_mode="local", log_level="WARNING", env=env, data_dir=tmp / "d"
        ) as cl:
            with Client(cl.address, timeout=3600) as c:
                c.create_collection("bench", dim=args.dim)
                rng = np.random.default_rng(0)
                for a in range(0, args.n, 20_000):
                    ids = np.arange(a, min(args.n, a + 20_000))
                    x = rng.random((ids.size, args.dim), dtype=np.float32)
                    c.add("bench", ids=ids, vectors=x, payloads=[{"n": int(i), "tag": f"t{i % 100}"} for i in ids])
                for where in (str(tmp / "backups"), "s3://bench/b"):
                    t = time.perf_counter()
                    p = c.create_backup(where, collections=["bench"])  # (not the copies restored here)
                    took = time.perf_counter() - t
                    size = c.describe_backup(p.backup_id, where).bytes
                    print(f"backup to {where}: {size / 1e6:.0f} MB in {took:.1f} s = {size / 1e6 / took:.0f} MB/s")
                    t = time.perf_counter()
                    c.restore_backup(p.backup_id, where, collection="bench", as_name=f"r{len(where)}", shards=2)
                    took = time.perf_counter() - t
                    print(f"restore from {where} onto 2 groups: {took:.1f} s = {size / 1e6 / took:.0f} MB/s")
    finally:
        moto.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
