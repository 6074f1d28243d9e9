"""`vecshard import`: every format lands row for row, a killed import resumes to exactly the file's
rows, and refusals say why, exit non-zero and write nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from vecshard import Client
from vecshard_server.cli.main import cli
from vecshard_server.cluster.local import LocalCluster


def invoke(address: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["import", *args, "--address", address])


def ok(address: str, *args: str) -> str:
    result = invoke(address, *args)
    assert result.exit_code == 0, result.output
    return result.output


def refused(address: str, *args: str, code: int = 1) -> str:
    result = invoke(address, *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    return result.output


def write_texmex(path: Path, x: np.ndarray, value: str) -> None:
    rec = np.zeros(len(x), dtype=[("dim", "<i4"), ("vec", value, (x.shape[1],))])
    rec["dim"], rec["vec"] = x.shape[1], x
    rec.tofile(path)


def test_npy_fvecs_bvecs_import_every_row(
    cluster_of: Callable[[int], LocalCluster], client: Client, tmp_path: Path, name: str
) -> None:
    address = cluster_of(2).address
    rng = np.random.default_rng(0)
    client.create_collection(name, 8)
    x_npy = rng.integers(-1000, 1000, size=(2500, 8)).astype(np.int16)  # any int/float dtype, converted
    np.save(tmp_path / "a.npy", x_npy)
    x_f = rng.normal(size=(1500, 8)).astype(np.float32)
    write_texmex(tmp_path / "b.fvecs", x_f, "<f4")
    x_b = rng.integers(0, 256, size=(1000, 8)).astype(np.uint8)
    write_texmex(tmp_path / "c.bvecs", x_b, "u1")
    out = ok(address, name, str(tmp_path / "a.npy"), "--batch-size", "300", "--parallel", "3")
    assert "imported 2500 rows" in out and "skipped 0" in out and "rows/s" in out
    ok(address, name, str(tmp_path / "b.fvecs"), "--start-id", "10000", "--batch-size", "256", "-q")
    ok(address, name, str(tmp_path / "c.bvecs"), "--start-id", "20000", "-q")
    assert client.count(name) == 5000
    np.testing.assert_array_equal(client.get(name, np.arange(2500)), x_npy.astype(np.float32))
    np.testing.assert_array_equal(client.get(name, np.arange(10000, 11500)), x_f)
    np.testing.assert_array_equal(client.get(name, np.arange(20000, 21000)), x_b.astype(np.float32))
    state = json.loads((tmp_path / "b.fvecs.vecshard-import.json").read_text())
    assert state["done"] and state["acknowledged"] == [[0, 1500]] and state["collection"] == name
    assert "already imported" in ok(address, name, str(tmp_path / "b.fvecs"), "--start-id", "10000")
    client.drop_collection(name)


def test_parquet_ids_vectors_and_payloads(
    cluster_of: Callable[[int], LocalCluster], client: Client, tmp_path: Path, name: str
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    address = cluster_of(2).address
    n, rng = 2000, np.random.default_rng(1)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 7 + 3
    meta = {
        "lang": [["en", "fr", None][i % 3] for i in range(n)],
        "year": [2000 + i % 25 for i in range(n)],
        "score": [i / 8 for i in range(n)],
        "flag": [i % 2 == 0 for i in range(n)],
        "tags": [["a", "b"] if i % 2 else [] for i in range(n)],
        "info": [{"views": i, "src": "s"} for i in range(n)],
    }
    table = pa.table({"vector": pa.array(list(x.astype(np.float64))), "id": ids, **meta})  # list<double>
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=600)
    client.create_collection(name, 6)
    # Half first, then the rest: the second run skips the row groups already imported.
    assert "imported 900 rows" in ok(
        address, name, str(tmp_path / "p.parquet"), "--limit", "900", "--batch-size", "250", "-q"
    )
    assert "skipped 900" in ok(address, name, str(tmp_path / "p.parquet"), "--batch-size", "250", "-q")
    assert client.count(name) == n
    points = client.retrieve(name, ids, with_vectors=True)
    assert all(p is not None for p in points)
    np.testing.assert_array_equal(np.stack([p.vector for p in points if p]), x)
    expected = [{k: v[i] for k, v in meta.items()} for i in range(n)]
    assert [p.payload for p in points if p] == expected
    client.drop_collection(name)

    # fixed_size_list<float> and no id column: ids are row numbers + --start-id; no payloads.
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(x[:500].ravel()), 6)
    pq.write_table(pa.table({"emb": fixed}), tmp_path / "f.parquet")
    client.create_collection(name, 6)
    ok(address, name, str(tmp_path / "f.parquet"), "--vector-column", "emb", "--start-id", "100", "-q")
    np.testing.assert_array_equal(client.get(name, np.arange(100, 600)), x[:500])
    assert client.retrieve(name, [100])[0].payload in (None, {})  # type: ignore[union-attr]
    client.drop_collection(name)


def test_resume_after_kill(
    cluster_of: Callable[[int], LocalCluster], client: Client, tmp_path: Path, name: str
) -> None:
    address = cluster_of(2).address
    rows = 60_000
    x = np.random.default_rng(2).normal(size=(rows, 32)).astype(np.float32)
    src = tmp_path / "big.npy"
    np.save(src, x)
    state = tmp_path / "big.npy.vecshard-import.json"
    client.create_collection(name, 32)
    args = ["import", name, str(src), "--batch-size", "64", "--parallel", "2", "-q", "--address", address]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vecshard_server", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    acked = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            acked = sum(b - a for a, b in json.loads(state.read_text())["acknowledged"])
        except (OSError, ValueError):  # not written yet
            acked = 0
        if acked >= 2000:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the import ended before it could be killed: {proc.stdout.read()}"  # type: ignore[union-attr]
    assert 0 < acked < rows
    out = ok(address, name, str(src), "--batch-size", "2000")
    skipped = int(out.split("skipped ")[1].split()[0])
    assert skipped >= acked and int(out.split("imported ")[1].split()[0]) == rows - skipped
    assert client.count(name) == rows
    sample = np.random.default_rng(3).choice(rows, 500, replace=False)
    np.testing.assert_array_equal(client.get(name, sample), x[sample])
    assert json.loads(state.read_text())["done"]
    assert "already imported" in ok(address, name, str(src))
    client.drop_collection(name)


def test_refusals_write_nothing(
    cluster_of: Callable[[int], LocalCluster], client: Client, tmp_path: Path, name: str
) -> None:
    address = cluster_of(2).address
    client.create_collection(name, 16)
    x = np.random.default_rng(4).normal(size=(300, 8)).astype(np.float32)

    np.save(tmp_path / "d8.npy", x)  # wrong dimension: checked before anything is sent
    out = refused(address, name, str(tmp_path / "d8.npy"))
    assert "8-d vectors" in out and "dim 16" in out and len(out.strip().splitlines()) == 1, out

    ragged = tmp_path / "r.fvecs"
    write_texmex(ragged, x[:10], "<f4")
    with open(ragged, "ab") as fh:  # a 4-d row after ten 8-d ones
        fh.write(np.int32(4).tobytes() + np.zeros(4, "<f4").tobytes())
    assert "ragged" in refused(address, name, str(ragged))
    bad_row = tmp_path / "r2.fvecs"  # a whole number of rows, but row 3's dim field differs
    write_texmex(bad_row, np.zeros((10, 16), np.float32), "<f4")
    data = bytearray(bad_row.read_bytes())
    data[3 * (4 + 64) : 3 * (4 + 64) + 4] = np.int32(15).tobytes()
    bad_row.write_bytes(bytes(data))
    assert "row 3 has dimension 15" in refused(address, name, str(bad_row))

    (tmp_path / "v.csv").write_text("1,2,3\n")
    assert "unknown format '.csv'" in refused(address, name, str(tmp_path / "v.csv"), code=2)
    assert "does not exist" in refused(address, name, str(tmp_path / "missing.npy"), code=2)

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": [1, 2], "emb": [[1.0] * 16, [2.0] * 16]}), tmp_path / "nv.parquet")
        assert "no vector column 'vector'" in refused(address, name, str(tmp_path / "nv.parquet"))
    except ImportError:
        pass
    assert client.count(name) == 0
    assert not list(tmp_path.glob("*.vecshard-import.json"))  # nothing recorded for refused imports

    # A state file for another collection, then for a file that changed since: refused, nothing more sent.
    y = np.random.default_rng(5).normal(size=(400, 16)).astype(np.float32)
    src = tmp_path / "y.npy"
    np.save(src, y)
    ok(address, name, str(src), "--limit", "100", "-q")
    assert client.count(name) == 100
    assert "records an import into collection" in refused(address, "other", str(src))
    assert "--start-id" in refused(address, name, str(src), "--start-id", "5")
    np.save(src, y[::-1].copy())
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    out = refused(address, name, str(src))
    assert "changed since the import" in out and "--restart" in out
    assert client.count(name) == 100
    # --restart discards the state; with --upsert the first 100 rows are replaced, the rest added.
    assert "imported 400 rows" in ok(address, name, str(src), "--restart", "--upsert", "-q")
    np.testing.assert_array_equal(client.get(name, np.arange(400)), y[::-1])
    client.drop_collection(name)
