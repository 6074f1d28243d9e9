"""LlamaIndex (no packaged suite): contract tests mirroring llama-index-core's own vector store tests
(tests/vector_stores/test_simple.py: the same nodes, queries and expectations, every FilterOperator
and FilterCondition), plus what a served store adds: nested filters, ref-doc deletes, get_nodes, clear,
the TEXT_SEARCH, HYBRID and MMR modes checked against brute force and llama-index's own MMR, the async
methods, and a VectorStoreIndex over the server's model. Against a served 2-shard cluster in both
shard modes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("llama_index.core", reason="needs the 'llama-index' extra")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from vecshard import Client  # noqa: E402
from vecshard.integrations.llama_index import VecshardEmbedding, VecshardVectorStore  # noqa: E402

A = "AF3BE6C4-5F43-4D74-B075-6B0E07900DE8"  # weight 1, rank a
B = "7D9CD555-846C-445C-A9DD-F8924A01411D"  # weight 2, rank c
C = "452D24AB-F185-414C-A352-590B4B9EE51B"  # weight 3, rank c


def _nodes() -> list[TextNode]:
    """llama-index's test nodes (test_simple.py's _node_embeddings_for_test)."""
    rows = [
        (A, [1.0, 0.0], "test-0", 1.0, "a", ["medium", "high"], "6FTR78Yun"),
        (B, [0.0, 1.0], "test-1", 2.0, "c", ["medium"], "6FTR78Ygl"),
        (C, [1.0, 1.0], "test-2", 3.0, "c", ["low", "medium", "high"], "6FTR78Ztl"),
    ]
    return [
        TextNode(
            text="lorem ipsum",
            id_=node_id,
            embedding=emb,
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=source)},
            metadata={"weight": weight, "rank": rank, "quality": quality, "identifier": ident},
        )
        for node_id, emb, source, weight, rank, quality, ident in rows
    ]


@pytest.fixture
def store(client: Client, name: str) -> Iterator[VecshardVectorStore]:
    s = VecshardVectorStore(name, client=client)
    assert s.add(_nodes()) == [A, B, C]
    yield s
    s.clear()


def _ids(store: VecshardVectorStore, filters: MetadataFilters | None = None, k: int = 3, **kw: object) -> list[str]:
    result = store.query(VectorStoreQuery(query_embedding=[1.0, 1.0], similarity_top_k=k, filters=filters, **kw))
    assert result.ids is not None and result.nodes is not None and result.similarities is not None
    assert [n.node_id for n in result.nodes] == result.ids
    return result.ids


def _one(key: str, op: FilterOperator, value: object) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, operator=op, value=value)])


# -- mirrored from llama-index-core's test_simple.py -------------------------------------------------


def test_query_without_filters_returns_all_rows_sorted_by_similarity(store: VecshardVectorStore) -> None:
    ids = _ids(store)
    assert sorted(ids) == sorted([A, B, C]) and ids[0] == C


def test_query_with_filters_returns_multiple_matches(store: VecshardVectorStore) -> None:
    assert _ids(store, _one("rank", FilterOperator.EQ, "c")) == [C, B]


def test_query_with_filter_applies_top_k(store: VecshardVectorStore) -> None:
    assert _ids(store, _one("rank", FilterOperator.EQ, "c"), k=1) == [C]


def test_query_with_filter_applies_node_id_filter(store: VecshardVectorStore) -> None:
    assert _ids(store, _one("rank", FilterOperator.EQ, "c"), node_ids=[C]) == [C]


def test_query_with_exact_filters_returns_single_match(store: VecshardVectorStore) -> None:
    both = MetadataFilters(filters=[MetadataFilter(key="rank", value="c"), MetadataFilter(key="weight", value=2.0)])
    assert _ids(store, both, k=1) == [B]


def test_query_with_contradictive_filter_returns_no_matches(store: VecshardVectorStore) -> None:
    both = MetadataFilters(filters=[MetadataFilter(key="weight", value=2), MetadataFilter(key="weight", value=3)])
    assert _ids(store, both) == []


def test_query_with_filter_on_unknown_field_returns_no_matches(store: VecshardVectorStore) -> None:
    assert _ids(store, _one("unknown_field", FilterOperator.EQ, "c")) == []


def test_delete_removes_document_from_query_results(store: VecshardVectorStore) -> None:
    store.delete("test-1")
    assert _ids(store, k=2) == [C, A]


def test_query_with_filters_with_filter_condition(store: VecshardVectorStore) -> None:
    either = [MetadataFilter(key="rank", value="c"), MetadataFilter(key="weight", value=1.0)]
    assert len(_ids(store, MetadataFilters(filters=either, condition=FilterCondition.OR))) == 3
    assert len(_ids(store, MetadataFilters(filters=either, condition=FilterCondition.AND))) == 0


def test_query_with_not_filter_returns_matches(store: VecshardVectorStore) -> None:
    rank_a = MetadataFilters(filters=[MetadataFilter(key="rank", value="a")], condition=FilterCondition.NOT)
    assert sorted(_ids(store, rank_a)) == sorted([B, C])


@pytest.mark.parametrize(
    ("key", "op", "value", "want"),
    [
        ("weight", FilterOperator.EQ, 1.0, {A}),
        ("weight", FilterOperator.NE, 1.0, {B, C}),
        ("weight", FilterOperator.GT, 1.5, {B, C}),
        ("weight", FilterOperator.GTE, 1.0, {A, B, C}),
        ("weight", FilterOperator.LT, 1.1, {A}),
        ("weight", FilterOperator.LTE, 1.0, {A}),
        ("rank", FilterOperator.IN, ["a", "c"], {A, B, C}),
        ("rank", FilterOperator.NIN, ["c"], {A}),
        ("quality", FilterOperator.CONTAINS, "high", {A, C}),
        ("quality", FilterOperator.ANY, ["high", "low"], {A, C}),
        ("quality", FilterOperator.ALL, ["medium", "high"], {A, C}),
        ("not_existed_key", FilterOperator.IS_EMPTY, None, {A, B, C}),
        # llama-index's own test matches the partial word "6FTR78Y" (a substring); vecshard's text
        # match holds for whole words (as Qdrant's full-text match): a whole identifier, any case.
        ("identifier", FilterOperator.TEXT_MATCH, "6FTR78Yun", {A}),
        ("identifier", FilterOperator.TEXT_MATCH_INSENSITIVE, "6ftr78ygl", {B}),
        ("rank", FilterOperator.GT, "b", {B, C}),  # strings compare in code point order
    ],
)
def test_query_with_each_operator(
    store: VecshardVectorStore, key: str, op: FilterOperator, value: object, want: set[str]
) -> None:
    assert set(_ids(store, _one(key, op, value))) == want


def test_clear(store: VecshardVectorStore) -> None:
    store.clear()
    assert _ids(store) == []


def test_delete_nodes(store: VecshardVectorStore) -> None:
    store.delete_nodes([A, B])
    assert _ids(store) == [C]


# -- beyond test_simple.py ---------------------------------------------------------------------------


def test_nested_filters_and_delete_nodes_by_filter(store: VecshardVectorStore) -> None:
    heavy_or_a = MetadataFilters(
        filters=[
            MetadataFilter(key="rank", value="a"),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="weight", operator=FilterOperator.GTE, value=3.0),
                    MetadataFilter(key="quality", operator=FilterOperator.CONTAINS, value="low"),
                ],
                condition=FilterCondition.AND,
            ),
        ],
        condition=FilterCondition.OR,
    )
    assert sorted(_ids(store, heavy_or_a)) == sorted([A, C])
    store.delete_nodes(filters=heavy_or_a)
    assert _ids(store) == [B]


def test_get_nodes_round_trips_text_metadata_and_relationships(store: VecshardVectorStore) -> None:
    got = store.get_nodes([C, "missing", A])
    assert [n.node_id for n in got] == [C, A]
    want = {n.node_id: n for n in _nodes()}
    for n in got:
        assert n.get_content() == "lorem ipsum" and n.metadata == want[n.node_id].metadata
        assert n.ref_doc_id == want[n.node_id].ref_doc_id and n.embedding is None
    assert {n.node_id for n in store.get_nodes(filters=_one("rank", FilterOperator.EQ, "c"))} == {B, C}
    assert [n.node_id for n in store.get_nodes([A, B], filters=_one("rank", FilterOperator.EQ, "c"))] == [B]
    assert store.get_nodes([]) == []
    store.delete_nodes([])  # an empty list of ids deletes nothing
    assert len(store.get_nodes()) == 3


def test_doc_ids_restrict_a_query(store: VecshardVectorStore) -> None:
    assert sorted(_ids(store, doc_ids=["test-0", "test-2"])) == sorted([A, C])


WORDS = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "granite", "harbor"]


@pytest.fixture
def corpus(client: Client, name: str) -> Iterator[tuple[VecshardVectorStore, list[TextNode]]]:
    rng = np.random.default_rng(3)
    nodes = [
        TextNode(
            id_=f"n{i}",
            text=f"{WORDS[i % 8]} {WORDS[(i * 3) % 8]} survey {i}",
            embedding=rng.standard_normal(8).tolist(),
            metadata={"i": i},
        )
        for i in range(24)
    ]
    s = VecshardVectorStore(name, client=client)
    s.add(nodes)
    yield s, nodes
    s.clear()


def _cos_order(nodes: list[TextNode], q: np.ndarray) -> list[str]:
    m = np.asarray([n.embedding for n in nodes])
    sims = m @ q / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    return [nodes[j].node_id for j in np.argsort(-sims, kind="stable")]


def test_text_search_hybrid_and_mmr_modes(corpus: tuple[VecshardVectorStore, list[TextNode]]) -> None:
    from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings

    s, nodes = corpus
    q = np.random.default_rng(4).standard_normal(8)
    has_fjord = {n.node_id for n in nodes if "fjord" in n.text}
    text = s.query(VectorStoreQuery(query_str="fjord", similarity_top_k=24, mode=VectorStoreQueryMode.TEXT_SEARCH))
    assert set(text.ids or []) == has_fjord
    dense = s.query(VectorStoreQuery(query_embedding=q.tolist(), similarity_top_k=5))
    assert dense.ids == _cos_order(nodes, q)[:5]
    for alpha, want in ((1.0, _cos_order(nodes, q)[:5]), (0.0, None)):
        hybrid = VectorStoreQuery(
            query_embedding=q.tolist(),
            query_str="fjord",
            similarity_top_k=5,
            mode=VectorStoreQueryMode.HYBRID,
            alpha=alpha,
        )
        got = s.query(hybrid).ids or []
        assert got == want if want is not None else set(got) <= has_fjord and len(got) == min(5, len(has_fjord))
    rrf = VectorStoreQuery(
        query_embedding=q.tolist(), query_str="fjord", similarity_top_k=24, mode=VectorStoreQueryMode.HYBRID
    )
    assert set(s.query(rrf).ids or []) == {n.node_id for n in nodes}
    # MMR: the same choice as llama-index's own MMR over the same candidates
    order = _cos_order(nodes, q)[:12]
    by_id = {n.node_id: n.embedding for n in nodes}
    _, want_ids = get_top_k_mmr_embeddings(
        q.tolist(), [by_id[i] for i in order], similarity_top_k=3, embedding_ids=order, mmr_threshold=0.3
    )
    mmr = VectorStoreQuery(
        query_embedding=q.tolist(), similarity_top_k=3, mode=VectorStoreQueryMode.MMR, mmr_threshold=0.3
    )
    assert s.query(mmr, mmr_prefetch_k=12).ids == list(want_ids)


@pytest.mark.asyncio
async def test_async_methods(client: Client, name: str) -> None:
    s = VecshardVectorStore(name, client=client)
    try:
        assert await s.async_add(_nodes()) == [A, B, C]
        result = await s.aquery(VectorStoreQuery(query_embedding=[1.0, 1.0], similarity_top_k=3))
        assert result.ids is not None and result.ids[0] == C
        assert [n.node_id for n in await s.aget_nodes([B])] == [B]
        await s.adelete("test-2")
        await s.adelete_nodes([A])
        assert [n.node_id for n in await s.aget_nodes(filters=_one("rank", FilterOperator.IN, ["a", "c"]))] == [B]
        await s.aclear()
        assert await s.aget_nodes() == []
    finally:
        s.clear()


def test_vector_store_index_with_the_server_model(client: Client, name: str) -> None:
    store = VecshardVectorStore(name, client=client, model="minilm")
    try:
        docs = [
            Document(text="The cat sat on the warm mat.", id_="cat"),
            Document(text="Stock markets fell sharply on Monday.", id_="stocks"),
            Document(text="Kittens and cats are popular pets.", id_="pets"),
        ]
        embed = VecshardEmbedding(client=client)
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
        )
        found = index.as_retriever(similarity_top_k=2).retrieve("feline companions")
        assert {n.node.ref_doc_id for n in found} == {"cat", "pets"}
        hybrid = index.as_retriever(similarity_top_k=1, vector_store_query_mode="hybrid", alpha=0.2)
        assert [n.node.ref_doc_id for n in hybrid.retrieve("markets")] == ["stocks"]
        index.delete_ref_doc("stocks")
        assert {n.ref_doc_id for n in store.get_nodes()} == {"cat", "pets"}
        # nodes without an embedding: the server embeds their text (the collection is bound to its model)
        store.add([TextNode(id_="dog", text="A dog chased the ball across the park.")])
        by_text = store.query(VectorStoreQuery(query_str="puppy playing fetch", similarity_top_k=1))
        assert by_text.ids == ["dog"]
    finally:
        store.clear()
