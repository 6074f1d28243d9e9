"""LangChain: `VecshardVectorStore`, a langchain-core VectorStore over a vecshard collection.

    pip install "vecshard[langchain]"

    from vecshard.integrations.langchain import VecshardVectorStore
    store = VecshardVectorStore("docs", address="localhost:50051")        # the server embeds
    store.add_texts(["vecshard shards a faiss index"], metadatas=[{"source": "readme"}])
    store.similarity_search("how is the index split?", k=3, filter='metadata.source = "readme"')
    store.as_retriever(search_type="hybrid", search_kwargs={"k": 5})     # dense + BM25, fused

Documents are points of a string-id collection: the text under the payload key "text", the metadata
under "metadata". The collection is created on the first write when it does not exist: bound to the
server's embedding model when the store has no `embedding` (texts and queries are then embedded by
the server), else holding the embedding's vectors. Filters are vecshard filters over the payload (the
dict form `{"must": [{"key": "metadata.source", "match": "readme"}]}` or the text form
`'metadata.source = "readme"'`), or LangChain's plain `{"source": "readme"}` (each metadata key
equal to its value). Every method has a native async twin over `vecshard.AsyncClient`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
except ImportError as err:  # pragma: no cover - without the extra
    raise ImportError(f'vecshard.integrations.langchain needs {err.name}: pip install "vecshard[langchain]"') from err

from vecshard.aio import AsyncClient
from vecshard.client import Client
from vecshard.errors import InvalidArgument
from vecshard.integrations._common import (
    METADATA_KEY,
    TEXT_KEY,
    Collection,
    Connection,
    StoreConfig,
    add_kwargs,
    fill_ids,
    hit_vectors,
    mmr,
    search_kwargs,
)
from vecshard.types import CollectionInfo, Hit, SearchResult

__all__ = ["VecshardRetriever", "VecshardVectorStore"]

_FILTER_KEYS = {"must", "should", "must_not"}


def to_filter(filter: Any) -> Any:
    """A store filter as a vecshard filter: text and vecshard dicts (must / should / must_not over
    payload paths) as they are; LangChain's plain {"key": value, ...} as each metadata key equal to
    its value (a list value: any of them)."""
    if not filter or isinstance(filter, str) or not isinstance(filter, dict) or set(filter) & _FILTER_KEYS:
        return filter or None
    conds = []
    for key, value in filter.items():
        path = [METADATA_KEY, *str(key).split(".")]
        test = "match_any" if isinstance(value, list | tuple) else "match"
        conds.append({"key": path, test: list(value) if test == "match_any" else value})
    return {"must": conds}


def _document(hit: Hit) -> Document:
    payload = hit.payload or {}
    return Document(id=str(hit.id), page_content=payload.get(TEXT_KEY) or "", metadata=payload.get(METADATA_KEY) or {})


def _scored(result: SearchResult) -> list[tuple[Document, float]]:
    return [(_document(h), h.distance) for h in next(result.hits(), [])]


class VecshardRetriever(VectorStoreRetriever):
    """The store's retriever: LangChain's search types ("similarity", "similarity_score_threshold",
    "mmr") plus "keyword" (BM25 over the text index) and "hybrid" (dense and keyword, fused; pass
    `fusion`/`weights` in search_kwargs)."""

    allowed_search_types: ClassVar[Sequence[str]] = (
        "similarity",
        "similarity_score_threshold",
        "mmr",
        "keyword",
        "hybrid",
    )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type in ("keyword", "hybrid"):
            args = self.search_kwargs | kwargs | {"retrieval_mode": self.search_type}
            return self.vectorstore.similarity_search(query, **args)
        return super()._get_relevant_documents(query, run_manager=run_manager, **kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type in ("keyword", "hybrid"):
            args = self.search_kwargs | kwargs | {"retrieval_mode": self.search_type}
            return await self.vectorstore.asimilarity_search(query, **args)
        return await super()._aget_relevant_documents(query, run_manager=run_manager, **kwargs)


class VecshardVectorStore(VectorStore):
    """A LangChain vector store over the vecshard collection `collection_name`."""

    def __init__(
        self,
        collection_name: str,
        embedding: Embeddings | None = None,
        *,
        client: Client | None = None,
        address: str | None = None,
        async_client: AsyncClient | None = None,
        model: str | None = None,
        metric: str = "cosine",
        text_index: bool = True,
        stemmer: str | None = "english",
        stopwords: str | None = "english",
        retrieval_mode: str = "dense",
        timeout: float | None = 60.0,
    ) -> None:
        """Connect to `address` (or use `client` / `async_client`; default localhost:50051).

        Args:
            embedding: embeds texts and queries here; None: the collection is bound to the server's
                model `model` (default "minilm") and the server embeds them.
            metric: of a collection this store creates ("cosine", "inner_product", "l2", "l1").
            text_index, stemmer, stopwords: a collection this store creates also gets a "text" index
                on the text (keyword and hybrid search), analysed with these languages (None: none).
            retrieval_mode: the default of searches: "dense", "keyword" or "hybrid".
        """
        self._embedding = embedding
        server_model = None if embedding is not None else (model or "minilm")
        self._config = StoreConfig(collection_name, metric, model or server_model, text_index, stemmer, stopwords)
        self._conn = Connection(client, address, async_client, timeout)
        self._collection = Collection(self._conn, self._config)
        self.collection_name = collection_name
        self.retrieval_mode = retrieval_mode

    @property
    def embeddings(self) -> Embeddings | None:
        """The embedding the store uses (None: the server's model)."""
        return self._embedding

    @property
    def client(self) -> Client:
        """The blocking vecshard client."""
        return self._conn.sync

    # -- writes ------------------------------------------------------------------------------------

    def _prepare(
        self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None, ids: Sequence[str | None] | None
    ) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidArgument(f"got {len(metadatas)} metadatas for {len(texts)} texts: give one per text")
        payloads = [{METADATA_KEY: dict(m or {})} for m in (metadatas or [{}] * len(texts))]
        return texts, payloads, fill_ids(ids, len(texts))

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Store texts (with their metadata) under `ids` (new UUIDs where missing), replacing
        documents of the same ids; returns the ids. Creates the collection when it does not exist."""
        texts, payloads, id_list = self._prepare(texts, metadatas, ids)
        if not texts:
            return []
        vectors = self._embedding.embed_documents(texts) if self._embedding is not None else None
        info = self._collection.ensure(len(vectors[0]) if vectors else 0)
        self.client.add(**add_kwargs(info, id_list, texts, payloads, vectors))
        return id_list

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """`add_texts` over the asyncio client."""
        texts, payloads, id_list = self._prepare(texts, metadatas, ids)
        if not texts:
            return []
        vectors = await self._embedding.aembed_documents(texts) if self._embedding is not None else None
        info = await self._collection.aensure(len(vectors[0]) if vectors else 0)
        await self._conn.aio().add(**add_kwargs(info, id_list, texts, payloads, vectors))
        return id_list

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents of `ids` (ids not stored are ignored); None: every document (the
        collection is dropped, and made again by the next write)."""
        if ids is None:
            self._collection.drop()
            return True
        if ids and self._collection.describe() is not None:
            self.client.remove(self.collection_name, [str(i) for i in ids])
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """`delete` over the asyncio client."""
        if ids is None:
            await self._collection.adrop()
            return True
        if ids and await self._collection.adescribe() is not None:
            await self._conn.aio().remove(self.collection_name, [str(i) for i in ids])
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents of `ids`, in their order, leaving out ids not stored."""
        if not ids or self._collection.describe() is None:
            return []
        points = self.client.retrieve(self.collection_name, [str(i) for i in ids])
        return [_document(Hit(p.id, 0.0, p.payload)) for p in points if p is not None]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """`get_by_ids` over the asyncio client."""
        if not ids or await self._collection.adescribe() is None:
            return []
        points = await self._conn.aio().retrieve(self.collection_name, [str(i) for i in ids])
        return [_document(Hit(p.id, 0.0, p.payload)) for p in points if p is not None]

    # -- searches ----------------------------------------------------------------------------------

    def _search_args(
        self,
        info: CollectionInfo,
        k: int,
        text: str | None,
        vector: Any,
        filter: Any,
        with_vectors: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return search_kwargs(
            info,
            kwargs.get("retrieval_mode") or self.retrieval_mode,
            k,
            text=text,
            vector=vector,
            filter=to_filter(filter),
            fusion=kwargs.get("fusion"),
            weights=kwargs.get("weights"),
            candidates=kwargs.get("candidates"),
            with_vectors=with_vectors,
        )

    def _needs_vector(self, kwargs: dict[str, Any]) -> bool:
        return self._embedding is not None and (kwargs.get("retrieval_mode") or self.retrieval_mode) != "keyword"

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The k documents best matching `query`, each with its score: the similarity (cosine,
        inner_product) or squared distance (l2) of a dense search; the BM25 score of a keyword search
        (retrieval_mode="keyword"); the fused score of a hybrid one (retrieval_mode="hybrid", with
        `fusion` "rrf" or "linear" and `weights`=(dense, keyword))."""
        info = self._collection.describe()
        if info is None or k <= 0:
            return []
        vector = self._embedding.embed_query(query) if self._needs_vector(kwargs) else None  # type: ignore[union-attr]
        return _scored(self.client.search(**self._search_args(info, k, query, vector, filter, **kwargs)))

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """`similarity_search_with_score` over the asyncio client."""
        info = await self._collection.adescribe()
        if info is None or k <= 0:
            return []
        vector = await self._embedding.aembed_query(query) if self._needs_vector(kwargs) else None  # type: ignore[union-attr]
        return _scored(await self._conn.aio().search(**self._search_args(info, k, query, vector, filter, **kwargs)))

    def similarity_search(self, query: str, k: int = 4, filter: Any = None, **kwargs: Any) -> list[Document]:
        """The k documents best matching `query` (see `similarity_search_with_score`)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, filter: Any = None, **kwargs: Any) -> list[Document]:
        """`similarity_search` over the asyncio client."""
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The k documents nearest to a query vector (of the collection's embedding), with scores."""
        info = self._collection.describe()
        if info is None or k <= 0:
            return []
        args = self._search_args(info, k, None, embedding, filter, retrieval_mode="dense")
        return _scored(self.client.search(**args))

    async def asimilarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """`similarity_search_with_score_by_vector` over the asyncio client."""
        info = await self._collection.adescribe()
        if info is None or k <= 0:
            return []
        args = self._search_args(info, k, None, embedding, filter, retrieval_mode="dense")
        return _scored(await self._conn.aio().search(**args))

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[Document]:
        """The k documents nearest to a query vector."""
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[Document]:
        """`similarity_search_by_vector` over the asyncio client."""
        found = await self.asimilarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        return [doc for doc, _ in found]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Relevance in [0, 1] from a dense score: the similarity for cosine and inner_product, and
        1 - L2 / sqrt(2) for l2 (vecshard's L2 distances are squared)."""
        info = self._collection.describe()
        if info is not None and info.metric.value == "l2":
            return lambda d: self._euclidean_relevance_score_fn(float(np.sqrt(max(d, 0.0))))
        return lambda s: s

    # -- maximal marginal relevance ----------------------------------------------------------------

    def _query_vector(self, query: str, info: CollectionInfo) -> list[float]:
        if self._embedding is not None:
            return self._embedding.embed_query(query)
        return list(self.client.embed(texts=[query], model=info.embedding_model, role="query").vectors[0])

    async def _aquery_vector(self, query: str, info: CollectionInfo) -> list[float]:
        if self._embedding is not None:
            return await self._embedding.aembed_query(query)
        found = await self._conn.aio().embed(texts=[query], model=info.embedding_model, role="query")
        return list(found.vectors[0])

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """k documents chosen by maximal marginal relevance among the fetch_k nearest to the
        vector: lambda_mult 1 for relevance alone, 0 for diversity alone."""
        info = self._collection.describe()
        if info is None or k <= 0:
            return []
        args = self._search_args(info, max(k, fetch_k), None, embedding, filter, True, retrieval_mode="dense")
        hits = next(self.client.search(**args).hits(), [])
        return [_document(hits[i]) for i in mmr(np.asarray(embedding), hit_vectors(hits), k, lambda_mult)]

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """`max_marginal_relevance_search_by_vector` over the asyncio client."""
        info = await self._collection.adescribe()
        if info is None or k <= 0:
            return []
        args = self._search_args(info, max(k, fetch_k), None, embedding, filter, True, retrieval_mode="dense")
        hits = next((await self._conn.aio().search(**args)).hits(), [])
        return [_document(hits[i]) for i in mmr(np.asarray(embedding), hit_vectors(hits), k, lambda_mult)]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, filter: Any = None, **kwargs: Any
    ) -> list[Document]:
        """`max_marginal_relevance_search_by_vector` for the query's vector."""
        info = self._collection.describe()
        if info is None or k <= 0:
            return []
        vector = self._query_vector(query, info)
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    async def amax_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, filter: Any = None, **kwargs: Any
    ) -> list[Document]:
        """`max_marginal_relevance_search` over the asyncio client."""
        info = await self._collection.adescribe()
        if info is None or k <= 0:
            return []
        vector = await self._aquery_vector(query, info)
        return await self.amax_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        collection_name: str = "langchain",
        **kwargs: Any,
    ) -> VecshardVectorStore:
        """A store over `collection_name` (other keyword arguments: those of the constructor),
        holding `texts` once this returns."""
        store = cls(collection_name, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        collection_name: str = "langchain",
        **kwargs: Any,
    ) -> VecshardVectorStore:
        """`from_texts` over the asyncio client."""
        store = cls(collection_name, embedding, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store

    def as_retriever(self, **kwargs: Any) -> VecshardRetriever:
        """A retriever over this store: search_type "similarity" (default), "mmr",
        "similarity_score_threshold", "keyword" or "hybrid"; search_kwargs as the searches take them
        (k, filter, fetch_k, lambda_mult, score_threshold, fusion, weights)."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return VecshardRetriever(vectorstore=self, tags=tags, **kwargs)

    def drop(self) -> None:
        """Drop the whole collection (the next write makes it again)."""
        self._collection.drop()
