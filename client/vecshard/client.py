"""The synchronous Python SDK: `with Client("localhost:50051") as c: ...`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import grpc
import numpy as np

from vecshard import build, wire
from vecshard.build import ImageInput
from vecshard.connection import DEFAULT_ADDRESS, DEFAULT_MAX_MESSAGE_BYTES, TLS, open_channel
from vecshard.errors import DeadlineExceeded, InvalidArgument, Unavailable, from_rpc_error
from vecshard.types import (
    AddResult,
    CollectionInfo,
    Embeddings,
    IndexType,
    Metric,
    ModelInfo,
    Point,
    ReshardProgress,
    Sample,
    SearchResult,
)
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc

T = TypeVar("T")
RETRYABLE = (Unavailable, DeadlineExceeded)


class Client:
    """A connection to a vecshard coordinator.

    Example:
        >>> import numpy as np
        >>> from vecshard import Client
        >>> with Client("localhost:50051") as c:
        ...     c.create_collection("docs", dim=64, metric="l2")
        ...     c.add("docs", ids=np.arange(1000), vectors=np.random.rand(1000, 64))
        ...     D, I = c.search("docs", np.random.rand(5, 64), k=5)

    Every method raises a subclass of `vecshard.errors.VecshardError` on failure, keeping the gRPC
    status code (`err.code`) and the server's message (`err.details`). Calls that meet UNAVAILABLE
    are retried inside gRPC with backoff (see `vecshard.connection.RETRY_POLICY`).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = 60.0,
        tls: TLS | None = None,
        api_key: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_s: float | None = 55.0,
        retries: bool = True,
        channel: grpc.Channel | None = None,
    ) -> None:
        """Open a channel to the coordinator at `address` ("host:port").

        Args:
            timeout: default deadline in seconds of each call (None: no deadline); every method
                also takes `timeout=`.
            tls: TLS(root_cert=..., client_cert=..., client_key=...) for an encrypted channel.
            api_key: sent as `x-api-key` metadata with every call (needs tls).
            max_message_bytes: the largest message sent or received; `add` splits batches below it.
                Keep it equal to the server's limit.
            keepalive_s: HTTP/2 keepalive ping interval (None: off).
            retries: retry UNAVAILABLE with backoff (never INVALID_ARGUMENT or DEADLINE_EXCEEDED).
            channel: use this channel instead of opening one (its options are then yours).
        """
        self.address = address
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._owns_channel = channel is None
        self._channel = channel or open_channel(
            address,
            tls=tls,
            api_key=api_key,
            max_message_bytes=max_message_bytes,
            keepalive_s=keepalive_s,
            retries=retries,
        )
        self._stub = pb_grpc.VectorSearchStub(self._channel)
        self._closed = False

    @property
    def stub(self) -> pb_grpc.VectorSearchStub:
        """The raw generated stub, for calls the SDK does not wrap."""
        return self._stub

    def close(self) -> None:
        """Close the channel (idempotent).

        Example:
            >>> c = Client(); c.close(); c.close()
        """
        if not self._closed:
            self._closed = True
            if self._owns_channel:
                self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str | Metric | None = Metric.L2,
        index: str | IndexType | None = None,
        *,
        nlist: int = 0,
        nprobe: int = 0,
        train_threshold: int = 0,
        model: str | None = None,
        store_text: bool = False,
        pq_m: int = 0,
        pq_nbits: int = 0,
        refine_factor: int = 0,
        coarse_quantizer: str = "",
        expected_size: int = 0,
        target_recall: float = 0.0,
        memory_budget: int = 0,
        timeout: float | None = None,
    ) -> CollectionInfo:
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

        Example:
            >>> c.create_collection("img", dim=128, metric="l2", index="ivf_flat", nlist=100, nprobe=10)
            >>> c.create_collection("docs", dim=0, metric=None, model="minilm")
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
        )
        return build.collection_info(self._call(self._stub.CreateCollection, req, timeout))

    def drop_collection(self, name: build.CollectionRef, *, timeout: float | None = None) -> None:
        """Delete a collection and all its vectors.

        Example:
            >>> c.drop_collection("img")
        """
        self._call(self._stub.DropCollection, pb.DropCollectionRequest(name=build.name_of(name)), timeout)

    def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        """Every collection with its counts.

        Example:
            >>> [info.name for info in c.list_collections()]
        """
        resp = self._call(self._stub.ListCollections, pb.ListCollectionsRequest(), timeout)
        return [build.collection_info(info) for info in resp.collections]

    def describe(
        self, name: build.CollectionRef, *, include_centroids: bool = False, timeout: float | None = None
    ) -> CollectionInfo:
        """A collection's config, per-shard counts, training state and optionally its centroids.

        Example:
            >>> info = c.describe("img", include_centroids=True)
            >>> info.count, info.trained, info.centroids.shape
        """
        req = pb.DescribeCollectionRequest(name=build.name_of(name), include_centroids=include_centroids)
        return build.collection_info(self._call(self._stub.DescribeCollection, req, timeout))

    def add(
        self,
        collection: build.CollectionRef,
        ids: Any,
        vectors: Any = None,
        *,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        upsert: bool = False,
        batch_size: int | None = None,
        model_fingerprint: str = "",
        timeout: float | None = None,
    ) -> AddResult:
        """Add vectors (or, to a model-bound collection, texts or images) under your own int64 ids.

        Ids must be >= 0 and unique. The batch is checked locally first, then sent in chunks that
        fit the message limit (or of `batch_size` rows). Texts and images go in chunks sized by the
        server's measured embedding speed (about 8 s of work each, never near the deadline), so any
        corpus fits the default timeout on a CPU. Each chunk is atomic; a failure in a later chunk
        leaves the earlier ones stored, so retry with `upsert=True`, which replaces instead of
        failing with AlreadyExists. For large or streamed inputs, see `upload`.

        Args:
            payloads: one JSON-like dict per id (None for none): str keys; None, bool, int (int64,
                kept exact), float, str, lists and nested dicts; at most 64 KiB each by default.
                An upsert replaces the payload with the vector.
            model_fingerprint: with vectors made by `embed`, its fingerprint: the server refuses
                vectors of another model (FailedPrecondition).

        Example:
            >>> c.add("img", ids=np.arange(1000), vectors=np.random.rand(1000, 128).astype("float32"))
            >>> c.add("img", ids=[7], vectors=v, payloads=[{"lang": "en", "year": 2021}])
            AddResult(added=1000, replaced=0, count=1000)
            >>> c.add("docs", ids=[1, 2], texts=["a cat sat", "stock prices fell"])
        """
        build.one_of("input", vectors=vectors, texts=texts, images=images)
        if texts is not None or images is not None:
            items, is_text = build.embed_inputs(texts, images)
            kind = "texts" if is_text else "images"
            id_arr = build.check_add_inputs(ids, len(items), kind)
            pacer = build.EmbedPacer(self.timeout if timeout is None else timeout, batch_size or build.EMBED_MAX_BATCH)
            adds = build.paced_adds(
                collection,
                id_arr,
                items,
                kind,
                pacer,
                upsert=upsert,
                model_fingerprint=model_fingerprint,
                payloads=build.payloads_of(payloads, len(items)),
            )
            return build.add_result(self._paced(self._stub.Add, adds, pacer, timeout, retries=0))
        requests = build.add_batches(
            collection,
            ids,
            vectors,
            upsert=upsert,
            batch_size=batch_size,
            model_fingerprint=model_fingerprint,
            max_message_bytes=self.max_message_bytes,
            payloads=payloads,
        )
        return build.add_result(self._call(self._stub.Add, req, timeout) for req in requests)

    def _paced(
        self,
        method: Callable[..., T],
        requests: Iterable[tuple[int, Any]],
        pacer: build.EmbedPacer,
        timeout: float | None,
        retries: int,
        progress: Callable[..., None] | None = None,
    ) -> Iterator[T]:
        """Send embedding requests one at a time, timing each to size the next (see `EmbedPacer`);
        a request that meets Unavailable/DeadlineExceeded is retried up to `retries` times."""
        for n, req in requests:
            for attempt in range(retries + 1):
                started = time.perf_counter()
                try:
                    resp = self._call(method, req, timeout)
                    break
                except RETRYABLE:
                    if attempt == retries:
                        raise
                    time.sleep(min(2.0, 0.2 * 2**attempt))
            pacer.record(n, time.perf_counter() - started)
            if progress is not None:
                progress(n)
            yield resp

    def upload(
        self,
        collection: build.CollectionRef,
        ids: Any,
        vectors: Any = None,
        *,
        texts: Iterable[str] | None = None,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        batch_size: int = 1000,
        parallel: int = 2,
        retries: int = 3,
        upsert: bool = True,
        progress: bool | Callable[[int], object] = False,
        timeout: float | None = None,
    ) -> AddResult:
        """Bulk-load vectors or texts, `parallel` batches in flight, retrying failed batches.

        Inputs may be numpy arrays, memory-mapped `.npy` files (`np.load(path, mmap_mode="r")`,
        read batch by batch) or iterators (of ids, and of vector rows or texts). A batch that fails
        with Unavailable or DeadlineExceeded is retried up to `retries` times with backoff; uploads
        upsert by default, so a retried batch never fails on its own earlier attempt.

        Args:
            payloads: one dict per id (None for none), as in `add`; ids must then be a sequence.
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
        packed = build.payloads_of(payloads, len(ids)) if payloads is not None else None
        bar = _progress_bar(progress, build.name_of(collection))
        if texts is not None:  # paced by the server's embedding speed, one request at a time
            pacer = build.EmbedPacer(self.timeout if timeout is None else timeout, batch_size)
            adds = build.paced_adds(collection, ids, texts, "texts", pacer, upsert=upsert, payloads=packed)
            try:
                return build.add_result(self._paced(self._stub.Add, adds, pacer, timeout, retries, bar))
            finally:
                bar(0, close=True)
        results: list[pb.AddResponse] = []

        def send(req: pb.AddRequest) -> pb.AddResponse:
            for attempt in range(retries + 1):
                try:
                    resp: pb.AddResponse = self._call(self._stub.Add, req, timeout)
                    return resp
                except RETRYABLE:
                    if attempt == retries:
                        raise
                    time.sleep(min(2.0, 0.2 * 2**attempt))
            raise AssertionError("unreachable")

        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            in_flight: dict[Future[pb.AddResponse], int] = {}
            sent = 0
            for rows, req in build.upload_batches(
                collection, ids, vectors, texts, batch_size=batch_size, upsert=upsert
            ):
                if packed is not None:
                    req.payloads.extend(packed[sent : sent + rows])
                sent += rows
                if len(in_flight) >= 2 * max(1, parallel):
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for f in done:
                        results.append(f.result())
                        bar(in_flight.pop(f))
                in_flight[pool.submit(send, req)] = rows
            for f in list(in_flight):
                results.append(f.result())
                bar(in_flight.pop(f))
        bar(0, close=True)
        return build.add_result(results)

    def remove(
        self,
        collection: build.CollectionRef,
        ids: Any = None,
        *,
        filter: build.FilterArg | None = None,  # noqa: A002 (the name users know from every peer)
        timeout: float | None = None,
    ) -> int:
        """Remove points by id, or every point matching `filter`; returns how many were stored.
        Removed ids never come back.

        Example:
            >>> c.remove("img", [3, 4, 5])
            3
            >>> c.remove("img", filter={"must": [{"key": "year", "range": {"lt": 2000}}]})
        """
        return int(self._call(self._stub.Remove, build.remove(collection, ids, filter), timeout).removed)

    def delete(
        self,
        collection: build.CollectionRef,
        filter: build.FilterArg,  # noqa: A002
        *,
        timeout: float | None = None,
    ) -> int:
        """Remove every point matching `filter` (a dict, or text such as 'lang = "en"'); returns
        how many were removed.

        Example:
            >>> c.delete("docs", 'tenant = 42 and year < 2015')
        """
        return self.remove(collection, filter=filter, timeout=timeout)

    def count(
        self,
        collection: build.CollectionRef,
        filter: build.FilterArg | None = None,  # noqa: A002
        *,
        timeout: float | None = None,
    ) -> int:
        """How many points match `filter` (all points without one), over every shard.

        Example:
            >>> c.count("docs", {"must": [{"key": "lang", "match": "en"}]})
            1250
        """
        req = pb.CountRequest(collection=build.name_of(collection), filter=build.filter_of(filter))
        return int(self._call(self._stub.Count, req, timeout).count)

    def scroll(
        self,
        collection: build.CollectionRef,
        filter: build.FilterArg | None = None,  # noqa: A002
        *,
        with_payload: build.WithPayload = True,
        with_vectors: bool = False,
        start_id: int = 0,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> Iterator[Point]:
        """Every point matching `filter` (all without one), in ascending id order, fetched a page at
        a time. A point stored throughout the iteration is yielded exactly once, whatever is
        written meanwhile.

        Example:
            >>> for p in c.scroll("docs", 'lang = "en"', with_payload=["title"]):
            ...     print(p.id, p.payload)
        """
        req = pb.ScrollRequest(
            collection=build.name_of(collection),
            filter=build.filter_of(filter),
            start_id=start_id,
            limit=page_size,
            with_payload=build.selector(with_payload),
            with_vectors=with_vectors,
        )
        while True:
            resp = self._call(self._stub.Scroll, req, timeout)
            yield from build.scroll_page(resp, with_vectors)
            if resp.done:
                return
            req.start_id = resp.next_start_id

    def retrieve(
        self,
        collection: build.CollectionRef,
        ids: Any,
        *,
        with_payload: build.WithPayload = True,
        with_vectors: bool = False,
        timeout: float | None = None,
    ) -> list[Point | None]:
        """The points of `ids` in the order asked (None for ids not stored), with their payloads
        and, if asked, vectors.

        Example:
            >>> [p.payload for p in c.retrieve("docs", [1, 2]) if p]
        """
        resp = self._call(self._stub.Get, build.get(collection, ids, True, with_payload), timeout)
        found = np.frombuffer(resp.found, dtype=np.uint8).astype(bool)
        payloads = build.get_payloads(resp) if resp.payloads else [None] * found.size
        vectors = build.get_result(resp, True) if with_vectors else None
        ids_list = wire.as_ids(ids).tolist()
        return [
            Point(i, payloads[j], vectors[j] if vectors is not None else None) if found[j] else None
            for j, i in enumerate(ids_list)
        ]

    def set_payload(
        self,
        collection: build.CollectionRef,
        payload: dict[str, Any],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,  # noqa: A002
        timeout: float | None = None,
    ) -> int:
        """Set the given top-level keys of the payloads of `ids` (or of the points matching
        `filter`), keeping their other keys; vectors stay as they are. Returns how many points
        were written.

        Example:
            >>> c.set_payload("docs", {"reviewed": True}, filter='lang = "en"')
        """
        req = build.set_payload(collection, payload, ids, filter, "merge")
        return int(self._call(self._stub.SetPayload, req, timeout).updated)

    def overwrite_payload(
        self,
        collection: build.CollectionRef,
        payload: dict[str, Any],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,  # noqa: A002
        timeout: float | None = None,
    ) -> int:
        """Replace the whole payload of `ids` (or of the points matching `filter`) with `payload`.

        Example:
            >>> c.overwrite_payload("docs", {"lang": "en"}, ids=[1, 2])
        """
        req = build.set_payload(collection, payload, ids, filter, "overwrite")
        return int(self._call(self._stub.SetPayload, req, timeout).updated)

    def delete_payload_keys(
        self,
        collection: build.CollectionRef,
        keys: Sequence[str],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,  # noqa: A002
        timeout: float | None = None,
    ) -> int:
        """Remove `keys` (top-level or dotted paths) from the payloads of `ids` (or matching `filter`).

        Example:
            >>> c.delete_payload_keys("docs", ["draft", "meta.tmp"], filter="draft exists")
        """
        req = build.set_payload(collection, None, ids, filter, "delete_keys", keys)
        return int(self._call(self._stub.SetPayload, req, timeout).updated)

    def create_payload_index(
        self,
        collection: build.CollectionRef,
        field: str,
        type: str,
        *,
        timeout: float | None = None,  # noqa: A002
    ) -> CollectionInfo:
        """Index a payload field ("keyword", "integer", "float" or "bool"), so filters on it read a
        column instead of every payload. Filters on unindexed fields work too, by scanning.

        Example:
            >>> c.create_payload_index("docs", "lang", "keyword")
        """
        req = pb.CreatePayloadIndexRequest(
            collection=build.name_of(collection),
            field=field,
            type=build.index_type(type),  # type: ignore[arg-type]
        )
        return build.collection_info(self._call(self._stub.CreatePayloadIndex, req, timeout))

    def drop_payload_index(
        self, collection: build.CollectionRef, field: str, *, timeout: float | None = None
    ) -> CollectionInfo:
        """Drop a payload index (filters on the field keep working, by scanning).

        Example:
            >>> c.drop_payload_index("docs", "lang")
        """
        req = pb.DropPayloadIndexRequest(collection=build.name_of(collection), field=field)
        return build.collection_info(self._call(self._stub.DropPayloadIndex, req, timeout))

    def get(
        self, collection: build.CollectionRef, ids: Any, *, allow_missing: bool = False, timeout: float | None = None
    ) -> np.ndarray:
        """The stored vectors of `ids`, as an (n, dim) float32 array in the order asked.

        Raises NotFound when an id is not stored, unless `allow_missing`, in which case the rows
        of missing ids are NaN.

        Example:
            >>> c.get("img", [1, 2]).shape
            (2, 128)
        """
        resp = self._call(self._stub.Get, build.get(collection, ids, allow_missing), timeout)
        return build.get_result(resp, allow_missing)

    def search(
        self,
        collection: build.CollectionRef,
        queries: Any = None,
        k: int = 10,
        *,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        nprobe: int | None = None,
        filter: build.FilterArg | None = None,  # noqa: A002
        with_payload: build.WithPayload = False,
        refine_factor: int = 0,
        allow_partial: bool = False,
        model_fingerprint: str = "",
        timeout: float | None = None,
    ) -> SearchResult:
        """The k nearest stored vectors of each query, over all shards.

        Returns a SearchResult that unpacks like faiss: `D, I = c.search(...)`, both (nq, k), best
        first, ties broken by the smaller id, padded with id -1. L2 distances are squared. Iterate
        over `result.hits()` for per-query (id, distance) lists.

        Args:
            nprobe: IVF lists to probe (None: the collection's default).
            filter: search only points whose payload matches: a dict such as
                {"must": [{"key": "lang", "match": "en"}, {"key": "year", "range": {"gte": 2020}}]},
                or text such as 'lang = "en" and year >= 2020'. Each query gets min(k, matches)
                hits; `result.plans` says how each shard ran it.
            with_payload: True for the hits' payloads, or a list of (dotted) fields to return;
                read them from `result.hits()` or `result.payloads`.
            refine_factor: compressed IVF kinds: re-rank the best k * refine_factor candidates by
                exact distance (0: the collection's setting).
            allow_partial: answer from the shards that respond instead of raising Unavailable;
                see `result.failed_shards`.
            texts, images: instead of query vectors, for a model-bound collection (a CLIP
                collection takes either, whatever it stores).

        Example:
            >>> D, I = c.search("img", np.random.rand(3, 128), k=5, nprobe=10)
            >>> I.shape
            (3, 5)
            >>> D, I = c.search("docs", texts=["feline on a mat"], k=3)
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
        )
        return build.search_result(self._call(self._stub.Search, req, timeout))

    def train(
        self,
        collection: build.CollectionRef,
        *,
        max_training_points: int = 0,
        seed: int = 0,
        timeout: float | None = None,
    ) -> CollectionInfo:
        """Train (or retrain) an IVF collection's shared quantizer now; returns when installed.

        Collections also train themselves once they hold `train_threshold` vectors.

        Example:
            >>> c.train("img").trained
            True
        """
        req = build.train(collection, max_training_points, seed)
        return build.collection_info(self._call(self._stub.Train, req, timeout))

    def reshard(
        self,
        shards: int = 0,
        *,
        collections: Sequence[str] = (),
        abort: bool = False,
        status_only: bool = False,
        wait: bool = True,
        max_points_per_s: int = 0,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> list[ReshardProgress]:
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
        req = pb.ReshardRequest(
            collections=list(collections),
            shards=shards,
            abort=abort,
            status_only=status_only,
            wait=wait,
            max_points_per_s=max_points_per_s,
            page_size=page_size,
        )
        resp = self._call(self._stub.Reshard, req, timeout if timeout is not None or not wait else 24 * 3600.0)
        return [ReshardProgress.from_proto(p) for p in resp.collections]

    def sample(
        self, collection: build.CollectionRef, max_points: int = 1000, *, seed: int = 0, timeout: float | None = None
    ) -> Sample:
        """A random sample of a collection's vectors, with the shard and IVF list of each.

        Example:
            >>> s = c.sample("img", max_points=2000)
            >>> s.vectors.shape, np.bincount(s.shards)
        """
        req = build.sample(collection, max_points, seed)
        return build.sample_result(self._call(self._stub.Sample, req, timeout))

    def embed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        *,
        model: str = "",
        role: str = "",
        timeout: float | None = None,
    ) -> Embeddings:
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
        pacer = build.EmbedPacer(self.timeout if timeout is None else timeout)
        requests = (
            (len(chunk), build.embed(chunk if is_text else None, None if is_text else chunk, model, role))
            for chunk in pacer.chunks(items)
        )
        parts = self._paced(self._stub.Embed, requests, pacer, timeout, retries=0)
        return build.join_embeddings([build.embeddings(r) for r in parts])

    def list_models(self, *, load: Iterable[str] = (), timeout: float | None = None) -> list[ModelInfo]:
        """The server's embedding models (the default first); `load` names models to load first so
        their dim and fingerprint are filled in.

        Example:
            >>> [m.name for m in c.list_models()]
            ['minilm']
        """
        req = types_pb2.ListModelsRequest(load=list(load))
        return build.models(self._call(self._stub.ListModels, req, timeout))


def _progress_bar(enabled: bool | Callable[[int], object], label: str) -> Callable[..., None]:
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
