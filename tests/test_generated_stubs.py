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
