"""Request building and response parsing, shared by `Client` and `AsyncClient`: the SDK's one
place for numpy <-> proto conversion and for the checks made before anything is sent."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from vecshard import wire
from vecshard.errors import FailedPrecondition, InvalidArgument
from vecshard.payload import FilterLike, filter_to_proto, payload_from_proto, payload_to_proto
from vecshard.types import (
    INDEX_TYPE_NAMES,
    AddResult,
    CollectionInfo,
    Embeddings,
    FilterPlan,
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
    return INDEX_TYPE_NAMES.index(kind) + 1


def create_payload_index(collection: CollectionRef, field: str, kind: str) -> pb.CreatePayloadIndexRequest:
    return pb.CreatePayloadIndexRequest(
        collection=name_of(collection),
        field=field,
        type=index_type(kind),  # type: ignore[arg-type]
    )


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
        req.ids = wire.pack_ids(wire.as_ids(ids))
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
) -> pb.ScrollRequest:
    """The request for the first page; `next_page` moves it on."""
    return pb.ScrollRequest(
        collection=name_of(collection),
        filter=filter_of(f),
        start_id=start_id,
        limit=page_size,
        with_payload=selector(with_payload),
        with_vectors=with_vectors,
    )


def next_page(req: pb.ScrollRequest, resp: pb.ScrollResponse) -> bool:
    """Move `req` on to the page after `resp`; False when `resp` was the last."""
    req.start_id = resp.next_start_id
    return not resp.done


def scroll_page(resp: pb.ScrollResponse, with_vectors: bool) -> list[Point]:
    ids = wire.unpack_ids(resp.ids).tolist()
    payloads = [payload_from_proto(p) for p in resp.payloads] if resp.payloads else [None] * len(ids)
    vectors = wire.unpack_matrix(resp.vectors) if with_vectors and ids else None
    return [
        Point(i, p, vectors[j].copy() if vectors is not None else None)
        for j, (i, p) in enumerate(zip(ids, payloads, strict=True))
    ]


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
) -> pb.CreateCollectionRequest:
    if coarse_quantizer.lower() not in _COARSE:
        raise InvalidArgument(f"unknown coarse_quantizer {coarse_quantizer!r}: use 'flat' or 'hnsw'")
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
) -> list[pb.AddRequest]:
    """Check a whole batch of vectors, then split it into Add requests below the message limit.
    (Texts and images go through `paced_adds`, sized by embedding speed.)"""
    id_arr = wire.as_ids(ids)
    wire.check_ids(id_arr)
    if vectors is None:
        raise InvalidArgument("pass exactly one of vectors, texts, images (got none)")
    x = wire.as_matrix(vectors)
    wire.check_vectors(x, x.shape[1])
    n = x.shape[0]
    if n != id_arr.size:
        raise InvalidArgument(f"got {id_arr.size} ids for {n} vectors: send one id per input")
    packed = payloads_of(payloads, n)
    row_bytes = x.shape[1] * 4 + 8
    if packed is not None:  # rows sized by the largest payload, so every request fits
        row_bytes += max((p.ByteSize() for p in packed), default=0) + 8
    rows = batch_size or max(1, (max_message_bytes - HEADROOM) // row_bytes)
    return [
        pb.AddRequest(
            collection=name_of(collection),
            ids=wire.pack_ids(id_arr[start : start + rows]),
            vectors=wire.pack_matrix(x[start : start + rows]),
            upsert=upsert,
            model_fingerprint=model_fingerprint,
            payloads=packed[start : start + rows] if packed is not None else None,
        )
        for start in range(0, n, rows)
    ]


def upload_batches(
    collection: CollectionRef,
    ids: Any,
    vectors: Any = None,
    texts: Iterable[str] | None = None,
    *,
    batch_size: int,
    upsert: bool,
    payloads: Sequence[ppb.Payload] | None = None,
) -> Iterator[tuple[int, pb.AddRequest]]:
    """Lazily cut (ids, vectors | texts) into Add requests of `batch_size`: arrays and memory-mapped
    `.npy` files are sliced, iterators (of rows, or of texts) consumed as they go; `payloads` (one per
    id, from `payloads_of`) go with their rows. Yields (rows, request)."""
    one_of("input", vectors=vectors, texts=texts)
    id_iter = iter(wire.as_ids(ids)) if isinstance(ids, np.ndarray | list | tuple | range) else iter(ids)
    sliceable = isinstance(vectors, np.ndarray)
    rows_iter: Iterator[Any] = iter(texts if texts is not None else ([] if sliceable else vectors))
    start = 0
    while True:
        chunk_ids = np.fromiter(itertools.islice(id_iter, batch_size), dtype=np.int64)
        if not chunk_ids.size:
            return
        req = pb.AddRequest(collection=name_of(collection), ids=wire.pack_ids(chunk_ids), upsert=upsert)
        chunk: Sequence[Any]
        if texts is not None:
            chunk = list(itertools.islice(rows_iter, chunk_ids.size))
            req.texts.extend(chunk)
        else:
            block = (
                vectors[start : start + chunk_ids.size]
                if sliceable
                else list(itertools.islice(rows_iter, chunk_ids.size))
            )
            x = wire.as_matrix(block)
            wire.check_vectors(x, x.shape[1])
            req.vectors.CopyFrom(wire.pack_matrix(x))
            chunk = list(x)
        if len(chunk) != chunk_ids.size:
            raise InvalidArgument(f"ran out of inputs after {start + len(chunk)} rows: send one input per id")
        if payloads is not None:
            req.payloads.extend(payloads[start : start + chunk_ids.size])
        start += chunk_ids.size
        yield chunk_ids.size, req


def add_result(responses: Iterable[pb.AddResponse]) -> AddResult:
    """Sum of the batches; the count is the largest seen (batches may finish out of order)."""
    added = replaced = count = 0
    for r in responses:
        added, replaced, count = added + r.added, replaced + r.replaced, max(count, r.count)
    return AddResult(added=added, replaced=replaced, count=count)


def remove(collection: CollectionRef, ids: Any, f: FilterArg | None = None) -> pb.RemoveRequest:
    one_of("target", ids=ids, filter=f)
    if ids is None:
        return pb.RemoveRequest(collection=name_of(collection), filter=filter_of(f))
    return pb.RemoveRequest(collection=name_of(collection), ids=wire.pack_ids(wire.as_ids(ids)))


def get(collection: CollectionRef, ids: Any, allow_missing: bool, with_payload: WithPayload = False) -> pb.GetRequest:
    return pb.GetRequest(
        collection=name_of(collection),
        ids=wire.pack_ids(wire.as_ids(ids)),
        allow_missing=allow_missing,
        with_payload=selector(with_payload),
    )


def points(resp: pb.GetResponse, ids: np.ndarray, with_vectors: bool) -> list[Point | None]:
    """`retrieve`'s answer: a Point per id asked (None for ids not stored), in the order asked."""
    found = np.frombuffer(resp.found, dtype=np.uint8).astype(bool)
    payloads = get_payloads(resp) if resp.payloads else [None] * found.size
    vectors = get_result(resp, True) if with_vectors else None
    return [
        Point(i, payloads[j], vectors[j] if vectors is not None else None) if found[j] else None
        for j, i in enumerate(ids.tolist())
    ]


def get_payloads(resp: pb.GetResponse) -> list[dict[str, Any] | None]:
    found = np.frombuffer(resp.found, dtype=np.uint8)
    return [payload_from_proto(p) if ok else None for p, ok in zip(resp.payloads, found.tolist(), strict=True)]


def get_result(resp: pb.GetResponse, allow_missing: bool) -> np.ndarray:
    out = wire.unpack_matrix(resp.vectors).copy()
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
) -> pb.SearchRequest:
    one_of("query", queries=queries, texts=texts, images=images)
    if offset < 0:
        raise InvalidArgument(f"offset must be >= 0, got {offset}")
    req = pb.SearchRequest(
        collection=name_of(collection),
        k=k,
        nprobe=nprobe or 0,
        allow_partial=allow_partial,
        refine_factor=refine_factor,
        model_fingerprint=model_fingerprint,
        filter=filter_of(f),
        with_payload=selector(with_payload),
        offset=offset,
    )
    if score_threshold is not None:
        req.score_threshold = score_threshold
    if queries is not None:
        req.queries.CopyFrom(wire.pack_matrix(wire.as_matrix(queries, "queries")))
    elif texts is not None:
        req.texts.extend([texts] if isinstance(texts, str) else texts)
    else:
        req.images.extend(image_bytes(i) for i in _as_list(images))
    return req


def search_result(resp: pb.SearchResponse) -> SearchResult:
    shape = (resp.nq, resp.k)
    ids = np.frombuffer(resp.ids, dtype=wire.I64).reshape(shape)
    payloads = None
    if resp.payloads:
        flat = [
            payload_from_proto(p) if i >= 0 else None
            for p, i in zip(resp.payloads, ids.reshape(-1).tolist(), strict=True)
        ]
        payloads = [flat[r * resp.k : (r + 1) * resp.k] for r in range(resp.nq)]
    return SearchResult(
        distances=np.frombuffer(resp.distances, dtype=wire.F32).reshape(shape),
        ids=ids,
        shards_total=resp.shards_total,
        shards_ok=resp.shards_ok,
        failed_shards=tuple(resp.failed_shards),
        payloads=payloads,
        plans=tuple(FilterPlan(p.shard, p.plan, p.matches, p.nprobe, tuple(p.unindexed_fields)) for p in resp.plans),
    )


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
) -> Iterator[tuple[int, pb.AddRequest]]:
    """Add requests of texts or images (`kind`), each as large as `pacer` says when it is cut, so the
    server's embedding of one request ends well inside its deadline. Ids and inputs may be
    iterators; yields (inputs in the request, request)."""
    id_iter = iter(wire.as_ids(ids)) if isinstance(ids, np.ndarray | list | tuple | range) else iter(ids)
    chunks = pacer.chunks(items)  # cut lazily: each as large as the pacer says after the last call
    done = 0
    while True:
        chunk = next(chunks, [])
        chunk_ids = np.fromiter(itertools.islice(id_iter, max(len(chunk), 1)), dtype=np.int64)
        if not chunk:
            if chunk_ids.size:
                raise InvalidArgument(f"ran out of {kind} after {done} rows: send one input per id")
            return
        if len(chunk) != chunk_ids.size:
            raise InvalidArgument(
                f"got more {kind} than ids (ids ran out after {done + chunk_ids.size}): send one id per input"
            )
        req = pb.AddRequest(
            collection=name_of(collection),
            ids=wire.pack_ids(chunk_ids),
            upsert=upsert,
            model_fingerprint=model_fingerprint,
        )
        if kind == "texts":
            req.texts.extend(chunk)
        else:
            req.images.extend(image_bytes(i) for i in chunk)
        if payloads is not None:
            req.payloads.extend(payloads[done : done + len(chunk)])
        done += len(chunk)
        yield len(chunk), req


def check_add_inputs(ids: Any, n: int, kind: str) -> np.ndarray:
    """Check a whole batch of ids for n inputs before anything is sent."""
    id_arr = wire.as_ids(ids)
    wire.check_ids(id_arr)
    if n != id_arr.size:
        raise InvalidArgument(f"got {id_arr.size} ids for {n} {kind}: send one id per input")
    return id_arr
