"""The coordinator's admission control: what each request costs, and the bound on work in flight.

A request's cost is an estimate of the memory it holds while the coordinator works on it: the
request as received, the copies made of it (unpacked, normalised, re-encoded for the shards) and its
reply (the shards' replies, the merged result and the encoded response). Costs of at most
`small_request_bytes` use a lane of their own, so a probe or a single-query search is admitted
whatever the large requests do; large ones share `max_inflight_bytes`. Over a lane's budget a
request gets RESOURCE_EXHAUSTED at once, with a retry-after hint (common/admission.py). See
docs/limits.md.

Costs are computed from the request's field sizes only (never by parsing or copying it), so a
refusal costs microseconds.
"""

from __future__ import annotations

from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.admission import Admission
from vecshard_server.common.config import Settings
from vecshard_server.coordinator.inputs import data_bytes

COPIES = 3  # a request's payload held about 3 times: received, converted, re-encoded for the shards
RESULT_BYTES = 12  # a (float32 distance, int64 id) result
RESULT_COPIES = 3  # the shards' replies, the merged arrays, the encoded response
EMBED_ROW_BYTES = 4 * 1024  # a vector the embedding model returns (float32, dim up to 1024), as a bound


def coordinator_admission(settings: Settings) -> Admission:
    return Admission(
        "the coordinator",
        "bytes",
        settings.max_inflight_bytes,
        "max_inflight_bytes (VECSHARD_MAX_INFLIGHT_BYTES)",
        settings.small_request_bytes,
        settings.max_inflight_small_bytes,
        "max_inflight_small_bytes (VECSHARD_MAX_INFLIGHT_SMALL_BYTES)",
    )


def input_rows(matrix: types_pb2.FloatMatrix, texts: int, images: int, dim: int, request_bytes: int = 0) -> int:
    """How many vectors a request carries (texts, images or matrix rows), from the bytes it sent: a
    matrix whose rows field disagrees with its data is refused later, when it is read.
    request_bytes: the request's size when it was large (rpc.request_bytes), else 0."""
    if texts or images:
        return texts + images
    n = data_bytes(matrix, request_bytes) // (4 * max(1, dim))
    # For a large request n is from its whole size, a little over: its declared rows if they fit (a
    # request declaring fewer than it sends is refused once its vectors are read).
    return min(n, matrix.rows) if matrix.rows and request_bytes else n or matrix.rows


def _payload(
    matrix: types_pb2.FloatMatrix, texts: list[str] | None, images: list[bytes] | None, dim: int, request_bytes: int
) -> int:
    """Bytes of a request's vectors, or of its texts/images plus the vectors they become."""
    n = len(texts or ()) + len(images or ())
    if n:
        return sum(len(t) for t in texts or ()) + sum(len(b) for b in images or ()) + n * 4 * max(1, dim)
    return data_bytes(matrix, request_bytes)


def search_cost(request: pb.SearchRequest, dim: int, nq: int, request_bytes: int = 0) -> int:
    payload = _payload(request.queries, list(request.texts), list(request.images), dim, request_bytes)
    return COPIES * payload + RESULT_COPIES * RESULT_BYTES * nq * (request.k + request.offset)


def add_cost(request: pb.AddRequest, dim: int, request_bytes: int = 0) -> int:
    payload = _payload(request.vectors, list(request.texts), list(request.images), dim, request_bytes)
    return COPIES * (payload + (0 if request_bytes else len(request.ids)))  # (large: ids are in payload)


def ids_cost(id_bytes: int, row_bytes: int = 0) -> int:
    """Get / Remove: the ids, and the rows returned for them."""
    return COPIES * (id_bytes + id_bytes // 8 * row_bytes)


def embed_cost(request: types_pb2.EmbedRequest) -> int:
    n = len(request.texts) + len(request.images)
    return sum(len(t) for t in request.texts) + sum(len(b) for b in request.images) + 2 * n * EMBED_ROW_BYTES
