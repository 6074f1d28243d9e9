"""The committed stubs in client/vecshard/v1 must be exactly what `python proto/generate.py` makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stubs_are_fresh(tmp_path: Path) -> None:
    fresh = _generator().generate(tmp_path)
    committed_dir = ROOT / "client" / "vecshard" / "v1"
    fresh_names = sorted(p.name for p in fresh)
    committed_names = sorted(p.name for p in committed_dir.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    assert committed_names == fresh_names, "stub files differ: run `python proto/generate.py` and commit"
    for path in fresh:
        assert (committed_dir / path.name).read_bytes() == path.read_bytes(), (
            f"{path.name} is stale against proto/: run `python proto/generate.py` and commit"
        )


def test_every_rpc_documents_its_errors() -> None:
    from vecshard.v1 import vector_search_pb2

    text = (ROOT / "proto" / "vecshard" / "v1" / "vector_search.proto").read_text()
    service = text.split("service VectorSearch {", 1)[1].split("\n}", 1)[0]
    comment: list[str] = []
    documented = {}
    for line in (raw.strip() for raw in service.splitlines()):
        if line.startswith("//"):
            comment.append(line)
        elif line.startswith("rpc "):
            documented[line[4:].split("(")[0]] = " ".join(comment)
            comment = []
        else:
            comment = []
    methods = [m.name for m in vector_search_pb2.DESCRIPTOR.services_by_name["VectorSearch"].methods]
    assert sorted(documented) == sorted(methods)
    for method, doc in documented.items():
        assert "Errors:" in doc, f"rpc {method} lists no error codes in its comment"


def _docs():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("proto_docs", ROOT / "proto" / "docs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_api_reference_is_fresh() -> None:
    docs = _docs()
    assert (ROOT / "docs" / "api.md").read_text() == docs.api_markdown(docs.descriptor_set()), (
        "docs/api.md is stale against proto/: run `python proto/generate.py` and commit"
    )


def test_v1_only_grows() -> None:
    """Nothing published in api.lock.json may be removed, renumbered or retyped."""
    import json

    docs = _docs()
    current = docs.api_lock(docs.descriptor_set())
    assert docs.breaking_changes(json.loads(docs.LOCK.read_text()), current) == []
    # the check itself catches a renumbered field and a removed RPC
    broken = json.loads(json.dumps(current))
    broken["messages"]["vecshard.v1.SearchRequest"]["k"][0] = 99
    del broken["services"]["vecshard.v1.VectorSearch"]["Train"]
    assert len(docs.breaking_changes(current, broken)) == 2


def test_proto_style() -> None:
    """Lint: enum values carry their enum's prefix and start at *_UNSPECIFIED = 0; names are cased
    as the protobuf style guide says."""
    import re

    for file in _docs().descriptor_set().file:
        for enum in file.enum_type:
            prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
            assert enum.value[0].name == prefix + "UNSPECIFIED" and enum.value[0].number == 0, enum.name
            assert all(v.name.startswith(prefix) for v in enum.value), enum.name
        for msg in file.message_type:
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", msg.name), msg.name
            assert all(re.fullmatch(r"[a-z][a-z0-9_]*", f.name) for f in msg.field), msg.name
        for service in file.service:
            assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]*", m.name) for m in service.method)
