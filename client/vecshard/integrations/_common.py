"""What the framework adapters share, importing no framework: the clients of a store, its collection
(created on first use), the payload layout of a document, the arguments of a dense, keyword or hybrid
search, maximal marginal relevance and ISO date-times as instants."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from vecshard.aio import AsyncClient
from vecshard.client import Client
from vecshard.connection import DEFAULT_ADDRESS
from vecshard.errors import AlreadyExists, InvalidArgument, NotFound, VecshardError
from vecshard.types import CollectionInfo, Hit

TEXT_KEY = "text"  # a document's text (a model-bound collection's store_text key too)
METADATA_KEY = "metadata"  # its metadata, a JSON-like dict
MODES = ("dense", "keyword", "hybrid")
T = TypeVar("T")


@dataclass(frozen=True)
class StoreConfig:
    """How a store's collection is made when it does not exist yet.

    model: a server embedding model (e.g. "minilm"): the collection is bound to it and the server
    embeds texts and queries; None: the framework's embeddings are stored (the dimension is that of
    the first vectors added). text_index: also index the text for keyword (BM25) and hybrid search,
    with this stemmer and stopword language (None: none)."""

    collection: str
    metric: str = "cosine"
    model: str | None = None
    text_index: bool = True
    stemmer: str | None = "english"
    stopwords: str | None = "english"

    def create_kwargs(self, dim: int) -> dict[str, Any]:
        """The arguments of create_collection for vectors of `dim` (ignored with a model)."""
        if self.model:
            return {"name": self.collection, "dim": 0, "metric": self.metric, "model": self.model, "store_text": True}
        return {"name": self.collection, "dim": dim, "metric": self.metric}


class Connection:
    """A store's clients: one `Client`, and an `AsyncClient` for the running event loop (a grpc.aio
    channel belongs to the loop it was first used in, so one is opened per loop unless one was given)."""

    def __init__(
        self,
        client: Client | None = None,
        address: str | None = None,
        async_client: AsyncClient | None = None,
        timeout: float | None = 60.0,
    ) -> None:
        self.address = address or (client or async_client or _Default).address
        self.timeout = timeout
        self._client = client
        self._owns_client = client is None
        self._aclient = async_client
        self._fixed_async = async_client is not None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def sync(self) -> Client:
        """The blocking client (opened on first use when none was given)."""
        if self._client is None:
            self._client = Client(self.address, timeout=self.timeout)
        return self._client

    def aio(self) -> AsyncClient:
        """The asyncio client for the running loop (opened on first use in it when none was given)."""
        if self._fixed_async and self._aclient is not None:
            return self._aclient
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._loop is not loop:
            self._aclient, self._loop = AsyncClient(self.address, timeout=self.timeout), loop
        return self._aclient

    def close(self) -> None:
        """Close the blocking client if this connection opened it."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None


class _Default:
    address = DEFAULT_ADDRESS


@dataclass(frozen=True)
class Call:
    """One SDK call of a plan: the method's name and its keyword arguments. "scroll" gives the list
    of every point; "scroll_first" the first point (or None)."""

    method: str
    kwargs: dict[str, Any]


Plan = Generator[Call, Any, T]


def call(method: str, **kwargs: Any) -> Plan[Any]:
    """`result = yield from call("count", collection=...)` in a plan."""
    return (yield Call(method, kwargs))


def run(conn: Connection, plan: Plan[T]) -> T:
    """Run a plan with the blocking client: each call's result (or VecshardError) goes back into it."""
    value: Any = None
    error: VecshardError | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(value)
        except StopIteration as stop:
            return cast(T, stop.value)
        value, error = None, None
        try:
            value = _perform(conn.sync, step)
        except VecshardError as err:
            error = err


async def arun(conn: Connection, plan: Plan[T]) -> T:
    """Run a plan with the asyncio client."""
    value: Any = None
    error: VecshardError | None = None
    while True:
        try:
            step = plan.throw(error) if error is not None else plan.send(value)
        except StopIteration as stop:
            return cast(T, stop.value)
        value, error = None, None
        try:
            value = await _aperform(conn.aio(), step)
        except VecshardError as err:
            error = err


def _perform(client: Client, step: Call) -> Any:
    if step.method == "scroll":
        return list(client.scroll(**step.kwargs))
    if step.method == "scroll_first":
        return next(iter(client.scroll(**step.kwargs)), None)
    return getattr(client, step.method)(**step.kwargs)


async def _aperform(client: AsyncClient, step: Call) -> Any:
    if step.method == "scroll":
        return [p async for p in client.scroll(**step.kwargs)]
    if step.method == "scroll_first":
        points = client.scroll(**step.kwargs)
        try:
            return await anext(points, None)
        finally:
            await points.aclose()  # type: ignore[attr-defined]
    return await getattr(client, step.method)(**step.kwargs)


class Collection:
    """A store's collection: described once and cached; created (string ids, a text index) on the
    first write when it does not exist. Each operation is a plan, run by `run` or `arun`."""

    def __init__(self, conn: Connection, config: StoreConfig) -> None:
        self.conn = conn
        self.config = config
        self.name = config.collection
        self.info: CollectionInfo | None = None

    def describe_plan(self) -> Plan[CollectionInfo | None]:
        """The collection's info, None while it does not exist."""
        if self.info is None:
            try:
                self.info = yield from call("describe", name=self.name)
            except NotFound:
                return None
        return self.info

    def ensure_plan(self, dim: int = 0) -> Plan[CollectionInfo]:
        """The collection's info, creating it for vectors of `dim` when it does not exist."""
        info = yield from self.describe_plan()
        if info is not None:
            return info
        try:
            info = yield from call("create_collection", id_type="string", **self.config.create_kwargs(dim))
        except AlreadyExists:
            info = yield from call("describe", name=self.name)
        else:
            if self.config.text_index:
                c = self.config
                args = {"stemmer": c.stemmer, "stopwords": c.stopwords}
                info = yield from call(
                    "create_payload_index", collection=self.name, field=TEXT_KEY, type="text", **args
                )
        self.info = cast(CollectionInfo, info)
        return self.info

    def drop_plan(self) -> Plan[None]:
        """Drop the collection (if it exists); the next write creates it again."""
        self.info = None
        try:
            yield from call("drop_collection", name=self.name)
        except NotFound:
            pass

    def describe(self) -> CollectionInfo | None:
        """`describe_plan` with the blocking client."""
        return run(self.conn, self.describe_plan())

    async def adescribe(self) -> CollectionInfo | None:
        """`describe_plan` with the asyncio client."""
        return await arun(self.conn, self.describe_plan())

    def ensure(self, dim: int = 0) -> CollectionInfo:
        """`ensure_plan` with the blocking client."""
        return run(self.conn, self.ensure_plan(dim))

    async def aensure(self, dim: int = 0) -> CollectionInfo:
        """`ensure_plan` with the asyncio client."""
        return await arun(self.conn, self.ensure_plan(dim))

    def drop(self) -> None:
        """`drop_plan` with the blocking client."""
        run(self.conn, self.drop_plan())

    async def adrop(self) -> None:
        """`drop_plan` with the asyncio client."""
        await arun(self.conn, self.drop_plan())


def fill_ids(ids: Sequence[str | None] | None, n: int) -> list[str]:
    """`n` string ids: those given (str() of each), a new UUID4 where one is None or missing."""
    if ids is not None and len(ids) != n:
        raise InvalidArgument(f"got {len(ids)} ids for {n} documents: give one id per document (or None)")
    given = list(ids) if ids is not None else [None] * n
    return [str(i) if i is not None and i != "" else str(uuid.uuid4()) for i in given]


def add_kwargs(
    info: CollectionInfo,
    ids: list[str],
    texts: Sequence[str],
    payloads: list[dict[str, Any]],
    vectors: Any = None,
) -> dict[str, Any]:
    """The arguments of `add` that store `texts` with their `payloads` (the text under TEXT_KEY is
    added here), replacing points of the same ids: with `vectors`, or embedded by the server's model
    when vectors is None (a model-bound collection with store_text keeps the text itself)."""
    kwargs: dict[str, Any] = {"collection": info.name, "ids": ids, "on_conflict": "replace"}
    if vectors is None:
        if not info.embedding_model:
            raise InvalidArgument(
                f"collection {info.name!r} is not bound to a server model: give the store an embedding "
                "(or documents with embeddings), or create it with model=..."
            )
        kwargs["texts"] = list(texts)
        keep = not info.store_text
    else:
        kwargs["vectors"] = np.asarray(vectors, dtype=np.float32)
        kwargs["model_fingerprint"] = info.model_fingerprint
        keep = True
    kwargs["payloads"] = [{**p, TEXT_KEY: t} if keep else p for p, t in zip(payloads, texts, strict=True)]
    return kwargs


def search_kwargs(
    info: CollectionInfo,
    mode: str,
    k: int,
    *,
    text: str | None = None,
    vector: Any = None,
    filter: Any = None,
    fusion: str | None = None,
    weights: Sequence[float] | None = None,
    candidates: int | None = None,
    with_vectors: bool = False,
    with_payload: Any = True,
) -> dict[str, Any]:
    """The arguments of `search` for one query: "dense" (by `vector`, or by `text` embedded by the
    collection's server model), "keyword" (BM25 over the text index, by `text`) or "hybrid" (both,
    fused by `fusion`/`weights`)."""
    if mode not in MODES:
        raise InvalidArgument(f"unknown retrieval mode {mode!r}: use one of {', '.join(MODES)}")
    kwargs: dict[str, Any] = {"collection": info.name, "k": k, "filter": filter or None}
    kwargs.update(with_payload=with_payload, with_vectors=with_vectors)
    if mode != "keyword":
        if vector is not None:
            kwargs["queries"] = np.asarray(vector, dtype=np.float32).reshape(1, -1)
            kwargs["model_fingerprint"] = info.model_fingerprint
        elif info.embedding_model and text is not None:
            kwargs["texts"] = [text]
        else:
            raise InvalidArgument(
                f"a {mode} search of collection {info.name!r} needs a query vector: the collection is not "
                "bound to a server model, so give the store an embedding"
            )
    if mode != "dense":
        if not text:
            raise InvalidArgument(f"a {mode} search needs the query's text")
        kwargs.update(keyword=text, fusion=fusion, weights=weights, candidates=candidates)
    return kwargs


def mmr(query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Maximal marginal relevance: the indexes of up to k rows of `candidates`, chosen one at a time
    to maximise lambda_mult * cos(query, row) - (1 - lambda_mult) * max cos(row, chosen)."""
    if k <= 0 or len(candidates) == 0:
        return []
    rows = _unit(np.asarray(candidates, dtype=np.float64))
    q = _unit(np.asarray(query, dtype=np.float64).reshape(1, -1))[0]
    relevance = rows @ q
    chosen = [int(np.argmax(relevance))]
    redundancy = rows @ rows[chosen[0]]
    while len(chosen) < min(k, len(rows)):
        score = lambda_mult * relevance - (1 - lambda_mult) * redundancy
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        redundancy = np.maximum(redundancy, rows @ rows[best])
    return chosen


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def hit_vectors(hits: Sequence[Hit]) -> np.ndarray:
    """The hits' vectors as rows (a search with with_vectors=True)."""
    return np.stack([np.asarray(h.vector, dtype=np.float32) for h in hits]) if hits else np.zeros((0, 0))


def looks_like_iso_date(value: Any) -> bool:
    """Whether a value is a string that starts with a complete ISO 8601 date (YYYY-MM-DD, then the
    end or a time after T, t or a space): the strings that filters compare as date-times."""
    return (
        isinstance(value, str)
        and len(value) >= 10
        and value[:4].isdigit()
        and value[4] == "-"
        and value[5:7].isdigit()
        and value[7] == "-"
        and value[8:10].isdigit()
        and (len(value) == 10 or value[10] in "Tt ")
    )


def iso_instant(value: Any) -> str | None:
    """An ISO 8601 date or date-time string (or a datetime) as the RFC 3339 date-time vecshard's
    datetime_range compares, a value without an offset read as UTC; None for anything else."""
    if isinstance(value, dt.datetime):
        when = value
    elif looks_like_iso_date(value):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.isoformat()


# -- filters: vecshard filter conditions combined, with the constants True (every point) and False --

Translated = dict[str, Any] | bool


def all_of(parts: Sequence[Translated]) -> Translated:
    """The conjunction of conditions (True and False fold away)."""
    if any(p is False for p in parts):
        return False
    kept = [p for p in parts if p is not True]
    return True if not kept else kept[0] if len(kept) == 1 else {"must": kept}


def any_of(parts: Sequence[Translated]) -> Translated:
    """The disjunction of conditions (True and False fold away)."""
    if any(p is True for p in parts):
        return True
    kept = [p for p in parts if p is not False]
    return False if not kept else kept[0] if len(kept) == 1 else {"should": kept}


def negate(part: Translated) -> Translated:
    """The negation of a condition."""
    return not part if isinstance(part, bool) else {"must_not": [part]}


def as_filter(node: Translated) -> Translated:
    """A condition as a whole filter dict (constants as they are)."""
    return node if isinstance(node, bool) or set(node) & {"must", "should", "must_not"} else {"must": [node]}
