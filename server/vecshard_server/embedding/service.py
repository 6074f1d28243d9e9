"""Embedding as a service: in-process (`LocalEmbeddings`) or through a `vecshard embedder`
process (`RemoteEmbeddings`), behind one interface the coordinator uses.

Inputs are checked here (batch size, text length, characters per request, image size, modality,
decodable images) so the model code sees only valid batches; model work runs in worker threads, off
the event loop. One caller cannot take the model over (docs/limits.md): the work in flight is bounded
(`Admission`, in characters: over it RESOURCE_EXHAUSTED with a retry-after hint), and a batch runs in
sub-batches of about `embed_chunk_chars` that take turns with other requests' (`FairScheduler`), so a
one-text request waits for one sub-batch at most, not for a 256-text one to finish.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    error_for,
    retry_after_from,
)
from vecshard.v1 import embedder_pb2, embedder_pb2_grpc, types_pb2
from vecshard_server.common.admission import Admission, FairScheduler, Flow
from vecshard_server.common.config import Settings
from vecshard_server.common.observability import EMBED_BATCH, EMBED_SECONDS
from vecshard_server.common.rpc import Server
from vecshard_server.common.security import InternalAuth, internal_metadata, shard_channel
from vecshard_server.embedding.models import KINDS, EmbeddingModel
from vecshard_server.embedding.registry import Registry, load_registry

log = logging.getLogger(__name__)

SERVICE_NAME = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name


class Embeddings(Protocol):
    async def embed(self, request: types_pb2.EmbedRequest, timeout: float) -> types_pb2.EmbedResponse: ...

    async def list_models(
        self, request: types_pb2.ListModelsRequest, timeout: float
    ) -> types_pb2.ListModelsResponse: ...

    async def close(self) -> None: ...


async def model_info(embeddings: Embeddings, name: str, timeout: float) -> types_pb2.ModelInfo:
    """The loaded model's info (dim, fingerprint): loads it if needed. NOT_FOUND if unknown."""
    resp = await embeddings.list_models(types_pb2.ListModelsRequest(load=[name]), timeout)
    info: types_pb2.ModelInfo = next(m for m in resp.models if m.name == name)
    return info


def decode_image(data: bytes, index: int) -> Any:
    """A decoded RGB PIL image, or INVALID_ARGUMENT naming the input."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except Exception as err:  # PIL raises many types for corrupt, truncated or unknown data
        raise InvalidArgument(
            f"images[{index}] cannot be decoded as an image ({type(err).__name__}: {err}): send PNG, JPEG or WebP bytes"
        ) from None


TEXT_UNITS = 64  # work units of a text beyond its characters (tokenizer and model call overhead)
IMAGE_UNITS = 4096  # work units of an image, plus one per IMAGE_BYTES_PER_UNIT encoded bytes (decoding)
IMAGE_BYTES_PER_UNIT = 256


def text_units(text: str) -> int:
    return len(text) + TEXT_UNITS


def image_units(data: bytes) -> int:
    return IMAGE_UNITS + len(data) // IMAGE_BYTES_PER_UNIT


def check_embed_request(
    request: types_pb2.EmbedRequest, settings: Settings, modalities: Any = None, model: str = "this model"
) -> int:
    """check_embed_inputs of an Embed request."""
    return check_embed_inputs(request.texts, request.images, settings, modalities, model)


def check_embed_inputs(
    texts: Sequence[str], images: Sequence[bytes], settings: Settings, modalities: Any = None, model: str = "this model"
) -> int:
    """Check the texts or images of an Embed (or of an Add or Search that sends them) against the
    per-request limits (before any model work) and return their cost in work units (about their
    characters; see docs/limits.md).

    Every refusal is RESOURCE_EXHAUSTED (INVALID_ARGUMENT for a malformed request) naming the limit,
    its value, the setting that raises it and how to split the request. No retry-after: the same
    request fails again; a smaller one does not.
    """
    if texts and images:
        raise InvalidArgument("send texts or images in one request, not both")
    n = len(texts) or len(images)
    if not n:
        raise InvalidArgument("nothing to embed: send at least one text or image")
    if n > settings.max_embed_batch:
        raise ResourceExhausted(
            f"{n} inputs in one request, over max_embed_batch={settings.max_embed_batch} "
            "(VECSHARD_MAX_EMBED_BATCH): send smaller batches"
        )
    kind = "text" if texts else "image"
    if modalities is not None and kind not in modalities:
        raise InvalidArgument(f"{model} embeds {' and '.join(modalities)} only, not {kind}s")
    if texts:
        total = 0
        for i, t in enumerate(texts):
            if len(t) > settings.max_text_chars:
                raise ResourceExhausted(
                    f"texts[{i}] has {len(t)} characters, over max_text_chars={settings.max_text_chars} "
                    "(VECSHARD_MAX_TEXT_CHARS): split it into shorter texts"
                )
            total += len(t)
        if total > settings.max_embed_chars:
            per = max(1, settings.max_embed_chars * n // total)
            raise ResourceExhausted(
                f"{n} texts of {total} characters in one request, over max_embed_chars={settings.max_embed_chars} "
                f"(VECSHARD_MAX_EMBED_CHARS): send them in batches of at most {settings.max_embed_chars} "
                f"characters (about {per} of these texts per call)"
            )
        return total + TEXT_UNITS * n
    for i, b in enumerate(images):
        if len(b) > settings.max_image_bytes:
            raise ResourceExhausted(
                f"images[{i}] has {len(b)} bytes, over max_image_bytes={settings.max_image_bytes} "
                "(VECSHARD_MAX_IMAGE_BYTES): send a smaller image"
            )
    return sum(image_units(b) for b in images)


def embed_admission(settings: Settings) -> Admission:
    """The bound on embedding work in flight in this process (characters; see docs/limits.md)."""
    return Admission(
        "the embedding model",
        "characters",
        settings.max_inflight_embed_chars,
        "max_inflight_embed_chars (VECSHARD_MAX_INFLIGHT_EMBED_CHARS)",
        settings.small_embed_chars,
        settings.max_inflight_small_embed_chars,
        "max_inflight_small_embed_chars (VECSHARD_MAX_INFLIGHT_SMALL_EMBED_CHARS)",
    )


def sub_batches(units: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) ranges of inputs, each of about `limit` work units (at least one input)."""
    out: list[tuple[int, int]] = []
    start, acc = 0, 0
    for i, u in enumerate(units):
        if i > start and acc + u > limit:
            out.append((start, i))
            start, acc = i, 0
        acc += u
    out.append((start, len(units)))
    return out


class LocalEmbeddings:
    """The registry's models, run in this process."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.models: dict[str, EmbeddingModel] = {
            name: KINDS[cfg.kind](name, cfg) for name, cfg in registry.models.items()
        }
        self.admission = embed_admission(settings)
        # One scheduler per model: a model runs one sub-batch at a time (it holds its own lock).
        self.schedulers: dict[str, FairScheduler] = {name: FairScheduler(1) for name in self.models}

    @classmethod
    def from_file(cls, path: Path | None, settings: Settings) -> LocalEmbeddings:
        return cls(load_registry(path), settings)

    def _model(self, name: str) -> EmbeddingModel:
        name = name or self.registry.default
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none: install vecshard[embed] or configure a registry"
            raise NotFound(f"unknown embedding model {name!r}; this server has: {known}")
        return model

    async def _load(self, model: EmbeddingModel) -> None:
        try:
            await asyncio.to_thread(model.ensure_loaded)
        except ImportError as err:
            raise FailedPrecondition(
                f"model {model.name!r} needs {err.name}, which is not installed: pip install 'vecshard[embed]'"
            ) from None

    async def embed(self, request: types_pb2.EmbedRequest, timeout: float) -> types_pb2.EmbedResponse:
        model = self._model(request.model)
        texts, images = list(request.texts), list(request.images)
        cost = check_embed_request(
            request, self.settings, model.config.modalities, f"model {model.name!r} ({model.config.kind})"
        )
        n = len(texts) or len(images)
        kind = "text" if texts else "image"
        with self.admission.admit(cost, f"embedding {n} {kind}s"):
            await self._load(model)
            started = time.perf_counter()
            scheduler, flow = self.schedulers[model.name], Flow()
            units = [text_units(t) for t in texts] if texts else [image_units(b) for b in images]
            pieces = []
            # One sub-batch after the other, each taking its turn with other requests' sub-batches.
            for a, b in sub_batches(units, self.settings.embed_chunk_chars):
                if texts:
                    piece = await scheduler.run(flow, sum(units[a:b]), model.embed_texts, texts[a:b], request.role)
                else:
                    piece = await scheduler.run(flow, sum(units[a:b]), self._embed_images, model, images[a:b], a)
                pieces.append(piece)
            vectors = pieces[0] if len(pieces) == 1 else np.vstack(pieces)
        EMBED_SECONDS.labels(model.name, kind).observe(time.perf_counter() - started)
        EMBED_BATCH.labels(model.name).observe(n)
        return types_pb2.EmbedResponse(vectors=wire.pack_matrix(vectors), model=model.info())

    @staticmethod
    def _embed_images(model: EmbeddingModel, images: list[bytes], offset: int) -> Any:
        return model.embed_images([decode_image(b, offset + i) for i, b in enumerate(images)])

    async def list_models(self, request: types_pb2.ListModelsRequest, timeout: float) -> types_pb2.ListModelsResponse:
        for name in request.load:
            await self._load(self._model(name))
        infos = []
        for name, model in sorted(self.models.items()):
            if model.loaded:
                infos.append(model.info())
            else:
                cfg = model.config
                infos.append(
                    types_pb2.ModelInfo(
                        name=name,
                        kind=cfg.kind,
                        normalized=cfg.normalize,
                        modalities=list(cfg.modalities),
                        query_prefix=cfg.query_prefix,
                        passage_prefix=cfg.passage_prefix,
                    )
                )
        return types_pb2.ListModelsResponse(models=infos, default_model=self.registry.default)

    async def close(self) -> None:
        return None


class RemoteEmbeddings:
    """A `vecshard embedder` process, over gRPC."""

    def __init__(self, address: str, settings: Settings) -> None:
        self.address = address
        self.settings = settings
        # Internal traffic: the same (m)TLS as to shards.
        self._channel = shard_channel(address, settings, settings.grpc_options())
        self._internal = internal_metadata(settings)
        self._stub = embedder_pb2_grpc.EmbedderStub(self._channel)

    async def _call(self, method: str, request: Any, timeout: float) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=timeout, metadata=self._internal or None)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise Unavailable(f"embedder {self.address} is unavailable ({err.details()}); retry") from None
            raise error_for(
                err.code(), err.details() or err.code().name, retry_after_from(err.trailing_metadata())
            ) from None

    async def embed(self, request: types_pb2.EmbedRequest, timeout: float) -> types_pb2.EmbedResponse:
        check_embed_request(request, self.settings)  # refuse before sending it: the embedder checks again
        resp: types_pb2.EmbedResponse = await self._call("Embed", request, timeout)
        return resp

    async def list_models(self, request: types_pb2.ListModelsRequest, timeout: float) -> types_pb2.ListModelsResponse:
        resp: types_pb2.ListModelsResponse = await self._call("ListModels", request, timeout)
        return resp

    async def close(self) -> None:
        await self._channel.close()


class EmbedderService(embedder_pb2_grpc.EmbedderServicer):
    """The `vecshard embedder` role: LocalEmbeddings served over gRPC."""

    def __init__(self, embeddings: LocalEmbeddings, settings: Settings) -> None:
        self.embeddings = embeddings
        self.settings = settings

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self.settings.shard_timeout_s if remaining is None else float(remaining)

    async def Embed(
        self, request: types_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.EmbedResponse:
        return await self.embeddings.embed(request, self._timeout(context))

    async def ListModels(
        self, request: types_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.ListModelsResponse:
        return await self.embeddings.list_models(request, self._timeout(context))


async def serve_embedder(
    settings: Settings,
    host: str,
    port: int,
    models_file: Path | None,
    preload: list[str],
    port_file: Path | None = None,
    exit_with_parent: bool = False,
) -> None:
    embeddings = LocalEmbeddings.from_file(models_file, settings)
    service = EmbedderService(embeddings, settings)
    server = Server(settings, [SERVICE_NAME])
    token = settings.token
    server.add_service(service, SERVICE_NAME, authorize=InternalAuth(token).check if token else None)
    bound = server.bind(host, port)

    async def ready() -> None:
        for name in preload:
            await embeddings.list_models(types_pb2.ListModelsRequest(load=[name]), settings.shard_timeout_s)
        log.info("embedder listening on %s:%d with models: %s", host, bound, ", ".join(sorted(embeddings.models)))

    await server.run(ready=ready, port_file=port_file, exit_with_parent=exit_with_parent)
