"""The dashboard of `vecshard serve --shard-mode remote` (a process per replica, no API keys: no login):
the cluster page lists every replica by address with its health, memory and points, and reports a
hung replica down with the reason, quickly; the collection pages show the SDK's counts and hits.
Screenshots go to the test artifacts."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.dashboard_support import artifacts, browser, console_errors, http, texts, wait_for
from tests.support import serve_process
from vecshard import Client

pytest.importorskip("selenium")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _process_named(parent: int, name: str) -> int:
    """The serve child started with `--name NAME` (a shard replica)."""
    for pid in _children(parent):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--name" in args and args[args.index(b"--name") + 1] == name.encode():
            return pid
    raise AssertionError(f"no child process named {name}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, str, list[str]]]:
    lines: list[str] = []
    proc, address, shards = serve_process(
        tmp_path_factory.mktemp("data"),
        *("--shard-mode", "remote", "--shards", "2", "--replicas", "2", "--ui-port", "0"),
        env={"VECSHARD_UI_SAMPLE_S": "0.5"},
        lines=lines,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 10
        found = None
        while found is None and time.monotonic() < deadline:
            lines.append(proc.stderr.readline())
            found = re.search(r"dashboard: (\S+)", lines[-1])
        assert found, "serve printed no dashboard address:\n" + "".join(lines)
        yield proc, address, found.group(1), shards
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_remote_replicas_their_health_and_counts(served: tuple[Any, str, str, list[str]]) -> None:
    from selenium.webdriver.common.by import By

    proc, address, ui, shards = served
    assert http(ui + "api/session") == (200, {"auth": False, "role": "admin"})  # no keys: no login
    with Client(address, timeout=60) as client:
        client.create_collection("docs", dim=4)
        x = np.random.default_rng(0).random((500, 4), dtype=np.float32)
        client.add("docs", ids=np.arange(500), vectors=x, payloads=[{"i": i} for i in range(500)])
        per_shard = [f"{s.count:,}" for s in client.describe("docs").shards]
        like = [str(i) for i in client.search("docs", by_ids=[7], k=10).ids[0]]  # (the box says k 10)
    driver = browser()
    try:
        driver.get(ui + "cluster")
        wait_for("the replicas", lambda: driver.find_elements(By.CSS_SELECTOR, "#placement-table tr[data-name]"))
        addresses = texts(driver, "#replicas-table code")
        assert sorted(addresses) == sorted(a for group in shards for a in group.split(","))
        assert texts(driver, "#replicas-table .badge") == ["healthy"] * 4
        points = [int(t.replace(",", "")) for t in texts(driver, "#replicas-table td:nth-child(5)")]
        assert points == [int(per_shard[0].replace(",", ""))] * 2 + [int(per_shard[1].replace(",", ""))] * 2
        assert all(t.endswith("MiB") for t in texts(driver, "#replicas-table td:nth-child(6)"))
        row = driver.find_element(By.CSS_SELECTOR, "#placement-table tr[data-name='docs']")
        assert row.find_elements(By.TAG_NAME, "td")[-1].text == " · ".join(per_shard)
        assert console_errors(driver) == []
        driver.save_screenshot(str(artifacts() / "cluster-remote.png"))

        driver.get(ui + "collections")
        wait_for("the collections", lambda: texts(driver, "tr[data-name='docs'] .count") == ["500"])
        driver.get(ui + "collections/docs")
        wait_for("the points", lambda: driver.find_element(By.ID, "matching").text == "500 matching")
        driver.find_element(By.CSS_SELECTOR, "#points-table tr[data-id='7'] button.like").click()
        hits = "#hits-table tbody tr"
        wait_for(
            "more like 7",
            lambda: [r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, hits)] == like,
        )
        assert console_errors(driver) == []

        # A hung replica (stopped: serve would stop the cluster if one exited) is reported down, quickly.
        hung = _process_named(proc.pid, "shard-1-r1")
        os.kill(hung, signal.SIGSTOP)
        try:
            started = time.monotonic()
            driver.get(ui + "cluster")
            wait_for("a replica down", lambda: texts(driver, "#replicas-table .badge").count("down") == 1)
            assert time.monotonic() - started < 10
            assert "no answer in" in driver.find_element(By.CSS_SELECTOR, "#replicas-table .error").text
            assert "serving, 1 replica down" in driver.find_element(By.CSS_SELECTOR, ".cards").text
            assert console_errors(driver) == []
            driver.save_screenshot(str(artifacts() / "cluster-remote-replica-down.png"))
        finally:
            os.kill(hung, signal.SIGCONT)
    finally:
        driver.quit()
