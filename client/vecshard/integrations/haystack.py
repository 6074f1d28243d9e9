"""Haystack 2: `VecshardDocumentStore` and its retriever components.

    pip install "vecshard[haystack]"

    from vecshard.integrations.haystack import VecshardDocumentStore, VecshardHybridRetriever
    store = VecshardDocumentStore("docs", address="localhost:50051", model="minilm")  # the server embeds
    store.write_documents([Document(content="vecshard shards a faiss index", meta={"year": 2024})])
    VecshardHybridRetriever(store, top_k=5).run(query="how is the index split?")

The store implements Haystack's DocumentStore protocol (and its async twin) over a string-id
collection: a document's content under the payload key "text", its meta under "metadata", its
embedding as the point's vector (a document without one is stored as a point without a vector: count,
filters and keyword search see it, vector search does not). Filters are Haystack's (==, !=, >, >=, <,
<=, in, not in; AND, OR, NOT, nested), run by the server as vecshard filters; an ISO 8601 date string
compared with >, >=, < or <= is compared as a date (vecshard's datetime_range, a date without an
offset read as UTC), through a copy of the meta's date strings as RFC 3339 instants kept under the
payload key "_dates".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.dataclasses import ByteStream, SparseEmbedding
    from haystack.document_stores.errors import DuplicateDocumentError
    from haystack.document_stores.types import DuplicatePolicy, FilterPolicy
    from haystack.document_stores.types.filter_policy import apply_filter_policy
    from haystack.errors import FilterError
except ImportError as err:  # pragma: no cover - without the extra
    raise ImportError(f'vecshard.integrations.haystack needs {err.name}: pip install "vecshard[haystack]"') from err

from vecshard.aio import AsyncClient
from vecshard.client import Client
from vecshard.errors import AlreadyExists, InvalidArgument
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
    iso_instant,
    negate,
    run,
    search_kwargs,
)
from vecshard.payload import join_key
from vecshard.types import CollectionInfo, Hit, Point

__all__ = [
    "VecshardBM25Retriever",
    "VecshardDocumentStore",
    "VecshardEmbeddingRetriever",
    "VecshardHybridRetriever",
    "to_vecshard_filter",
]

ID_KEY = "id"  # the document's id, also in the payload (filters on "id" read it)
DATES_KEY = "_dates"  # the meta's ISO date strings as RFC 3339 instants, at the same paths
BLOB_KEY = "blob"
SPARSE_KEY = "sparse_embedding"
_ORDER = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_DOCUMENT_FIELDS = {"id", "content", "blob", "meta", "score", "embedding", "sparse_embedding"}

# -- filters ----------------------------------------------------------------------------------------


def to_vecshard_filter(filters: dict[str, Any] | None) -> Translated:
    """Haystack filters as a vecshard filter dict, or True (every document) / False (none). Raises
    FilterError for a malformed filter, as Haystack's own stores do."""
    if not filters:
        return True
    if not isinstance(filters, dict):
        raise FilterError(f"filters must be a dict, got {type(filters).__name__}")
    return as_filter(_node(filters))


def _node(f: Any) -> Translated:
    if not isinstance(f, dict):
        raise FilterError(f"a filter condition must be a dict, got {f!r}")
    if "field" in f:
        return _comparison(f)
    if "operator" not in f:
        raise FilterError(f"'operator' key missing in {f}")
    if "conditions" not in f:
        raise FilterError(f"'conditions' key missing in {f}")
    parts = [_node(c) for c in f["conditions"]]
    op = f["operator"]
    if op == "AND":
        return all_of(parts)
    if op == "OR":
        return any_of(parts)
    if op == "NOT":
        return negate(all_of(parts))
    raise FilterError(f"Unknown logical operator '{op}'. Valid operators are: ['AND', 'NOT', 'OR']")


def _path(field: str) -> list[str]:
    """The payload path of a Haystack field: meta.x.y (or a bare legacy x), content, id."""
    if field.startswith("meta."):
        return [METADATA_KEY, *field[5:].split(".")]
    if field == "content":
        return [TEXT_KEY]
    if field == "id":
        return [ID_KEY]
    if field in _DOCUMENT_FIELDS:
        raise FilterError(f"filters on the Document field {field!r} are not supported: filter on content, id or meta")
    return [METADATA_KEY, *field.split(".")]


def _comparison(c: dict[str, Any]) -> Translated:
    for key in ("operator", "value"):
        if key not in c:
            raise FilterError(f"'{key}' key missing in {c}")
    path, op, value = _path(str(c["field"])), c["operator"], c["value"]
    if op == "==":
        return _equal(path, value)
    if op == "!=":
        return negate(_equal(path, value))
    if op in ("in", "not in"):
        if not isinstance(value, list):
            raise FilterError(f"Filter value must be a `list` when using operator '{op}', received {type(value)}")
        found = any_of([_equal(path, v) for v in value])
        return found if op == "in" else negate(found)
    if op in _ORDER:
        return _order(path, _ORDER[op], value)
    raise FilterError(f"Unknown comparison operator '{op}'. Valid: ['!=', '<', '<=', '==', '>', '>=', 'in', 'not in']")


def _equal(path: list[str], value: Any) -> Translated:
    if value is None:
        return {"key": path, "is_empty": True}
    if isinstance(value, list | dict | tuple):
        raise FilterError(f"'==' compares with one value, got {value!r}: use 'in' for a list of values")
    instant = iso_instant(value)
    same = {"key": path, "match": value.isoformat() if instant and not isinstance(value, str) else value}
    if instant is None:
        return same
    return any_of([same, {"key": [DATES_KEY, *path], "datetime_range": {"gte": instant, "lte": instant}}])


def _order(path: list[str], bound: str, value: Any) -> Translated:
    if value is None:
        return False
    if isinstance(value, list | tuple | dict):
        raise FilterError(f"Filter value can't be of type {type(value)} using operators '>', '>=', '<', '<='")
    if isinstance(value, bool):
        raise FilterError("Filter values of '>', '>=', '<', '<=' are numbers or ISO formatted dates, not bools")
    if isinstance(value, int | float):
        return {"key": path, "range": {bound: value}}
    instant = iso_instant(value)
    if instant is None:
        raise FilterError(
            "Can't compare strings using operators '>', '>=', '<', '<='. "
            "Strings are only comparable if they are ISO formatted dates."
        )
    return {"key": [DATES_KEY, *path], "datetime_range": {bound: instant}}


def _dates(value: Any) -> Any:
    """The ISO date strings of a meta value as RFC 3339 instants, at the same paths (None: none)."""
    if isinstance(value, dict):
        found = {k: d for k, v in value.items() if (d := _dates(v)) is not None}
        return found or None
    if isinstance(value, list):
        items = [d for v in value if (d := iso_instant(v)) is not None]
        return items or None
    return iso_instant(value)


# -- documents <-> points ---------------------------------------------------------------------------


def _payload(doc: Document) -> dict[str, Any]:
    payload: dict[str, Any] = {ID_KEY: doc.id, METADATA_KEY: dict(doc.meta)}
    if doc.content is not None:
        payload[TEXT_KEY] = doc.content
    dates = _dates({METADATA_KEY: doc.meta})
    if dates:
        payload[DATES_KEY] = dates
    if doc.blob is not None:
        blob = doc.blob
        payload[BLOB_KEY] = {"data": blob.data.hex(), "mime_type": blob.mime_type, "meta": dict(blob.meta)}
    if doc.sparse_embedding is not None:
        payload[SPARSE_KEY] = doc.sparse_embedding.to_dict()
    return payload


def _document(point: Point | Hit, score: float | None = None, with_embedding: bool = True) -> Document:
    p = point.payload or {}
    blob = p.get(BLOB_KEY)
    vector = point.vector if with_embedding else None
    return Document(
        id=str(point.id),
        content=p.get(TEXT_KEY),
        meta=p.get(METADATA_KEY) or {},
        embedding=[float(x) for x in vector] if vector is not None else None,
        blob=ByteStream(bytes.fromhex(blob["data"]), blob.get("meta") or {}, blob.get("mime_type")) if blob else None,
        sparse_embedding=SparseEmbedding.from_dict(p[SPARSE_KEY]) if p.get(SPARSE_KEY) else None,
        score=score,
    )


def _unique(docs: list[Document], policy: DuplicatePolicy) -> list[Document]:
    """One document per id: the first (SKIP), the last (OVERWRITE), or DuplicateDocumentError (FAIL)."""
    seen: dict[str, Document] = {}
    for doc in docs:
        if doc.id in seen:
            if policy is DuplicatePolicy.FAIL:
                raise DuplicateDocumentError(f"ID '{doc.id}' appears twice in the documents to write")
            if policy is DuplicatePolicy.SKIP:
                continue
        seen[doc.id] = doc
    return list(seen.values())


def _meta_path(field: str) -> list[str]:
    name = field.removeprefix("meta.")
    return [METADATA_KEY, *name.split(".")]


def _value_at(payload: dict[str, Any] | None, path: list[str]) -> Any:
    value: Any = payload or {}
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _typed(values: list[Any]) -> list[Any]:
    """Distinct scalar values (elements of lists), 1, 1.0, True and "1" kept apart, in a stable
    order: bools, numbers, then strings, each ascending."""
    found: dict[tuple[str, Any], Any] = {}
    for value in values:
        for v in value if isinstance(value, list) else [value]:
            if v is not None and not isinstance(v, dict | list):
                found.setdefault((type(v).__name__, v), v)
    rank = {bool: 0, int: 1, float: 1, str: 2}
    return sorted(found.values(), key=lambda v: (rank.get(type(v), 3), v if type(v) in rank else str(v)))


_TYPE_NAMES = {bool: "boolean", int: "long", float: "float", str: "keyword", list: "keyword", dict: "object"}


# -- the store's plans (run by the store with either client) ---------------------------------------


class _Plans:
    """The document store's operations as plans over its collection."""

    def __init__(self, collection: Collection, embedding_dim: int) -> None:
        self.col = collection
        self.name = collection.name
        self.dim = embedding_dim

    def count(self, filters: dict[str, Any] | None = None) -> Plan[int]:
        where = to_vecshard_filter(filters)
        if where is False or (yield from self.col.describe_plan()) is None:
            return 0
        return int((yield from call("count", collection=self.name, filter=None if where is True else where)))

    def points(
        self, filters: dict[str, Any] | None, with_payload: Any = True, vectors: bool = True
    ) -> Plan[list[Point]]:
        where = to_vecshard_filter(filters)
        if where is False or (yield from self.col.describe_plan()) is None:
            return []
        kwargs = {"filter": None if where is True else where, "with_payload": with_payload, "with_vectors": vectors}
        return list((yield from call("scroll", collection=self.name, page_size=256, **kwargs)))

    def filter(self, filters: dict[str, Any] | None) -> Plan[list[Document]]:
        return [_document(p) for p in (yield from self.points(filters))]

    def write(self, documents: Any, policy: DuplicatePolicy) -> Plan[int]:
        if not isinstance(documents, list) or not all(isinstance(d, Document) for d in documents):
            raise ValueError("write_documents takes a list of haystack Document objects")
        policy = DuplicatePolicy.FAIL if policy is DuplicatePolicy.NONE else policy
        docs = _unique(documents, policy)
        if not docs:
            return 0
        info = yield from self.col.ensure_plan(self.dim)
        ids = [d.id for d in docs]
        if policy is DuplicatePolicy.FAIL:
            stored = yield from call("retrieve", collection=self.name, ids=ids, with_payload=False)
            if any(p is not None for p in stored):
                taken = [i for i, p in zip(ids, stored, strict=True) if p is not None]
                raise DuplicateDocumentError(f"ID '{taken[0]}' already exists in the document store")
        conflict = {DuplicatePolicy.SKIP: "skip", DuplicatePolicy.OVERWRITE: "replace"}.get(policy, "fail")
        written = 0
        for kwargs in _add_batches(info, docs):
            try:
                result = yield from call("add", on_conflict=conflict, **kwargs)
            except AlreadyExists as err:
                raise DuplicateDocumentError(str(err)) from err
            written += result.added + result.replaced
        return written

    def delete(self, ids: list[str]) -> Plan[None]:
        if ids and (yield from self.col.describe_plan()) is not None:
            yield from call("remove", collection=self.name, ids=[str(i) for i in ids])

    def deleteall_of(self, recreate_index: bool) -> Plan[None]:
        if recreate_index:
            yield from self.col.drop_plan()
            return
        ids = [p.id for p in (yield from self.points(None, with_payload=False, vectors=False))]
        for start in range(0, len(ids), 1000):
            yield from call("remove", collection=self.name, ids=ids[start : start + 1000])

    def delete_by_filter(self, filters: dict[str, Any]) -> Plan[int]:
        where = to_vecshard_filter(filters)
        if where is True:
            before = yield from self.count()
            yield from self.deleteall_of(False)
            return before
        if where is False or (yield from self.col.describe_plan()) is None:
            return 0
        return int((yield from call("remove", collection=self.name, filter=where)))

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> Plan[int]:
        points = yield from self.points(filters, with_payload=[METADATA_KEY], vectors=False)
        for p in points:
            merged = {**((p.payload or {}).get(METADATA_KEY) or {}), **meta}
            payload = {METADATA_KEY: merged, DATES_KEY: _dates({METADATA_KEY: merged}) or {}}
            yield from call("set_payload", collection=self.name, payload=payload, ids=[p.id])
        return len(points)

    def field_values(self, field: str, filters: dict[str, Any] | None = None) -> Plan[list[Any]]:
        path = _meta_path(field)
        points = yield from self.points(filters, with_payload=[join_key(path)], vectors=False)
        return _typed([_value_at(p.payload, path) for p in points])

    def fields_info(self) -> Plan[dict[str, dict[str, str]]]:
        points = yield from self.points(None, with_payload=[METADATA_KEY], vectors=False)
        found: dict[str, str] = {}
        for p in points:
            for key, value in ((p.payload or {}).get(METADATA_KEY) or {}).items():
                if value is not None:
                    found[key] = _TYPE_NAMES.get(type(value), "keyword")
        return {k: {"type": v} for k, v in sorted(found.items())}

    def min_max(self, field: str) -> Plan[dict[str, Any]]:
        if (yield from self.col.describe_plan()) is None:
            return {"min": None, "max": None}
        key = join_key(_meta_path(field))
        ends = {}
        for end, order in (("min", "asc"), ("max", "desc")):
            args = {"order_by": key, "order": order, "page_size": 1, "with_payload": [key]}
            point = yield from call("scroll_first", collection=self.name, **args)
            ends[end] = _value_at(point.payload, _meta_path(field)) if point is not None else None
        return ends

    def retrieve(self, mode: str, top_k: int, **kwargs: Any) -> Plan[list[Document]]:
        where = to_vecshard_filter(kwargs.pop("filters", None))
        info = yield from self.col.describe_plan()
        if where is False or info is None or top_k <= 0:
            return []
        with_embedding, scale = kwargs.pop("return_embedding", False), kwargs.pop("scale_score", False)
        args = search_kwargs(
            info, mode, top_k, filter=None if where is True else where, with_vectors=with_embedding, **kwargs
        )
        hits: list[Hit] = next((yield from call("search", **args)).hits(), [])
        return [_document(h, _scaled(info, mode, h.distance) if scale else h.distance, with_embedding) for h in hits]


def _add_batches(info: CollectionInfo, docs: list[Document]) -> list[dict[str, Any]]:
    """The adds that store `docs`: those with an embedding as vectors; the others embedded by the
    collection's server model from their content, or else (or without content) as points without a
    vector."""
    with_vec = [d for d in docs if d.embedding is not None]
    by_server = [d for d in docs if d.embedding is None and info.embedding_model and d.content]
    served = {d.id for d in by_server}
    bare = [d for d in docs if d.embedding is None and d.id not in served]
    out = []
    if with_vec:
        vectors = [d.embedding for d in with_vec]
        out.append({"vectors": vectors, "model_fingerprint": info.model_fingerprint, **_ids_payloads(info, with_vec)})
    if by_server:
        out.append({"texts": [d.content for d in by_server], **_ids_payloads(info, by_server)})
    if bare:
        out.append(_ids_payloads(info, bare))
    return out


def _ids_payloads(info: CollectionInfo, docs: list[Document]) -> dict[str, Any]:
    return {"collection": info.name, "ids": [d.id for d in docs], "payloads": [_payload(d) for d in docs]}


def _scaled(info: CollectionInfo, mode: str, score: float) -> float:
    """A score in [0, 1], as Haystack's scale_score asks: (1 + cosine) / 2, a sigmoid of an inner
    product, of a BM25 score (/ 8) or of a negated squared L2 distance; a fused score as it is."""
    if mode == "hybrid":
        return score
    if mode == "keyword":
        return 1 / (1 + math.exp(-score / 8))
    if info.metric.value == "cosine":
        return (score + 1) / 2
    if info.metric.value == "inner_product":
        return 1 / (1 + math.exp(-score / 100))
    return 1 / (1 + math.exp(score / 100))


# -- the document store -----------------------------------------------------------------------------


class VecshardDocumentStore:
    """A Haystack DocumentStore over the vecshard collection `collection_name` (sync methods, and
    their `_async` twins over `vecshard.AsyncClient`)."""

    def __init__(
        self,
        collection_name: str = "documents",
        *,
        client: Client | None = None,
        address: str | None = None,
        async_client: AsyncClient | None = None,
        embedding_dim: int = 768,
        similarity: str = "cosine",
        model: str | None = None,
        text_index: bool = True,
        stemmer: str | None = "english",
        stopwords: str | None = "english",
        timeout: float | None = 60.0,
    ) -> None:
        """Connect to `address` (or use `client` / `async_client`; default localhost:50051).

        Args:
            embedding_dim, similarity: a collection this store creates holds vectors of this
                dimension, compared by "cosine", "dot_product" (inner product) or "l2" (squared).
            model: bind a collection this store creates to this server model ("minilm"): documents
                written without an embedding are embedded by the server from their content, and
                the retrievers can search by the query's text alone.
            text_index, stemmer, stopwords: a collection this store creates also gets a "text" index
                on the content (VecshardBM25Retriever, VecshardHybridRetriever).
        """
        metric = {"dot_product": "inner_product"}.get(similarity, similarity)
        if metric not in ("cosine", "inner_product", "l2", "l1"):
            raise InvalidArgument(f"unknown similarity {similarity!r}: use cosine, dot_product or l2")
        self.collection_name = collection_name
        self.embedding_dim = embedding_dim
        self.similarity = similarity
        self.model = model
        self.text_index, self.stemmer, self.stopwords = text_index, stemmer, stopwords
        self.timeout = timeout
        self._conn = Connection(client, address, async_client, timeout)
        config = StoreConfig(collection_name, metric, model, text_index, stemmer, stopwords)
        self._plans = _Plans(Collection(self._conn, config), embedding_dim)

    def to_dict(self) -> dict[str, Any]:
        """The store's settings (the server's address, not a client)."""
        return default_to_dict(
            self,
            collection_name=self.collection_name,
            address=self._conn.address,
            embedding_dim=self.embedding_dim,
            similarity=self.similarity,
            model=self.model,
            text_index=self.text_index,
            stemmer=self.stemmer,
            stopwords=self.stopwords,
            timeout=self.timeout,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VecshardDocumentStore:
        """A store from `to_dict`'s settings."""
        return default_from_dict(cls, data)

    def _run(self, plan: Plan[Any]) -> Any:
        return run(self._conn, plan)

    async def _arun(self, plan: Plan[Any]) -> Any:
        return await arun(self._conn, plan)

    def count_documents(self) -> int:
        """How many documents are stored."""
        return int(self._run(self._plans.count()))

    async def count_documents_async(self) -> int:
        """`count_documents` over the asyncio client."""
        return int(await self._arun(self._plans.count()))

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        """How many documents match the filters."""
        return int(self._run(self._plans.count(filters)))

    async def count_documents_by_filter_async(self, filters: dict[str, Any]) -> int:
        """`count_documents_by_filter` over the asyncio client."""
        return int(await self._arun(self._plans.count(filters)))

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The documents matching Haystack filters (all of them without), with their embeddings."""
        return list(self._run(self._plans.filter(filters)))

    async def filter_documents_async(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """`filter_documents` over the asyncio client."""
        return list(await self._arun(self._plans.filter(filters)))

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Store documents; returns how many were written. policy: FAIL (and NONE): a document
        whose id is stored raises DuplicateDocumentError and nothing is written; SKIP: such
        documents are left as stored; OVERWRITE: they are replaced. Creates the collection first
        when it does not exist."""
        return int(self._run(self._plans.write(documents, policy)))

    async def write_documents_async(
        self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE
    ) -> int:
        """`write_documents` over the asyncio client."""
        return int(await self._arun(self._plans.write(documents, policy)))

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete the documents of these ids (ids not stored are ignored)."""
        self._run(self._plans.delete(document_ids))

    async def delete_documents_async(self, document_ids: list[str]) -> None:
        """`delete_documents` over the asyncio client."""
        await self._arun(self._plans.delete(document_ids))

    def delete_all_documents(self, recreate_index: bool = False) -> None:
        """Delete every document; recreate_index: drop the collection instead (the next write makes
        it again, with this store's settings)."""
        self._run(self._plans.deleteall_of(recreate_index))

    async def delete_all_documents_async(self, recreate_index: bool = False) -> None:
        """`delete_all_documents` over the asyncio client."""
        await self._arun(self._plans.deleteall_of(recreate_index))

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Delete the documents matching the filters; returns how many."""
        return int(self._run(self._plans.delete_by_filter(filters)))

    async def delete_by_filter_async(self, filters: dict[str, Any]) -> int:
        """`delete_by_filter` over the asyncio client."""
        return int(await self._arun(self._plans.delete_by_filter(filters)))

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Set these meta fields (keeping the others) on the documents matching the filters;
        returns how many. Each document is written by itself (not atomically as a set)."""
        return int(self._run(self._plans.update_by_filter(filters, meta)))

    async def update_by_filter_async(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """`update_by_filter` over the asyncio client."""
        return int(await self._arun(self._plans.update_by_filter(filters, meta)))

    def count_unique_metadata_by_filter(self, filters: dict[str, Any], metadata_fields: list[str]) -> dict[str, int]:
        """How many distinct values each meta field has among the documents matching the filters."""
        return {f: len(self._run(self._plans.field_values(f, filters))) for f in metadata_fields}

    async def count_unique_metadata_by_filter_async(
        self, filters: dict[str, Any], metadata_fields: list[str]
    ) -> dict[str, int]:
        """`count_unique_metadata_by_filter` over the asyncio client."""
        return {f: len(await self._arun(self._plans.field_values(f, filters))) for f in metadata_fields}

    def get_metadata_fields_info(self) -> dict[str, dict[str, str]]:
        """The top-level meta fields of the stored documents, each with its type ("keyword",
        "long", "float", "boolean", "object")."""
        return dict(self._run(self._plans.fields_info()))

    async def get_metadata_fields_info_async(self) -> dict[str, dict[str, str]]:
        """`get_metadata_fields_info` over the asyncio client."""
        return dict(await self._arun(self._plans.fields_info()))

    def get_metadata_field_min_max(self, metadata_field: str) -> dict[str, Any]:
        """The smallest and largest value of a meta field ("meta." prefix optional): {"min", "max"},
        None for both when no document has it."""
        return dict(self._run(self._plans.min_max(metadata_field)))

    async def get_metadata_field_min_max_async(self, metadata_field: str) -> dict[str, Any]:
        """`get_metadata_field_min_max` over the asyncio client."""
        return dict(await self._arun(self._plans.min_max(metadata_field)))

    def get_metadata_field_unique_values(
        self,
        metadata_field: str,
        search_term: str | None = None,
        from_: int = 0,
        size: int = 10,
        filters: dict[str, Any] | None = None,
    ) -> tuple[list[Any], int]:
        """A page (from_, size) of the distinct values of a meta field among the documents matching
        the filters, in a stable order (bools, numbers, strings), and how many there are;
        search_term keeps the values containing it (case-insensitive)."""
        return _page(self._run(self._plans.field_values(metadata_field, filters)), search_term, from_, size)

    async def get_metadata_field_unique_values_async(
        self,
        metadata_field: str,
        search_term: str | None = None,
        from_: int = 0,
        size: int = 10,
        filters: dict[str, Any] | None = None,
    ) -> tuple[list[Any], int]:
        """`get_metadata_field_unique_values` over the asyncio client."""
        values = await self._arun(self._plans.field_values(metadata_field, filters))
        return _page(values, search_term, from_, size)

    def embedding_retrieval(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        return_embedding: bool = False,
        scale_score: bool = False,
    ) -> list[Document]:
        """The top_k documents nearest to the query embedding, each with its score."""
        options = {"filters": filters, "return_embedding": return_embedding, "scale_score": scale_score}
        plan = self._plans.retrieve("dense", top_k, vector=query_embedding, **options)
        return list(self._run(plan))

    async def embedding_retrieval_async(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        return_embedding: bool = False,
        scale_score: bool = False,
    ) -> list[Document]:
        """`embedding_retrieval` over the asyncio client."""
        options = {"filters": filters, "return_embedding": return_embedding, "scale_score": scale_score}
        plan = self._plans.retrieve("dense", top_k, vector=query_embedding, **options)
        return list(await self._arun(plan))

    def retrieval(self, mode: str, top_k: int = 10, **kwargs: Any) -> list[Document]:
        """A "dense", "keyword" or "hybrid" search (the keyword arguments of `search_kwargs`, and
        filters, return_embedding, scale_score)."""
        return list(self._run(self._plans.retrieve(mode, top_k, **kwargs)))

    async def retrieval_async(self, mode: str, top_k: int = 10, **kwargs: Any) -> list[Document]:
        """`retrieval` over the asyncio client."""
        return list(await self._arun(self._plans.retrieve(mode, top_k, **kwargs)))


def _page(values: list[Any], search_term: str | None, from_: int, size: int) -> tuple[list[Any], int]:
    if search_term:
        values = [v for v in values if search_term.lower() in str(v).lower()]
    return values[from_ : from_ + size], len(values)


# -- retriever components ---------------------------------------------------------------------------


class _Retriever:
    """What the three retrievers share: the store, default filters (combined with a run's per
    filter_policy), top_k, and whether documents carry their embeddings and scores scaled to [0, 1]."""

    def __init__(
        self,
        document_store: VecshardDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        filter_policy: str | FilterPolicy = FilterPolicy.REPLACE,
        return_embedding: bool = False,
        scale_score: bool = False,
    ) -> None:
        if not isinstance(document_store, VecshardDocumentStore):
            raise ValueError("document_store must be a VecshardDocumentStore")
        self.document_store = document_store
        self.filters = filters or {}
        self.top_k = top_k
        self.filter_policy = FilterPolicy.from_str(filter_policy) if isinstance(filter_policy, str) else filter_policy
        self.return_embedding = return_embedding
        self.scale_score = scale_score

    def _settings(self) -> dict[str, Any]:
        return {
            "document_store": self.document_store.to_dict(),
            "filters": self.filters,
            "top_k": self.top_k,
            "filter_policy": self.filter_policy.value,
            "return_embedding": self.return_embedding,
            "scale_score": self.scale_score,
        }

    def to_dict(self) -> dict[str, Any]:
        """The component's settings, its store's included."""
        return default_to_dict(self, **self._settings())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """A component from `to_dict`'s settings."""
        params = data.get("init_parameters", {})
        params["document_store"] = VecshardDocumentStore.from_dict(params["document_store"])
        return default_from_dict(cls, data)

    def _options(self, filters: dict[str, Any] | None, top_k: int | None) -> dict[str, Any]:
        return {
            "top_k": self.top_k if top_k is None else top_k,
            "filters": apply_filter_policy(self.filter_policy, self.filters, filters),
            "return_embedding": self.return_embedding,
            "scale_score": self.scale_score,
        }


@component
class VecshardEmbeddingRetriever(_Retriever):
    """Retrieves the documents nearest to a query embedding (dense search)."""

    @component.output_types(documents=list[Document])
    def run(
        self, query_embedding: list[float], filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """The top_k documents nearest to `query_embedding`, best first, with their scores."""
        return {
            "documents": self.document_store.retrieval("dense", vector=query_embedding, **self._options(filters, top_k))
        }

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query_embedding: list[float], filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """`run` over the asyncio client."""
        options = self._options(filters, top_k)
        return {"documents": await self.document_store.retrieval_async("dense", vector=query_embedding, **options)}


@component
class VecshardBM25Retriever(_Retriever):
    """Retrieves the documents best matching a query's words (BM25 over the content's text index,
    with the whole collection's statistics)."""

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """The top_k documents by BM25 score for `query`, best first."""
        return {"documents": self.document_store.retrieval("keyword", text=query, **self._options(filters, top_k))}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """`run` over the asyncio client."""
        options = self._options(filters, top_k)
        return {"documents": await self.document_store.retrieval_async("keyword", text=query, **options)}


@component
class VecshardHybridRetriever(_Retriever):
    """Retrieves by meaning and by words at once: a dense search (by the query embedding, or by the
    query's text for a store bound to a server model) and a BM25 search, fused by the server
    ("rrf", or "linear" with weights=(dense, keyword))."""

    def __init__(
        self,
        document_store: VecshardDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        filter_policy: str | FilterPolicy = FilterPolicy.REPLACE,
        return_embedding: bool = False,
        scale_score: bool = False,
        fusion: str = "rrf",
        weights: Sequence[float] | None = None,
    ) -> None:
        # (@component makes a new class, so zero-argument super() would not find this one)
        _Retriever.__init__(self, document_store, filters, top_k, filter_policy, return_embedding, scale_score)
        self.fusion = fusion
        self.weights = list(weights) if weights is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The component's settings, its store's included."""
        return default_to_dict(self, fusion=self.fusion, weights=self.weights, **self._settings())

    def _hybrid(self, query: str, query_embedding: list[float] | None) -> dict[str, Any]:
        return {"text": query, "vector": query_embedding, "fusion": self.fusion, "weights": self.weights}

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        query_embedding: list[float] | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
    ) -> dict[str, list[Document]]:
        """The top_k documents by fused score for `query` (and `query_embedding`; without it, a
        store bound to a server model embeds the query), best first."""
        options = self._options(filters, top_k)
        return {"documents": self.document_store.retrieval("hybrid", **self._hybrid(query, query_embedding), **options)}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        query_embedding: list[float] | None = None,
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
    ) -> dict[str, list[Document]]:
        """`run` over the asyncio client."""
        options = self._options(filters, top_k) | self._hybrid(query, query_embedding)
        return {"documents": await self.document_store.retrieval_async("hybrid", **options)}
