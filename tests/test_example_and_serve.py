"""The seed example gives faiss's neighbours; `vecshard serve` starts, answers, keeps data, stops."""

from __future__ import annotations

import re
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from vecshard import Client
from vecshard_server.cli.cluster import LocalCluster

from .conftest import clustered

ROOT = Path(__file__).resolve().parents[1]


def test_seed_example_matches_in_process_faiss(cluster_of: Callable[[int], LocalCluster]) -> None:
    address = cluster_of(2).address
    example = runpy.run_path(str(ROOT / "examples" / "seed_example.py"))
    out = example["run"](address, verbose=False)
    data, queries = out["dataset"], out["queries"]

    flat = faiss.IndexFlatL2(64)
    flat.add(data)
    D, I = flat.search(queries, 5)
    np.testing.assert_array_equal(out["indices"], I)
    np.testing.assert_allclose(out["distances"], D, rtol=1e-5)

    with Client(address) as c:
        centroids = c.describe("seed_ivf", include_centroids=True).centroids
    quantizer = faiss.IndexFlatL2(64)
    quantizer.add(centroids)
    ivf = faiss.IndexIVFFlat(quantizer, 64, 100)
    ivf.add(data)
    ivf.nprobe = 10
    D, I = ivf.search(queries, 5)
    np.testing.assert_array_equal(out["indices_ivf"], I)
    np.testing.assert_allclose(out["distances_ivf"], D, rtol=1e-5)


def _serve(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vecshard_server", "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        found = re.search(r"vecshard is serving on (\S+) \(shards: ([^;]+);", line)
        if found:
            assert len(found.group(2).split(", ")) == int(extra[1]) if extra else 2
            return proc, found.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("vecshard serve did not start:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def test_serve_starts_answers_keeps_data_and_stops_cleanly(tmp_path: Path) -> None:
    data = clustered(500, 12, seed=7)
    proc, address = _serve(tmp_path)
    with Client(address, timeout=30) as c:
        c.create_collection("docs", 12, index="ivf_flat", nlist=4)
        c.add("docs", np.arange(500), data)
        c.train("docs")
        before = c.search("docs", data[:20], k=5)
    err = _stop(proc)
    assert "shard-0" in err and "shard-1" in err and "stopped: coordinator=0, shard-0=0, shard-1=0" in err

    proc, address = _serve(tmp_path)  # same data dir: the snapshot is loaded
    try:
        with Client(address, timeout=30) as c:
            info = c.describe("docs")
            assert info.count == 500 and info.trained
            after = c.search("docs", data[:20], k=5)
            np.testing.assert_array_equal(after.ids, before.ids)
            np.testing.assert_array_equal(c.get("docs", [3, 499]), data[[3, 499]])
    finally:
        _stop(proc)


def test_serve_refuses_a_different_shard_count_for_existing_data(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text('{"shards": 3}\n')
    result = subprocess.run(
        [sys.executable, "-m", "vecshard_server", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--shards 3" in result.stderr
