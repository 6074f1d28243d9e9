"""Typed errors for every gRPC status vecshard returns: the one place codes map to exceptions.

The client raises them for failed calls (keeping the status code and the server's message), and the
server raises the same classes internally; its error interceptor turns them back into statuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

RETRY_AFTER_HEADER = "retry-after-ms"
"""Trailing metadata of a refusal that may succeed later: how long to wait first, in milliseconds
(the same hint also travels as a google.rpc.RetryInfo detail in grpc-status-details-bin)."""


class VecshardError(Exception):
    """Base class: a vecshard call failed with a gRPC status.

    Attributes:
        code: the gRPC status code.
        details: the server's message, which says what to fix.
        retry_after: seconds the server asks you to wait before retrying the same call, or None when it
            gave no hint. Set on refusals that may succeed later as they are (a server over its
            in-flight bound answers RESOURCE_EXHAUSTED with it); a refusal without it (a request over a
            per-request limit) fails again unchanged: split the request or raise the named setting.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self, details: str, code: grpc.StatusCode | None = None, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(details)
        self.details = details
        self.retry_after: float | None = retry_after_s
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"


class InvalidArgument(VecshardError):
    """The request is malformed whatever the server state (wrong dim, NaN, bad k...)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(VecshardError):
    """A collection or id does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(VecshardError):
    """A collection name or vector id is taken."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(VecshardError):
    """The collection is not in a state that allows the call (e.g. too few vectors to train)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(VecshardError):
    """A configured limit or the message size limit was exceeded (see docs/limits.md).

    Two kinds, told apart by `retry_after`:
    - None: the request itself is over a per-request limit (nq * k, vectors scanned, characters, ...);
      the message names the limit, its value and the setting. Retrying it unchanged fails again:
      split it (the message says how) or raise the setting.
    - seconds: the server is busy (its bound on work in flight is reached) and refused at once rather
      than queue; retry after about that long (plus jitter). `vecshard.retry.Backoff` does that:

          from vecshard.retry import Backoff

          D, I = Backoff(busy=True).call(lambda failed: client.search("docs", queries, k=10))
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(VecshardError):
    """The server or one of its shards cannot be reached; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(VecshardError):
    """The call's deadline passed before it completed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(VecshardError):
    """The call was cancelled."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(VecshardError):
    """No valid credentials were sent."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(VecshardError):
    """The credentials do not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Aborted(VecshardError):
    """The call met a concurrent change (e.g. a training being switched on a shard); retry it."""

    code = grpc.StatusCode.ABORTED


class Unimplemented(VecshardError):
    """The server does not implement this call (an older server version)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(VecshardError):
    """A server bug: please report it with the message."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[VecshardError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unauthenticated,
        PermissionDenied,
        Unimplemented,
        Internal,
    )
}


def error_for(code: grpc.StatusCode, details: str, retry_after_s: float | None = None) -> VecshardError:
    """Return the typed exception for a status code and message (and the server's retry-after hint)."""
    cls = _BY_CODE.get(code, VecshardError)
    if cls is VecshardError:
        return cls(details, code, retry_after_s=retry_after_s)
    return cls(details, retry_after_s=retry_after_s)


def retry_after_from(metadata: Iterable[tuple[str, Any]] | None) -> float | None:
    """The retry-after hint (seconds) in a call's trailing metadata: the `retry-after-ms` entry, else a
    google.rpc.RetryInfo in grpc-status-details-bin (when googleapis-common-protos is installed)."""
    details_bin = None
    for key, value in metadata or ():
        if key == RETRY_AFTER_HEADER:
            try:
                return max(0.0, int(value) / 1000)
            except (TypeError, ValueError):
                continue
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            details_bin = value
    if details_bin is None:
        return None
    try:
        from google.rpc import error_details_pb2, status_pb2
    except ImportError:  # the SDK alone does not need googleapis-common-protos
        return None
    try:
        status = status_pb2.Status.FromString(details_bin)
    except Exception:  # a malformed detail is no hint
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return max(0.0, float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9))
    return None


def from_rpc_error(err: grpc.RpcError) -> VecshardError:
    """Convert a failed call (grpc.RpcError, or grpc.aio.AioRpcError) to its typed exception, with the
    server's retry-after hint (`VecshardError.retry_after`) when it sent one."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    try:
        trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    except Exception:  # a call that never got trailers
        trailing = None
    return error_for(code, details or code.name, retry_after_from(trailing))
