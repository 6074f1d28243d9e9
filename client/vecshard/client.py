"""The synchronous Python SDK: `with Client("localhost:50051") as c: ...`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import grpc
import numpy as np

from vecshard import build
from vecshard.build import ImageInput
from vecshard.connection import DEFAULT_ADDRESS, DEFAULT_MAX_MESSAGE_BYTES, TLS, open_channel
from vecshard.errors import DeadlineExceeded, Unavailable, from_rpc_error
from vecshard.types import (
    AddResult,
    CollectionInfo,
    Embeddings,
    IndexType,
    Metric,
    ModelInfo,
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
            address, tls=tls, api_key=api_key, max_message_bytes=max_message_bytes, keepalive_s=keepalive_s,
            retries=retries,
        )  # fmt: skip
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
        index: str | IndexType = IndexType.FLAT,
        *,
        nlist: int = 0,
        nprobe: int = 0,
        train_threshold: int = 0,
        model: str | None = None,
        timeout: float | None = None,
    ) -> CollectionInfo:
        """Create a collection on every shard.

        Args:
            metric: "l2" (squared L2), "inner_product", "cosine" or "l1".
            index: "flat" (exact) or "ivf_flat" (needs nlist; exact until trained).
            nlist: IVF lists; nprobe: default lists probed per search (0: server default).
            train_threshold: IVF trains itself at this many vectors (0: 39 * nlist).
            model: bind the collection to a server embedding model (see `list_models`): add and
                search then take `texts=`/`images=`. With a model, pass dim=0 to use the model's
                dimension and metric=None for cosine.

        Example:
            >>> c.create_collection("img", dim=128, metric="l2", index="ivf_flat", nlist=100, nprobe=10)
            >>> c.create_collection("docs", dim=0, metric=None, model="minilm")
        """
        req = build.create_collection(name, dim, metric, index, nlist, nprobe, train_threshold, model)
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
            model_fingerprint: with vectors made by `embed`, its fingerprint: the server refuses
                vectors of another model (FailedPrecondition).

        Example:
            >>> c.add("img", ids=np.arange(1000), vectors=np.random.rand(1000, 128).astype("float32"))
            AddResult(added=1000, replaced=0, count=1000)
            >>> c.add("docs", ids=[1, 2], texts=["a cat sat", "stock prices fell"])
        """
        build.one_of("input", vectors=vectors, texts=texts, images=images)
        if texts is not None or images is not None:
            items, is_text = build.embed_inputs(texts, images)
            kind = "texts" if is_text else "images"
            id_arr = build.check_add_inputs(ids, len(items), kind)
            pacer = build.EmbedPacer(self.timeout if timeout is None else timeout, batch_size or build.EMBED_MAX_BATCH)
            adds = build.paced_adds(collection, id_arr, items, kind, pacer, upsert=upsert,
                                    model_fingerprint=model_fingerprint)  # fmt: skip
            return build.add_result(self._paced(self._stub.Add, adds, pacer, timeout, retries=0))
        requests = build.add_batches(
            collection, ids, vectors, upsert=upsert, batch_size=batch_size,
            model_fingerprint=model_fingerprint, max_message_bytes=self.max_message_bytes,
        )  # fmt: skip
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
            progress: True shows a progress bar (needs `tqdm`: pip install "vecshard[progress]");
                a callable is called with the number of inputs stored after each batch.
            texts: for a model-bound collection, texts instead of vectors: sent one request at a
                time, each sized by the server's measured embedding speed (about 8 s of work), so
                the default timeout holds on a CPU and a retry re-embeds one small batch only.

        Example:
            >>> c.upload("img", ids=range(1_000_000), vectors=np.load("vecs.npy", mmap_mode="r"), parallel=4)
        """
        bar = _progress_bar(progress, build.name_of(collection))
        if texts is not None:  # paced by the server's embedding speed, one request at a time
            pacer = build.EmbedPacer(self.timeout if timeout is None else timeout, batch_size)
            adds = build.paced_adds(collection, ids, texts, "texts", pacer, upsert=upsert)
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
            for rows, req in build.upload_batches(collection, ids, vectors, texts, batch_size=batch_size,
                                                  upsert=upsert):  # fmt: skip
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

    def remove(self, collection: build.CollectionRef, ids: Any, *, timeout: float | None = None) -> int:
        """Remove vectors by id; returns how many were stored. Removed ids never come back.

        Example:
            >>> c.remove("img", [3, 4, 5])
            3
        """
        return int(self._call(self._stub.Remove, build.remove(collection, ids), timeout).removed)

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
        req = build.search(collection, queries, k, texts, images, nprobe, allow_partial, model_fingerprint)
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
