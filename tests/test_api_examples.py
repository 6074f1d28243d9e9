"""The examples at the end of docs/api.md (from proto/api-examples.md) run as written: every
```python block, in order, in one namespace (later blocks use what earlier ones made), against a
served cluster in each shard mode, with `localhost:50051` replaced by its address."""

from __future__ import annotations

import re
from pathlib import Path

from vecshard_server.cluster.local import LocalCluster

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _blocks() -> list[str]:
    text = API_DOC.read_text()
    return BLOCK.findall(text[text.index("## Examples: the data API") :])


def test_the_examples_cover_each_option() -> None:
    code = "\n".join(_blocks())
    for option in (
        'id_type="string"',
        "update_vectors(",
        'on_conflict="skip"',
        'on_conflict="replace"',
        "offset=",
        "score_threshold=",
        "with_vectors=True",
        "by_ids=",
        "recommend(",
        "group_by=",
        "order_by=",
        ".facet(",
        "datetime(",
        "except [",
        "`a.b`",
    ):
        assert option in code, f"docs/api.md has no example of {option}"


def test_the_examples_run(served_cluster: LocalCluster) -> None:
    namespace: dict[str, object] = {"__name__": "api_examples"}
    for n, block in enumerate(_blocks()):
        code = compile(block.replace("localhost:50051", served_cluster.address), f"docs/api.md example {n}", "exec")
        exec(code, namespace)  # noqa: S102 - the documentation's own code, run as a reader would
