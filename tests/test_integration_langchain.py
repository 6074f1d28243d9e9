"""LangChain: langchain-tests' standard VectorStoreIntegrationTests (sync and async) against a served
2-shard cluster in both shard modes, once with a LangChain Embeddings object and once with the
server's model; then what the standard suite does not cover (filters, MMR, keyword and hybrid
retrievers, relevance scores) checked against brute force over the same vectors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("langchain_core", reason="needs the 'langchain' extra")
pytest.importorskip("langchain_tests", reason="needs langchain-tests (the dev extra)")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

from vecshard import Client  # noqa: E402
from vecshard.integrations.langchain import VecshardRetriever, VecshardVectorStore  # noqa: E402

# The suite's async tests are coroutines: run them with pytest-asyncio (the mark is harmless on the
# sync ones, whose warning about it is silenced).
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:The test <Function .* is marked with '@pytest.mark.asyncio'"),
]


class TestWithLangChainEmbeddings(VectorStoreIntegrationTests):
    """The store embeds with the suite's DeterministicFakeEmbedding (6 dims)."""

    @pytest.fixture
    def vectorstore(self, client: Client, name: str) -> Iterator[VecshardVectorStore]:
        store = VecshardVectorStore(name, self.get_embeddings(), client=client)
        yield store
        store.drop()


class TestWithServerModel(VectorStoreIntegrationTests):
    """No embedding: the collection is bound to the server's model, which embeds texts and queries."""

    @pytest.fixture
    def vectorstore(self, client: Client, name: str) -> Iterator[VecshardVectorStore]:
        store = VecshardVectorStore(name, client=client)
        yield store
        store.drop()


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def _corpus() -> tuple[list[str], list[dict[str, object]]]:
    texts = [f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]} report number {i}" for i in range(40)]
    metas: list[dict[str, object]] = [{"n": i, "even": i % 2 == 0, "tag": WORDS[i % 4]} for i in range(40)]
    return texts, metas


@pytest.fixture
def filled(client: Client, name: str) -> Iterator[tuple[VecshardVectorStore, DeterministicFakeEmbedding]]:
    emb = DeterministicFakeEmbedding(size=16)
    texts, metas = _corpus()
    store = VecshardVectorStore.from_texts(
        texts, emb, metas, ids=[f"d{i}" for i in range(40)], collection_name=name, client=client
    )
    yield store, emb
    store.drop()


def _brute(emb: DeterministicFakeEmbedding, query: str, keep: list[int]) -> list[str]:
    texts, _ = _corpus()
    q = np.asarray(emb.embed_query(query))
    m = np.asarray(emb.embed_documents([texts[i] for i in keep]))
    sims = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    return [f"d{keep[j]}" for j in np.argsort(-sims, kind="stable")]


def test_filters_in_each_form_equal_brute_force(filled: tuple[VecshardVectorStore, DeterministicFakeEmbedding]) -> None:
    store, emb = filled
    even = [i for i in range(40) if i % 2 == 0]
    want = _brute(emb, "delta", even)[:5]
    for flt in (
        {"even": True},  # LangChain's plain form: metadata keys
        "metadata.even = true",  # vecshard's text form over the payload
        {"must": [{"key": "metadata.even", "match": True}]},  # vecshard's dict form
    ):
        assert [d.id for d in store.similarity_search("delta", k=5, filter=flt)] == want
    got = store.similarity_search("delta", k=40, filter='metadata.n >= 30 and metadata.tag in ["alpha", "bravo"]')
    assert sorted(d.metadata["n"] for d in got) == [n for n in range(30, 40) if n % 4 in (0, 1)]


def test_scores_and_relevance(filled: tuple[VecshardVectorStore, DeterministicFakeEmbedding]) -> None:
    store, emb = filled
    scored = store.similarity_search_with_score("golf", k=3)
    assert [d.id for d, _ in scored] == _brute(emb, "golf", list(range(40)))[:3]
    q = np.asarray(emb.embed_query("golf"))
    for doc, score in scored:
        v = np.asarray(emb.embed_query(doc.page_content))
        assert score == pytest.approx(float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q))), abs=1e-5)
    relevant = store.similarity_search_with_relevance_scores("golf", k=3)
    assert [r for _, r in relevant] == pytest.approx([s for _, s in scored])
    by_vector = store.similarity_search_by_vector(list(q), k=3)
    assert [d.id for d in by_vector] == [d.id for d, _ in scored]


def test_mmr_equals_langchain_reference(filled: tuple[VecshardVectorStore, DeterministicFakeEmbedding]) -> None:
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

    store, emb = filled
    texts, _ = _corpus()
    q = np.asarray(emb.embed_query("echo"))
    fetched = _brute(emb, "echo", list(range(40)))[:12]
    vecs = np.asarray(emb.embed_documents([texts[int(i[1:])] for i in fetched]))
    want = [fetched[j] for j in maximal_marginal_relevance(q, list(vecs), lambda_mult=0.3, k=4)]
    got = store.max_marginal_relevance_search("echo", k=4, fetch_k=12, lambda_mult=0.3)
    assert [d.id for d in got] == want
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 4, "fetch_k": 12, "lambda_mult": 0.3})
    assert [d.id for d in retriever.invoke("echo")] == want


async def test_mmr_and_filters_async(filled: tuple[VecshardVectorStore, DeterministicFakeEmbedding]) -> None:
    store, emb = filled
    sync = store.max_marginal_relevance_search("echo", k=4, fetch_k=12, lambda_mult=0.3, filter={"even": True})
    got = await store.amax_marginal_relevance_search("echo", k=4, fetch_k=12, lambda_mult=0.3, filter={"even": True})
    assert [d.id for d in got] == [d.id for d in sync] and all(d.metadata["even"] for d in got)
    found = await store.asimilarity_search_with_score("delta", k=5, filter="metadata.even = true")
    assert [d.id for d, _ in found] == _brute(emb, "delta", list(range(0, 40, 2)))[:5]


def test_keyword_and_hybrid_retrievers(filled: tuple[VecshardVectorStore, DeterministicFakeEmbedding]) -> None:
    store, emb = filled
    texts, _ = _corpus()
    # "juliet" is in the texts i % 10 == 9 or 3i % 10 == 9 (i % 10 == 3): the keyword leg finds exactly those
    want = {f"d{i}" for i in range(40) if "juliet" in texts[i]}
    found = store.similarity_search("juliet", k=40, retrieval_mode="keyword")
    assert {d.id for d in found} == want
    keyword = store.as_retriever(search_type="keyword", search_kwargs={"k": 40})
    assert isinstance(keyword, VecshardRetriever) and {d.id for d in keyword.invoke("juliet")} == want
    hybrid = store.as_retriever(search_type="hybrid", search_kwargs={"k": 40, "filter": {"even": True}})
    got = hybrid.invoke("juliet")
    assert {d.id for d in got} == {f"d{i}" for i in range(0, 40, 2)}  # the dense leg brings every even one
    # RRF: a document in both legs beats one in the dense leg only at a worse dense rank
    dense_rank = {d: r for r, d in enumerate(_brute(emb, "juliet", list(range(0, 40, 2))))}
    first = got[0].id
    assert first in want or dense_rank[first] == 0


async def test_server_model_hybrid_async(client: Client, name: str) -> None:
    store = VecshardVectorStore(name, client=client, retrieval_mode="hybrid")
    try:
        await store.aadd_documents(
            [
                Document(page_content="The cat sat on the warm mat.", id="cat"),
                Document(page_content="Stock markets fell sharply on Monday.", id="stocks"),
                Document(page_content="Kittens and cats are popular pets.", id="pets"),
            ]
        )
        got = await store.asimilarity_search("feline pets", k=2)
        assert {d.id for d in got} == {"cat", "pets"}
        keyword = await store.asimilarity_search("markets", k=3, retrieval_mode="keyword")
        assert [d.id for d in keyword] == ["stocks"]
        assert [d.id for d in await store.aget_by_ids(["pets", "nope"])] == ["pets"]
        await store.adelete()
        assert await store.asimilarity_search("cats", k=2) == []
    finally:
        store.drop()
