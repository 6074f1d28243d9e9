"""The web dashboard, driven by a real headless Chromium against a served cluster (local shards, API
keys set): every page loads without console errors and shows what the SDK reports; a search typed
into the box finds the SDK's hits; a bad filter shows the server's message and the page keeps
working; a read key cannot drop; without a key nothing is shown. Screenshots of every page go to the
test artifacts (tests/artifacts/, or $VECSHARD_TEST_ARTIFACTS)."""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.parse
from collections.abc import Iterator
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.certs import CA
from tests.dashboard_support import (
    ROOT,
    artifacts,
    browser,
    console_errors,
    fetch_in_page,
    http,
    texts,
    wait_for,
)
from vecshard import TLS, Client
from vecshard_server.cluster.local import LocalCluster

pytest.importorskip("selenium")

ADMIN, READ = "admin-key-4f1c2b9e", "read-key-77d0a3c1"
NOTES = [
    "the cat slept on the warm mat",
    "interest rates rose again this quarter",
    "a late winning goal in the final",
    "kittens love to nap in the sun",
    "the central bank held rates steady",
    "the striker scored twice before half time",
    "a dog chased the cat up a tree",
    "bond yields fell as inflation cooled",
    "the goalkeeper saved a penalty",
    "my cat ignores the new scratching post",
    "markets rallied after the rate decision",
    "the team won the league on goal difference",
]
UI = ROOT / "server" / "vecshard_server" / "ui"
CONTEXT = ssl.create_default_context()  # (trusts the module's CA once the cluster is served)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Client]]:
    """Local shards, API keys over TLS (the dashboard then serves HTTPS with the same certificate)."""
    d = tmp_path_factory.mktemp("dashboard")
    (keys := d / "keys.toml").write_text(f'admin = ["{ADMIN}"]\nread = ["{READ}"]\n')
    ca = CA(d)
    cert, key = ca.issue("vecshard")
    CONTEXT.load_verify_locations(ca.path)
    env = {
        "VECSHARD_API_KEYS_FILE": str(keys),
        "VECSHARD_TLS_CERT": str(cert),
        "VECSHARD_TLS_KEY": str(key),
        "VECSHARD_UI_SAMPLE_S": "0.5",
    }
    with (
        LocalCluster(shards=2, shard_mode="local", env=env, ui=True, ui_port=0) as cluster,
        Client(cluster.address, api_key=ADMIN, tls=TLS(root_cert=ca.path), timeout=120) as client,
    ):
        client.create_collection("notes", 0, None, model="minilm", store_text=True)
        client.add("notes", list(range(len(NOTES))), texts=NOTES, payloads=[{"n": i} for i in range(len(NOTES))])
        client.create_payload_index("notes", "text", "text", stemmer="english")
        client.create_collection("posts", dim=8)
        x = np.random.default_rng(0).random((300, 8), dtype=np.float32)
        payloads = [{"lang": ["en", "fr", "de"][i % 3], "year": 2000 + i % 25} for i in range(300)]
        client.add("posts", ids=np.arange(300), vectors=x, payloads=payloads)
        client.create_payload_index("posts", "lang", "keyword")
        yield cluster, client


@pytest.fixture(scope="module")
def driver(served: tuple[LocalCluster, Client]) -> Iterator[Any]:
    d = browser()
    try:
        yield d
    finally:
        d.quit()


def url(served: tuple[LocalCluster, Client], path: str) -> str:
    assert served[0].ui_url is not None, "the dashboard did not start"
    return served[0].ui_url.rstrip("/") + path


def open_page(driver: Any, address: str, ready_css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(address)
    wait_for(ready_css, lambda: driver.find_elements(By.CSS_SELECTOR, ready_css))


def login(driver: Any, served: tuple[LocalCluster, Client], key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    open_page(driver, url(served, "/cluster"), "#login-form")
    driver.find_element(By.ID, "login-key").send_keys(key)
    driver.find_element(By.ID, "login-submit").click()
    wait_for("the cluster page", lambda: driver.find_elements(By.ID, "replicas-table"))


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(artifacts() / f"{name}.png"))


def test_without_a_key_nothing_is_shown(served: tuple[LocalCluster, Client], driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    for path in ("/cluster", "/collections", "/collections/notes", "/metrics"):
        open_page(driver, url(served, path), "#login-form")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "notes" not in body and "posts" not in body and not driver.find_elements(By.TAG_NAME, "table")
        assert console_errors(driver) == []
    shot(driver, "login")
    for path in ("/api/cluster", "/api/collections", "/api/collections/notes/points", "/api/metrics"):
        status, reply = http(url(served, path), context=CONTEXT)
        assert status == 401, (path, reply)
        assert "notes" not in json.dumps(reply)
    status, reply = http(url(served, "/api/login"), {"key": "wrong"}, {"X-Vecshard-UI": "1"}, CONTEXT)
    assert status == 401 and "unknown API key" in reply["error"]


def test_pages_show_what_the_sdk_reports(served: tuple[LocalCluster, Client], driver: Any) -> None:
    from selenium.webdriver.common.by import By

    cluster, client = served
    login(driver, served, ADMIN)
    assert ADMIN not in driver.page_source and ADMIN not in str(driver.execute_script("return document.cookie"))
    infos = {c.name: c for c in client.list_collections()}
    # Cluster: both groups healthy, each collection's placement and count as the SDK describes it.
    wait_for("placements", lambda: driver.find_elements(By.CSS_SELECTOR, "#placement-table tr[data-name]"))
    assert texts(driver, "#replicas-table .badge") == ["healthy", "healthy"]
    for name, info in infos.items():
        row = driver.find_element(By.CSS_SELECTOR, f"#placement-table tr[data-name='{name}']")
        assert row.find_element(By.CSS_SELECTOR, ".count").text == f"{info.count:,}"
        per_shard = [f"{s.count:,}" for s in client.describe(name).shards]
        assert row.find_elements(By.TAG_NAME, "td")[-1].text == " · ".join(per_shard)
    assert console_errors(driver) == []
    shot(driver, "cluster")
    # Collections: every collection, its count, indexes and model.
    open_page(driver, url(served, "/collections"), "#collections-table")
    assert sorted(e.get_attribute("data-name") for e in driver.find_elements(By.CSS_SELECTOR, "tr[data-name]")) == [
        "notes",
        "posts",
    ]
    for name, info in infos.items():
        row = driver.find_element(By.CSS_SELECTOR, f"#collections-table tr[data-name='{name}']")
        assert row.find_element(By.CSS_SELECTOR, ".count").text == f"{info.count:,}"
    notes_row = driver.find_element(By.CSS_SELECTOR, "tr[data-name='notes']").text
    assert "minilm" in notes_row and "text (12 docs)" in notes_row
    assert "lang (keyword)" in driver.find_element(By.CSS_SELECTOR, "tr[data-name='posts']").text
    assert console_errors(driver) == []
    shot(driver, "collections")


def test_a_search_typed_into_the_box_finds_the_sdks_hits(served: tuple[LocalCluster, Client], driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, client = served
    login(driver, served, ADMIN)
    open_page(driver, url(served, "/collections/notes"), "#points-table")
    assert texts(driver, "#collection-count") == [str(len(NOTES))]
    for mode, query, kwargs in [
        ("text", "a sleepy kitten", {"texts": ["a sleepy kitten"]}),
        ("keyword", "rates", {"keyword": "rates"}),
        ("like", "0", {"by_ids": [0]}),
    ]:
        Select(driver.find_element(By.ID, "search-mode")).select_by_value(mode)
        box = driver.find_element(By.ID, "search-input")
        box.clear()
        box.send_keys(query)
        k = driver.find_element(By.ID, "search-k")
        k.clear()
        k.send_keys("5")
        driver.find_element(By.ID, "search-go").click()
        expected = [str(i) for i in client.search("notes", k=5, **kwargs).ids[0] if i >= 0]
        wait_for(
            f"{mode} hits {expected}",
            lambda want=expected: (
                [  # type: ignore[misc]
                    e.get_attribute("data-id") for e in driver.find_elements(By.CSS_SELECTOR, "#hits-table tbody tr")
                ]
                == want
            ),
        )
        if mode == "text":
            shot(driver, "collection-search")
    assert console_errors(driver) == []


def test_an_invalid_filter_shows_its_error_and_the_page_keeps_working(
    served: tuple[LocalCluster, Client], driver: Any
) -> None:
    from selenium.webdriver.common.by import By

    _, client = served
    login(driver, served, ADMIN)
    open_page(driver, url(served, "/collections/posts"), "#points-table")
    box = driver.find_element(By.ID, "filter-input")
    box.send_keys('lang = "en" and year >=')
    driver.find_element(By.ID, "filter-apply").click()
    error = wait_for("the filter's error", lambda: driver.find_element(By.ID, "filter-error").text)
    assert "syntax error at column" in error
    shot(driver, "collection-filter-error")
    errors = console_errors(driver)  # (the refused request, and nothing else)
    assert len(errors) == 1 and "400" in errors[0], errors
    box.clear()
    box.send_keys('lang = "en" and year >= 2020')
    driver.find_element(By.ID, "filter-apply").click()
    expected = client.count("posts", 'lang = "en" and year >= 2020')
    wait_for("the filtered count", lambda: driver.find_element(By.ID, "matching").text == f"{expected} matching")
    assert driver.find_element(By.ID, "filter-error").text == ""
    shown = [int(i) for i in texts(driver, "#points-table tbody td:first-child")]
    assert shown == [p.id for p in client.scroll("posts", 'lang = "en" and year >= 2020')][: len(shown)]
    assert console_errors(driver) == []


def test_a_read_key_cannot_drop_and_an_admin_drops_after_confirming(
    served: tuple[LocalCluster, Client], driver: Any
) -> None:
    from selenium.webdriver.common.by import By

    _, client = served
    client.create_collection("scratch", dim=4)
    login(driver, served, READ)
    open_page(driver, url(served, "/collections"), "#collections-table")
    assert driver.find_elements(By.CSS_SELECTOR, "button.drop") == []  # no action offered ...
    reply = fetch_in_page(driver, "/api/collections/scratch/drop", {"confirm": "scratch"})
    assert reply["status"] == 403 and "needs an admin API key" in reply["body"]["error"]  # ... nor allowed
    assert "scratch" in [c.name for c in client.list_collections()]
    console_errors(driver)
    login(driver, served, ADMIN)
    open_page(driver, url(served, "/collections"), "button.drop[data-name='scratch']")
    driver.find_element(By.CSS_SELECTOR, "button.drop[data-name='scratch']").click()
    driver.find_element(By.CSS_SELECTOR, ".confirm-name").send_keys("scratch")
    driver.find_element(By.CSS_SELECTOR, ".confirm-drop").click()
    wait_for("the row to go", lambda: not driver.find_elements(By.CSS_SELECTOR, "tr[data-name='scratch']"))
    assert "scratch" not in [c.name for c in client.list_collections()]
    assert console_errors(driver) == []


def test_metrics_are_drawn_from_the_process_metrics(served: tuple[LocalCluster, Client], driver: Any) -> None:
    from selenium.webdriver.common.by import By

    _, client = served
    login(driver, served, ADMIN)
    q = np.random.default_rng(1).random((1, 8), dtype=np.float32)
    for _ in range(30):
        client.search("posts", q, k=3)
    open_page(driver, url(served, "/metrics"), "#chart-latency-Search canvas")
    assert driver.find_elements(By.CSS_SELECTOR, "#chart-qps canvas")

    def searches() -> dict[str, Any] | None:
        """The metrics once they count the 30 searches (QPS x each interval's length)."""
        reply: dict[str, Any] = fetch_in_page(driver, "/api/metrics?minutes=5", None)["body"]
        lengths = np.diff([reply["start"], *reply["times"]])
        total = sum(q * t for q, t in zip(reply["methods"]["Search"]["qps"], lengths, strict=True))
        return reply if total >= 29.9 else None

    reply = wait_for("the searches in the metrics", searches)
    assert any(p is not None and p > 0 for p in reply["methods"]["Search"]["p99_ms"])
    assert console_errors(driver) == []
    shot(driver, "metrics")


def test_requests_from_other_sites_are_refused(served: tuple[LocalCluster, Client]) -> None:
    address = urllib.parse.urlsplit(url(served, "/"))
    conn = HTTPSConnection(address.hostname or "", address.port, context=CONTEXT)
    conn.request("GET", "/api/session", headers={"Host": f"rebound.example:{address.port}"})
    assert conn.getresponse().status == 421  # a DNS-rebinding page names its own host
    conn.close()
    status, _ = http(url(served, "/api/collections/posts/drop"), {"confirm": "posts"}, context=CONTEXT)
    assert status == 403  # a cross-site form cannot set the dashboard's header
    status, _ = http(
        url(served, "/api/collections/posts/drop"),
        {"confirm": "posts"},
        {"X-Vecshard-UI": "1", "Origin": "http://evil.example"},
        CONTEXT,
    )
    assert status == 403
    status, _ = http(url(served, "/api/collections/posts/drop"), {"confirm": "posts"}, {"X-Vecshard-UI": "1"}, CONTEXT)
    assert status == 401  # (and without a key, the API refuses it)


def test_the_dashboard_does_not_listen_beyond_loopback_without_keys_and_tls() -> None:
    from vecshard_server.common.config import Settings
    from vecshard_server.ui.server import check_ui_listener

    keys, tls = {"api_keys_file": Path("k.toml")}, {"tls_cert": Path("c.pem"), "tls_key": Path("k.pem")}
    for given, missing in [({}, "API keys"), (keys, "TLS"), (tls, "API keys")]:
        with pytest.raises(SystemExit, match=f"refusing to serve the dashboard on 0.0.0.0 without {missing}"):
            check_ui_listener("0.0.0.0", Settings(**given), insecure=False)
        check_ui_listener("0.0.0.0", Settings(**given), insecure=True)  # (a warning)
    check_ui_listener("127.0.0.1", Settings(), insecure=False)
    check_ui_listener("0.0.0.0", Settings(**keys, **tls), insecure=False)


def test_the_vendored_chart_library_is_the_locked_npm_package() -> None:
    lock = json.loads((UI / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/uplot"]["version"]
    vendored = (UI / "static" / "vendor" / "uPlot.iife.min.js").read_bytes()
    assert vendored.startswith(f"/*! https://github.com/leeoniya/uPlot (v{version}) */".encode())
    assert (UI / "static" / "vendor" / "uPlot.LICENSE").read_text().startswith("The MIT License")
    package = UI / "node_modules" / "uplot"
    if not package.exists():
        pytest.fail(f"run `npm ci --prefix {UI.relative_to(ROOT)}` (the setup does) to check the vendored copy")
    assert json.loads((package / "package.json").read_text())["version"] == version
    for name, copy in [("uPlot.iife.min.js", "uPlot.iife.min.js"), ("uPlot.min.css", "uPlot.min.css")]:
        ours = hashlib.sha256((UI / "static" / "vendor" / copy).read_bytes()).hexdigest()
        assert ours == hashlib.sha256((package / "dist" / name).read_bytes()).hexdigest(), name
    assert (package / "LICENSE").read_bytes() == (UI / "static" / "vendor" / "uPlot.LICENSE").read_bytes()


def test_a_running_reshard_shows_with_its_progress(served: tuple[LocalCluster, Client], driver: Any) -> None:
    """(Last: it moves `posts` onto 3 groups.)"""
    from selenium.webdriver.common.by import By

    _, client = served
    login(driver, served, READ)  # (a read key sees the jobs too)
    client.reshard(3, collections=["posts"], wait=False, max_points_per_s=150, page_size=10)
    try:
        open_page(driver, url(served, "/cluster"), "#jobs-table")
        row = driver.find_element(By.CSS_SELECTOR, "#jobs-table tbody tr").text
        assert row.startswith("reshard posts") and ("PREPARING" in row or "COPYING" in row), row
        jobs = fetch_in_page(driver, "/api/cluster", None)["body"]["jobs"]
        assert [(j["kind"], j["collection"]) for j in jobs] == [("reshard", "posts")]
        assert jobs[0]["done"] <= jobs[0]["total"] and jobs[0]["started_unix"] > 0
        assert console_errors(driver) == []
        shot(driver, "cluster-reshard")
    finally:
        client.reshard(3, collections=["posts"])  # (joins it, until done)
    open_page(driver, url(served, "/cluster"), "#no-jobs")
    row = driver.find_element(By.CSS_SELECTOR, "#placement-table tr[data-name='posts']")
    assert [c.text for c in row.find_elements(By.TAG_NAME, "td")[1:4]] == ["3", "1", "300"]
