"""The asyncio Python SDK: `async with AsyncClient("localhost:50051") as c: ...`.

Same methods, arguments and results as `Client`; requests are built and results parsed by the same
code (`vecshard.build`), so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
import numpy as np

from vecshard import build, wire
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
    Point,
    ReshardProgress,
    Sample,
    SearchResult,
)
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc


class AsyncClient:
    """An asyncio connection to a vecshard coordinator (grpc.aio).

    Example:
        >>> async with AsyncClient("localhost:50051") as c:
        ...     D, I = await c.search("docs", np.random.rand(5, 64), k=5)

    Errors, options and results are those of `Client`.
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
    ) -> None:
        """Open a grpc.aio channel; the arguments are those of `Client`."""
        self.address = address
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._channel = open_channel(
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
        """Close the channel (idempotent).

        Example:
            >>> await c.close(); await c.close()
        """
        if not self._closed:
            self._closed = True
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None

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
        timeout: float | None = None,
    ) -> CollectionInfo:
        """See `Client.create_collection`.

        Example:
            >>> await c.create_collection("img", dim=128, index="ivf_flat", nlist=100)
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
        return build.collection_info(await self._call(self._stub.CreateCollection, req, timeout))

    async def drop_collection(self, name: build.CollectionRef, *, timeout: float | None = None) -> None:
        """See `Client.drop_collection`.

        Example:
            >>> await c.drop_collection("img")
        """
        await self._call(self._stub.DropCollection, pb.DropCollectionRequest(name=build.name_of(name)), timeout)

    async def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        """See `Client.list_collections`.

        Example:
            >>> [i.name for i in await c.list_collections()]
        """
        resp = await self._call(self._stub.ListCollections, pb.ListCollectionsRequest(), timeout)
        return [build.collection_info(info) for info in resp.collections]

    async def describe(
        self, name: build.CollectionRef, *, include_centroids: bool = False, timeout: float | None = None
    ) -> CollectionInfo:
        """See `Client.describe`.

        Example:
            >>> (await c.describe("img")).count
        """
        req = pb.DescribeCollectionRequest(name=build.name_of(name), include_centroids=include_centroids)
        return build.collection_info(await self._call(self._stub.DescribeCollection, req, timeout))

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
        batch_size: int | None = None,
        model_fingerprint: str = "",
        timeout: float | None = None,
    ) -> AddResult:
        """See `Client.add`.

        Example:
            >>> await c.add("img", ids=np.arange(10), vectors=np.random.rand(10, 128))
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
            return build.add_result(await self._paced(self._stub.Add, adds, pacer, timeout, retries=0))
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
        return build.add_result([await self._call(self._stub.Add, req, timeout) for req in requests])

    async def _paced(
        self,
        method: Any,
        requests: Iterable[tuple[int, Any]],
        pacer: build.EmbedPacer,
        timeout: float | None,
        retries: int,
    ) -> list[Any]:
        """See `Client._paced`: one embedding request at a time, each timed to size the next."""
        out = []
        for n, req in requests:
            for attempt in range(retries + 1):
                started = time.perf_counter()
                try:
                    resp = await self._call(method, req, timeout)
                    break
                except (Unavailable, DeadlineExceeded):
                    if attempt == retries:
                        raise
                    await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
            pacer.record(n, time.perf_counter() - started)
            out.append(resp)
        return out

    async def upload(
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
        timeout: float | None = None,
    ) -> AddResult:
        """See `Client.upload` (without the progress bar).

        Example:
            >>> await c.upload("img", ids=range(100_000), vectors=np.load("v.npy", mmap_mode="r"), parallel=4)
        """
        if texts is not None:  # paced by the server's embedding speed, one request at a time
            pacer = build.EmbedPacer(self.timeout if timeout is None else timeout, batch_size)
            adds = build.paced_adds(collection, ids, texts, "texts", pacer, upsert=upsert)
            return build.add_result(await self._paced(self._stub.Add, adds, pacer, timeout, retries))
        gate = asyncio.Semaphore(max(1, parallel))

        async def send(req: pb.AddRequest) -> pb.AddResponse:
            async with gate:
                for attempt in range(retries + 1):
                    try:
                        resp: pb.AddResponse = await self._call(self._stub.Add, req, timeout)
                        return resp
                    except (Unavailable, DeadlineExceeded):
                        if attempt == retries:
                            raise
                        await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
            raise AssertionError("unreachable")

        tasks = []
        for _, req in build.upload_batches(collection, ids, vectors, texts, batch_size=batch_size, upsert=upsert):
            tasks.append(asyncio.ensure_future(send(req)))
            while len([t for t in tasks if not t.done()]) >= 2 * max(1, parallel):
                await asyncio.wait([t for t in tasks if not t.done()], return_when=asyncio.FIRST_COMPLETED)
        return build.add_result(await asyncio.gather(*tasks))

    async def remove(
        self,
        collection: build.CollectionRef,
        ids: Any = None,
        *,
        filter: build.FilterArg | None = None,  # noqa: A002
        timeout: float | None = None,
    ) -> int:
        """See `Client.remove`.

        Example:
            >>> await c.remove("img", [3, 4])
        """
        return int((await self._call(self._stub.Remove, build.remove(collection, ids, filter), timeout)).removed)

    async def delete(
        self,
        collection: build.CollectionRef,
        filter: build.FilterArg,
        *,
        timeout: float | None = None,  # noqa: A002
    ) -> int:
        """See `Client.delete`.

        Example:
            >>> await c.delete("docs", 'year < 2015')
        """
        return await self.remove(collection, filter=filter, timeout=timeout)

    async def count(
        self,
        collection: build.CollectionRef,
        filter: build.FilterArg | None = None,  # noqa: A002
        *,
        timeout: float | None = None,
    ) -> int:
        """See `Client.count`.

        Example:
            >>> await c.count("docs", 'lang = "en"')
        """
        req = pb.CountRequest(collection=build.name_of(collection), filter=build.filter_of(filter))
        return int((await self._call(self._stub.Count, req, timeout)).count)

    async def scroll(
        self,
        collection: build.CollectionRef,
        filter: build.FilterArg | None = None,  # noqa: A002
        *,
        with_payload: build.WithPayload = True,
        with_vectors: bool = False,
        start_id: int = 0,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> AsyncIterator[Point]:
        """See `Client.scroll`.

        Example:
            >>> async for p in c.scroll("docs", 'lang = "en"'):
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
            resp = await self._call(self._stub.Scroll, req, timeout)
            for point in build.scroll_page(resp, with_vectors):
                yield point
            if resp.done:
                return
            req.start_id = resp.next_start_id

    async def retrieve(
        self,
        collection: build.CollectionRef,
        ids: Any,
        *,
        with_payload: build.WithPayload = True,
        with_vectors: bool = False,
        timeout: float | None = None,
    ) -> list[Point | None]:
        """See `Client.retrieve`.

        Example:
            >>> [p.payload for p in await c.retrieve("docs", [1, 2]) if p]
        """
        resp = await self._call(self._stub.Get, build.get(collection, ids, True, with_payload), timeout)
        found = np.frombuffer(resp.found, dtype=np.uint8).astype(bool)
        payloads = build.get_payloads(resp) if resp.payloads else [None] * found.size
        vectors = build.get_result(resp, True) if with_vectors else None
        return [
            Point(i, payloads[j], vectors[j] if vectors is not None else None) if found[j] else None
            for j, i in enumerate(wire.as_ids(ids).tolist())
        ]

    async def set_payload(
        self,
        collection: build.CollectionRef,
        payload: dict[str, Any],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,  # noqa: A002
        timeout: float | None = None,
    ) -> int:
        """See `Client.set_payload`.

        Example:
            >>> await c.set_payload("docs", {"reviewed": True}, ids=[1])
        """
        req = build.set_payload(collection, payload, ids, filter, "merge")
        return int((await self._call(self._stub.SetPayload, req, timeout)).updated)

    async def overwrite_payload(
        self,
        collection: build.CollectionRef,
        payload: dict[str, Any],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,  # noqa: A002
        timeout: float | None = None,
    ) -> int:
        """See `Client.overwrite_payload`.

        Example:
            >>> await c.overwrite_payload("docs", {"lang": "en"}, ids=[1])
        """
        req = build.set_payload(collection, payload, ids, filter, "overwrite")
        return int((await self._call(self._stub.SetPayload, req, timeout)).updated)

    async def delete_payload_keys(
        self,
        collection: build.CollectionRef,
        keys: Sequence[str],
        *,
        ids: Any = None,
        filter: build.FilterArg | None = None,  # noqa: A002
        timeout: float | None = None,
    ) -> int:
        """See `Client.delete_payload_keys`.

        Example:
            >>> await c.delete_payload_keys("docs", ["draft"], ids=[1])
        """
        req = build.set_payload(collection, None, ids, filter, "delete_keys", keys)
        return int((await self._call(self._stub.SetPayload, req, timeout)).updated)

    async def create_payload_index(
        self,
        collection: build.CollectionRef,
        field: str,
        type: str,
        *,
        timeout: float | None = None,  # noqa: A002
    ) -> CollectionInfo:
        """See `Client.create_payload_index`.

        Example:
            >>> await c.create_payload_index("docs", "lang", "keyword")
        """
        req = pb.CreatePayloadIndexRequest(
            collection=build.name_of(collection),
            field=field,
            type=build.index_type(type),  # type: ignore[arg-type]
        )
        return build.collection_info(await self._call(self._stub.CreatePayloadIndex, req, timeout))

    async def drop_payload_index(
        self, collection: build.CollectionRef, field: str, *, timeout: float | None = None
    ) -> CollectionInfo:
        """See `Client.drop_payload_index`.

        Example:
            >>> await c.drop_payload_index("docs", "lang")
        """
        req = pb.DropPayloadIndexRequest(collection=build.name_of(collection), field=field)
        return build.collection_info(await self._call(self._stub.DropPayloadIndex, req, timeout))

    async def get(
        self, collection: build.CollectionRef, ids: Any, *, allow_missing: bool = False, timeout: float | None = None
    ) -> np.ndarray:
        """See `Client.get`.

        Example:
            >>> (await c.get("img", [1, 2])).shape
        """
        resp = await self._call(self._stub.Get, build.get(collection, ids, allow_missing), timeout)
        return build.get_result(resp, allow_missing)

    async def search(
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
        """See `Client.search`.

        Example:
            >>> D, I = await c.search("img", np.random.rand(3, 128), k=5)
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
        return build.search_result(await self._call(self._stub.Search, req, timeout))

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
        """Move collections to `shards` shard groups, online (admin; docs/operations.md, Resharding).

        Reads and writes keep being served; the collection cuts over to the new placement when every
        point is copied. Runs in the coordinator's background: with `wait` (the default) this returns
        when done, else at once with the progress so far. Running it again resumes an interrupted
        reshard; `abort=True` returns to the old placement with nothing lost; `status_only=True`
        reports progress and changes nothing.

        Example:
            >>> [p.phase for p in await c.reshard(3, collections=["img"])]
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
        resp = await self._call(self._stub.Reshard, req, timeout if timeout is not None or not wait else 24 * 3600.0)
        return [ReshardProgress.from_proto(p) for p in resp.collections]

    async def train(
        self,
        collection: build.CollectionRef,
        *,
        max_training_points: int = 0,
        seed: int = 0,
        timeout: float | None = None,
    ) -> CollectionInfo:
        """See `Client.train`.

        Example:
            >>> (await c.train("img")).trained
        """
        req = build.train(collection, max_training_points, seed)
        return build.collection_info(await self._call(self._stub.Train, req, timeout))

    async def sample(
        self, collection: build.CollectionRef, max_points: int = 1000, *, seed: int = 0, timeout: float | None = None
    ) -> Sample:
        """See `Client.sample`.

        Example:
            >>> s = await c.sample("img", max_points=2000)
        """
        req = build.sample(collection, max_points, seed)
        return build.sample_result(await self._call(self._stub.Sample, req, timeout))

    async def embed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[ImageInput] | None = None,
        *,
        model: str = "",
        role: str = "",
        timeout: float | None = None,
    ) -> Embeddings:
        """See `Client.embed`.

        Example:
            >>> (await c.embed(texts=["hello"])).vectors.shape
        """
        items, is_text = build.embed_inputs(texts, images)
        pacer = build.EmbedPacer(self.timeout if timeout is None else timeout)
        requests = (
            (len(chunk), build.embed(chunk if is_text else None, None if is_text else chunk, model, role))
            for chunk in pacer.chunks(items)
        )
        parts = await self._paced(self._stub.Embed, requests, pacer, timeout, retries=0)
        return build.join_embeddings([build.embeddings(r) for r in parts])

    async def list_models(self, *, load: Iterable[str] = (), timeout: float | None = None) -> list[ModelInfo]:
        """See `Client.list_models`.

        Example:
            >>> [m.name for m in await c.list_models()]
        """
        req = types_pb2.ListModelsRequest(load=list(load))
        return build.models(await self._call(self._stub.ListModels, req, timeout))
