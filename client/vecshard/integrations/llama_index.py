"""LlamaIndex: `VecshardVectorStore`, a llama-index-core vector store, and `VecshardEmbedding`, the
server's embedding model as a llama-index embedding.

    pip install "vecshard[llama-index]"

    from llama_index.core import StorageContext, VectorStoreIndex
    from vecshard.integrations.llama_index import VecshardEmbedding, VecshardVectorStore
    store = VecshardVectorStore("docs", address="localhost:50051")
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                            embed_model=VecshardEmbedding(address="localhost:50051"))
    index.as_retriever(vector_store_query_mode="hybrid", alpha=0.5).retrieve("how is the index split?")

Nodes are points of a string-id collection (stores_text=True): the node's text under the payload key
"text" (searched by keyword through a "text" payload index), its metadata under "metadata", its
ref_doc_id under "ref_doc_id", its id under "id", and the rest of the node as llama-index serialises
it (`_node_content`, `_node_type`). Query modes: DEFAULT (dense), TEXT_SEARCH / SPARSE (BM25 over
the text), HYBRID (alpha 1 = dense only, 0 = keyword only, as a linear fusion; no alpha: reciprocal
rank fusion) and MMR. MetadataFilters (every FilterOperator, AND / OR / NOT, nested) are run by the
server; TEXT_MATCH and TEXT_MATCH_INSENSITIVE hold when the field holds every word of the value
(vecshard's `text` condition, as Qdrant's full-text match), not any substring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
    from llama_index.core.schema import BaseNode, MetadataMode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as err:  # pragma: no cover - without the extra
    raise ImportError(
        f'vecshard.integrations.llama_index needs {err.name}: pip install "vecshard[llama-index]"'
    ) from err

from vecshard.aio import AsyncClient
from vecshard.client import Client
from vecshard.errors import InvalidArgument
from vecshard.integrations._common import (
    METADATA_KEY,
    TEXT_KEY,
    Collection,
    Connection,
    Plan,
    StoreConfig,
    Translated,
    all_of,
    any_of,
    arun,
    as_filter,
    call,
    hit_vectors,
    negate,
    run,
    search_kwargs,
)
from vecshard.types import CollectionInfo, Hit, Point

__all__ = ["VecshardEmbedding", "VecshardVectorStore", "to_vecshard_filter"]

ID_KEY = "id"
REF_DOC_KEY = "ref_doc_id"
_MODES = {
    VectorStoreQueryMode.DEFAULT: "dense",
    VectorStoreQueryMode.TEXT_SEARCH: "keyword",
    VectorStoreQueryMode.SPARSE: "keyword",
    VectorStoreQueryMode.HYBRID: "hybrid",
    VectorStoreQueryMode.MMR: "dense",
}
_ORDER = {FilterOperator.GT: "gt", FilterOperator.GTE: "gte", FilterOperator.LT: "lt", FilterOperator.LTE: "lte"}

# -- filters ----------------------------------------------------------------------------------------


def to_vecshard_filter(filters: MetadataFilters | None) -> Translated:
    """MetadataFilters as a vecshard filter dict, or True (every node) / False (none)."""
    return as_filter(_filters(filters)) if filters is not None and filters.filters else True


def _filters(mf: MetadataFilters) -> Translated:
    parts = [_filters(f) if isinstance(f, MetadataFilters) else _condition(f) for f in mf.filters]
    condition = mf.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return all_of(parts)
    if condition == FilterCondition.OR:
        return any_of(parts)
    if condition == FilterCondition.NOT:
        return negate(any_of(parts))  # none of them holds
    raise ValueError(f"unknown filter condition {condition!r}")


def _condition(f: MetadataFilter) -> Translated:
    path, op, value = [METADATA_KEY, f.key], f.operator, f.value
    if op == FilterOperator.IS_EMPTY:
        return any_of([{"key": path, "is_empty": True}, {"key": path, "match": ""}])
    if value is None:
        return op in (FilterOperator.NE, FilterOperator.NIN)  # as SimpleVectorStore: only these hold
    listed = isinstance(value, list)
    if op in (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL) and not listed:
        raise ValueError(f"the {op.value!r} filter on {f.key!r} takes a list of values, got {value!r}")
    if listed and op not in (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL):
        raise ValueError(f"the {op.value!r} filter on {f.key!r} takes one value, got a list")
    if op == FilterOperator.EQ or op == FilterOperator.CONTAINS:
        return {"key": path, "match": value}
    if op == FilterOperator.NE:
        return negate({"key": path, "match": value})
    if op in _ORDER:
        return {"key": path, "range": {_ORDER[op]: value}}
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return {"key": path, "match_any": value} if value else False
    if op == FilterOperator.NIN:
        return negate({"key": path, "match_any": value}) if value else True
    if op == FilterOperator.ALL:
        return all_of([{"key": path, "match": v} for v in value])  # type: ignore[union-attr]
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        return {"key": path, "text": str(value)}
    raise ValueError(f"unknown filter operator {op!r}")


def _where(
    filters: MetadataFilters | None, node_ids: Sequence[str] | None, doc_ids: Sequence[str] | None
) -> Translated:
    """The filter of a query, get or delete: the metadata filters, and the node and document ids when
    given (an empty list restricts nothing, as llama-index's retrievers send it)."""
    parts: list[Translated] = [to_vecshard_filter(filters)]
    if node_ids:
        parts.append({"key": ID_KEY, "match_any": list(node_ids)})
    if doc_ids:
        parts.append({"key": REF_DOC_KEY, "match_any": list(doc_ids)})
    return as_filter(all_of(parts))


# -- nodes <-> points -------------------------------------------------------------------------------


def _payload(node: BaseNode, flat_metadata: bool) -> dict[str, Any]:
    saved = node_to_metadata_dict(node, remove_text=True, flat_metadata=flat_metadata)
    return {
        ID_KEY: node.node_id,
        TEXT_KEY: node.get_content(metadata_mode=MetadataMode.NONE),
        METADATA_KEY: dict(node.metadata),
        REF_DOC_KEY: node.ref_doc_id or "None",
        "_node_content": saved["_node_content"],
        "_node_type": saved["_node_type"],
    }


def _node(point: Point | Hit) -> BaseNode:
    p = point.payload or {}
    node = metadata_dict_to_node(p, text=p.get(TEXT_KEY, ""))
    node.metadata = p.get(METADATA_KEY) or {}
    return node


def _add_batches(info: CollectionInfo, nodes: Sequence[BaseNode], flat: bool) -> list[dict[str, Any]]:
    """The adds that store `nodes`: those with an embedding as vectors, the others embedded from
    their text by the collection's server model."""
    with_vec = [n for n in nodes if n.embedding is not None]
    rest = [n for n in nodes if n.embedding is None]
    if rest and not info.embedding_model:
        raise InvalidArgument(
            f"node {rest[0].node_id!r} has no embedding and collection {info.name!r} is not bound to a server "
            "model: embed the nodes (e.g. with VecshardEmbedding), or make the store with model=..."
        )
    out = []
    for group, vectors in ((with_vec, True), (rest, False)):
        if not group:
            continue
        batch: dict[str, Any] = {"collection": info.name, "ids": [n.node_id for n in group], "on_conflict": "replace"}
        batch["payloads"] = [_payload(n, flat) for n in group]
        if vectors:
            batch["vectors"] = np.asarray([n.embedding for n in group], dtype=np.float32)
            batch["model_fingerprint"] = info.model_fingerprint
        else:
            batch["texts"] = [p[TEXT_KEY] for p in batch["payloads"]]
        out.append(batch)
    return out


def _result(hits: Sequence[Hit]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[_node(h) for h in hits], similarities=[h.distance for h in hits], ids=[str(h.id) for h in hits]
    )


class _Plans:
    """The store's operations as plans over its collection."""

    def __init__(self, collection: Collection, flat_metadata: bool) -> None:
        self.col = collection
        self.name = collection.name
        self.flat = flat_metadata

    def add(self, nodes: Sequence[BaseNode]) -> Plan[list[str]]:
        if not nodes:
            return []
        dims = {len(n.embedding) for n in nodes if n.embedding is not None}
        info = yield from self.col.ensure_plan(max(dims, default=0))
        for batch in _add_batches(info, nodes, self.flat):
            yield from call("add", **batch)
        return [n.node_id for n in nodes]

    def delete_nodes(self, node_ids: Sequence[str] | None, filters: MetadataFilters | None) -> Plan[None]:
        if node_ids is None or node_ids:  # an empty list of ids deletes nothing
            yield from self.delete_where(_where(filters, node_ids, None))

    def delete_where(self, where: Translated) -> Plan[None]:
        if where is False or (yield from self.col.describe_plan()) is None:
            return
        if where is True:
            yield from self.col.drop_plan()
        else:
            yield from call("delete", collection=self.name, filter=where)

    def get(self, node_ids: Sequence[str] | None, filters: MetadataFilters | None) -> Plan[list[BaseNode]]:
        where = _where(filters, node_ids, None)
        if node_ids is not None and not node_ids or where is False or (yield from self.col.describe_plan()) is None:
            return []
        if node_ids and (filters is None or not filters.filters):  # ids alone: in their order
            points = yield from call("retrieve", collection=self.name, ids=list(node_ids))
            return [_node(p) for p in points if p is not None]
        points = yield from call("scroll", collection=self.name, filter=None if where is True else where)
        return [_node(p) for p in points]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> Plan[VectorStoreQueryResult]:
        if query.mode not in _MODES:
            raise ValueError(
                f"query mode {query.mode.value!r} is not supported: use {', '.join(m.value for m in _MODES)}"
            )
        where = _where(query.filters, query.node_ids, query.doc_ids)
        info = yield from self.col.describe_plan()
        k = (query.hybrid_top_k if query.mode == VectorStoreQueryMode.HYBRID else None) or query.similarity_top_k
        if where is False or info is None or k <= 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        mode, mmr_mode = _MODES[query.mode], query.mode == VectorStoreQueryMode.MMR
        fetch = int(kwargs.get("mmr_prefetch_k") or k * kwargs.get("mmr_prefetch_factor", 4)) if mmr_mode else k
        args = search_kwargs(
            info,
            mode,
            fetch,
            text=query.query_str,
            vector=query.query_embedding,
            filter=None if where is True else where,
            fusion=None if query.alpha is None else "linear",
            weights=None if query.alpha is None else (query.alpha, 1 - query.alpha),
            candidates=query.sparse_top_k,
            with_vectors=mmr_mode,
        )
        hits: list[Hit] = next((yield from call("search", **args)).hits(), [])
        return _mmr(query, hits, k) if mmr_mode else _result(hits)


def _mmr(query: VectorStoreQuery, hits: list[Hit], k: int) -> VectorStoreQueryResult:
    """llama-index's own MMR (as SimpleVectorStore runs it) over the dense leg's candidates."""
    if query.query_embedding is None:
        raise ValueError("an MMR query needs the query's embedding")
    if not hits:
        return _result([])
    scores, ids = get_top_k_mmr_embeddings(
        list(query.query_embedding),
        hit_vectors(hits).tolist(),
        similarity_top_k=k,
        embedding_ids=list(range(len(hits))),
        mmr_threshold=query.mmr_threshold,
    )
    chosen = [hits[i] for i in ids]
    return VectorStoreQueryResult(
        nodes=[_node(h) for h in chosen], similarities=list(scores), ids=[str(h.id) for h in chosen]
    )


# -- the store --------------------------------------------------------------------------------------


class VecshardVectorStore(BasePydanticVectorStore):
    """A llama-index vector store over the vecshard collection `collection_name` (sync methods and
    their async twins over `vecshard.AsyncClient`)."""

    stores_text: bool = True
    flat_metadata: bool = False
    collection_name: str
    address: str
    _conn: Connection = PrivateAttr()
    _plans: _Plans = PrivateAttr()

    def __init__(
        self,
        collection_name: str,
        *,
        client: Client | None = None,
        address: str | None = None,
        async_client: AsyncClient | None = None,
        model: str | None = None,
        metric: str = "cosine",
        text_index: bool = True,
        stemmer: str | None = "english",
        stopwords: str | None = "english",
        flat_metadata: bool = False,
        timeout: float | None = 60.0,
    ) -> None:
        """Connect to `address` (or use `client` / `async_client`; default localhost:50051).

        Args:
            model: bind a collection this store creates to this server model ("minilm"): nodes
                added without an embedding are then embedded by the server from their text.
            metric: of a collection this store creates ("cosine", "inner_product", "l2", "l1").
            text_index, stemmer, stopwords: a collection this store creates also gets a "text" index
                on the node text (TEXT_SEARCH and HYBRID queries).
            flat_metadata: refuse metadata that is not flat (str, int, float or None values).
        """
        conn = Connection(client, address, async_client, timeout)
        super().__init__(
            stores_text=True, collection_name=collection_name, address=conn.address, flat_metadata=flat_metadata
        )
        self._conn = conn
        config = StoreConfig(collection_name, metric, model, text_index, stemmer, stopwords)
        self._plans = _Plans(Collection(conn, config), flat_metadata)

    @classmethod
    def class_name(cls) -> str:
        return "VecshardVectorStore"

    @property
    def client(self) -> Client:
        """The blocking vecshard client."""
        return self._conn.sync

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store nodes (replacing nodes of the same ids); returns their ids. Creates the collection
        (for the nodes' embedding dimension) when it does not exist."""
        return list(run(self._conn, self._plans.add(nodes)))

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """`add` over the asyncio client."""
        return list(await arun(self._conn, self._plans.add(nodes)))

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the document `ref_doc_id`."""
        run(self._conn, self._plans.delete_where({"must": [{"key": REF_DOC_KEY, "match": ref_doc_id}]}))

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """`delete` over the asyncio client."""
        await arun(self._conn, self._plans.delete_where({"must": [{"key": REF_DOC_KEY, "match": ref_doc_id}]}))

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Delete the nodes of `node_ids` that match `filters` (either may be left out; neither:
        every node)."""
        run(self._conn, self._plans.delete_nodes(node_ids, filters))

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """`delete_nodes` over the asyncio client."""
        await arun(self._conn, self._plans.delete_nodes(node_ids, filters))

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes of `node_ids` (in their order, leaving out ids not stored) that match
        `filters`; without ids, every node matching the filters."""
        return list(run(self._conn, self._plans.get(node_ids, filters)))

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """`get_nodes` over the asyncio client."""
        return list(await arun(self._conn, self._plans.get(node_ids, filters)))

    def clear(self) -> None:
        """Delete every node (the collection is dropped; the next add makes it again)."""
        run(self._conn, self._plans.col.drop_plan())

    async def aclear(self) -> None:
        """`clear` over the asyncio client."""
        await arun(self._conn, self._plans.col.drop_plan())

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The similarity_top_k best nodes, best first, with their scores: DEFAULT by the query
        embedding (or, in a collection bound to a server model, by query_str), TEXT_SEARCH / SPARSE
        by BM25 over query_str, HYBRID by both (alpha: dense weight of a linear fusion, the keyword
        leg 1 - alpha; None: reciprocal rank fusion; hybrid_top_k if set), MMR among
        similarity_top_k * mmr_prefetch_factor (4) candidates with lambda mmr_threshold (0.5)."""
        return run(self._conn, self._plans.query(query, **kwargs))

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """`query` over the asyncio client."""
        return await arun(self._conn, self._plans.query(query, **kwargs))


class VecshardEmbedding(BaseEmbedding):
    """The vecshard server's embedding model as a llama-index embedding (queries embedded with the
    model's query prefix, texts with its passage prefix, where the model has them)."""

    address: str
    model: str = ""
    _conn: Connection = PrivateAttr()

    def __init__(
        self, *, client: Client | None = None, address: str | None = None, model: str = "", **kwargs: Any
    ) -> None:
        """Embed with the model `model` ("" for the server's default) of the server at `address`."""
        conn = Connection(client, address, None)
        super().__init__(address=conn.address, model=model, model_name=model or "vecshard", **kwargs)
        self._conn = conn

    @classmethod
    def class_name(cls) -> str:
        return "VecshardEmbedding"

    def _embed(self, texts: list[str], role: str) -> list[list[float]]:
        return self._conn.sync.embed(texts=texts, model=self.model, role=role).vectors.tolist()  # type: ignore[no-any-return]

    async def _aembed(self, texts: list[str], role: str) -> list[list[float]]:
        found = await self._conn.aio().embed(texts=texts, model=self.model, role=role)
        return found.vectors.tolist()  # type: ignore[no-any-return]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query], "query")[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._aembed([query], "query"))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text], "passage")[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts, "passage")

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aembed([text], "passage"))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._aembed(texts, "passage")
