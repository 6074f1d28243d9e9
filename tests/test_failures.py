"""A shard down or stalled: fail fast naming it, or answer partially when asked; deadlines reach
the shards; a new coordinator rebuilds its catalog from the shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vecshard import Client, DeadlineExceeded, Unavailable
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.placement import shard_of

from .conftest import clustered
from .support import start_role

DIM = 8


def _fill(c: Client, name: str, n: int = 400) -> np.ndarray:
    data = clustered(n, DIM, seed=11)
    c.create_collection(name, DIM)
    c.add(name, np.arange(n), data)
    return data


def test_shard_down_fails_fast_naming_it_or_answers_partially(remote_cluster: LocalCluster, name: str) -> None:
    with Client(remote_cluster.address, timeout=30) as c:
        data = _fill(c, name)
        full_D, full_I = c.search(name, data[:20], k=10)
        down = remote_cluster.shards[1]
        down.popen.kill()
        down.popen.wait()
        with pytest.raises(Unavailable, match=r"shard-1 \(127\.0\.0\.1:\d+\)"):
            c.search(name, data[:20], k=10)
        res = c.search(name, data[:20], k=10, allow_partial=True)
        assert res.partial and (res.shards_ok, res.shards_total) == (1, 2)
        assert len(res.failed_shards) == 1 and res.failed_shards[0].startswith("shard-1 ")
        live = res.ids[res.ids >= 0]
        assert (shard_of(live, 2) == 0).all()
        # the partial answer is the full answer restricted to shard 0's ids
        for row in range(20):
            want = [i for i in full_I[row] if shard_of(np.array([i]), 2)[0] == 0]
            assert res.ids[row, : len(want)].tolist() == want
        with pytest.raises(Unavailable, match="shard-1"):
            c.add(name, [10_000, 10_001, 10_002, 10_003], clustered(4, DIM))
        # a non-upsert Add that failed on shard 1 was rolled back on shard 0
        assert c.search(name, clustered(4, DIM), k=10, allow_partial=True).ids.max() < 400


def test_deadline_reaches_stalled_shard(remote_cluster: LocalCluster, name: str) -> None:
    with Client(remote_cluster.address, timeout=30) as c:
        data = _fill(c, name)
        stalled = remote_cluster.shards[0].popen
        stalled.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="shard-0"):
                c.search(name, data[:5], k=5, timeout=1.0)
            res = c.search(name, data[:5], k=5, allow_partial=True, timeout=1.0)
            elapsed = time.monotonic() - started
            assert res.failed_shards and res.failed_shards[0].startswith("shard-0 ")
            assert (shard_of(res.ids[res.ids >= 0], 2) == 1).all()
            assert elapsed < 10  # both calls ended near their 1 s deadline, not at the 60 s default
        finally:
            stalled.send_signal(signal.SIGCONT)
        assert c.search(name, data[:5], k=5).shards_ok == 2


def test_new_coordinator_rebuilds_catalog_from_shards(remote_cluster: LocalCluster, name: str, tmp_path: Path) -> None:
    with Client(remote_cluster.address, timeout=30) as c:
        data = _fill(c, name)
        c.create_collection(name + "_ivf", DIM, index="ivf_flat", nlist=4, train_threshold=10**6)
        c.add(name + "_ivf", np.arange(400), data)
        c.train(name + "_ivf")
        before = c.search(name, data[:10], k=7)
    args = ["coordinator", "--log-level", "ERROR"]
    for addr in remote_cluster.shard_addresses:
        args += ["--shard", addr]
    proc = start_role(args, tmp_path / "port")
    try:
        with Client(proc.address, timeout=30) as c2:
            infos = {i.name: i for i in c2.list_collections()}
            assert infos[name].count == 400 and infos[name + "_ivf"].trained
            after = c2.search(name, data[:10], k=7)
            np.testing.assert_array_equal(after.ids, before.ids)
            c2.drop_collection(name + "_ivf")
        with Client(remote_cluster.address, timeout=30) as c:  # the first coordinator sees the drop
            assert name + "_ivf" not in [i.name for i in c.list_collections()]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_children_exit_when_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from vecshard_server.cluster.local import LocalCluster\n"
        "c = LocalCluster(shards=1, log_level='ERROR').start()\n"
        "print(' '.join(str(p.popen.pid) for p in c.processes()), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
