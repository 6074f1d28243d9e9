"""The SDK's methods, written once: one plan (see `vecshard.plan`) per public method of `Client`
and `AsyncClient`, with the method's docstring.

Each function takes the method's parameters in the method's order (after `client`, for those that
need its settings) and returns a plan: the requests it sends (built by `vecshard.build`), how it
retries (`vecshard.retry`), and the parsed result. `Client` runs the plan with blocking calls,
`AsyncClient` with `await`; `documented` gives both classes' methods the docstrings below. The
examples are written for `Client`: on an `AsyncClient`, await the call.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ALL_COMPLETED
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np

from vecshard import build, wire
from vecshard.build import ImageInput
from vecshard.errors import InvalidArgument, VecshardError
from vecshard.plan import Call, Plan, Spawn, Wait, unary
from vecshard.retry import Backoff
from vecshard.types import (
    AddResult,
    BackupInfo,
    BackupProgress,
    BackupVerification,
    CollectionInfo,
    Embeddings,
    FacetCount,
    IndexType,
    Metric,
    ModelInfo,
    Point,
    ReshardProgress,
    Sample,
    SearchResult,
)
from vecshard.v1 import vector_search_pb2 as pb

C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])
NO_RETRY = Backoff(retries=0)
RESHARD_WAIT_S = 24 * 3600.0  # the default deadline of a reshard that waits for its end


class Settings(Protocol):
    """What the plans read of a client: its default deadline and message limit."""

    timeout: float | None
    max_message_bytes: int


def documented(cls: C) -> C:
    """Give each public method of `cls` without a docstring the docstring of its plan here."""
    for name, fn in vars(cls).items():
        if name.startswith("_") or not inspect.isfunction(fn) or fn.__doc__:
            continue
        doc = getattr(sys.modules[__name__], name).__doc__.rstrip()
        if inspect.isasyncgenfunction(fn):
            doc += f"\n\n    AsyncClient: `async for ... in c.{name}(...)`."
        elif inspect.iscoroutinefunction(fn):
            doc += f"\n\n    AsyncClient: `await c.{name}(...)`."
        fn.__doc__ = doc
    return cls


def _deadline(client: Settings, timeout: float | None) -> float | None:
    return client.timeout if timeout is None else timeout


def _once(effect: Call, failed: VecshardError | None) -> Plan[Any]:
    return (yield effect)


def _timed(effect: Call, failed: VecshardError | None) -> Plan[tuple[Any, float]]:
    started = time.perf_counter()
    outcome = yield effect
    return outcome, time.perf_counter() - started


def paced(
    method: str,
    requests: Iterable[tuple[int, Any]],
    pacer: build.EmbedPacer,
    timeout: float | None,
    backoff: Backoff,
    progress: Callable[[int], object] | None = None,
) -> Plan[list[Any]]:
    """Send embedding requests ((inputs, request) pairs) one at a time, timing each (successful
    attempt) to size the next (see `EmbedPacer`); failed requests are retried per `backoff`."""
    out = []
    for n, req in requests:
        resp, seconds = yield from backoff.retried(partial(_timed, Call(method, req, timeout)))
        pacer.record(n, seconds)
        if progress is not None:
            progress(n)
        out.append(resp)
    return out


def fan_out(plans: Iterable[tuple[int, Plan[Any]]], width: int, progress: Callable[[int], object]) -> Plan[list[Any]]:
    """Run (rows, plan) pairs `width` at a time, calling progress(rows) as each ends; their results.
    On an error, the plans in flight end before it is raised (they may yet be stored)."""
    in_flight: dict[Any, int] = {}
    results: list[Any] = []
    try:
        for rows, plan in plans:
            while len(in_flight) >= width:
                results += yield from _settle(in_flight, progress)
            in_flight[(yield Spawn(plan))] = rows
        while in_flight:
            results += yield from _settle(in_flight, progress)
        return results
    except Exception:
        if in_flight:
            yield Wait(list(in_flight), ALL_COMPLETED)
        raise


def _settle(in_flight: dict[Any, int], progress: Callable[[int], object]) -> Plan[list[Any]]:
    finished = yield Wait(list(in_flight))
    results = []
    for handle in finished:
        results.append(handle.result())  # raises the plan's error
        progress(in_flight.pop(handle))
    return results


def progress_bar(enabled: bool | Callable[[int], object], label: str) -> Callable[..., None]:
    """update(n) / update(0, close=True) on a tqdm bar, a caller's callback, or a no-op."""
    if not enabled:
        return lambda n, close=False: None
    if callable(enabled):
        callback = enabled

        def report(n: int, close: bool = False) -> None:
            if n and not close:
                callback(n)

        return report
    try:
        from tqdm import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install 'vecshard[progress]'") from None
    bar = tqdm(desc=f"upload {label}", unit="vec")

    def update(n: int, close: bool = False) -> None:
        bar.update(n)
        if close:
            bar.close()

    return update


# -- the methods, in the order of the classes ----------------------------------------------------


def create_collection(
    name: str,
    dim: int,
    metric: str | Metric | None,
    index: str | IndexType | None,
    nlist: int,
    nprobe: int,
    train_threshold: int,
    model: str | None,
    store_text: bool,
    pq_m: int,
    pq_nbits: int,
    refine_factor: int,
    coarse_quantizer: str,
    expected_size: int,
    target_recall: float,
    memory_budget: int,
    id_type: str,
    timeout: float | None,
) -> Plan[CollectionInfo]:
    """Create a collection on every shard.

    Args:
        metric: "l2" (squared L2), "inner_product", "cosine" or "l1".
        index: "flat" (exact), "ivf_flat" (needs nlist; exact until trained), or a compressed
            IVF kind: "ivf_sq8" (dim bytes per vector), "ivf_sqfp16" (2 * dim bytes) or
            "ivf_pq" (pq_m bytes at 8 bits); these support l2, inner_product and cosine, and
            keep the float vectors on disk for `get` and re-ranking.
        nlist: IVF lists; nprobe: default lists probed per search (0: server default).
        pq_m, pq_nbits: IVF_PQ sub-quantizers (must divide dim; 0: dim / 8 or below) and
            bits per code (0: 8).
        refine_factor: compressed kinds: re-rank the best k * refine_factor candidates by exact
            distance (0 or 1: off); a search may override it.
        coarse_quantizer: IVF kinds: "flat" (default; compares with every centroid) or "hnsw"
            (a graph over the centroids, for nlist in the tens of thousands).
        expected_size, target_recall, memory_budget: instead of choosing `index` (leave it None)
            and nlist/nprobe yourself, let the server pick them from its sizing guide
            (docs/capacity.md) for this many vectors, recall@10 (default 0.95) and bytes of
            index memory; the returned info holds the choice.
        train_threshold: IVF trains itself at this many vectors (0: 39 * nlist).
        model: bind the collection to a server embedding model (see `list_models`): add and
            search then take `texts=`/`images=`. With a model, pass dim=0 to use the model's
            dimension and metric=None for cosine.
        store_text: with a model, keep each added text in its point's payload under "text",
            so searches can return it (`with_payload=True`).
        id_type: "int" (int64 ids >= 0) or "string": the points' ids are then str (1 to 256
            bytes of UTF-8, e.g. UUIDs or document keys), in every call and every result.

    Example:
        >>> c.create_collection("img", dim=128, metric="l2", index="ivf_flat", nlist=100, nprobe=10)
        >>> c.create_collection("docs", dim=0, metric=None, model="minilm", id_type="string")
        >>> c.create_collection("big", dim=768, expected_size=50_000_000, memory_budget=64 << 30)
    """
    req = build.create_collection(
        name,
        dim,
        metric,
        index,
        nlist,
        nprobe,
        train_threshold,
        model,
        store_text,
        pq_m,
        pq_nbits,
        refine_factor,
        coarse_quantizer,
        expected_size,
        target_recall,
        memory_budget,
        id_type,
    )
    return unary("CreateCollection", req, timeout, build.collection_info)


def drop_collection(name: build.CollectionRef, timeout: float | None) -> Plan[None]:
    """Delete a collection and all its vectors.

    Example:
        >>> c.drop_collection("img")
    """
    return unary("DropCollection", build.drop_collection(name), timeout, lambda resp: None)


def list_collections(timeout: float | None) -> Plan[list[CollectionInfo]]:
    """Every collection with its counts.

    Example:
        >>> [info.name for info in c.list_collections()]
    """
    return unary("ListCollections", pb.ListCollectionsRequest(), timeout, build.collection_infos)


def describe(name: build.CollectionRef, include_centroids: bool, timeout: float | None) -> Plan[CollectionInfo]:
    """A collection's config, per-shard counts, training state and optionally its centroids.

    Example:
        >>> info = c.describe("img", include_centroids=True)
        >>> info.count, info.trained, info.centroids.shape
    """
    return unary("DescribeCollection", build.describe(name, include_centroids), timeout, build.collection_info)


def add(
    client: Settings,
    collection: build.CollectionRef,
    ids: Any,
    vectors: Any,
    texts: Sequence[str] | None,
    images: Sequence[ImageInput] | None,
    payloads: Sequence[dict[str, Any] | None] | None,
    upsert: bool,
    on_conflict: str | None,
    batch_size: int | None,
    model_fingerprint: str,
    timeout: float | None,
) -> Plan[AddResult]:
    """Add vectors (or, to a model-bound collection, texts or images, or payloads alone) under
    your own ids: int64 >= 0, or str for a collection created with id_type="string".

    Ids must be unique. The batch is checked locally first, then sent in chunks that fit the
    message limit (or of `batch_size` rows). Texts and images go in chunks sized by the server's
    measured embedding speed (about 8 s of work each, never near the deadline), so any corpus
    fits the default timeout on a CPU. Each chunk is atomic; a failure in a later chunk leaves
    the earlier ones stored, so retry with on_conflict="replace" (or "skip"). For large or
    streamed inputs, see `upload`.

    Args:
        vectors: (n, dim) floats; None with `payloads` adds points without a vector (count,
            scroll, retrieve, filters and facets see them, vector search does not until
            `update_vectors` gives them one).
        payloads: one JSON-like dict per id (None for none): str keys; None, bool, int (int64,
            kept exact), float, str, lists and nested dicts; at most 64 KiB each by default.
        on_conflict: what to do with an id already stored: "fail" (the default: AlreadyExists,
            and nothing of the chunk is kept), "skip" (keep the stored point; `.skipped` counts
            them) or "replace" (its vector and payload).
        upsert: True is on_conflict="replace".
        model_fingerprint: with vectors made by `embed`, its fingerprint: the server refuses
            vectors of another model (FailedPrecondition).

    Example:
        >>> c.add("img", ids=np.arange(1000), vectors=np.random.rand(1000, 128).astype("float32"))
        AddResult(added=1000, replaced=0, count=1000, skipped=0)
        >>> c.add("img", ids=[7], vectors=v, payloads=[{"lang": "en"}], on_conflict="skip")
        >>> c.add("docs", ids=["a1", "b2"], texts=["a cat sat", "stock prices fell"])
        >>> c.add("img", ids=[8, 9], payloads=[{"todo": True}, {"todo": True}])  # no vectors yet
    """
    build.conflict(upsert, on_conflict)  # a bad choice fails before anything is sent
    if texts is not None or images is not None:
        build.one_of("input", vectors=vectors, texts=texts, images=images)
        items, is_text = build.embed_inputs(texts, images)
        kind = "texts" if is_text else "images"
        id_arr = build.check_add_inputs(ids, len(items), kind)
        pacer = build.EmbedPacer(_deadline(client, timeout), batch_size or build.EMBED_MAX_BATCH)
        packed = build.payloads_of(payloads, len(items))
        adds = build.paced_adds(
            collection,
            id_arr,
            items,
            kind,
            pacer,
            upsert=upsert,
            on_conflict=on_conflict,
            model_fingerprint=model_fingerprint,
            payloads=packed,
        )
        return build.add_result((yield from paced("Add", adds, pacer, timeout, NO_RETRY)))
    requests = build.add_batches(
        collection,
        ids,
        vectors,
        upsert=upsert,
        batch_size=batch_size,
        model_fingerprint=model_fingerprint,
        max_message_bytes=client.max_message_bytes,
        payloads=payloads,
        on_conflict=on_conflict,
    )
    responses = []
    for req in requests:
        responses.append((yield Call("Add", req, timeout)))
    return build.add_result(responses)


def upload(
    client: Settings,
    collection: build.CollectionRef,
    ids: Any,
    vectors: Any,
    texts: Iterable[str] | None,
    payloads: Sequence[dict[str, Any] | None] | None,
    batch_size: int,
    parallel: int,
    retries: int,
    upsert: bool | None,
    on_conflict: str | None,
    progress: bool | Callable[[int], object],
    timeout: float | None,
) -> Plan[AddResult]:
    """Bulk-load vectors or texts, `parallel` batches in flight, retrying failed batches.

    Inputs may be numpy arrays, memory-mapped `.npy` files (`np.load(path, mmap_mode="r")`,
    read batch by batch) or iterators (of ids, and of vector rows or texts). Ids are int, or str
    for a string-id collection. A batch that fails with Unavailable or DeadlineExceeded is
    retried up to `retries` times with backoff (see `vecshard.retry.Backoff`); uploads replace
    stored ids by default (upsert), so a retried batch never fails on its own earlier attempt.

    Args:
        payloads: one dict per id (None for none), as in `add`; ids must then be a sequence.
            Without vectors and texts: points without a vector, as in `add`.
        upsert, on_conflict: as in `add`; with neither, "replace". on_conflict="skip" keeps the
            points already stored (e.g. to finish an interrupted load without rewriting them).
        progress: True shows a progress bar (needs `tqdm`: pip install "vecshard[progress]");
            a callable is called with the number of inputs stored after each batch.
        texts: for a model-bound collection, texts instead of vectors: sent one request at a
            time, each sized by the server's measured embedding speed (about 8 s of work), so
            the default timeout holds on a CPU and a retry re-embeds one small batch only.

    Example:
        >>> c.upload("img", ids=range(1_000_000), vectors=np.load("vecs.npy", mmap_mode="r"), parallel=4)
    """
    if payloads is not None and not isinstance(ids, np.ndarray | list | tuple | range):
        raise InvalidArgument("payloads need ids as a sequence or an array (not an iterator): one payload per id")
    replace = bool(upsert if upsert is not None or on_conflict is not None else True)
    build.conflict(replace, on_conflict)  # a bad choice fails before anything is sent
    packed = build.payloads_of(payloads, len(ids)) if payloads is not None else None
    backoff = Backoff(retries=retries)
    bar = progress_bar(progress, build.name_of(collection))
    try:
        if texts is not None:  # paced by the server's embedding speed, one request at a time
            pacer = build.EmbedPacer(_deadline(client, timeout), batch_size)
            adds = build.paced_adds(
                collection, ids, texts, "texts", pacer, upsert=replace, on_conflict=on_conflict, payloads=packed
            )
            return build.add_result((yield from paced("Add", adds, pacer, timeout, backoff, bar)))
        batches = build.upload_batches(
            collection, ids, vectors, batch_size=batch_size, upsert=replace, on_conflict=on_conflict, payloads=packed
        )
        sends = ((rows, backoff.retried(partial(_once, Call("Add", req, timeout)))) for rows, req in batches)
        return build.add_result((yield from fan_out(sends, max(1, parallel), bar)))
    finally:
        bar(0, close=True)


def update_vectors(
    client: Settings,
    collection: build.CollectionRef,
    ids: Any,
    vectors: Any,
    texts: Sequence[str] | None,
    images: Sequence[ImageInput] | None,
    model_fingerprint: str | None,
    timeout: float | None,
) -> Plan[int]:
    """Set or replace the vectors of stored points, keeping their payloads: give a vector to a
    point added without one (payloads alone), or re-embed one. Returns how many stored points
    got their vector; ids not stored are ignored.

    Args:
        vectors: one row per id; or, for a model-bound collection, `texts` or `images` that the
            server embeds (sent in requests sized by its embedding speed, as `add` does).
        model_fingerprint: with vectors made by `embed`, its fingerprint (as in `add`).

    Example:
        >>> c.add("img", ids=[8, 9], payloads=[{"todo": True}, {"todo": True}])
        >>> c.update_vectors("img", [8, 9], np.random.rand(2, 128))
        2
        >>> c.update_vectors("docs", ["a1"], texts=["a cat sat on the mat"])
    """
    build.one_of("input", vectors=vectors, texts=texts, images=images)
    if vectors is None:
        items, is_text = build.embed_inputs(texts, images)
        kind = "texts" if is_text else "images"
        id_arr = build.check_add_inputs(ids, len(items), kind)
        pacer = build.EmbedPacer(_deadline(client, timeout))
        requests = build.update_vectors_inputs(collection, id_arr, items, kind, pacer, model_fingerprint or "")
        return sum(r.updated for r in (yield from paced("UpdateVectors", requests, pacer, timeout, NO_RETRY)))
    updates = build.update_vector_batches(
        collection, ids, vectors, model_fingerprint=model_fingerprint or "", max_message_bytes=client.max_message_bytes
    )
    updated = 0
    for req in updates:
        updated += (yield Call("UpdateVectors", req, timeout)).updated
    return updated


def remove(
    collection: build.CollectionRef,
    ids: Any,
    filter: build.FilterArg | None,  # noqa: A002
    timeout: float | None,
) -> Plan[int]:
    """Remove points by id (int, or str in a string-id collection), or every point matching
    `filter`; returns how many were stored. Removed ids never come back.

    Example:
        >>> c.remove("img", [3, 4, 5])
        3
        >>> c.remove("docs", ["doc-17"])
        >>> c.remove("img", filter={"must": [{"key": "year", "range": {"lt": 2000}}]})
    """
    return unary("Remove", build.remove(collection, ids, filter), timeout, lambda resp: int(resp.removed))


def delete(collection: build.CollectionRef, filter: build.FilterArg, timeout: float | None) -> Plan[int]:  # noqa: A002
    """Remove every point matching `filter` (a dict, or text such as 'lang = "en"'); returns
    how many were removed.

    Example:
        >>> c.delete("docs", 'tenant = 42 and year < 2015')
    """
    return remove(collection, None, filter, timeout)


def count(collection: build.CollectionRef, filter: build.FilterArg | None, timeout: float | None) -> Plan[int]:  # noqa: A002
    """How many points match `filter` (all points without one), over every shard.

    Example:
        >>> c.count("docs", {"must": [{"key": "lang", "match": "en"}]})
        1250
    """
    return unary("Count", build.count(collection, filter), timeout, lambda resp: int(resp.count))


def scroll(
    collection: build.CollectionRef,
    filter: build.FilterArg | None,  # noqa: A002
    with_payload: build.WithPayload,
    with_vectors: bool,
    start_id: int,
    page_size: int,
    order_by: str | None,
    order: str,
    timeout: float | None,
) -> Iterator[Plan[list[Point]]]:
    """Every point matching `filter` (all without one), fetched a page at a time: in ascending
    id order (for a string-id collection, the order of the ids' hashes), or by a payload field.
    A point stored throughout the iteration is yielded exactly once, whatever is written meanwhile.

    Args:
        with_vectors: also return each point's vector (None for a point stored without one).
        order_by: a payload field (top-level or dotted key): points come in the order of its
            values (numbers, then strings, then bools; ties by id) and points without it are
            left out. order: "asc" or "desc" (with order_by only).
        start_id: begin at this id (ascending id order only).

    Example:
        >>> for p in c.scroll("docs", 'lang = "en"', with_payload=["title"]):
        ...     print(p.id, p.payload)
        >>> newest = [p.id for p in c.scroll("docs", order_by="year", order="desc", page_size=10)]
    """
    req = build.scroll(collection, filter, with_payload, with_vectors, start_id, page_size, order_by, order)
    more = True

    def page() -> Plan[list[Point]]:  # run each page's plan before asking for the next
        nonlocal more
        resp = yield Call("Scroll", req, timeout)
        more = build.next_page(req, resp)
        return build.scroll_page(resp, with_vectors)

    while more:
        yield page()


def retrieve(
    collection: build.CollectionRef,
    ids: Any,
    with_payload: build.WithPayload,
    with_vectors: bool,
    timeout: float | None,
) -> Plan[list[Point | None]]:
    """The points of `ids` (int, or str in a string-id collection) in the order asked (None for
    ids not stored), with their payloads and, if asked, vectors (None for a point stored without
    one).

    Example:
        >>> [p.payload for p in c.retrieve("docs", [1, 2]) if p]
        >>> c.retrieve("pages", ["home", "about"], with_vectors=True)[0].vector
    """
    id_arr = wire.as_any_ids(ids)
    req = build.get(collection, id_arr, True, with_payload)
    return unary("Get", req, timeout, partial(build.points, ids=id_arr, with_vectors=with_vectors))


def set_payload(
    collection: build.CollectionRef,
    payload: dict[str, Any],
    ids: Any,
    filter: build.FilterArg | None,  # noqa: A002
    timeout: float | None,
) -> Plan[int]:
    """Set the given top-level keys of the payloads of `ids` (int, or str in a string-id
    collection) or of the points matching `filter`, keeping their other keys; vectors stay as
    they are. Returns how many points were written.

    Example:
        >>> c.set_payload("docs", {"reviewed": True}, filter='lang = "en"')
    """
    return _set_payload(build.set_payload(collection, payload, ids, filter, "merge"), timeout)


def overwrite_payload(
    collection: build.CollectionRef,
    payload: dict[str, Any],
    ids: Any,
    filter: build.FilterArg | None,  # noqa: A002
    timeout: float | None,
) -> Plan[int]:
    """Replace the whole payload of `ids` (or of the points matching `filter`) with `payload`.

    Example:
        >>> c.overwrite_payload("docs", {"lang": "en"}, ids=[1, 2])
    """
    return _set_payload(build.set_payload(collection, payload, ids, filter, "overwrite"), timeout)


def delete_payload_keys(
    collection: build.CollectionRef,
    keys: Sequence[str],
    ids: Any,
    filter: build.FilterArg | None,  # noqa: A002
    timeout: float | None,
) -> Plan[int]:
    """Remove `keys` (top-level or dotted paths) from the payloads of `ids` (or matching `filter`).

    Example:
        >>> c.delete_payload_keys("docs", ["draft", "meta.tmp"], filter="draft exists")
    """
    return _set_payload(build.set_payload(collection, None, ids, filter, "delete_keys", keys), timeout)


def _set_payload(req: pb.SetPayloadRequest, timeout: float | None) -> Plan[int]:
    return unary("SetPayload", req, timeout, lambda resp: int(resp.updated))


def create_payload_index(
    collection: build.CollectionRef,
    field: str,
    type: str,  # noqa: A002
    stemmer: str | None,
    stopwords: str | None,
    k1: float | None,
    b: float | None,
    timeout: float | None,
) -> Plan[CollectionInfo]:
    """Index a payload field ("keyword", "integer", "float", "bool", "datetime" or "text"), so
    filters on it read a column instead of every payload. Filters on unindexed fields work too,
    by scanning. A "datetime" index reads RFC 3339 strings as instants (ranges and order_by
    compare them in time). A "text" index makes the field searchable by keyword (BM25:
    `search(..., keyword=...)`) and serves the `text` filter condition; points whose field is
    not a string are not indexed (`CollectionInfo.text_indexes` counts them as skipped).

    Args:
        stemmer, stopwords: "text" only. The analyzer splits strings into Unicode word tokens,
            lowercased, then drops the stopwords of a language (e.g. "english") and stems with
            the Snowball stemmer of a language (e.g. "english", "french", "german"); None: no
            stopwords, no stemming. An unknown language raises InvalidArgument listing the
            supported ones.
        k1, b: "text" only: BM25's term-frequency saturation (>= 0; None: 1.2) and length
            normalisation (0 to 1; None: 0.75).

    Example:
        >>> c.create_payload_index("docs", "lang", "keyword")
        >>> c.create_payload_index("docs", "published", "datetime")
        >>> c.create_payload_index("docs", "body", "text", stemmer="english", stopwords="english")
    """
    req = build.create_payload_index(collection, field, type, stemmer, stopwords, k1, b)
    return unary("CreatePayloadIndex", req, timeout, build.collection_info)


def drop_payload_index(collection: build.CollectionRef, field: str, timeout: float | None) -> Plan[CollectionInfo]:
    """Drop a payload index (filters on the field keep working, by scanning).

    Example:
        >>> c.drop_payload_index("docs", "lang")
    """
    req = build.drop_payload_index(collection, field)
    return unary("DropPayloadIndex", req, timeout, build.collection_info)


def get(collection: build.CollectionRef, ids: Any, allow_missing: bool, timeout: float | None) -> Plan[np.ndarray]:
    """The stored vectors of `ids` (int, or str in a string-id collection), as an (n, dim)
    float32 array in the order asked; the rows of points stored without a vector are NaN.

    Raises NotFound when an id is not stored, unless `allow_missing`, in which case the rows
    of missing ids are NaN.

    Example:
        >>> c.get("img", [1, 2]).shape
        (2, 128)
    """
    req = build.get(collection, ids, allow_missing)
    return unary("Get", req, timeout, partial(build.get_result, allow_missing=allow_missing))


HIT_OPTIONS = """\
        filter: search only points whose payload matches: a dict such as
            {"must": [{"key": "lang", "match": "en"}, {"key": "year", "range": {"gte": 2020}}]},
            or text such as 'lang = "en" and year >= 2020'. Each query gets min(k, matches)
            hits; `result.plans` says how each shard ran it.
        with_payload: True for the hits' payloads, or a list of (dotted) fields to return;
            read them from `result.hits()` or `result.payloads`.
        with_vectors: also return each hit's stored vector: `result.vectors`, (nq, k, dim)
            aligned with `ids` (zeros for padding), and `Hit.vector`.
        offset: skip each query's best `offset` hits (paging): the result holds hits
            offset .. offset + k - 1 of a search for offset + k, exactly.
        score_threshold: keep hits at distance <= it (l2, l1; L2 distances are squared) or
            similarity >= it (inner_product, cosine); the others are padding.
"""


KEYWORD_OPTIONS = """\
        keyword: free text, or one text per query. Alone (no queries, texts, images or by_ids):
            a keyword search over the collection's "text" payload index (see
            create_payload_index): hits ordered by BM25 score, higher first, ties by id, with
            the whole collection's statistics (the same scores on any number of shards); a
            text whose words are all stopwords has no hits. With a dense query: a hybrid
            search (one keyword text for all queries, or one each). FailedPrecondition when
            the collection has no text index.
        keyword_field: the text index's field, when the collection has several.
        fusion: how a hybrid search fuses its dense and keyword legs: "rrf" (the default:
            each leg adds 1 / (rrf_k + rank)) or "linear" (the default when weights are
            given: w_dense * dense + w_keyword * keyword over each leg's scores min-max
            normalised to [0, 1], 1 the best, 0 where the leg lacks the hit). The result's
            distances are the fused scores (higher first, ties by id); each Hit has `dense`
            and `keyword`, its LegScore(score, rank) in each leg (None where absent).
        rrf_k: RRF's rank constant (>= 1).
        weights: linear fusion's (dense, keyword) weights, each >= 0 (default (1, 1)).
        candidates: hits each leg contributes to the fusion (default max(offset + k, 100)).
        (Not with group_by.) Examples:
            >>> c.search("docs", keyword="vector database sharding", k=5, filter='lang = "en"')
            >>> r = c.search("docs", texts=["how do shards agree?"], keyword="shard replica")
            >>> [(h.id, h.dense, h.keyword) for h in next(r.hits())]
"""


def _hit_options(fn: F) -> F:
    """Document the hit options that search and recommend share where the docstring says
    {hit options}, and search's keyword options where it says {keyword options}."""
    doc = (fn.__doc__ or "").replace("        {hit options}\n", HIT_OPTIONS)
    fn.__doc__ = doc.replace("        {keyword options}\n", KEYWORD_OPTIONS)
    return fn


@_hit_options
def search(
    collection: build.CollectionRef,
    queries: Any,
    k: int,
    texts: Sequence[str] | None,
    images: Sequence[ImageInput] | None,
    by_ids: Any,
    nprobe: int | None,
    filter: build.FilterArg | None,  # noqa: A002
    with_payload: build.WithPayload,
    with_vectors: bool,
    refine_factor: int,
    allow_partial: bool,
    model_fingerprint: str,
    offset: int,
    score_threshold: float | None,
    group_by: str | None,
    group_size: int,
    keyword: str | Sequence[str] | None,
    keyword_field: str | None,
    fusion: str | None,
    rrf_k: int,
    weights: Sequence[float] | None,
    candidates: int | None,
    timeout: float | None,
) -> Plan[SearchResult]:
    """The k nearest stored vectors of each query, over all shards; or the k best matches of a
    keyword search (BM25), or of a hybrid search fusing both.

    Returns a SearchResult that unpacks like faiss: `D, I = c.search(...)`, both (nq, k), best
    first, ties broken by the smaller id, padded with id -1 (None in a string-id collection,
    whose ids are str). L2 distances are squared. Iterate over `result.hits()` for per-query
    lists of Hit(id, distance, payload, vector).

    Args:
        queries: (nq, dim) vectors; or, for a model-bound collection, `texts` or `images` (a
            CLIP collection takes either, whatever it stores); or `by_ids`: stored points (int
            or str ids) whose vectors are the queries, one query each, each point left out of
            its own hits.
        nprobe: IVF lists to probe (None: the collection's default).
        {hit options}
        refine_factor: compressed IVF kinds: re-rank the best k * refine_factor candidates by
            exact distance (0: the collection's setting).
        allow_partial: answer from the shards that respond instead of raising Unavailable;
            see `result.failed_shards`.
        group_by: a payload field: up to k groups per query (`result.groups`, per query a list
            of Group(value, hits) best first), each with up to `group_size` hits. Points
            without the field are left out; a list field puts a point in each element's group.
        {keyword options}

    Example:
        >>> D, I = c.search("img", np.random.rand(3, 128), k=5, nprobe=10)
        >>> I.shape
        (3, 5)
        >>> D, I = c.search("docs", texts=["feline on a mat"], k=3)
        >>> similar = c.search("img", by_ids=[42], k=5, with_payload=True)
        >>> [(g.value, len(g.hits)) for g in c.search("img", q, k=3, group_by="album").groups[0]]
    """
    req = build.search(
        collection,
        queries,
        k,
        texts,
        images,
        nprobe,
        allow_partial,
        model_fingerprint,
        filter,
        with_payload,
        refine_factor,
        offset,
        score_threshold,
        by_ids=by_ids,
        with_vectors=with_vectors,
        group_by=group_by,
        group_size=group_size,
        keywords=build.Keywords(keyword, keyword_field, fusion, rrf_k, weights, candidates),
    )
    return unary("Search", req, timeout, build.search_result)


@_hit_options
def recommend(
    collection: build.CollectionRef,
    positive: Any,
    negative: Any,
    k: int,
    filter: build.FilterArg | None,  # noqa: A002
    with_payload: build.WithPayload,
    with_vectors: bool,
    offset: int,
    score_threshold: float | None,
    nprobe: int,
    timeout: float | None,
) -> Plan[SearchResult]:
    """The k points most like the `positive` stored points and least like the `negative` ones:
    one search for avg(positive) + (avg(positive) - avg(negative)) (avg(positive) without
    negatives), leaving the given points out of the hits. Returns a SearchResult of one query.

    Args:
        positive, negative: ids of stored points (int, or str in a string-id collection); at
            least one positive. NotFound when one is not stored.
        nprobe: IVF lists to probe (0: the collection's default).
        {hit options}

    Example:
        >>> r = c.recommend("img", positive=[3, 17], negative=[5], k=5, with_payload=True)
        >>> [h.id for h in next(r.hits())]
    """
    req = build.recommend(
        collection, positive, negative, k, filter, with_payload, with_vectors, offset, score_threshold, nprobe
    )
    return unary("Search", req, timeout, build.search_result)


def facet(
    collection: build.CollectionRef,
    field: str,
    filter: build.FilterArg | None,  # noqa: A002
    limit: int,
    timeout: float | None,
) -> Plan[list[FacetCount]]:
    """How many points hold each value of a payload field, over the points matching `filter`
    (all without one): exact counts over every shard, most common first (ties by value:
    numbers, then strings, then bools), at most `limit` (1 to 10,000) values. A list field
    counts the point once for each distinct element.

    Example:
        >>> c.facet("docs", "lang", filter="year >= 2020", limit=3)
        [FacetCount(value='en', count=812), FacetCount(value='de', count=97), FacetCount(value='fr', count=41)]
    """
    return unary("Facet", build.facet(collection, field, filter, limit), timeout, build.facet_counts)


def train(
    collection: build.CollectionRef, max_training_points: int, seed: int, timeout: float | None
) -> Plan[CollectionInfo]:
    """Train (or retrain) an IVF collection's shared quantizer now; returns when installed.

    Collections also train themselves once they hold `train_threshold` vectors.

    Example:
        >>> c.train("img").trained
        True
    """
    return unary("Train", build.train(collection, max_training_points, seed), timeout, build.collection_info)


def reshard(
    shards: int,
    collections: Sequence[str],
    abort: bool,
    status_only: bool,
    wait: bool,
    max_points_per_s: int,
    page_size: int,
    timeout: float | None,
) -> Plan[list[ReshardProgress]]:
    """Move collections to `shards` shard groups, online (admin; docs/operations.md, Resharding).

    Reads and writes keep being served; the collection cuts over to the new placement when every
    point is copied. Runs in the coordinator's background: with `wait` (the default) this returns
    when done, else at once with the progress so far. Running it again resumes an interrupted
    reshard; `abort=True` returns to the old placement with nothing lost; `status_only=True`
    reports progress and changes nothing.

    Example:
        >>> [p.phase for p in c.reshard(3, collections=["img"])]
        ['DONE']
    """
    req = build.reshard(shards, collections, abort, status_only, wait, max_points_per_s, page_size)
    deadline = timeout if timeout is not None or not wait else RESHARD_WAIT_S
    return unary("Reshard", req, deadline, build.reshard_result)


def sample(collection: build.CollectionRef, max_points: int, seed: int, timeout: float | None) -> Plan[Sample]:
    """A random sample of a collection's vectors, with the shard and IVF list of each.

    Example:
        >>> s = c.sample("img", max_points=2000)
        >>> s.vectors.shape, np.bincount(s.shards)
    """
    return unary("Sample", build.sample(collection, max_points, seed), timeout, build.sample_result)


def embed(
    client: Settings,
    texts: Sequence[str] | None,
    images: Sequence[ImageInput] | None,
    model: str,
    role: str,
    timeout: float | None,
) -> Plan[Embeddings]:
    """Embed texts or images with a server-side model (default: the server's, minilm).

    Args:
        role: "query" or "passage" for models with E5-style prefixes ("" = no prefix).

    Returns:
        Embeddings: `.vectors` (n, dim) float32 and `.model` (name, dim, fingerprint...).

    Example:
        >>> e = c.embed(texts=["hello world"])
        >>> e.vectors.shape, e.model.name
        ((1, 384), 'minilm')
    """
    items, is_text = build.embed_inputs(texts, images)
    pacer = build.EmbedPacer(_deadline(client, timeout))
    requests = (
        (len(chunk), build.embed(chunk if is_text else None, None if is_text else chunk, model, role))
        for chunk in pacer.chunks(items)
    )
    parts = yield from paced("Embed", requests, pacer, timeout, NO_RETRY)
    return build.join_embeddings([build.embeddings(r) for r in parts])


def list_models(load: Iterable[str], timeout: float | None) -> Plan[list[ModelInfo]]:
    """The server's embedding models (the default first); `load` names models to load first so
    their dim and fingerprint are filled in.

    Example:
        >>> [m.name for m in c.list_models()]
        ['minilm']
    """
    return unary("ListModels", build.list_models(load), timeout, build.models)


def create_backup(
    location: str, collections: Sequence[str], s3_endpoint: str, wait: bool, timeout: float | None
) -> Plan[BackupProgress]:
    """Back up collections (every one by default) to `location`, online (admin; docs/backup.md).

    `location` is an absolute directory path on the server machine (every shard process must see
    it) or `s3://bucket/prefix` (the endpoint: `s3_endpoint`, else the server's AWS_ENDPOINT_URL;
    credentials: the server's AWS environment). Writes pause for a moment at the cut: the backup
    holds exactly the writes acknowledged before it. With `wait` (the default) returns when the
    backup is complete, else at once (follow it with `backup_status(progress.job)`).

    Example:
        >>> p = c.create_backup("/backups", collections=["img"])
        >>> p.phase, p.backup_id
        ('DONE', '20250101T120000Z-3f2a1b')
    """
    req = build.create_backup(location, collections, s3_endpoint, wait)
    deadline = timeout if timeout is not None or not wait else RESHARD_WAIT_S
    return unary("CreateBackup", req, deadline, build.backup_progress)


def restore_backup(
    backup_id: str,
    location: str,
    collection: str,
    as_name: str,
    shards: int,
    replicas: int,
    s3_endpoint: str,
    wait: bool,
    timeout: float | None,
) -> Plan[BackupProgress]:
    """Restore a backup's collections (or `collection`, renamed `as_name`) onto this cluster, on
    `shards` shard groups (0: every group), admin (docs/backup.md).

    The restored collection shows no point until it is complete, then all of them. A damaged,
    incomplete or foreign backup is refused (FailedPrecondition naming the file) before anything
    changes. Running the same restore again resumes an interrupted one, and does nothing after a
    finished one. `replicas`: the replicas per group the cluster must have (0: any).

    Example:
        >>> c.restore_backup("20250101T120000Z-3f2a1b", "/backups", collection="img", as_name="img2", shards=5).phase
        'DONE'
    """
    req = build.restore_backup(backup_id, location, collection, as_name, shards, replicas, s3_endpoint, wait)
    deadline = timeout if timeout is not None or not wait else RESHARD_WAIT_S
    return unary("RestoreBackup", req, deadline, build.backup_progress)


def backup_status(job: str, cancel: bool, timeout: float | None) -> Plan[BackupProgress]:
    """The progress of a backup or restore job started on this coordinator; `cancel=True` stops it
    and removes what it wrote (admin).

    Example:
        >>> c.backup_status(p.job).phase
        'WRITING'
    """
    return unary("BackupStatus", pb.BackupStatusRequest(job=job, cancel=cancel), timeout, build.backup_progress)


def list_backups(location: str, s3_endpoint: str, timeout: float | None) -> Plan[list[BackupInfo]]:
    """The complete backups at `location`, newest first, without their file lists (admin).

    Example:
        >>> [b.id for b in c.list_backups("/backups")]
        ['20250101T120000Z-3f2a1b']
    """
    req = pb.ListBackupsRequest(location=build.backup_location(location, s3_endpoint))
    return unary("ListBackups", req, timeout, build.backup_infos)


def describe_backup(backup_id: str, location: str, s3_endpoint: str, timeout: float | None) -> Plan[BackupInfo]:
    """A backup's manifest: its cut, collections (config, count, training) and files (admin).

    Example:
        >>> [(x.name, x.info.count) for x in c.describe_backup(backup_id, "/backups").collections]
        [('img', 10000)]
    """
    req = pb.DescribeBackupRequest(id=backup_id, location=build.backup_location(location, s3_endpoint))
    return unary("DescribeBackup", req, timeout, build.backup_info)


def verify_backup(backup_id: str, location: str, s3_endpoint: str, timeout: float | None) -> Plan[BackupVerification]:
    """Read every file of a backup and check its size and SHA-256 against the manifest (admin).

    Example:
        >>> c.verify_backup(backup_id, "/backups").ok
        True
    """
    req = pb.VerifyBackupRequest(id=backup_id, location=build.backup_location(location, s3_endpoint))
    return unary("VerifyBackup", req, timeout, build.backup_verification)


def delete_backup(backup_id: str, location: str, s3_endpoint: str, timeout: float | None) -> Plan[int]:
    """Delete a backup (or what an interrupted one left); returns the files deleted (admin).

    Example:
        >>> c.delete_backup(backup_id, "/backups") > 0
        True
    """
    req = pb.DeleteBackupRequest(id=backup_id, location=build.backup_location(location, s3_endpoint))
    return unary("DeleteBackup", req, timeout, lambda r: int(r.files_deleted))
