"""Checks and conversions of what a public request carries: ids, vectors, texts and images.

Everything here runs before any shard is written, so a refused request leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vecshard import wire
from vecshard.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.spec import MAX_REFINE, CollectionSpec
from vecshard_server.coordinator import offload
from vecshard_server.embedding.service import Embeddings


def normalize_rows(x: wire.FloatArray, field: str) -> wire.FloatArray:
    """Unit-normalise rows for COSINE; a zero row has no direction and is refused."""
    norms = np.linalg.norm(x, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        rows = (
            f"row {zero[0]} is" if zero.size == 1 else f"rows {zero[:5].tolist()}{' ...' if zero.size > 5 else ''} are"
        )
        raise InvalidArgument(
            f"{field} {rows} all zeros: a COSINE collection compares directions and a zero vector has none; "
            "send non-zero vectors"
        )
    return np.ascontiguousarray(x / norms[:, None], dtype=np.float32)


MESSAGE_RESERVE = 64 * 1024  # room in a message for its fields other than the rows, and their framing


def rows_per_message(settings: Settings, row_bytes: int) -> int:
    """How many rows of `row_bytes` each (as encoded: see the *_row_bytes helpers) fit in one message
    under the configured limit."""
    return max(1, (settings.max_message_bytes - MESSAGE_RESERVE) // row_bytes)


# Bytes per row of the messages that carry vectors, as they travel: vectors are packed float32 and
# ids packed int64 (types.proto); each packed field adds its framing once, not per row.


def get_row_bytes(dim: int) -> int:
    """A GetResponse row: the vector and its `found` byte."""
    return 4 * dim + 1


def sample_row_bytes(dim: int) -> int:
    """A public SampleResponse row: the vector, its int64 id, int32 shard and int32 IVF list."""
    return 4 * dim + 16


def page_row_bytes(dim: int) -> int:
    """A row of a shard's Sample or Export page (ExportResponse): the vector, its int64 id and (Export)
    its int64 version."""
    return 4 * dim + 16


def request_ids(settings: Settings, data: bytes, *, unique: bool) -> np.ndarray:
    """The request's packed ids, checked: within max_batch, >= 0, and (for writes) unique."""
    ids = wire.unpack_ids(data)
    if ids.size > settings.max_batch:
        raise ResourceExhausted(f"{ids.size} ids in one request, over max_batch={settings.max_batch}: split it")
    if unique:
        wire.check_ids(ids)
    elif ids.size == 0:
        raise InvalidArgument("ids is empty: send at least one id")
    elif (ids < 0).any():
        raise InvalidArgument(f"ids must be >= 0; got {ids[ids < 0][:5].tolist()}")
    return ids


def data_bytes(matrix: types_pb2.FloatMatrix, request_bytes: int = 0) -> int:
    """len(matrix.data), or for a large request (rpc.request_bytes) the request's size, an upper bound
    of it: reading a bytes field of a parsed message copies it, and that on the event loop."""
    return request_bytes or len(matrix.data)


async def request_vectors(
    embeddings: Embeddings,
    spec: CollectionSpec,
    matrix: types_pb2.FloatMatrix,
    texts: Sequence[str],
    images: Sequence[bytes],
    fingerprint: str,
    role: types_pb2.InputRole,
    field: str,
    timeout: float,
    request_bytes: int = 0,
) -> tuple[wire.FloatArray, bool]:
    """The request's vectors, and whether they were given as such (else embedded by the model).
    request_bytes: the request's size when it was large (rpc.request_bytes), else 0."""
    # (A large request without texts or images: its bytes are vectors; matrix.data is not read here.)
    given = bool(matrix.rows) or (bool(matrix.data) if texts or images or not request_bytes else True)
    sources = [n for n, present in ((field, given), ("texts", bool(texts)), ("images", bool(images))) if present]
    if len(sources) > 1:
        raise InvalidArgument(f"send one of {field}, texts or images, not {' and '.join(sources)}")
    if texts or images:
        if not spec.embedding_model:
            raise FailedPrecondition(
                f"collection {spec.name!r} has no embedding model: send {field}, or create the collection "
                "with embedding_model to send texts or images"
            )
        embed = types_pb2.EmbedRequest(model=spec.embedding_model, texts=texts, images=images, role=role)
        resp = await embeddings.embed(embed, timeout)
        if resp.model.fingerprint != spec.model_fingerprint:
            raise FailedPrecondition(
                f"model {spec.embedding_model!r} now has fingerprint {resp.model.fingerprint!r} but collection "
                f"{spec.name!r} was built with {spec.model_fingerprint!r}: its vectors would not be comparable; "
                "restore that model or re-create the collection"
            )
        return wire.unpack_matrix(resp.vectors, field), False
    if spec.model_fingerprint and given and not fingerprint:
        raise FailedPrecondition(
            f"collection {spec.name!r} is bound to model {spec.embedding_model!r}: {field} sent as numbers must "
            f"say which model made them. Embed them with that model (Embed, or Client.embed(texts, "
            f"model={spec.embedding_model!r})) and send its fingerprint as model_fingerprint "
            f"({spec.model_fingerprint!r}), or send texts/images and let the server embed them"
        )
    if fingerprint and fingerprint != spec.model_fingerprint:
        bound = f"is bound to {spec.model_fingerprint!r}" if spec.model_fingerprint else "has no embedding model"
        raise FailedPrecondition(
            f"{field} come from model {fingerprint!r} but collection {spec.name!r} {bound}: embed them with "
            "the collection's model (or send texts/images and let the server embed them)"
        )
    # Reading a big bytes field copies it: off the loop too (see offload.py).
    vectors = await offload.run(4 * matrix.rows * matrix.cols > offload.INLINE_BYTES, wire.unpack_matrix, matrix, field)
    return vectors, given


# -- per-request cost limits (docs/limits.md) ------------------------------------------------------
# Each refusal is RESOURCE_EXHAUSTED without a retry-after hint: the request is valid, but too big
# for this server's configuration; the same request fails again, a smaller one (the message says
# how) or a raised setting succeeds. (INVALID_ARGUMENT is kept for what no setting can allow, e.g. a
# k over max_k, which existed before these limits.)


def vectors_visited(spec: CollectionSpec, count: int, trained: bool, nprobe: int) -> int:
    """About how many stored vectors one query is compared with: all of them for FLAT (and an IVF
    collection not yet trained, which is searched exactly), else count * nprobe / nlist."""
    if not spec.is_ivf or not trained or spec.nlist <= 0:
        return count
    return min(count, -(-count * max(1, nprobe) // spec.nlist))


def refine_of(request: pb.SearchRequest, spec: CollectionSpec, settings: Settings) -> int:
    """The re-ranking factor of a Search (1: none): the request's, else the collection's."""
    asked = request.refine_factor
    if asked > 1 and not spec.quantized:
        raise InvalidArgument(
            f"refine_factor applies to IVF_SQ8, IVF_SQFP16 and IVF_PQ collections; {spec.name!r} is "
            f"{spec.index_type.name} (exact per vector already): leave it 0"
        )
    if asked > MAX_REFINE:
        raise InvalidArgument(f"refine_factor must be at most {MAX_REFINE}, got {asked}")
    refine = asked or spec.refine_factor
    if refine <= 1 or not spec.quantized:
        return 1
    if request.k * refine > settings.max_k:
        raise InvalidArgument(
            f"k * refine_factor = {request.k} * {refine} = {request.k * refine} candidates, over max_k="
            f"{settings.max_k}: use a smaller k or refine_factor"
        )
    return refine


def check_search_cost(settings: Settings, spec: CollectionSpec, nq: int, k: int, per_query: int) -> None:
    """Refuse a Search whose results (nq * k) or estimated vectors scanned (nq * per_query) exceed
    max_search_results / max_search_scan, naming the limit, its setting and the split that fits."""
    results = nq * k
    if results > settings.max_search_results:
        fit = max(1, settings.max_search_results // k)
        raise ResourceExhausted(
            f"nq * k = {nq} * {k} = {results} results, over max_search_results={settings.max_search_results} "
            f"(VECSHARD_MAX_SEARCH_RESULTS): send at most {fit} queries per call with k={k}, or raise the setting"
        )
    scan = nq * per_query
    if scan > settings.max_search_scan:
        fit = settings.max_search_scan // max(1, per_query)
        how = (
            f"send at most {fit} queries per call"
            if fit
            else "even one query scans more than that: use an IVF_FLAT collection or a smaller nprobe"
        )
        raise ResourceExhausted(
            f"this search would compare about {scan} vectors ({nq} queries x ~{per_query} vectors each in "
            f"{spec.name!r}), over max_search_scan={settings.max_search_scan} (VECSHARD_MAX_SEARCH_SCAN): "
            f"{how}, or raise the setting"
        )


CHUNK_MAX_RESULTS = 1 << 18  # (distance, id) pairs per shard in one chunk's reply


def search_chunk_rows(settings: Settings, dim: int, k: int, per_query: int) -> int:
    """How many queries each chunk of a Search carries: about search_chunk_work (vectors scanned x
    dim) per chunk, so a big search reaches the shards as short faiss calls that other searches
    interleave with, and no chunk's reply gets huge."""
    work = max(1, per_query) * max(1, dim)
    return max(1, min(settings.search_chunk_work // work, CHUNK_MAX_RESULTS // max(1, k)))
