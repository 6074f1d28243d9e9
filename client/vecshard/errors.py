"""Typed errors for every gRPC status vecshard returns: the one place codes map to exceptions.

The client raises them for failed calls (keeping the status code and the server's message), and the
server raises the same classes internally; its error interceptor turns them back into statuses.
"""

from __future__ import annotations

import grpc


class VecshardError(Exception):
    """Base class: a vecshard call failed with a gRPC status.

    Attributes:
        code: the gRPC status code.
        details: the server's message, which says what to fix.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(details)
        self.details = details
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
    """A configured limit or the message size limit was exceeded."""

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


def error_for(code: grpc.StatusCode, details: str) -> VecshardError:
    """Return the typed exception for a status code and message."""
    cls = _BY_CODE.get(code, VecshardError)
    return cls(details, code) if cls is VecshardError else cls(details)


def from_rpc_error(err: grpc.RpcError) -> VecshardError:
    """Convert a failed call (grpc.RpcError, or grpc.aio.AioRpcError) to its typed exception."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return error_for(code, details or code.name)
