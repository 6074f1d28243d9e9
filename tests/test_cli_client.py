"""The shell workflow: create a model-bound collection, index a JSONL/text file, search it by text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vecshard_server.cli.main import cli
from vecshard_server.cluster.local import LocalCluster

pytest.importorskip("torch", reason="embedding needs the 'embed' extra (torch)")

DOCS = [
    {"id": 10, "text": "The cat curled up on the warm windowsill and slept all afternoon."},
    {"id": 20, "text": "Central banks raised interest rates to fight inflation."},
    {"id": 30, "text": "The striker scored twice in the final minutes of the match."},
    {"id": 40, "text": "Fresh basil, tomatoes and mozzarella make a simple summer salad."},
]


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_index_a_jsonl_file_and_search_it_by_text(
    cluster_of: Callable[[int], LocalCluster], tmp_path: Path, name: str
) -> None:
    address = cluster_of(2).address
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    assert "model minilm" in run("collections", "create", name, "--model", "minilm", "--address", address)
    assert "added 4" in run("add", name, str(src), "--address", address)
    out = json.loads(
        run(
            "search",
            name,
            "--text",
            "kitten napping",
            "--text",
            "football game",
            "-k",
            "2",
            "--source",
            str(src),
            "--json",
            "--address",
            address,
        )
    )
    assert out[0]["hits"][0]["id"] == 10 and "cat" in out[0]["hits"][0]["text"]
    assert "similarity" in out[0]["hits"][0] and "distance" not in out[0]["hits"][0]  # COSINE: larger is better
    assert out[1]["hits"][0]["id"] == 30
    table = run("search", name, "--text", "cooking recipe", "--source", str(src), "--address", address)
    assert table.splitlines()[3].split()[1] == "40"  # header, rule, then rank 1
    assert table.splitlines()[1].split()[:3] == ["rank", "id", "similarity"]
    listing = run("collections", "list", "--address", address)
    assert name in listing and "minilm" in listing
    run("collections", "drop", name, "--yes", "--address", address)


def test_text_and_vector_files(cluster_of: Callable[[int], LocalCluster], tmp_path: Path, name: str) -> None:
    address = cluster_of(2).address
    lines = tmp_path / "lines.txt"
    lines.write_text("red apples\n\nblue ocean waves\n")
    run("collections", "create", name, "--model", "minilm", "--address", address)
    run("add", name, str(lines), "--address", address)
    out = json.loads(run("search", name, "--text", "the sea", "-k", "1", "--json", "--address", address))
    assert out[0]["hits"][0]["id"] == 2  # line numbers are the ids
    run("collections", "drop", name, "--yes", "--address", address)

    vecs = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    np.save(tmp_path / "v.npy", vecs)
    run("collections", "create", name, "--dim", "8", "--address", address)
    run("add", name, str(tmp_path / "v.npy"), "--start-id", "100", "--address", address)
    np.save(tmp_path / "q.npy", vecs[7:9])
    out = json.loads(
        run("search", name, "--vectors", str(tmp_path / "q.npy"), "-k", "1", "--json", "--address", address)
    )
    assert [q["hits"][0]["id"] for q in out] == [107, 108]
    assert out[0]["hits"][0]["distance"] == 0.0  # L2: a distance, smaller is better
    run("collections", "drop", name, "--yes", "--address", address)


def test_errors_print_one_line_and_exit_nonzero(cluster_of: Callable[[int], LocalCluster]) -> None:
    result = CliRunner().invoke(cli, ["search", "no_such", "--text", "x", "--address", cluster_of(2).address])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: NOT_FOUND: collection 'no_such' does not exist")
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["search", "x", "--address", cluster_of(2).address])
    assert result.exit_code == 2 and "exactly one of --text, --image, --vectors or --by-id" in result.output


def test_sample_and_plot(cluster_of: Callable[[int], LocalCluster], tmp_path: Path, name: str) -> None:
    import faiss

    from vecshard import Client
    from vecshard_server.common.placement import shard_of

    from .conftest import clustered

    address = cluster_of(3).address
    with Client(address) as c:
        c.create_collection(name, 16, index="ivf_flat", nlist=8, train_threshold=10**6)
        c.add(name, np.arange(3000) * 7, clustered(3000, 16, centers=8))
        untrained = c.sample(name, 100)
        assert (untrained.lists == -1).all()
        c.train(name)
        s = c.sample(name, 900, seed=3)
        assert len(s.ids) == 900 and len(np.unique(s.ids)) == 900
        np.testing.assert_array_equal(s.shards, shard_of(s.ids, 3))  # each vector's real shard
        np.testing.assert_array_equal(s.vectors, c.get(name, s.ids))
        quantizer = faiss.IndexFlatL2(16)
        quantizer.add(c.describe(name, include_centroids=True).centroids)
        np.testing.assert_array_equal(s.lists, quantizer.search(s.vectors, 1)[1][:, 0])
        np.testing.assert_array_equal(c.sample(name, 900, seed=3).ids, s.ids)  # reproducible
    for color in ("shard", "list"):
        out = tmp_path / f"{color}.png"
        assert "wrote" in run(
            "plot", name, "--out", str(out), "--color", color, "--points", "500", "--address", address
        )
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with Client(address) as c:
        c.drop_collection(name)


def test_jsonl_fields_become_payloads_and_search_filters_them(
    cluster_of: Callable[[int], LocalCluster], tmp_path: Path, name: str
) -> None:
    address = cluster_of(2).address
    src = tmp_path / "docs.jsonl"
    meta = [{"lang": "en", "year": 2021}, {"lang": "en", "year": 2015}, {"lang": "fr", "year": 2022}, {}]
    src.write_text("\n".join(json.dumps({**d, **m}) for d, m in zip(DOCS, meta, strict=True)) + "\n")
    run("collections", "create", name, "--model", "minilm", "--address", address)
    run("add", name, str(src), "--address", address)
    assert run("count", name, "--filter", 'lang = "en"', "--address", address).strip() == "2"
    assert run("count", name, "--address", address).strip() == "4"
    out = json.loads(
        run(
            "search",
            name,
            "--text",
            "anything at all",
            "-k",
            "4",
            "--filter",
            'lang = "en" and year >= 2020 or lang = "fr"',
            "--payload",
            "--json",
            "--address",
            address,
        )
    )
    assert {h["id"]: h["payload"] for h in out[0]["hits"]} == {10: meta[0], 30: meta[2]}
    table = run("search", name, "--text", "x", "--filter", "year < 2016", "--payload", "--address", address)
    assert table.splitlines()[1].split()[-1] == "payload" and '"year": 2015' in table
    bad = CliRunner().invoke(cli, ["search", name, "--text", "x", "--filter", "year >= ", "--address", address])
    assert bad.exit_code == 2 and "column 8" in bad.output and "expected" in bad.output, bad.output
    run("collections", "drop", name, "--yes", "--address", address)


def test_string_ids_by_id_search_groups_facet_and_scroll(
    cluster_of: Callable[[int], LocalCluster], tmp_path: Path, name: str
) -> None:
    """A collection with string ids from the shell: vectors added under row numbers written as
    strings, searched by vector and by a stored point's id (with its vector), grouped by a payload
    field, faceted and scrolled in payload order."""
    from vecshard import Client

    address = cluster_of(3).address
    vecs = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vecs)
    np.save(tmp_path / "q.npy", vecs[7:9])
    assert "string ids" in run("collections", "create", name, "--dim", "8", "--id-type", "string", "--address", address)
    assert json.loads(run("collections", "describe", name, "--address", address))["id_type"] == "string"
    run("add", name, str(tmp_path / "v.npy"), "--start-id", "100", "--address", address)
    assert "added 50" in run(
        "add", name, str(tmp_path / "v.npy"), "--start-id", "100", "--on-conflict", "skip", "--address", address
    )
    out = json.loads(
        run("search", name, "--vectors", str(tmp_path / "q.npy"), "-k", "1", "--json", "--address", address)
    )
    assert [q["hits"][0]["id"] for q in out] == ["107", "108"]
    by_id = json.loads(
        run("search", name, "--by-id", "107", "-k", "3", "--with-vectors", "--json", "--address", address)
    )
    d = ((vecs - vecs[7]) ** 2).sum(axis=1)
    assert [h["id"] for h in by_id[0]["hits"]] == [str(100 + i) for i in np.argsort(d)[1:4]]
    assert by_id[0]["query"] == "id 107"
    np.testing.assert_allclose(by_id[0]["hits"][0]["vector"], vecs[np.argsort(d)[1]], atol=1e-5)
    with Client(address) as c:
        for g in range(3):
            c.set_payload(name, {"g": g, "n": g * 10}, ids=[str(100 + i) for i in range(50) if i % 3 == g])
    groups = json.loads(
        run(
            "search",
            name,
            "--vectors",
            str(tmp_path / "q.npy"),
            "-k",
            "2",
            "--group-by",
            "g",
            "--group-size",
            "2",
            "--json",
            "--address",
            address,
        )
    )
    assert [len(q["groups"]) for q in groups] == [2, 2]
    assert all(len(g["hits"]) == 2 and g["value"] in (0, 1, 2) for q in groups for g in q["groups"])
    assert groups[0]["groups"][0]["hits"][0]["id"] == "107"  # the best hit's group comes first
    table = run(
        "search", name, "--vectors", str(tmp_path / "q.npy"), "-k", "2", "--group-by", "g", "--address", address
    )
    assert "group: 1" in table
    assert json.loads(run("facet", name, "g", "--json", "--address", address)) == [
        {"value": 0, "count": 17},
        {"value": 1, "count": 17},
        {"value": 2, "count": 16},
    ]
    facet_table = run("facet", name, "g", "--filter", "n >= 10", "--limit", "1", "--address", address)
    assert facet_table.splitlines()[0].split() == ["g", "count"] and facet_table.splitlines()[2].split() == ["1", "17"]
    scrolled = json.loads(
        run("scroll", name, "--order-by", "n", "--desc", "--limit", "20", "--json", "--address", address)
    )
    assert [p["payload"]["n"] for p in scrolled] == [20] * 16 + [10] * 4
    assert all(isinstance(p["id"], str) for p in scrolled)
    bad = CliRunner().invoke(cli, ["scroll", name, "--desc", "--address", address])
    assert bad.exit_code == 2 and "--desc needs --order-by" in bad.output
    run("collections", "drop", name, "--yes", "--address", address)
    run("collections", "create", name, "--dim", "8", "--address", address)
    bad = CliRunner().invoke(cli, ["search", name, "--by-id", "doc-1", "--address", address])
    assert bad.exit_code == 2 and "not an integer id" in bad.output
    run("collections", "drop", name, "--yes", "--address", address)


def test_jsonl_with_string_ids(cluster_of: Callable[[int], LocalCluster], tmp_path: Path, name: str) -> None:
    address = cluster_of(2).address
    src = tmp_path / "docs.jsonl"
    keys = ["cat-nap", "rates", "striker", "salad"]
    src.write_text("\n".join(json.dumps({**d, "id": k}) for d, k in zip(DOCS, keys, strict=True)) + "\n")
    run("collections", "create", name, "--model", "minilm", "--id-type", "string", "--address", address)
    assert "(4 stored)" in run("add", name, str(src), "--address", address)
    assert "(4 stored)" in run("add", name, str(src), "--on-conflict", "skip", "--address", address)
    out = json.loads(
        run("search", name, "--text", "kitten napping", "-k", "1", "--source", str(src), "--json", "--address", address)
    )
    assert out[0]["hits"][0]["id"] == "cat-nap" and "cat" in out[0]["hits"][0]["text"]
    run("collections", "drop", name, "--yes", "--address", address)
    run("collections", "create", name, "--model", "minilm", "--address", address)  # int ids: "cat-nap" is no int
    result = CliRunner().invoke(cli, ["add", name, str(src), "--address", address])
    assert result.exit_code == 1 and "id 'cat-nap' is not an integer" in result.output
    run("collections", "drop", name, "--yes", "--address", address)
