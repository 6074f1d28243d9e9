"""What the dashboard tests share: a headless Chromium (Debian's chromium and chromium-driver, driven by
selenium; nothing downloaded), its console errors, screenshots as test artifacts, small waits."""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("VECSHARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VECSHARD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
T = TypeVar("T")


def artifacts() -> Path:
    """Where screenshots go: $VECSHARD_TEST_ARTIFACTS, else tests/artifacts/ (git-ignored)."""
    path = Path(os.environ.get("VECSHARD_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (apt-get install ...)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,900"):
        options.add_argument(arg)
    options.add_argument("--force-device-scale-factor=1")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.accept_insecure_certs = True  # (the tests' own CA: the pages are served over HTTPS)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    return driver


def console_errors(driver: Any) -> list[str]:
    """The console's errors since the last call (the browser log is drained by reading it)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as err:  # (an element not there yet, a stale one)
            last = err
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last!r})" if last else ""))


def texts(driver: Any, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def http(
    url: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """(status, JSON body) of a plain request, no cookies."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode(errors="replace")


def fetch_in_page(driver: Any, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """A request made by the page itself (its cookie, its origin, the dashboard's header): what a
    hand-crafted request from a logged-in browser can do."""
    script = """
        const [path, body, done] = arguments;
        const opts = {credentials: "same-origin", headers: {"X-Vecshard-UI": "1", "Content-Type": "application/json"}};
        if (body !== null) { opts.method = "POST"; opts.body = JSON.stringify(body); }
        fetch(path, opts).then(async (r) => done({status: r.status, body: await r.json()}))
                         .catch((e) => done({status: 0, body: String(e)}));
    """
    result: dict[str, Any] = driver.execute_async_script(script, path, body)
    return result
