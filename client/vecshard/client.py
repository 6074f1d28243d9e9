"""The synchronous Python SDK: `with Client("localhost:50051") as c: ...`.

Each method runs its plan from `vecshard.methods` (shared with `AsyncClient`) with blocking calls;
concurrent uploads run their batches on threads. The methods on points live in `_PointMethods`, which
`Client` inherits (two classes of readable size, one API).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from typing import Any, TypeVar

import grpc
import numpy as np

from vecshard import build, methods
from vecshard.build import ImageInput
from vecshard.connection import DEFAULT_ADDRESS, DEFAULT_MAX_MESSAGE_BYTES, TLS, open_channel
from vecshard.errors import from_rpc_error
from vecshard.plan import Call, Plan, Spawn, Wait, perform_locally, run
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
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc

T = TypeVar("T")


@methods.documented
class _PointMethods:
    """`Client`'s methods on points: add, upload, update and remove them, read them by id or by
    filter, and change their payloads."""

    timeout: float | None
    max_message_bytes: int

    def _run(self, plan: Plan[T]) -> T:
        raise NotImplementedError  # Client runs plans with blocking calls

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
        on_conflict: str | None = None,
        batch_size: int | None = None,
        model_fingerprint: str = "",
        timeout: float | None = None,
    ) -> AddResult:
        return self._run(
            methods.add(
                self,
                collection,
                ids,
                vectors,
                texts,
                images,
                payloads,
                upsert,
                on_conflict,
                batch_size,
                model_fingerprint,
                timeout,
            )
        )

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
        upsert: bool | None = None,
        on_conflict: str | None = None,
        progress: bool | Callable[[int], object] = False,
        timeout: float | None = None,
    ) -> AddResult:
        return self._run(
            methods.upload(
                self,
                collection,
                ids,
                vectors,
                texts,
                payloads,
                batch_size,
                parallel,
                retries,
                upsert,
                on_conflict,
                progress,
                timeout,
            )
        )

    def update_vectors(
        self,
        collection: build.CollectionRef,
        ids: Any,
        vectors: Any = None,
        *,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        model_fingerprint: str | None = None,
        timeout: float | None = None,
    ) -> int:
        return self._run(
            methods.update_vectors(self, collection, ids, vectors, texts, images, model_fingerprint, timeout)
        )

    def remove(
        self,
        collection: build.CollectionRef,
        ids: Any = None,
        *,
        filter: build.FilterArg | None = None,
        timeout: float | None = None,
    ) -> int:
        return self._run(methods.remove(collection, ids, filter, timeout))

    def delete(self, collection: build.CollectionRef, filter: build.FilterArg, *, timeout: float | None = None) -> int:
        return self._run(methods.delete(collection, filter, timeout))

    def count(
        self, collection: build.CollectionRef, filter: build.FilterArg | None = None, *, timeout: float | None = None
    ) -> int:
        return self._run(methods.count(collection, filter, timeout))

    def scroll(
        self,
        collection: build.CollectionRef,
        filter: build.FilterArg | None = None,
        *,
        with_payload: build.WithPayload = True,
        with_vectors: bool = False,
        start_id: int = 0,
        page_size: int = 100,
        order_by: str | None = None,
        order: str = "asc",
        timeout: float | None = None,
    ) -> Iterator[Point]:
        for page in methods.scroll(
            collection, filter, with_payload, with_vectors, start_id, page_size, order_by, order, timeout
        ):
            yield from self._run(page)

    def retrieve(
        self,
        collection: build.CollectionRef,
        ids: Any,
        *,
        with_payload: build.WithPayload = True,
        with_vectors: bool = False,
        timeout: float | None = None,
    ) -> list[Point | None]:
        return self._run(methods.retrieve(collection, ids, with_payload, with_vectors, timeout))

    def set_payload(
        self,
        collection: build.CollectionRef,
        payload: dict[str, Any],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,
        timeout: float | None = None,
    ) -> int:
        return self._run(methods.set_payload(collection, payload, ids, filter, timeout))

    def overwrite_payload(
        self,
        collection: build.CollectionRef,
        payload: dict[str, Any],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,
        timeout: float | None = None,
    ) -> int:
        return self._run(methods.overwrite_payload(collection, payload, ids, filter, timeout))

    def delete_payload_keys(
        self,
        collection: build.CollectionRef,
        keys: Sequence[str],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,
        timeout: float | None = None,
    ) -> int:
        return self._run(methods.delete_payload_keys(collection, keys, ids, filter, timeout))

    def facet(
        self,
        collection: build.CollectionRef,
        field: str,
        filter: build.FilterArg | None = None,
        limit: int = 10,
        *,
        timeout: float | None = None,
    ) -> list[FacetCount]:
        return self._run(methods.facet(collection, field, filter, limit, timeout))

    def get(
        self, collection: build.CollectionRef, ids: Any, *, allow_missing: bool = False, timeout: float | None = None
    ) -> np.ndarray:
        return self._run(methods.get(collection, ids, allow_missing, timeout))


@methods.documented
class Client(_PointMethods):
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
    are retried inside gRPC with backoff (see `vecshard.connection.RETRY_POLICY`). `AsyncClient`
    has the same methods, with the same parameters and results.
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
        """Close the channel (idempotent; a channel passed in stays open).

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

    def _run(self, plan: Plan[T]) -> T:
        """Run a plan to its result with blocking calls."""
        return run(plan, self._perform)

    def _perform(self, effect: Any) -> Any:
        if isinstance(effect, Call):
            timeout = self.timeout if effect.timeout is None else effect.timeout
            try:
                return getattr(self._stub, effect.method)(effect.request, timeout=timeout)
            except grpc.RpcError as err:
                raise from_rpc_error(err) from None
        if isinstance(effect, Spawn):
            return self._spawn(effect.plan)
        if isinstance(effect, Wait):
            return wait(effect.handles, return_when=effect.return_when).done
        return perform_locally(effect)

    def _spawn(self, plan: Plan[Any]) -> Future[Any]:
        """Run `plan` on a thread of its own; the future holds its result or error."""
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()

        def work() -> None:
            try:
                future.set_result(self._run(plan))
            except BaseException as err:  # handed to whoever waits on the future
                future.set_exception(err)

        threading.Thread(target=work, name="vecshard-sdk", daemon=True).start()
        return future

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
        id_type: str = "int",
        timeout: float | None = None,
    ) -> CollectionInfo:
        return self._run(
            methods.create_collection(
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
                timeout,
            )
        )

    def drop_collection(self, name: build.CollectionRef, *, timeout: float | None = None) -> None:
        return self._run(methods.drop_collection(name, timeout))

    def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        return self._run(methods.list_collections(timeout))

    def describe(
        self, name: build.CollectionRef, *, include_centroids: bool = False, timeout: float | None = None
    ) -> CollectionInfo:
        return self._run(methods.describe(name, include_centroids, timeout))

    def create_payload_index(
        self,
        collection: build.CollectionRef,
        field: str,
        type: str,
        *,
        stemmer: str | None = None,
        stopwords: str | None = None,
        k1: float | None = None,
        b: float | None = None,
        timeout: float | None = None,
    ) -> CollectionInfo:
        return self._run(methods.create_payload_index(collection, field, type, stemmer, stopwords, k1, b, timeout))

    def drop_payload_index(
        self, collection: build.CollectionRef, field: str, *, timeout: float | None = None
    ) -> CollectionInfo:
        return self._run(methods.drop_payload_index(collection, field, timeout))

    def search(
        self,
        collection: build.CollectionRef,
        queries: Any = None,
        k: int = 10,
        *,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        by_ids: Any = None,
        nprobe: int | None = None,
        filter: build.FilterArg | None = None,
        with_payload: build.WithPayload = False,
        with_vectors: bool = False,
        refine_factor: int = 0,
        allow_partial: bool = False,
        model_fingerprint: str = "",
        offset: int = 0,
        score_threshold: float | None = None,
        group_by: str | None = None,
        group_size: int = 3,
        keyword: str | Sequence[str] | None = None,
        keyword_field: str | None = None,
        fusion: str | None = None,
        rrf_k: int = 60,
        weights: Sequence[float] | None = None,
        candidates: int | None = None,
        timeout: float | None = None,
    ) -> SearchResult:
        return self._run(
            methods.search(
                collection,
                queries,
                k,
                texts,
                images,
                by_ids,
                nprobe,
                filter,
                with_payload,
                with_vectors,
                refine_factor,
                allow_partial,
                model_fingerprint,
                offset,
                score_threshold,
                group_by,
                group_size,
                keyword,
                keyword_field,
                fusion,
                rrf_k,
                weights,
                candidates,
                timeout,
            )
        )

    def recommend(
        self,
        collection: build.CollectionRef,
        positive: Any,
        negative: Any = (),
        k: int = 10,
        *,
        filter: build.FilterArg | None = None,
        with_payload: build.WithPayload = False,
        with_vectors: bool = False,
        offset: int = 0,
        score_threshold: float | None = None,
        nprobe: int = 0,
        timeout: float | None = None,
    ) -> SearchResult:
        return self._run(
            methods.recommend(
                collection,
                positive,
                negative,
                k,
                filter,
                with_payload,
                with_vectors,
                offset,
                score_threshold,
                nprobe,
                timeout,
            )
        )

    def train(
        self,
        collection: build.CollectionRef,
        *,
        max_training_points: int = 0,
        seed: int = 0,
        timeout: float | None = None,
    ) -> CollectionInfo:
        return self._run(methods.train(collection, max_training_points, seed, timeout))

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
        return self._run(
            methods.reshard(shards, collections, abort, status_only, wait, max_points_per_s, page_size, timeout)
        )

    def create_backup(
        self,
        location: str,
        *,
        collections: Sequence[str] = (),
        s3_endpoint: str = "",
        wait: bool = True,
        timeout: float | None = None,
    ) -> BackupProgress:
        return self._run(methods.create_backup(location, collections, s3_endpoint, wait, timeout))

    def restore_backup(
        self,
        backup_id: str,
        location: str,
        *,
        collection: str = "",
        as_name: str = "",
        shards: int = 0,
        replicas: int = 0,
        s3_endpoint: str = "",
        wait: bool = True,
        timeout: float | None = None,
    ) -> BackupProgress:
        return self._run(
            methods.restore_backup(
                backup_id, location, collection, as_name, shards, replicas, s3_endpoint, wait, timeout
            )
        )

    def backup_status(self, job: str, *, cancel: bool = False, timeout: float | None = None) -> BackupProgress:
        return self._run(methods.backup_status(job, cancel, timeout))

    def list_backups(self, location: str, *, s3_endpoint: str = "", timeout: float | None = None) -> list[BackupInfo]:
        return self._run(methods.list_backups(location, s3_endpoint, timeout))

    def describe_backup(
        self, backup_id: str, location: str, *, s3_endpoint: str = "", timeout: float | None = None
    ) -> BackupInfo:
        return self._run(methods.describe_backup(backup_id, location, s3_endpoint, timeout))

    def verify_backup(
        self, backup_id: str, location: str, *, s3_endpoint: str = "", timeout: float | None = None
    ) -> BackupVerification:
        return self._run(methods.verify_backup(backup_id, location, s3_endpoint, timeout))

    def delete_backup(
        self, backup_id: str, location: str, *, s3_endpoint: str = "", timeout: float | None = None
    ) -> int:
        return self._run(methods.delete_backup(backup_id, location, s3_endpoint, timeout))

    def sample(
        self, collection: build.CollectionRef, max_points: int = 1000, *, seed: int = 0, timeout: float | None = None
    ) -> Sample:
        return self._run(methods.sample(collection, max_points, seed, timeout))

    def embed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        *,
        model: str = "",
        role: str = "",
        timeout: float | None = None,
    ) -> Embeddings:
        return self._run(methods.embed(self, texts, images, model, role, timeout))

    def list_models(self, *, load: Iterable[str] = (), timeout: float | None = None) -> list[ModelInfo]:
        return self._run(methods.list_models(load, timeout))
