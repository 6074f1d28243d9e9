"""numpy <-> wire conversion and the input checks shared by the SDK and the server.

Vectors travel as packed little-endian float32 and ids as packed little-endian int64 (see
proto/vecshard/v1/types.proto). Decoding is zero-copy (`np.frombuffer`) on little-endian hosts.
Every check raises `InvalidArgument` with a message that says what to fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard.errors import InvalidArgument
from vecshard.v1 import types_pb2

F32 = np.dtype("<f4")
I64 = np.dtype("<i8")

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
AnyIds = IdArray | list[str]  # int64 ids, or the ids of a string-id collection
MAX_STRING_ID_BYTES = 256


def pack_matrix(a: FloatArray) -> types_pb2.FloatMatrix:
    """Pack a 2-D float32 array as a FloatMatrix."""
    a = np.ascontiguousarray(a, dtype=F32)
    rows, cols = a.shape
    return types_pb2.FloatMatrix(data=a.tobytes(), rows=rows, cols=cols)


def unpack_matrix(m: types_pb2.FloatMatrix, field: str = "vectors") -> FloatArray:
    """Decode a FloatMatrix into a read-only (rows, cols) float32 view of its bytes."""
    expected = 4 * m.rows * m.cols
    if len(m.data) != expected:
        raise InvalidArgument(
            f"{field}.data has {len(m.data)} bytes but rows={m.rows} x cols={m.cols} float32 needs "
            f"{expected}: pack the vectors as little-endian float32, row-major"
        )
    return np.frombuffer(m.data, dtype=F32).reshape(m.rows, m.cols)


def pack_ids(ids: IdArray) -> bytes:
    """Pack int64 ids as little-endian bytes."""
    return np.ascontiguousarray(ids, dtype=I64).tobytes()


def unpack_ids(data: bytes, field: str = "ids") -> IdArray:
    """Decode packed little-endian int64 ids (read-only view)."""
    if len(data) % 8:
        raise InvalidArgument(f"{field} has {len(data)} bytes, not a multiple of 8: pack ids as little-endian int64")
    return np.frombuffer(data, dtype=I64)


def as_ids(ids: Any) -> IdArray:
    """Coerce user ids (a sequence, an int or an integer array) to a 1-D int64 array."""
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise InvalidArgument(f"ids must be one-dimensional, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise InvalidArgument(f"ids must be integers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=I64)


def as_any_ids(ids: Any, field: str = "ids") -> AnyIds:
    """User ids as a 1-D int64 array, or as a list of str (a string-id collection's ids), by the
    type of the elements: a str alone is one id, an empty sequence is int. InvalidArgument for a
    mix of the two."""
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
        if ids.ndim > 1:
            raise InvalidArgument(f"{field} must be one-dimensional, got shape {ids.shape}")
        return [str(s) for s in ids.reshape(-1)]
    if isinstance(ids, np.ndarray) and ids.dtype.kind != "O" or isinstance(ids, range | int | np.integer):
        return as_ids(ids)
    items = list(ids) if not isinstance(ids, np.ndarray) else ids.reshape(-1).tolist()
    strings = [isinstance(x, str) for x in items]
    if not any(strings):
        return as_ids(items)
    if all(strings):
        return [str(s) for s in items]
    s, other = items[strings.index(True)], items[strings.index(False)]
    raise InvalidArgument(
        f"{field} mix str and int ids ({s!r} and {other!r}): a string-id collection takes str ids only, "
        "any other collection int ids only"
    )


def check_any_ids(ids: AnyIds, field: str = "ids") -> None:
    """`check_ids` for int64 ids, `check_string_ids` for str ones."""
    if isinstance(ids, list):
        check_string_ids(ids, field)
    else:
        check_ids(ids, field)


def check_string_ids(ids: list[str], field: str = "ids") -> None:
    """Refuse an empty batch, a string id that is not 1 to 256 bytes of UTF-8, and ids repeated
    within the batch."""
    if not ids:
        raise InvalidArgument(f"{field} is empty: send at least one id")
    for i, s in enumerate(ids):
        try:
            n = len(s.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidArgument(f"{field}[{i}] is not valid UTF-8 (it holds a lone surrogate)") from None
        if not 1 <= n <= MAX_STRING_ID_BYTES:
            raise InvalidArgument(
                f"{field}[{i}] has {n} bytes: a string id has 1 to {MAX_STRING_ID_BYTES} bytes of UTF-8"
            )
    seen: set[str] = set()
    for s in ids:
        if s in seen:
            raise InvalidArgument(f"{field} must be unique within one request, but {s!r} appears more than once")
        seen.add(s)


def as_matrix(x: Any, field: str = "vectors") -> FloatArray:
    """Coerce user vectors (one vector or a 2-D array-like) to a C-contiguous float32 matrix."""
    a = np.asarray(x)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise InvalidArgument(f"{field} must be a vector or a 2-D array (n, dim), got shape {a.shape}")
    if a.size and not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InvalidArgument(f"{field} must be numeric, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=F32)


def check_ids(ids: IdArray, field: str = "ids") -> None:
    """Refuse an empty batch, negative ids and ids repeated within the batch."""
    if ids.size == 0:
        raise InvalidArgument(f"{field} is empty: send at least one id")
    negative = ids[ids < 0]
    if negative.size:
        raise InvalidArgument(f"{field} must be >= 0; got {_some(negative)}")
    uniq, counts = np.unique(ids, return_counts=True)
    if uniq.size != ids.size:
        dup = uniq[counts > 1]
        raise InvalidArgument(
            f"{field} must be unique within one request, but {_some(dup)} "
            f"{'appears' if dup.size == 1 else 'appear'} more than once: send each id once"
        )


def check_vectors(x: FloatArray, dim: int, field: str = "vectors") -> None:
    """Refuse an empty batch, a wrong dimension and NaN/Inf values."""
    if x.shape[0] == 0:
        raise InvalidArgument(f"{field} is empty: send at least one vector")
    if x.shape[1] != dim:
        raise InvalidArgument(f"{field} have dimension {x.shape[1]} but the collection's dim is {dim}")
    limit = max_abs_value(dim)
    # Two whole-array reductions, no temporary the size of x (NaN propagates and fails both); the
    # rows to blame are looked for only when they fail.
    if x.max() <= limit and x.min() >= -limit:
        return
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise InvalidArgument(f"{field} contain NaN or Inf in rows {_some(rows)}: send finite values")
    big = np.abs(x).max(axis=1) > limit
    if big.any():
        raise InvalidArgument(
            f"{field} rows {_some(np.flatnonzero(big))} hold values beyond +-{limit:.3g}: at dim {dim} their "
            "distances (or COSINE norms) would overflow float32; scale the vectors down"
        )


def max_abs_value(dim: int) -> float:
    """The largest component magnitude whose distances stay finite in float32 at this dim: a squared
    L2 distance sums dim terms of up to (2m)**2, so m = sqrt(FLT_MAX / (4 dim)), halved for margin."""
    return float(np.sqrt(np.finfo(np.float32).max / (4.0 * max(dim, 1))) / 2)


def _some(values: npt.NDArray[Any], limit: int = 5) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    more = values.size - limit
    return f"{shown} (and {more} more)" if more > 0 else shown
