"""A client in another language, generated from proto/ alone, can use payloads and filters.

tests/interop/node/interop.js (Node.js, @grpc/grpc-js + @grpc/proto-loader) creates a collection on a
real two-shard cluster, adds points whose payloads hold every Value kind (int64 extremes included),
then runs a filtered Search, Count, Scroll, SetPayload, Get and Remove, and prints what it saw as
JSON. This test checks that against the cluster's state read back with the Python SDK, and against
the filter evaluated here in Python. Its npm dependencies come from the README's setup step
(`npm ci --prefix tests/interop/node`); without them, or without `node`, the test fails (never skips).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vecshard import Client
from vecshard.types import Point
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.string_ids import string_id_hash

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "interop" / "node"
SCRIPT = NODE_DIR / "interop.js"
SETUP = "npm ci --prefix tests/interop/node"
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
FILTER_TEXT = 'lang = "en" and year >= 2020'  # interop.js's filter, in the SDK's text form


def _node() -> str:
    """The node executable, failing (not skipping) with the setup step when anything is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"`node` is not on PATH: install Node.js (>= 18), then run the README setup: {SETUP}")
    missing = [p for p in ("@grpc/grpc-js", "@grpc/proto-loader") if not (NODE_DIR / "node_modules" / p).is_dir()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed in {NODE_DIR / 'node_modules'}: run the README setup "
            f"from the repository root: {SETUP}"
        )
    return node


def _typed(v: Any) -> dict[str, Any]:
    """A Python payload value as proto-loader decodes a vecshard.v1.Value (keepCase, longs: String,
    enums: String, oneofs: true): the set field, plus `kind` naming it; int64 as a decimal string."""
    kind: str
    x: Any
    if v is None:
        kind, x = "null_value", True
    elif isinstance(v, bool):
        kind, x = "bool_value", v
    elif isinstance(v, int):
        kind, x = "int_value", str(v)
    elif isinstance(v, float):
        kind, x = "double_value", v
    elif isinstance(v, str):
        kind, x = "string_value", v
    elif isinstance(v, list):
        kind, x = "list_value", {"values": [_typed(e) for e in v]}
    elif isinstance(v, dict):
        kind, x = "struct_value", _typed_payload(v)
    else:
        raise TypeError(f"not a payload value: {v!r}")
    return {kind: x, "kind": kind}


def _typed_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {"fields": {k: _typed(v) for k, v in payload.items()}}


def _matches(payload: dict[str, Any]) -> bool:
    """FILTER_TEXT evaluated here: lang is "en" and year is a number >= 2020."""
    year = payload.get("year")
    return payload.get("lang") == "en" and isinstance(year, int | float) and not isinstance(year, bool) and year >= 2020


def _run_node(address: str, collection: str) -> dict[str, Any]:
    node = _node()
    try:
        proc = subprocess.run(
            [node, str(SCRIPT.relative_to(ROOT)), address, collection],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"interop.js did not finish in 120 s; stderr:\n{err.stderr!r}")
    if proc.returncode != 0:
        pytest.fail(f"interop.js exited with {proc.returncode}; stderr:\n{proc.stderr}\nstdout:\n{proc.stdout}")
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_node_client_payloads_and_filters() -> None:
    name = "node_interop"
    with LocalCluster(shards=2, log_level="WARNING") as cluster:
        out = _run_node(cluster.address, name)
        with Client(cluster.address) as c:
            ids = [int(i) for i in out["ids"]]
            got = c.retrieve(name, ids, with_vectors=True)
            sdk_count, sdk_total = c.count(name, FILTER_TEXT), c.count(name)
            sdk_scroll = [p.id for p in c.scroll(name, FILTER_TEXT, with_payload=False)]
            fr_left = c.count(name, {"must": [{"key": "lang", "match": "fr"}]})

    # String ids, from generated stubs alone: placed, searched, fetched and removed by their strings.
    st = out["strings"]
    assert st["id_type"] == "ID_TYPE_STRING" and st["added"] == "3" and st["payload_only"] == "1"
    assert st["skip"] == {"added": "1", "skipped": "1"}
    tied = sorted(["3f2a9c1e-7b4d-4e8a-9c0f-1a2b3c4d5e6f", "x"], key=lambda s: string_id_hash(s, 63))  # ties: by hash
    assert st["search_string_ids"] == ["doc/ü", *tied, "y", "", ""]
    assert st["get_found"] == [1, 1, 0] and st["get_has_vector"] == [0, 1, 0]
    assert st["removed"] == "1" and st["count"] == "4"

    # Six points were added, one id above 2^53 (not a double); the "fr" one was removed by filter.
    assert out["added"] == "6" and len(ids) == 6 and 2**53 + 1 in ids
    survivors: list[Point] = [p for p in got if p is not None]
    assert int(out["removed"]) == 1 == len(ids) - len(survivors) and fr_left == 0
    assert int(out["final_count"]) == len(survivors) == sdk_total

    # int64 payload values are exact both ways: Node wrote decimal strings, Python reads ints.
    for p in survivors:
        assert p.payload is not None
        assert type(p.payload["big"]) is int and p.payload["big"] == INT64_MAX, p
        assert type(p.payload["neg"]) is int and p.payload["neg"] == INT64_MIN, p
        assert p.payload["none"] is None and p.payload["meta"] == {"ok": True}

    # The filter selects a proper subset, evaluated here from the stored payloads.
    matching = {p.id for p in survivors if p.payload is not None and _matches(p.payload)}
    assert 0 < len(matching) < len(survivors)

    # Search: exactly the matching points, nearest first (ties by id), padded with -1 to k = 10.
    hits = [int(i) for i in out["search_ids"]]
    assert len(hits) == 10 and len(out["search_payloads"]) == 10
    n = len(matching)
    assert hits[n:] == [-1] * (10 - n) and set(hits[:n]) == matching
    query = np.asarray(out["query"], dtype=np.float32)
    vectors = {p.id: p.vector for p in survivors}
    dist = {i: float(((vectors[i] - query) ** 2).sum()) for i in matching}
    assert hits[:n] == sorted(matching, key=lambda i: (dist[i], i))

    # Search payloads, as Node decoded them, equal the stored ones (without the later `flag`),
    # every Value kind included; padding hits carry empty payloads.
    by_id = {p.id: p.payload or {} for p in survivors}
    for j, i in enumerate(hits[:n]):
        expected = _typed_payload({k: v for k, v in by_id[i].items() if k != "flag"})
        assert out["search_payloads"][j] == expected, i
        assert isinstance(by_id[i]["price"], float) and math.isfinite(by_id[i]["price"])
    assert all(p == {"fields": {}} for p in out["search_payloads"][n:])
    assert out["search_big"][:n] == [str(INT64_MAX)] * n and out["search_neg"][:n] == [str(INT64_MIN)] * n

    # Count and Scroll (pages of 2, following next_start_id) agree with the filter and the SDK.
    assert int(out["count"]) == n == sdk_count
    assert [int(i) for i in out["scroll_ids"]] == sorted(matching) == sdk_scroll
    assert all(1 <= len(page) <= 2 for page in out["scroll_pages"]) and len(out["scroll_pages"]) == math.ceil(n / 2)

    # SetPayload by filter merged flag = true into exactly the matching points, keeping the rest.
    assert int(out["updated"]) == n
    for p in survivors:
        assert (p.payload or {}).get("flag") == (True if p.id in matching else None), p
    assert len(out["get"]) == 2 and any(int(g["id"]) in matching for g in out["get"])
    assert any(int(g["id"]) not in matching for g in out["get"])
    for g in out["get"]:
        assert g["found"] == 1 and g["big"] == str(INT64_MAX)
        assert g["flag"] == (True if int(g["id"]) in matching else None), g
