"""Haystack: the packaged haystack.testing document store tests (DocumentStoreBaseExtendedTests and
every extended mixin the installed version ships, sync and async) against a served 2-shard cluster in
both shard modes; then the retriever components, checked against brute force over the same vectors
and against the BM25 of the keyword tests (bm25s), and their serialization."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("haystack", reason="needs the 'haystack' extra")

from haystack import Document, Pipeline  # noqa: E402
from haystack.document_stores.types import DuplicatePolicy  # noqa: E402
from haystack.testing.document_store import (  # noqa: E402
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    DocumentStoreBaseExtendedTests,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldUniqueValuesTest,
)
from haystack.testing.document_store_async import (  # noqa: E402
    CountDocumentsAsyncTest,
    CountDocumentsByFilterAsyncTest,
    CountUniqueMetadataByFilterAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    GetMetadataFieldMinMaxAsyncTest,
    GetMetadataFieldsInfoAsyncTest,
    GetMetadataFieldUniqueValuesAsyncTest,
    UpdateByFilterAsyncTest,
    WriteDocumentsAsyncTest,
)

from vecshard import Client  # noqa: E402
from vecshard.integrations.haystack import (  # noqa: E402
    VecshardBM25Retriever,
    VecshardDocumentStore,
    VecshardEmbeddingRetriever,
    VecshardHybridRetriever,
)


def _comparable(docs: list[Document]) -> list[dict[str, object]]:
    """Documents as dicts in id order, embeddings at float32 precision (the precision vecshard keeps)."""
    out = []
    for d in sorted(docs, key=lambda d: d.id):
        row = d.to_dict(flatten=False)
        if row["embedding"] is not None:
            row["embedding"] = np.asarray(row["embedding"], dtype=np.float32).tolist()
        out.append(row)
    return out


class _Store:
    @pytest.fixture
    def document_store(self, client: Client, name: str) -> Iterator[VecshardDocumentStore]:
        # dot_product keeps each embedding as written (a cosine collection keeps them unit-normalised)
        store = VecshardDocumentStore(name, client=client, embedding_dim=768, similarity="dot_product")
        yield store
        store.delete_all_documents(recreate_index=True)

    # Haystack's hook for stores whose documents differ from the written ones in a documented way:
    # vecshard keeps vectors as float32 and returns documents in its own (id hash) order.
    @staticmethod
    def assert_documents_are_equal(received: list[Document], expected: list[Document]) -> None:
        assert _comparable(received) == _comparable(expected)


class TestDocumentStore(
    _Store,
    DocumentStoreBaseExtendedTests,
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldUniqueValuesTest,
):
    # Haystack leaves the default policy to each store (its base test raises NotImplementedError):
    # vecshard's DuplicatePolicy.NONE is FAIL.
    def test_write_documents(self, document_store: VecshardDocumentStore) -> None:
        docs = [Document(id="1", content="one"), Document(id="2", content="two", embedding=[0.5] * 768)]
        assert document_store.write_documents(docs) == 2
        with pytest.raises(Exception, match="already exists"):
            document_store.write_documents([Document(id="1", content="again")])
        self.assert_documents_are_equal(document_store.filter_documents(), docs)


class TestDocumentStoreAsync(
    _Store,
    CountDocumentsAsyncTest,
    CountDocumentsByFilterAsyncTest,
    CountUniqueMetadataByFilterAsyncTest,
    DeleteAllAsyncTest,
    DeleteByFilterAsyncTest,
    DeleteDocumentsAsyncTest,
    FilterDocumentsAsyncTest,
    GetMetadataFieldMinMaxAsyncTest,
    GetMetadataFieldsInfoAsyncTest,
    GetMetadataFieldUniqueValuesAsyncTest,
    UpdateByFilterAsyncTest,
    WriteDocumentsAsyncTest,
):
    @pytest.mark.asyncio
    async def test_write_documents_async(self, document_store: VecshardDocumentStore) -> None:
        docs = [Document(id="1", content="one"), Document(id="2", content="two", embedding=[0.5] * 768)]
        assert await document_store.write_documents_async(docs) == 2
        with pytest.raises(Exception, match="already exists"):
            await document_store.write_documents_async([Document(id="1", content="again")])
        assert await document_store.write_documents_async(docs, DuplicatePolicy.SKIP) == 0
        self.assert_documents_are_equal(await document_store.filter_documents_async(), docs)


# -- the retrievers -------------------------------------------------------------------------------

TOPICS = ["shard", "replica", "index", "vector", "payload", "filter"]


@pytest.fixture
def store(client: Client, name: str) -> Iterator[tuple[VecshardDocumentStore, list[Document]]]:
    rng = np.random.default_rng(7)
    docs = []
    for i in range(30):
        words = f"{TOPICS[i % 6]} {TOPICS[(i * 5) % 6]} note {i}"
        emb = rng.standard_normal(16).tolist() if i % 10 != 9 else None  # every tenth without a vector
        docs.append(Document(id=f"d{i}", content=words, meta={"n": i, "day": f"2024-01-{i + 1:02d}"}, embedding=emb))
    s = VecshardDocumentStore(name, client=client, embedding_dim=16)
    assert s.write_documents(docs) == 30
    yield s, docs
    s.delete_all_documents(recreate_index=True)


def _nearest(docs: list[Document], q: np.ndarray, keep: set[str]) -> list[str]:
    rows = [(d.id, np.asarray(d.embedding)) for d in docs if d.embedding is not None and d.id in keep]
    sims = [float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q))) for _, v in rows]
    order = sorted(range(len(rows)), key=lambda j: (-sims[j], rows[j][0]))
    return [rows[j][0] for j in order]


def test_embedding_retriever_equals_brute_force(store: tuple[VecshardDocumentStore, list[Document]]) -> None:
    s, docs = store
    q = np.random.default_rng(1).standard_normal(16)
    late = {"field": "meta.day", "operator": ">=", "value": "2024-01-15"}  # a date compared as a date
    retriever = VecshardEmbeddingRetriever(s, top_k=5, filters=late)
    got = retriever.run(query_embedding=q.tolist())["documents"]
    want = _nearest(docs, q, {d.id for d in docs if d.meta["n"] >= 14})[:5]
    assert [d.id for d in got] == want
    assert all(d.score is not None and d.embedding is None for d in got)
    unfiltered = VecshardEmbeddingRetriever(s).run(query_embedding=q.tolist(), top_k=3)["documents"]
    assert [d.id for d in unfiltered] == _nearest(docs, q, {d.id for d in docs})[:3]


def test_bm25_retriever_equals_bm25s(store: tuple[VecshardDocumentStore, list[Document]]) -> None:
    bm25s = pytest.importorskip("bm25s")
    from vecshard.v1 import payload_pb2
    from vecshard_server.shard.analysis import Analyzer

    s, docs = store
    analyzer = Analyzer(payload_pb2.TextIndexParams(stemmer="english", stopwords="english"))  # the store's default
    model = bm25s.BM25(method="lucene", k1=1.2, b=0.75)  # (the index's defaults; bm25s's own k1 is 1.5)
    model.index([analyzer.analyze(d.content) for d in docs], show_progress=False)
    scores = model.get_scores(analyzer.analyze("replica filter"))
    want = {docs[j].id: float(scores[j]) for j in np.flatnonzero(scores > 0)}
    got = VecshardBM25Retriever(s, top_k=30).run(query="replica filter")["documents"]
    assert {d.id for d in got} == set(want) and len(want) > 5  # documents without a vector too
    for d in got:
        assert d.score == pytest.approx(want[d.id], rel=1e-4)


def test_hybrid_retriever_fuses_both_legs(store: tuple[VecshardDocumentStore, list[Document]]) -> None:
    s, docs = store
    q = np.random.default_rng(2).standard_normal(16)
    retriever = VecshardHybridRetriever(s, top_k=30, fusion="rrf")
    got = retriever.run(query="payload", query_embedding=q.tolist())["documents"]
    dense = _nearest(docs, q, {d.id for d in docs})
    keyword = {d.id for d in docs if "payload" in d.content}
    assert {d.id for d in got} == set(dense) | keyword
    assert got[0].score is not None and got[0].score >= got[-1].score
    linear = VecshardHybridRetriever(s, top_k=3, fusion="linear", weights=(0.0, 1.0))
    assert {d.id for d in linear.run(query="payload", query_embedding=q.tolist())["documents"]} <= keyword


def test_components_serialize_and_run_in_a_pipeline(store: tuple[VecshardDocumentStore, list[Document]]) -> None:
    s, _ = store
    for retriever in (
        VecshardEmbeddingRetriever(s, top_k=3, filters={"field": "meta.n", "operator": "<", "value": 10}),
        VecshardBM25Retriever(s, top_k=4, scale_score=True),
        VecshardHybridRetriever(s, top_k=2, fusion="linear", weights=[0.3, 0.7]),
    ):
        again = type(retriever).from_dict(retriever.to_dict())
        assert again.to_dict() == retriever.to_dict()
    pipe = Pipeline()
    pipe.add_component("bm25", VecshardBM25Retriever(s, top_k=2, scale_score=True))
    pipe = Pipeline.loads(pipe.dumps(), allowed_modules=["vecshard.integrations.haystack"])  # through YAML
    out = pipe.run({"bm25": {"query": "shard vector"}})["bm25"]["documents"]
    assert len(out) == 2 and all(0 < d.score < 1 for d in out)


@pytest.mark.asyncio
async def test_server_model_store_async(client: Client, name: str) -> None:
    s = VecshardDocumentStore(name, client=client, model="minilm")
    try:
        docs = [
            Document(id="cat", content="The cat sat on the warm mat."),
            Document(id="stocks", content="Stock markets fell sharply on Monday."),
            Document(id="pets", content="Kittens and cats are popular pets.", meta={"kind": "pets"}),
        ]
        assert await s.write_documents_async(docs) == 3
        got = (await VecshardHybridRetriever(s, top_k=2).run_async(query="feline companions"))["documents"]
        assert {d.id for d in got} == {"cat", "pets"}
        dense = await s.retrieval_async("dense", top_k=1, text="financial news")
        assert [d.id for d in dense] == ["stocks"]
        assert [d.id for d in await s.filter_documents_async({"field": "id", "operator": "==", "value": "pets"})] == [
            "pets"
        ]
    finally:
        await s.delete_all_documents_async(recreate_index=True)
