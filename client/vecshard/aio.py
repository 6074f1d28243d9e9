"""The asyncio Python SDK: `async with AsyncClient("localhost:50051") as c: ...`.

Same methods, parameters and results as `Client`: each method runs the same plan from
`vecshard.methods` (requests, parsing, retries, pacing), with `await`; concurrent uploads run their
batches as tasks. tests/test_sdk_parity.py checks that the two classes stay alike. The methods on
points live in `_AsyncPointMethods`, which `AsyncClient` inherits (as `Client` does `_PointMethods`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from vecshard import build, methods
from vecshard.build import ImageInput
from vecshard.connection import DEFAULT_ADDRESS, DEFAULT_MAX_MESSAGE_BYTES, TLS, open_channel
from vecshard.errors import from_rpc_error
from vecshard.plan import Call, Plan, Sleep, Spawn, Wait, perform_locally, run_async
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
class _AsyncPointMethods:
    """`AsyncClient`'s methods on points (those of `Client`'s `_PointMethods`, awaited)."""

    timeout: float | None
    max_message_bytes: int

    async def _run(self, plan: Plan[T]) -> T:
        raise NotImplementedError  # AsyncClient runs plans with await

    async def add(
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
        return await self._run(
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

    async def upload(
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
        return await self._run(
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

    async def update_vectors(
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
        return await self._run(
            methods.update_vectors(self, collection, ids, vectors, texts, images, model_fingerprint, timeout)
        )

    async def remove(
        self,
        collection: build.CollectionRef,
        ids: Any = None,
        *,
        filter: build.FilterArg | None = None,
        timeout: float | None = None,
    ) -> int:
        return await self._run(methods.remove(collection, ids, filter, timeout))

    async def delete(
        self, collection: build.CollectionRef, filter: build.FilterArg, *, timeout: float | None = None
    ) -> int:
        return await self._run(methods.delete(collection, filter, timeout))

    async def count(
        self, collection: build.CollectionRef, filter: build.FilterArg | None = None, *, timeout: float | None = None
    ) -> int:
        return await self._run(methods.count(collection, filter, timeout))

    async def scroll(
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
    ) -> AsyncIterator[Point]:
        for page in methods.scroll(
            collection, filter, with_payload, with_vectors, start_id, page_size, order_by, order, timeout
        ):
            for point in await self._run(page):
                yield point

    async def retrieve(
        self,
        collection: build.CollectionRef,
        ids: Any,
        *,
        with_payload: build.WithPayload = True,
        with_vectors: bool = False,
        timeout: float | None = None,
    ) -> list[Point | None]:
        return await self._run(methods.retrieve(collection, ids, with_payload, with_vectors, timeout))

    async def set_payload(
        self,
        collection: build.CollectionRef,
        payload: dict[str, Any],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,
        timeout: float | None = None,
    ) -> int:
        return await self._run(methods.set_payload(collection, payload, ids, filter, timeout))

    async def overwrite_payload(
        self,
        collection: build.CollectionRef,
        payload: dict[str, Any],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,
        timeout: float | None = None,
    ) -> int:
        return await self._run(methods.overwrite_payload(collection, payload, ids, filter, timeout))

    async def delete_payload_keys(
        self,
        collection: build.CollectionRef,
        keys: Sequence[str],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,
        timeout: float | None = None,
    ) -> int:
        return await self._run(methods.delete_payload_keys(collection, keys, ids, filter, timeout))

    async def facet(
        self,
        collection: build.CollectionRef,
        field: str,
        filter: build.FilterArg | None = None,
        limit: int = 10,
        *,
        timeout: float | None = None,
    ) -> list[FacetCount]:
        return await self._run(methods.facet(collection, field, filter, limit, timeout))

    async def get(
        self, collection: build.CollectionRef, ids: Any, *, allow_missing: bool = False, timeout: float | None = None
    ) -> np.ndarray:
        return await self._run(methods.get(collection, ids, allow_missing, timeout))


@methods.documented
class AsyncClient(_AsyncPointMethods):
    """An asyncio connection to a vecshard coordinator (grpc.aio).

    Example:
        >>> async with AsyncClient("localhost:50051") as c:
        ...     D, I = await c.search("docs", np.random.rand(5, 64), k=5)

    Errors, options and results are those of `Client`; await each method (iterate `scroll` with
    `async for`).
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
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        """Open a grpc.aio channel; the arguments are those of `Client` (`channel`: a grpc.aio
        channel to use instead of opening one; its options are then yours)."""
        self.address = address
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._owns_channel = channel is None
        self._channel = channel or open_channel(
            address,
            aio=True,
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
        """The raw generated (asyncio) stub."""
        return self._stub

    async def close(self) -> None:
        """Close the channel (idempotent; a channel passed in stays open).

        Example:
            >>> await c.close(); await c.close()
        """
        if not self._closed:
            self._closed = True
            if self._owns_channel:
                await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, plan: Plan[T]) -> T:
        """Run a plan to its result, awaiting each call."""
        return await run_async(plan, self._perform)

    async def _perform(self, effect: Any) -> Any:
        if isinstance(effect, Call):
            timeout = self.timeout if effect.timeout is None else effect.timeout
            try:
                return await getattr(self._stub, effect.method)(effect.request, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                raise from_rpc_error(err) from None
        if isinstance(effect, Sleep):
            return await asyncio.sleep(effect.seconds)
        if isinstance(effect, Spawn):
            return asyncio.ensure_future(self._run(effect.plan))
        if isinstance(effect, Wait):
            return (await asyncio.wait(effect.handles, return_when=effect.return_when))[0]
        return perform_locally(effect)

    async def create_collection(
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
        return await self._run(
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

    async def drop_collection(self, name: build.CollectionRef, *, timeout: float | None = None) -> None:
        return await self._run(methods.drop_collection(name, timeout))

    async def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        return await self._run(methods.list_collections(timeout))

    async def describe(
        self, name: build.CollectionRef, *, include_centroids: bool = False, timeout: float | None = None
    ) -> CollectionInfo:
        return await self._run(methods.describe(name, include_centroids, timeout))

    async def create_payload_index(
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
        return await self._run(
            methods.create_payload_index(collection, field, type, stemmer, stopwords, k1, b, timeout)
        )

    async def drop_payload_index(
        self, collection: build.CollectionRef, field: str, *, timeout: float | None = None
    ) -> CollectionInfo:
        return await self._run(methods.drop_payload_index(collection, field, timeout))

    async def search(
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
        return await self._run(
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

    async def recommend(
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
        return await self._run(
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

    async def train(
        self,
        collection: build.CollectionRef,
        *,
        max_training_points: int = 0,
        seed: int = 0,
        timeout: float | None = None,
    ) -> CollectionInfo:
        return await self._run(methods.train(collection, max_training_points, seed, timeout))

    async def reshard(
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
        return await self._run(
            methods.reshard(shards, collections, abort, status_only, wait, max_points_per_s, page_size, timeout)
        )

    async def create_backup(
        self,
        location: str,
        *,
        collections: Sequence[str] = (),
        s3_endpoint: str = "",
        wait: bool = True,
        timeout: float | None = None,
    ) -> BackupProgress:
        return await self._run(methods.create_backup(location, collections, s3_endpoint, wait, timeout))

    async def restore_backup(
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
        return await self._run(
            methods.restore_backup(
                backup_id, location, collection, as_name, shards, replicas, s3_endpoint, wait, timeout
            )
        )

    async def backup_status(self, job: str, *, cancel: bool = False, timeout: float | None = None) -> BackupProgress:
        return await self._run(methods.backup_status(job, cancel, timeout))

    async def list_backups(
        self, location: str, *, s3_endpoint: str = "", timeout: float | None = None
    ) -> list[BackupInfo]:
        return await self._run(methods.list_backups(location, s3_endpoint, timeout))

    async def describe_backup(
        self, backup_id: str, location: str, *, s3_endpoint: str = "", timeout: float | None = None
    ) -> BackupInfo:
        return await self._run(methods.describe_backup(backup_id, location, s3_endpoint, timeout))

    async def verify_backup(
        self, backup_id: str, location: str, *, s3_endpoint: str = "", timeout: float | None = None
    ) -> BackupVerification:
        return await self._run(methods.verify_backup(backup_id, location, s3_endpoint, timeout))

    async def delete_backup(
        self, backup_id: str, location: str, *, s3_endpoint: str = "", timeout: float | None = None
    ) -> int:
        return await self._run(methods.delete_backup(backup_id, location, s3_endpoint, timeout))

    async def sample(
        self, collection: build.CollectionRef, max_points: int = 1000, *, seed: int = 0, timeout: float | None = None
    ) -> Sample:
        return await self._run(methods.sample(collection, max_points, seed, timeout))

    async def embed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        *,
        model: str = "",
        role: str = "",
        timeout: float | None = None,
    ) -> Embeddings:
        return await self._run(methods.embed(self, texts, images, model, role, timeout))

    async def list_models(self, *, load: Iterable[str] = (), timeout: float | None = None) -> list[ModelInfo]:
        return await self._run(methods.list_models(load, timeout))
