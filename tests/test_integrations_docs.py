"""The examples of docs/integrations.md run as written: each framework's ```python block in a namespace
of its own, against a served cluster in each shard mode, with `localhost:50051` replaced by its
address; then what each retrieved is checked (the server's model embeds, so the hybrid retrievers
must find the document that answers each question)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vecshard_server.cluster.local import LocalCluster

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
BLOCK = re.compile(r"^### (\w+)\n.*?^```python\n(.*?)^```$", re.S | re.M)


def _examples() -> dict[str, str]:
    return dict(BLOCK.findall(DOC.read_text()))


def test_there_is_an_example_per_framework() -> None:
    examples = _examples()
    assert set(examples) == {"LangChain", "LlamaIndex", "Haystack"}
    for framework, code in examples.items():
        assert "hybrid" in code.lower(), f"the {framework} example has no hybrid retriever"


def test_the_examples_run(served_cluster: LocalCluster) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    pytest.importorskip("haystack")
    got = {}
    for framework, block in _examples().items():
        namespace: dict[str, object] = {"__name__": f"integrations_{framework}"}
        code = compile(block.replace("localhost:50051", served_cluster.address), f"{DOC.name}: {framework}", "exec")
        exec(code, namespace)  # noqa: S102 - the documentation's own code, run as a reader would
        got[framework] = namespace
    assert got["LangChain"]["docs"][0].id == "shards"  # type: ignore[index]
    assert "hash of each id" in str(got["LangChain"]["messages"])
    assert got["LlamaIndex"]["nodes"][0].node.ref_doc_id == "bm25"  # type: ignore[index]
    assert "BM25" in str(got["LlamaIndex"]["prompt"])
    context = str(got["Haystack"]["result"]["prompt_builder"]["prompt"]).split("Context:\n")[1]  # type: ignore[index]
    assert context.startswith("Each shard group has replicas")
    assert sorted(d.id for d in got["Haystack"]["recent"]) == ["bm25", "shards"]  # type: ignore[attr-defined]


def test_the_sdk_imports_without_any_framework() -> None:
    """The base install has no framework: importing vecshard and vecshard.integrations needs none,
    and a framework's module says which extra to install."""
    blocked = ["langchain_core", "llama_index", "haystack"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import vecshard, vecshard.integrations, vecshard.integrations._common\n"
        "try:\n"
        "    import vecshard.integrations.haystack\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "vecshard[haystack]"' in out.stdout
