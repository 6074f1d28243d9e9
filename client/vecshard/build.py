"""Request building and response parsing, shared by `Client` and `AsyncClient`: the SDK's one
place for numpy <-> proto conversion and for the checks made before anything is sent."""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from vecshard import wire
from vecshard.errors import FailedPrecondition, InvalidArgument
from vecshard.payload import FilterLike, filter_to_proto, payload_from_proto, payload_to_proto, value_from_proto
from vecshard.types import (
    ID_TYPES,
    INDEX_TYPE_NAMES,
    PAYLOAD_INDEX_TYPES,
    AddResult,
    BackupInfo,
    BackupProgress,
    BackupVerification,
    CollectionInfo,
    Embeddings,
    FacetCount,
    FilterPlan,
    Group,
    Hit,
    IndexType,
    Metric,
    ModelInfo,
    Point,
    ReshardProgress,
    Sample,
    SearchResult,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb

HEADROOM = 64 * 1024  # bytes kept free in each message for the non-vector fields

ImageInput = bytes | str | os.PathLike[str] | Any  # encoded bytes, a file path, or a PIL image
CollectionRef = str | CollectionInfo  # a collection's name, or what list_collections()/describe() return
FilterArg = FilterLike | str  # a filter dict, a Filter message, or text such as 'lang = "en" and year >= 2020'
WithPayload = bool | Sequence[str]  # all, none, or these (dotted) fields
M = TypeVar("M", pb.AddRequest, pb.UpdateVectorsRequest)  # requests carrying ids and vectors or inputs
FUSIONS = {"rrf": pb.FUSION_RRF, "linear": pb.FUSION_LINEAR}
RRF_K = 60  # the RRF rank constant by default
ON_CONFLICT = {"fail": pb.ON_CONFLICT_FAIL, "skip": pb.ON_CONFLICT_SKIP, "replace": pb.ON_CONFLICT_REPLACE}


def filter_of(f: FilterArg | None) -> ppb.Filter | None:
    """A filter from a dict, a Filter, or the text form (parsed by vecshard.filter_text)."""
    if isinstance(f, str):
        from vecshard.filter_text import FilterSyntaxError, parse_filter

        try:
            return filter_to_proto(parse_filter(f))
        except FilterSyntaxError as err:
            raise InvalidArgument(str(err)) from None
    return filter_to_proto(f)


def selector(with_payload: WithPayload) -> ppb.PayloadSelector:
    if isinstance(with_payload, bool):
        return ppb.PayloadSelector(enable=with_payload)
    if isinstance(with_payload, str):
        return ppb.PayloadSelector(enable=True, fields=[with_payload])
    return ppb.PayloadSelector(enable=True, fields=list(with_payload))


def put_ids(req: Any, ids: wire.AnyIds, int_field: str = "ids", str_field: str = "string_ids") -> None:
    """Set a request's ids: packed int64 in `int_field`, or str in `str_field` (string-id collections)."""
    if isinstance(ids, list):
        getattr(req, str_field).extend(ids)
    else:
        setattr(req, int_field, wire.pack_ids(ids))


def id_chunks(ids: Any) -> Callable[[int], wire.AnyIds]:
    """take(n): the next n ids (fewer at the end, none once done) of a sequence, an array or an
    iterator of ids, each chunk as int64 or str (see `wire.as_any_ids`)."""
    if isinstance(ids, np.ndarray | list | tuple | range | str):
        whole = wire.as_any_ids(ids)
        done = 0

        def take_slice(n: int) -> wire.AnyIds:
            nonlocal done
            chunk = whole[done : done + n]
            done += len(chunk)
            return chunk

        return take_slice
    it = iter(ids)

    def take(n: int) -> wire.AnyIds:
        chunk = list(itertools.islice(it, n))
        return wire.as_any_ids(chunk) if chunk else np.empty(0, dtype=np.int64)

    return take


def conflict(upsert: bool | None, on_conflict: str | None) -> tuple[bool, pb.OnConflict]:
    """AddRequest's (upsert, on_conflict) for add's `upsert` and `on_conflict` arguments: upsert=True
    is on_conflict="replace" (and says so to servers that predate on_conflict)."""
    if on_conflict is None:
        return bool(upsert), pb.ON_CONFLICT_UNSPECIFIED
    mode = ON_CONFLICT.get(on_conflict.lower()) if isinstance(on_conflict, str) else None
    if mode is None:
        raise InvalidArgument(f"on_conflict must be one of 'fail', 'skip', 'replace' (or None), got {on_conflict!r}")
    if upsert and mode != pb.ON_CONFLICT_REPLACE:
        raise InvalidArgument(f"upsert=True means on_conflict='replace', not {on_conflict!r}: pass only one of them")
    return mode == pb.ON_CONFLICT_REPLACE, mode


def payloads_of(payloads: Sequence[dict[str, Any] | None] | None, n: int) -> list[ppb.Payload] | None:
    """One Payload per point (None: no payloads), checked before anything is sent."""
    if payloads is None:
        return None
    items = list(payloads)
    if len(items) != n:
        raise InvalidArgument(f"got {len(items)} payloads for {n} points: pass one per id (None for none)")
    return [payload_to_proto(p, f"payloads[{i}]") for i, p in enumerate(items)]


def index_type(kind: str) -> int:
    if kind not in INDEX_TYPE_NAMES:
        raise InvalidArgument(f"payload index type must be one of {', '.join(INDEX_TYPE_NAMES)}, got {kind!r}")
    value = PAYLOAD_INDEX_TYPES[kind]
    if value is None:
        raise InvalidArgument(f"this vecshard SDK's generated stubs have no {kind!r} payload index type: upgrade it")
    return value


def create_payload_index(
    collection: CollectionRef,
    field: str,
    kind: str,
    stemmer: str | None = None,
    stopwords: str | None = None,
    k1: float | None = None,
    b: float | None = None,
) -> pb.CreatePayloadIndexRequest:
    """A CreatePayloadIndexRequest; the analyzer and BM25 options only for a "text" index."""
    req = pb.CreatePayloadIndexRequest(
        collection=name_of(collection),
        field=field,
        type=index_type(kind),  # type: ignore[arg-type]
    )
    given = [n for n, v in (("stemmer", stemmer), ("stopwords", stopwords), ("k1", k1), ("b", b)) if v is not None]
    if kind != "text":
        if given:
            raise InvalidArgument(f"{_options(given)} to a 'text' index, not a {kind!r} one: leave None")
        return req
    for name, lang in (("stemmer", stemmer), ("stopwords", stopwords)):
        if lang is not None and not isinstance(lang, str):
            raise InvalidArgument(f"{name} is a language name such as 'english' (or None), got {lang!r}")
    if k1 is not None and not (isinstance(k1, int | float) and math.isfinite(k1) and k1 >= 0):
        raise InvalidArgument(f"k1 must be a finite number >= 0 (BM25 term saturation; default 1.2), got {k1!r}")
    if b is not None and not (isinstance(b, int | float) and 0 <= b <= 1):
        raise InvalidArgument(f"b must be between 0 and 1 (BM25 length normalisation; default 0.75), got {b!r}")
    req.text.SetInParent()
    req.text.stemmer, req.text.stopwords = stemmer or "", stopwords or ""
    if k1 is not None:
        req.text.k1 = float(k1)
    if b is not None:
        req.text.b = float(b)
    return req


def drop_payload_index(collection: CollectionRef, field: str) -> pb.DropPayloadIndexRequest:
    return pb.DropPayloadIndexRequest(collection=name_of(collection), field=field)


_MODES = {"merge": 1, "overwrite": 2, "delete_keys": 3}


def set_payload(
    collection: CollectionRef,
    payload: dict[str, Any] | None,
    ids: Any,
    f: FilterArg | None,
    mode: str,
    keys: Sequence[str] = (),
) -> pb.SetPayloadRequest:
    one_of("target", ids=ids, filter=f)
    req = pb.SetPayloadRequest(
        collection=name_of(collection),
        mode=_MODES[mode],  # type: ignore[arg-type]
        keys=list(keys),
        payload=payload_to_proto(payload),
    )
    if ids is not None:
        put_ids(req, wire.as_any_ids(ids))
    else:
        req.filter.CopyFrom(filter_of(f))
    return req


def scroll(
    collection: CollectionRef,
    f: FilterArg | None,
    with_payload: WithPayload,
    with_vectors: bool,
    start_id: int,
    page_size: int,
    order_by: str | None = None,
    order: str = "asc",
) -> pb.ScrollRequest:
    """The request for the first page; `next_page` moves it on."""
    if order not in ("asc", "desc"):
        raise InvalidArgument(f"order must be 'asc' or 'desc', got {order!r}")
    if order_by is None and order == "desc":
        raise InvalidArgument("order='desc' needs order_by (a payload field): without one, points come by ascending id")
    if order_by is not None and not order_by:
        raise InvalidArgument("order_by must name a payload field (a top-level or dotted key), got ''")
    req = pb.ScrollRequest(
        collection=name_of(collection),
        filter=filter_of(f),
        start_id=start_id,
        limit=page_size,
        with_payload=selector(with_payload),
        with_vectors=with_vectors,
    )
    if order_by is not None:
        req.order_by.CopyFrom(pb.OrderBy(key=order_by, descending=order == "desc"))
    return req


def next_page(req: pb.ScrollRequest, resp: pb.ScrollResponse) -> bool:
    """Move `req` on to the page after `resp` (by its cursor; by next_start_id from a server that
    sends none); False when `resp` was the last."""
    if resp.next_cursor:
        req.cursor = resp.next_cursor
    else:
        req.start_id = resp.next_start_id
    return not resp.done


def scroll_page(resp: pb.ScrollResponse, with_vectors: bool) -> list[Point]:
    ids: list[Any] = list(resp.string_ids) if resp.string_ids else wire.unpack_ids(resp.ids).tolist()
    payloads = [payload_from_proto(p) for p in resp.payloads] if resp.payloads else [None] * len(ids)
    vectors = wire.unpack_matrix(resp.vectors) if with_vectors and ids else None
    has = _has_vector(resp.has_vector, len(ids))
    return [
        Point(i, p, vectors[j].copy() if vectors is not None and has[j] else None)
        for j, (i, p) in enumerate(zip(ids, payloads, strict=True))
    ]


def _has_vector(mask: bytes, n: int) -> np.ndarray:
    """A has_vector byte mask as bools (every point has one when a server sends no mask)."""
    return np.frombuffer(mask, dtype=np.uint8).astype(bool) if mask else np.ones(n, dtype=bool)


def facet(collection: CollectionRef, field: str, f: FilterArg | None, limit: int) -> pb.FacetRequest:
    if not field:
        raise InvalidArgument("facet needs a payload field (a top-level or dotted key), got ''")
    if not 1 <= limit <= 10_000:
        raise InvalidArgument(f"limit must be 1 to 10,000, got {limit}")
    return pb.FacetRequest(collection=name_of(collection), key=field, filter=filter_of(f), limit=limit)


def facet_counts(resp: pb.FacetResponse) -> list[FacetCount]:
    return [FacetCount(value_from_proto(c.value), int(c.count)) for c in resp.counts]


def drop_collection(collection: CollectionRef) -> pb.DropCollectionRequest:
    return pb.DropCollectionRequest(name=name_of(collection))


def describe(collection: CollectionRef, include_centroids: bool) -> pb.DescribeCollectionRequest:
    return pb.DescribeCollectionRequest(name=name_of(collection), include_centroids=include_centroids)


def count(collection: CollectionRef, f: FilterArg | None) -> pb.CountRequest:
    return pb.CountRequest(collection=name_of(collection), filter=filter_of(f))


def name_of(collection: CollectionRef) -> str:
    """The collection's name, from a name or a `CollectionInfo`."""
    if isinstance(collection, CollectionInfo):
        return collection.name
    if isinstance(collection, str):
        return collection
    raise TypeError(
        f"a collection is given by its name (str) or a CollectionInfo, not {type(collection).__name__}: "
        "e.g. c.drop_collection('docs') or c.drop_collection(info)"
    )


_ROLES = {
    "": types_pb2.INPUT_ROLE_UNSPECIFIED,
    "query": types_pb2.INPUT_ROLE_QUERY,
    "passage": types_pb2.INPUT_ROLE_PASSAGE,
}


def image_bytes(image: ImageInput) -> bytes:
    """Encoded image bytes from bytes, a file path, or a PIL image (saved as PNG)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as fh:
            return fh.read()
    if hasattr(image, "save"):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise InvalidArgument(f"an image must be bytes, a file path or a PIL image, got {type(image).__name__}")


def one_of(kind: str, **given: Any) -> str:
    names = [n for n, v in given.items() if v is not None]
    if len(names) != 1:
        raise InvalidArgument(f"pass exactly one of {', '.join(given)} (got {', '.join(names) or 'none'})")
    return names[0]


_COARSE = {
    "": types_pb2.COARSE_QUANTIZER_UNSPECIFIED,
    "flat": types_pb2.COARSE_QUANTIZER_FLAT,
    "hnsw": types_pb2.COARSE_QUANTIZER_HNSW,
}


def create_collection(
    name: str,
    dim: int,
    metric: str | Metric | None,
    index: str | IndexType | None,
    nlist: int,
    nprobe: int,
    train_threshold: int,
    model: str | None,
    store_text: bool = False,
    pq_m: int = 0,
    pq_nbits: int = 0,
    refine_factor: int = 0,
    coarse_quantizer: str = "",
    expected_size: int = 0,
    target_recall: float = 0.0,
    memory_budget: int = 0,
    id_type: str = "int",
) -> pb.CreateCollectionRequest:
    if coarse_quantizer.lower() not in _COARSE:
        raise InvalidArgument(f"unknown coarse_quantizer {coarse_quantizer!r}: use 'flat' or 'hnsw'")
    if id_type not in ID_TYPES:
        raise InvalidArgument(f"unknown id_type {id_type!r}: use 'int' (int64 ids) or 'string' (str ids)")
    sizing = bool(expected_size or target_recall or memory_budget)
    if index is None:
        kind = types_pb2.INDEX_TYPE_UNSPECIFIED if sizing else IndexType.FLAT.to_proto()
    else:
        kind = IndexType.parse(index).to_proto()
    config = types_pb2.CollectionConfig(
        name=name,
        dim=dim,
        metric=Metric.parse(metric).to_proto() if metric is not None else types_pb2.METRIC_UNSPECIFIED,
        index_type=kind,
        coarse_quantizer=_COARSE[coarse_quantizer.lower()],
        expected_size=expected_size,
        target_recall=target_recall,
        memory_budget=memory_budget,
        nlist=nlist,
        nprobe=nprobe,
        train_threshold=train_threshold,
        embedding_model=model or "",
        store_text=store_text,
        pq_m=pq_m,
        pq_nbits=pq_nbits,
        refine_factor=refine_factor,
        id_type=ID_TYPES[id_type],
    )
    return pb.CreateCollectionRequest(config=config)


def add_batches(
    collection: CollectionRef,
    ids: Any,
    vectors: Any,
    *,
    upsert: bool = False,
    batch_size: int | None = None,
    model_fingerprint: str = "",
    max_message_bytes: int,
    payloads: Sequence[dict[str, Any] | None] | None = None,
    on_conflict: str | None = None,
) -> list[pb.AddRequest]:
    """Check a whole batch of vectors (or, with vectors None, of payloads: points without a
    vector), then split it into Add requests below the message limit. (Texts and images go through
    `paced_adds`, sized by embedding speed.)"""
    flag, mode = conflict(upsert, on_conflict)
    if vectors is None and payloads is None:
        raise InvalidArgument("pass one of vectors, texts, images, or payloads alone (points without a vector)")

    def new() -> pb.AddRequest:
        return pb.AddRequest(
            collection=name_of(collection), upsert=flag, on_conflict=mode, model_fingerprint=model_fingerprint
        )

    return batches(new, ids, vectors, payloads, batch_size=batch_size, max_message_bytes=max_message_bytes)


def update_vector_batches(
    collection: CollectionRef,
    ids: Any,
    vectors: Any,
    *,
    model_fingerprint: str = "",
    max_message_bytes: int,
) -> list[pb.UpdateVectorsRequest]:
    """Check a whole batch of (ids, vectors), then split it into UpdateVectors requests below the
    message limit."""

    def new() -> pb.UpdateVectorsRequest:
        return pb.UpdateVectorsRequest(collection=name_of(collection), model_fingerprint=model_fingerprint)

    return batches(new, ids, vectors, None, batch_size=None, max_message_bytes=max_message_bytes)


def batches(
    new: Callable[[], M],
    ids: Any,
    vectors: Any,
    payloads: Sequence[dict[str, Any] | None] | None,
    *,
    batch_size: int | None,
    max_message_bytes: int,
) -> list[M]:
    """Check ids (int or str), vectors (or None) and payloads (or None) as a whole, then cut them
    into requests from `new()` of `batch_size` rows, or of as many as fit the message limit."""
    id_list = wire.as_any_ids(ids)
    wire.check_any_ids(id_list)
    n = len(id_list)
    row_bytes = _id_bytes(id_list)
    x = None
    if vectors is not None:
        x = wire.as_matrix(vectors)
        wire.check_vectors(x, x.shape[1])
        if x.shape[0] != n:
            raise InvalidArgument(f"got {n} ids for {x.shape[0]} vectors: send one id per input")
        row_bytes += x.shape[1] * 4
    packed = payloads_of(payloads, n)
    if packed is not None:  # rows sized by the largest payload, so every request fits
        row_bytes += max((p.ByteSize() for p in packed), default=0) + 8
    rows = batch_size or max(1, (max_message_bytes - HEADROOM) // row_bytes)
    out = []
    for start in range(0, n, rows):
        req = new()
        put_ids(req, id_list[start : start + rows])
        if x is not None:
            req.vectors.CopyFrom(wire.pack_matrix(x[start : start + rows]))
        if packed is not None and isinstance(req, pb.AddRequest):
            req.payloads.extend(packed[start : start + rows])
        out.append(req)
    return out


def _id_bytes(ids: wire.AnyIds) -> int:
    """The most bytes one id takes in a request."""
    if isinstance(ids, list):
        return max((len(s.encode("utf-8")) for s in ids), default=0) + 4  # tag and length
    return 8


def upload_batches(
    collection: CollectionRef,
    ids: Any,
    vectors: Any = None,
    texts: Iterable[str] | None = None,
    *,
    batch_size: int,
    upsert: bool,
    payloads: Sequence[ppb.Payload] | None = None,
    on_conflict: str | None = None,
) -> Iterator[tuple[int, pb.AddRequest]]:
    """Lazily cut (ids, vectors | texts) into Add requests of `batch_size`: arrays and memory-mapped
    `.npy` files are sliced, iterators (of rows, or of texts) consumed as they go; `payloads` (one per
    id, from `payloads_of`) go with their rows; with neither vectors nor texts, the payloads alone
    (points without a vector). Ids are int or str (a string-id collection). Yields (rows, request)."""
    if vectors is not None or texts is not None or payloads is None:
        one_of("input", vectors=vectors, texts=texts)
    flag, mode = conflict(upsert, on_conflict)
    take = id_chunks(ids)
    sliceable = isinstance(vectors, np.ndarray)
    rows_iter: Iterator[Any] = iter(texts if texts is not None else ([] if sliceable or vectors is None else vectors))
    start = 0
    while True:
        chunk_ids = take(batch_size)
        n = len(chunk_ids)
        if not n:
            return
        req = pb.AddRequest(collection=name_of(collection), upsert=flag, on_conflict=mode)
        put_ids(req, chunk_ids)
        chunk: Sequence[Any] | wire.AnyIds = chunk_ids
        if texts is not None:
            chunk = list(itertools.islice(rows_iter, n))
            req.texts.extend(chunk)
        elif vectors is not None:
            block = vectors[start : start + n] if sliceable else list(itertools.islice(rows_iter, n))
            x = wire.as_matrix(block)
            wire.check_vectors(x, x.shape[1])
            req.vectors.CopyFrom(wire.pack_matrix(x))
            chunk = list(x)
        if len(chunk) != n:
            raise InvalidArgument(f"ran out of inputs after {start + len(chunk)} rows: send one input per id")
        if payloads is not None:
            req.payloads.extend(payloads[start : start + n])
        start += n
        yield n, req


def add_result(responses: Iterable[pb.AddResponse]) -> AddResult:
    """Sum of the batches; the count is the largest seen (batches may finish out of order)."""
    added = replaced = count = skipped = 0
    for r in responses:
        added, replaced, count = added + r.added, replaced + r.replaced, max(count, r.count)
        skipped += r.skipped
    return AddResult(added=added, replaced=replaced, count=count, skipped=skipped)


def remove(collection: CollectionRef, ids: Any, f: FilterArg | None = None) -> pb.RemoveRequest:
    one_of("target", ids=ids, filter=f)
    if ids is None:
        return pb.RemoveRequest(collection=name_of(collection), filter=filter_of(f))
    req = pb.RemoveRequest(collection=name_of(collection))
    put_ids(req, wire.as_any_ids(ids))
    return req


def get(collection: CollectionRef, ids: Any, allow_missing: bool, with_payload: WithPayload = False) -> pb.GetRequest:
    req = pb.GetRequest(collection=name_of(collection), allow_missing=allow_missing)
    req.with_payload.CopyFrom(selector(with_payload))
    put_ids(req, wire.as_any_ids(ids))
    return req


def points(resp: pb.GetResponse, ids: wire.AnyIds, with_vectors: bool) -> list[Point | None]:
    """`retrieve`'s answer: a Point per id asked (None for ids not stored), in the order asked; the
    vector is None unless asked for, and for a point stored without one."""
    found = np.frombuffer(resp.found, dtype=np.uint8).astype(bool)
    payloads = get_payloads(resp) if resp.payloads else [None] * found.size
    vectors = get_result(resp, True) if with_vectors else None
    has = _has_vector(resp.has_vector, found.size)
    listed: list[Any] = ids if isinstance(ids, list) else ids.tolist()
    return [
        Point(i, payloads[j], vectors[j] if vectors is not None and has[j] else None) if found[j] else None
        for j, i in enumerate(listed)
    ]


def get_payloads(resp: pb.GetResponse) -> list[dict[str, Any] | None]:
    found = np.frombuffer(resp.found, dtype=np.uint8)
    return [payload_from_proto(p) if ok else None for p, ok in zip(resp.payloads, found.tolist(), strict=True)]


def get_result(resp: pb.GetResponse, allow_missing: bool) -> np.ndarray:
    """`get`'s array: NaN rows for points stored without a vector (and, with allow_missing, for
    ids not stored)."""
    out = wire.unpack_matrix(resp.vectors).copy()
    if resp.has_vector:
        out[~_has_vector(resp.has_vector, out.shape[0])] = np.nan
    if allow_missing:
        found = np.frombuffer(resp.found, dtype=np.uint8).astype(bool)
        out[~found] = np.nan
    return out


def search(
    collection: CollectionRef,
    queries: Any,
    k: int,
    texts: Sequence[str] | None,
    images: Sequence[ImageInput] | None,
    nprobe: int | None,
    allow_partial: bool,
    model_fingerprint: str,
    f: FilterArg | None = None,
    with_payload: WithPayload = False,
    refine_factor: int = 0,
    offset: int = 0,
    score_threshold: float | None = None,
    *,
    by_ids: Any = None,
    with_vectors: bool = False,
    group_by: str | None = None,
    group_size: int = 3,
    keywords: Keywords | None = None,
) -> pb.SearchRequest:
    dense = any(v is not None for v in (queries, texts, images, by_ids))
    if keywords is None or keywords.keyword is None or dense:
        one_of("query", queries=queries, texts=texts, images=images, by_ids=by_ids)
    req = pb.SearchRequest(
        collection=name_of(collection),
        k=k,
        nprobe=nprobe or 0,
        allow_partial=allow_partial,
        refine_factor=refine_factor,
        model_fingerprint=model_fingerprint,
    )
    hit_options(req, f, with_payload, with_vectors, offset, score_threshold)
    if group_by is not None:
        if not group_by:
            raise InvalidArgument("group_by must name a payload field (a top-level or dotted key), got ''")
        if group_size < 1:
            raise InvalidArgument(f"group_size must be >= 1 (hits per group), got {group_size}")
        req.group_by, req.group_size = group_by, group_size
    if keywords is not None:
        keywords.put(req, dense)
    if queries is not None:
        req.queries.CopyFrom(wire.pack_matrix(wire.as_matrix(queries, "queries")))
    elif texts is not None:
        req.texts.extend([texts] if isinstance(texts, str) else texts)
    elif images is not None:
        req.images.extend(image_bytes(i) for i in _as_list(images))
    elif by_ids is not None:
        put_ids(req, query_ids(by_ids, "by_ids"), "query_ids", "query_string_ids")
    return req


@dataclass(frozen=True)
class Keywords:
    """search's keyword and hybrid options, as given."""

    keyword: str | Sequence[str] | None = None
    field: str | None = None
    fusion: str | None = None
    rrf_k: int = RRF_K
    weights: Sequence[float] | None = None
    candidates: int | None = None

    def hybrid(self) -> list[str]:
        """The hybrid options set to something other than their defaults."""
        out = [n for n in ("fusion", "weights", "candidates") if getattr(self, n) is not None]
        return out + (["rrf_k"] if self.rrf_k != RRF_K else [])

    def put(self, req: pb.SearchRequest, dense: bool) -> None:
        """Set a keyword or hybrid search's options on `req`, checked (dense: it has a dense query)."""
        if self.keyword is None:
            given = self.hybrid() + (["keyword_field"] if self.field is not None else [])
            if given:
                raise InvalidArgument(f"{_options(given)} with keyword= (keyword or hybrid search): pass keyword too")
            return
        k = self.keyword
        texts = [k] if isinstance(k, str) else list(k) if isinstance(k, Sequence) else None
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidArgument(f"keyword must be a str, or a non-empty list of str (one per query), got {k!r}")
        req.keywords.extend(texts)
        if self.field is not None:
            req.keyword_field = self.field
        if not dense:
            if self.hybrid():
                raise InvalidArgument(f"{_options(self.hybrid())} to hybrid searches: pass queries (or texts) too")
            return
        self._fusion(req)

    def _fusion(self, req: pb.SearchRequest) -> None:
        mode = self.fusion if self.fusion is not None else ("linear" if self.weights is not None else "rrf")
        value = FUSIONS.get(mode.lower()) if isinstance(mode, str) else None
        if value is None:
            raise InvalidArgument(f"fusion must be 'rrf' or 'linear' (or None: rrf), got {self.fusion!r}")
        req.fusion = value
        if isinstance(self.rrf_k, bool) or not isinstance(self.rrf_k, int) or self.rrf_k < 1:
            raise InvalidArgument(
                f"rrf_k must be an int >= 1 (the RRF rank constant; default {RRF_K}), got {self.rrf_k!r}"
            )
        if self.rrf_k != RRF_K:
            req.rrf_k = self.rrf_k
        if self.weights is not None:
            w = list(self.weights) if isinstance(self.weights, Sequence) else []
            if len(w) != 2 or not all(_weight(x) for x in w):
                raise InvalidArgument(f"weights are (dense, keyword): two finite numbers >= 0, got {self.weights!r}")
            req.weights.extend(float(x) for x in w)
        c = self.candidates
        if c is not None:
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise InvalidArgument(f"candidates must be an int >= 1 (hits per leg), got {c!r}")
            req.candidates = c


def _options(names: list[str]) -> str:
    """'a applies' / 'a, b apply' (the options a message names)."""
    return f"{', '.join(names)} {'applies' if len(names) == 1 else 'apply'}"


def _weight(x: Any) -> bool:
    """A linear fusion weight: a finite number >= 0."""
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        return False
    return math.isfinite(x) and float(x) >= 0


def hit_options(
    req: pb.SearchRequest,
    f: FilterArg | None,
    with_payload: WithPayload,
    with_vectors: bool,
    offset: int,
    score_threshold: float | None,
) -> None:
    """Set what search and recommend share: the filter, what each hit carries, and which hits."""
    if offset < 0:
        raise InvalidArgument(f"offset must be >= 0, got {offset}")
    req.with_payload.CopyFrom(selector(with_payload))
    req.with_vectors = with_vectors
    req.offset = offset
    filt = filter_of(f)
    if filt is not None:
        req.filter.CopyFrom(filt)
    if score_threshold is not None:
        req.score_threshold = score_threshold


def query_ids(ids: Any, field: str) -> wire.AnyIds:
    """Ids of stored points used as queries: at least one; int ids >= 0, str ids 1 to 256 bytes."""
    out = wire.as_any_ids(ids, field)
    if not len(out):
        raise InvalidArgument(f"{field} is empty: give at least one stored point's id")
    if isinstance(out, list):
        wire.check_string_ids(list(dict.fromkeys(out)), field)
    elif (out < 0).any():
        raise InvalidArgument(f"{field} must be >= 0; got {int(out[out < 0][0])}")
    return out


def recommend(
    collection: CollectionRef,
    positive: Any,
    negative: Any,
    k: int,
    f: FilterArg | None,
    with_payload: WithPayload,
    with_vectors: bool,
    offset: int,
    score_threshold: float | None,
    nprobe: int,
) -> pb.SearchRequest:
    """A search for one query made from stored points (SearchRequest.recommend)."""
    pos = query_ids(positive, "positive")
    neg = query_ids(negative, "negative") if len(wire.as_any_ids(negative, "negative")) else None
    if neg is not None and isinstance(neg, list) != isinstance(pos, list):
        raise InvalidArgument("positive and negative mix str and int ids: a collection's ids are of one kind")
    req = pb.SearchRequest(collection=name_of(collection), k=k, nprobe=nprobe)
    hit_options(req, f, with_payload, with_vectors, offset, score_threshold)
    put_ids(req.recommend, pos, "positive", "positive_string_ids")
    if neg is not None:
        put_ids(req.recommend, neg, "negative", "negative_string_ids")
    return req


def search_result(resp: pb.SearchResponse) -> SearchResult:
    nq, k = resp.nq, resp.k
    plans = tuple(FilterPlan(p.shard, p.plan, p.matches, p.nprobe, tuple(p.unindexed_fields)) for p in resp.plans)
    common: dict[str, Any] = {
        "higher_is_better": resp.higher_is_better,
        "shards_total": resp.shards_total,
        "shards_ok": resp.shards_ok,
        "failed_shards": tuple(resp.failed_shards),
        "plans": plans,
    }
    if resp.groups:
        ids0: np.ndarray = np.empty((nq, 0), dtype=object if _string_groups(resp) else wire.I64)
        groups = [[_group(g) for g in query.groups] for query in resp.groups]
        return SearchResult(np.empty((nq, 0), dtype=wire.F32), ids0, groups=groups, **common)
    hashes = np.frombuffer(resp.ids, dtype=wire.I64).reshape(nq, k)
    ids = hashes
    if resp.string_ids:
        ids = np.array([s or None for s in resp.string_ids], dtype=object).reshape(nq, k)
    payloads = None
    if resp.payloads:
        flat = [
            payload_from_proto(p) if i >= 0 else None
            for p, i in zip(resp.payloads, hashes.reshape(-1).tolist(), strict=True)
        ]
        payloads = [flat[r * k : (r + 1) * k] for r in range(nq)]
    vectors = None
    if resp.HasField("vectors") and resp.vectors.rows:
        vectors = wire.unpack_matrix(resp.vectors).reshape(nq, k, resp.vectors.cols)
    legs: dict[str, Any] = {
        name: np.frombuffer(getattr(resp, name), dtype=dtype).reshape(nq, k)
        for name, dtype in _LEGS.items()
        if len(getattr(resp, name)) == 4 * nq * k and nq * k
    }
    return SearchResult(
        distances=np.frombuffer(resp.distances, dtype=wire.F32).reshape(nq, k),
        ids=ids,
        payloads=payloads,
        vectors=vectors,
        **legs,
        **common,
    )


# A hybrid search's per-hit leg columns (SearchResponse): packed float32 scores, int32 ranks.
_LEGS = {"dense_scores": "<f4", "dense_ranks": "<i4", "keyword_scores": "<f4", "keyword_ranks": "<i4"}


def _string_groups(resp: pb.SearchResponse) -> bool:
    return any(g.string_ids for query in resp.groups for g in query.groups)


def _group(g: pb.HitGroup) -> Group:
    ids: list[Any] = list(g.string_ids) if g.string_ids else wire.unpack_ids(g.ids).tolist()
    distances = np.frombuffer(g.distances, dtype=wire.F32).tolist()
    payloads = [payload_from_proto(p) for p in g.payloads] if g.payloads else [None] * len(ids)
    vectors = wire.unpack_matrix(g.vectors) if g.HasField("vectors") and g.vectors.rows else None
    hits = [
        Hit(i, d, p, vectors[j] if vectors is not None else None)
        for j, (i, d, p) in enumerate(zip(ids, distances, payloads, strict=True))
    ]
    return Group(value_from_proto(g.value), hits)


def train(collection: CollectionRef, max_training_points: int, seed: int) -> pb.TrainRequest:
    return pb.TrainRequest(collection=name_of(collection), max_training_points=max_training_points, seed=seed)


def collection_info(info: pb.CollectionInfo) -> CollectionInfo:
    return CollectionInfo.from_proto(info)


def collection_infos(resp: pb.ListCollectionsResponse) -> list[CollectionInfo]:
    return [collection_info(info) for info in resp.collections]


def reshard(
    shards: int,
    collections: Sequence[str],
    abort: bool,
    status_only: bool,
    wait: bool,
    max_points_per_s: int,
    page_size: int,
) -> pb.ReshardRequest:
    return pb.ReshardRequest(
        collections=list(collections),
        shards=shards,
        abort=abort,
        status_only=status_only,
        wait=wait,
        max_points_per_s=max_points_per_s,
        page_size=page_size,
    )


def reshard_result(resp: pb.ReshardResponse) -> list[ReshardProgress]:
    return [ReshardProgress.from_proto(p) for p in resp.collections]


def sample(collection: CollectionRef, max_points: int, seed: int) -> pb.SampleRequest:
    return pb.SampleRequest(collection=name_of(collection), max_points=max_points, seed=seed)


def sample_result(resp: pb.SampleResponse) -> Sample:
    return Sample(
        ids=wire.unpack_ids(resp.ids).copy(),
        vectors=wire.unpack_matrix(resp.vectors).copy(),
        shards=np.frombuffer(resp.shards, dtype="<i4").copy(),
        lists=np.frombuffer(resp.lists, dtype="<i4").copy(),
    )


def embed(
    texts: Sequence[str] | None, images: Sequence[ImageInput] | None, model: str, role: str
) -> types_pb2.EmbedRequest:
    if role not in _ROLES:
        raise InvalidArgument(f"role must be 'query', 'passage' or '', got {role!r}")
    one_of("input", texts=texts, images=images)
    req = types_pb2.EmbedRequest(model=model, role=_ROLES[role])
    if texts is not None:
        req.texts.extend([texts] if isinstance(texts, str) else texts)
    else:
        req.images.extend(image_bytes(i) for i in _as_list(images))
    return req


def embeddings(resp: types_pb2.EmbedResponse) -> Embeddings:
    return Embeddings(wire.unpack_matrix(resp.vectors).copy(), ModelInfo.from_proto(resp.model))


EMBED_TARGET_S = 8.0  # server-side embedding time aimed at per call
EMBED_FIRST_BATCH = 8
EMBED_MAX_BATCH = 256
# Characters of text per embedding call: half the server's default per-request limit
# (max_embed_chars, 2,000,000; see docs/limits.md), so long texts never make a call too big.
EMBED_MAX_CHARS = 1_000_000


class EmbedPacer:
    """Sizes embedding calls by how fast the server turns out to embed, so every call ends far inside
    its deadline whatever the hardware (a 2-core CPU embeds ~9 long texts/s, a GPU thousands).

    Each call should take about `min(8 s, timeout / 6)`: the first call is small, later ones are
    sized from the measured time per input (growing at most 4x per call).
    """

    def __init__(self, timeout: float | None, maximum: int = EMBED_MAX_BATCH) -> None:
        self.target_s = min(EMBED_TARGET_S, (timeout or 60.0) / 6)
        self.maximum = max(1, maximum)
        self.size = min(EMBED_FIRST_BATCH, self.maximum)

    def record(self, n: int, seconds: float) -> None:
        per_input = max(seconds, 1e-6) / max(n, 1)
        self.size = max(1, min(self.maximum, int(self.target_s / per_input), 4 * self.size))

    def chunks(self, items: Iterable[Any]) -> Iterator[list[Any]]:
        """Consecutive chunks of `items`, each as large as the pacer says at the time it is cut, and
        of at most EMBED_MAX_CHARS characters of text (a longer single text is a chunk of its own)."""
        chunk: list[Any] = []
        chars = 0
        for item in items:
            n = len(item) if isinstance(item, str) else 0
            if chunk and (len(chunk) >= self.size or chars + n > EMBED_MAX_CHARS):
                yield chunk
                chunk, chars = [], 0
            chunk.append(item)
            chars += n
        if chunk:
            yield chunk


def embed_inputs(texts: Sequence[str] | str | None, images: Any) -> tuple[list[Any], bool]:
    """The inputs of an embed call as one list (images as encoded bytes), and whether they are texts."""
    one_of("input", texts=texts, images=images)
    if texts is not None:
        return ([texts] if isinstance(texts, str) else list(texts)), True
    return [image_bytes(i) for i in _as_list(images)], False


def join_embeddings(parts: Sequence[Embeddings]) -> Embeddings:
    """One `Embeddings` from the chunks of one embed call (all from the same model)."""
    if not parts:
        raise InvalidArgument("nothing to embed: send at least one text or image")
    fingerprints = {p.model.fingerprint for p in parts}
    if len(fingerprints) > 1:
        raise FailedPrecondition(f"the server's model changed during the call ({sorted(fingerprints)}): retry")
    return Embeddings(np.vstack([p.vectors for p in parts]), parts[0].model)


def list_models(load: Iterable[str]) -> types_pb2.ListModelsRequest:
    return types_pb2.ListModelsRequest(load=list(load))


def models(resp: types_pb2.ListModelsResponse) -> list[ModelInfo]:
    out = [ModelInfo.from_proto(m) for m in resp.models]
    return sorted(out, key=lambda m: m.name != resp.default_model)


def _as_list(items: Any) -> list[Any]:
    return [items] if isinstance(items, bytes | str | os.PathLike) or hasattr(items, "save") else list(items)


def paced_adds(
    collection: CollectionRef,
    ids: Any,
    items: Iterable[Any],
    kind: str,
    pacer: EmbedPacer,
    *,
    upsert: bool,
    model_fingerprint: str = "",
    payloads: Sequence[ppb.Payload] | None = None,
    on_conflict: str | None = None,
) -> Iterator[tuple[int, pb.AddRequest]]:
    """Add requests of texts or images (`kind`), each as large as `pacer` says when it is cut, so the
    server's embedding of one request ends well inside its deadline. Ids (int or str) and inputs may
    be iterators; yields (inputs in the request, request)."""
    flag, mode = conflict(upsert, on_conflict)

    def new() -> pb.AddRequest:
        return pb.AddRequest(
            collection=name_of(collection), upsert=flag, on_conflict=mode, model_fingerprint=model_fingerprint
        )

    return paced(new, ids, items, kind, pacer, payloads)


def paced(
    new: Callable[[], M],
    ids: Any,
    items: Iterable[Any],
    kind: str,
    pacer: EmbedPacer,
    payloads: Sequence[ppb.Payload] | None = None,
) -> Iterator[tuple[int, M]]:
    """Requests from `new()` of ids and texts or images (`kind`), cut by `pacer` (see `paced_adds`)."""
    take = id_chunks(ids)
    chunks = pacer.chunks(items)  # cut lazily: each as large as the pacer says after the last call
    done = 0
    while True:
        chunk = next(chunks, [])
        chunk_ids = take(max(len(chunk), 1))
        if not chunk:
            if len(chunk_ids):
                raise InvalidArgument(f"ran out of {kind} after {done} rows: send one input per id")
            return
        if len(chunk) != len(chunk_ids):
            raise InvalidArgument(
                f"got more {kind} than ids (ids ran out after {done + len(chunk_ids)}): send one id per input"
            )
        req = new()
        put_ids(req, chunk_ids)
        if kind == "texts":
            req.texts.extend(chunk)
        else:
            req.images.extend(image_bytes(i) for i in chunk)
        if payloads is not None and isinstance(req, pb.AddRequest):
            req.payloads.extend(payloads[done : done + len(chunk)])
        done += len(chunk)
        yield len(chunk), req


def update_vectors_inputs(
    collection: CollectionRef, ids: Any, items: list[Any], kind: str, pacer: EmbedPacer, model_fingerprint: str
) -> Iterator[tuple[int, pb.UpdateVectorsRequest]]:
    """UpdateVectors requests of texts or images, paced as `paced_adds`."""

    def new() -> pb.UpdateVectorsRequest:
        return pb.UpdateVectorsRequest(collection=name_of(collection), model_fingerprint=model_fingerprint)

    return paced(new, ids, items, kind, pacer)


def check_add_inputs(ids: Any, n: int, kind: str) -> wire.AnyIds:
    """Check a whole batch of ids (int or str) for n inputs before anything is sent."""
    id_arr = wire.as_any_ids(ids)
    wire.check_any_ids(id_arr)
    if n != len(id_arr):
        raise InvalidArgument(f"got {len(id_arr)} ids for {n} {kind}: send one id per input")
    return id_arr


def backup_location(location: str, s3_endpoint: str) -> pb.BackupLocation:
    if not isinstance(location, str) or not location:
        raise InvalidArgument("location must be an absolute directory path on the server or s3://bucket/prefix")
    return pb.BackupLocation(uri=location, s3_endpoint=s3_endpoint)


def create_backup(location: str, collections: Sequence[str], s3_endpoint: str, wait: bool) -> pb.CreateBackupRequest:
    return pb.CreateBackupRequest(
        collections=list(collections), location=backup_location(location, s3_endpoint), wait=wait
    )


def restore_backup(
    backup_id: str,
    location: str,
    collection: str,
    as_name: str,
    shards: int,
    replicas: int,
    s3_endpoint: str,
    wait: bool,
) -> pb.RestoreBackupRequest:
    return pb.RestoreBackupRequest(
        id=backup_id,
        location=backup_location(location, s3_endpoint),
        collection=collection,
        as_name=as_name,
        shards=shards,
        replicas=replicas,
        wait=wait,
    )


def backup_progress(resp: pb.BackupProgress) -> BackupProgress:
    return BackupProgress.from_proto(resp)


def backup_infos(resp: pb.ListBackupsResponse) -> list[BackupInfo]:
    return [BackupInfo.from_proto(b) for b in resp.backups]


def backup_info(resp: pb.BackupInfo) -> BackupInfo:
    return BackupInfo.from_proto(resp)


def backup_verification(resp: pb.VerifyBackupResponse) -> BackupVerification:
    return BackupVerification(resp.id, resp.files_checked, resp.bytes_checked, list(resp.problems))
