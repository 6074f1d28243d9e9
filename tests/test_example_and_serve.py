"""The seed example gives faiss's neighbours; `vecshard serve` starts, answers, keeps data, stops."""

from __future__ import annotations

import runpy
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from vecshard import Client
from vecshard_server.cluster.local import LocalCluster

from .conftest import clustered
from .support import free_port, run_vecshard, serve_process

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


def _serve(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, lines: list[str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start `vecshard serve` on port 0; returns it and its address (startup log lines into `lines`)."""
    proc, address, names = serve_process(data_dir, *extra, env=env, lines=lines)
    shards = int(extra[extra.index("--shards") + 1]) if "--shards" in extra else 2
    assert len(names) == shards
    return proc, address


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_serve_starts_answers_keeps_data_and_stops_cleanly(tmp_path: Path, mode: str) -> None:
    data = clustered(500, 12, seed=7)
    proc, address = _serve(tmp_path, "--shard-mode", mode)
    with Client(address, timeout=30) as c:
        c.create_collection("docs", 12, index="ivf_flat", nlist=4)
        c.add("docs", np.arange(500), data)
        c.train("docs")
        before = c.search("docs", data[:20], k=5)
    err = _stop(proc)
    if mode == "remote":
        assert "shard-0" in err and "shard-1" in err and "stopped: coordinator=0, shard-0=0, shard-1=0" in err
    else:  # one process, its two shards' snapshots written on the way out
        assert "stopped: coordinator=0" in err and err.count("checkpoint: 1 collections saved") == 2

    proc, address = _serve(tmp_path, "--shard-mode", mode)  # same data dir: the snapshot is loaded
    try:
        with Client(address, timeout=30) as c:
            info = c.describe("docs")
            assert info.count == 500 and info.trained
            after = c.search("docs", data[:20], k=5)
            np.testing.assert_array_equal(after.ids, before.ids)
            np.testing.assert_array_equal(c.get("docs", [3, 499]), data[[3, 499]])
    finally:
        _stop(proc)


def test_serve_refuses_fewer_shards_than_existing_data(tmp_path: Path) -> None:
    """Shard processes for fewer groups than a data dir holds would lose the others' points. (Local
    shards serve every group the data dir has: a reshard may have added some; tests/test_reshard.py.)"""
    (tmp_path / "cluster.json").write_text('{"shards": 3}\n')
    result = run_vecshard("serve", "--shard-mode", "remote", "--port", "0", "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "--shards 3" in result.stderr


def _free_port_run(n: int) -> int:
    """A port p such that p .. p+n-1 were all free a moment ago."""
    import socket

    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        try:
            socks = [socket.socket() for _ in range(n)]
            for i, sock in enumerate(socks):
                sock.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no run of free ports found")


def _has_series(text: str, name: str, *labels: str) -> bool:
    return any(line.startswith(name + "{") and all(lb in line for lb in labels) for line in text.splitlines())


@pytest.mark.parametrize("mode", ["remote", "local"])
def test_serve_exposes_metrics_of_every_process_and_leaves_no_run_folder(tmp_path: Path, mode: str) -> None:
    base = _free_port_run(3)
    run_tmp = tmp_path / "tmp"
    run_tmp.mkdir()
    lines: list[str] = []
    # VECSHARD_METRICS_PORT once made every child bind the same port (shard-1 crashed): serve must
    # give each process its own.
    env = {"VECSHARD_METRICS_PORT": str(base), "TMPDIR": str(run_tmp)}
    proc, address = _serve(tmp_path / "data", "--shard-mode", mode, env=env, lines=lines)
    try:
        with Client(address, timeout=30) as c:
            c.create_collection("m", 4)
            c.add("m", [1, 2], np.eye(2, 4))
            c.search("m", np.eye(1, 4), k=1)
        log = "".join(lines)
        shard_ports = (base + 1, base + 2) if mode == "remote" else ()
        for name, port in (("coordinator", base), *zip(("shard-0", "shard-1"), shard_ports, strict=False)):
            assert f"metrics of {name} on http://127.0.0.1:{port}/metrics" in log, log
        with urllib.request.urlopen(f"http://127.0.0.1:{base}/metrics", timeout=10) as resp:
            coord = resp.read().decode()
        assert _has_series(coord, "vecshard_rpcs_total", 'role="coordinator"', 'method="Search"')
        # local shards: their calls are counted in the coordinator's process, under role "shard"
        assert _has_series(coord, "vecshard_rpcs_total", 'role="shard"', 'method="Search"') == (mode == "local")
        for port in shard_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                shard = resp.read().decode()
            assert _has_series(shard, "vecshard_rpcs_total", 'role="shard"', 'method="Search"')
        assert [p.name for p in run_tmp.iterdir()] != [], "serve keeps its port files under TMPDIR while running"
    finally:
        _stop(proc)
    assert list(run_tmp.iterdir()) == [], "a clean stop leaves no vecshard-run-* folder"
