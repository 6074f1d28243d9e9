"""What every vecshard gRPC server shares: error mapping (the server's one place where exceptions
become statuses), health and reflection, port files and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from vecshard.errors import RETRY_AFTER_HEADER, InvalidArgument, VecshardError
from vecshard_server.common.config import Settings
from vecshard_server.common.observability import REQUEST_ID, observe_rpc, request_id_from, span
from vecshard_server.common.security import server_credentials

log = logging.getLogger(__name__)


Authorize = Callable[[str, Any], None]
T = TypeVar("T")


WRITE_TOKEN_HEADER = "x-vecshard-write-token"
# A write's version, sent by coordinators as metadata (coordinator/shard_api.py, CallMeta): replicas
# keep the newest per id, and a non-upsert Add's version is also its token for RollbackAdd.


def write_token_from(metadata: Sequence[tuple[str, Any]] | None) -> int:
    """The write token in a call's metadata (0 when absent or malformed)."""
    for key, value in metadata or ():
        if key == WRITE_TOKEN_HEADER:
            try:
                return max(0, min(int(value), 2**64 - 1))
            except (TypeError, ValueError):
                return 0
    return 0


TRAIN_EPOCH_HEADER = "x-vecshard-train-epoch"
# The training epoch a coordinator expects its shards to search with (absent: no check): a shard at
# another epoch refuses (ABORTED), so one search never merges results of two quantizers.


PLACEMENT_EPOCH_HEADER = "x-vecshard-placement-epoch"
# The newest placement epoch a coordinator knows for the collection it writes (absent: not a routed
# write). A shard refuses a write to an older epoch's partition (ABORTED) once it holds a newer one,
# unless the writer knows that newer one (and so writes both placements): see common/placement.py.


def header_int(metadata: Sequence[tuple[str, Any]] | None, key: str) -> int | None:
    """An integer metadata value (None when absent or malformed)."""
    for k, value in metadata or ():
        if k == key:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


MAX_DETAILS = 1000  # characters of an error message sent back (it travels as a header)


@dataclass(frozen=True)
class Undecodable:
    """What arrives instead of a request whose bytes are not a valid message."""

    message_type: str
    error: str


# Requests larger than this are parsed in a worker thread, after authorization and the server's
# check of their size (`Precheck`): grpcio runs deserializers on the event loop, and parsing 60 MB
# there held every other call (health checks included) for tens of milliseconds.
LAZY_PARSE_BYTES = 1 << 20

# Called with the size of a large request before it is parsed; raises (e.g. ResourceExhausted when
# the process is too busy for it) to refuse it without spending the parse.
Precheck = Callable[[int], None]


class SizedContext:
    """A call's context, with the size of its request when that was large (parsed off the loop, see
    LAZY_PARSE_BYTES). Handlers price such a request from its size: reading a bytes field of a parsed
    message copies it (60 MB on the event loop, several times per request, held it for seconds when
    eight such searches came at once; so does ByteSize())."""

    def __init__(self, context: Any, request_bytes: int) -> None:
        self._context = context
        self.request_bytes = request_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def request_bytes(context: Any) -> int:
    """The size of the call's request when it was large (a SizedContext), else 0."""
    return int(getattr(context, "request_bytes", 0))


@dataclass(frozen=True)
class Unparsed:
    """A large request, still bytes (see LAZY_PARSE_BYTES)."""

    message_class: Any
    data: bytes

    def parse(self) -> Any:
        return _parse(self.message_class, self.data)


def _parse(message_class: Any, data: bytes) -> Any:
    try:
        return message_class.FromString(data)
    except DecodeError as err:
        return Undecodable(message_class.DESCRIPTOR.full_name, str(err)[:200])


def _deserializer(message_class: Any) -> Callable[[bytes], Any]:
    """Parse a request, handing an undecodable one to the handler as `Undecodable` so it gets
    INVALID_ARGUMENT (grpcio would answer UNKNOWN for a deserializer that raises); a large one is
    left `Unparsed` for the handler's wrapper to parse off the loop."""

    def parse(data: bytes) -> Any:
        if len(data) > LAZY_PARSE_BYTES:
            return Unparsed(message_class, data)
        return _parse(message_class, data)

    return parse


def service_handlers(
    servicer: Any,
    service_name: str,
    ready: Callable[[], bool] | None = None,
    authorize: Authorize | None = None,
    precheck: Precheck | None = None,
) -> dict[str, grpc.RpcMethodHandler]:
    """The unary handlers of every RPC of `service_name`, each wrapped so errors map to statuses:
    `VecshardError` becomes its status, bytes that are no valid request INVALID_ARGUMENT, anything
    unexpected INTERNAL with a log line. The server's one place for this mapping.

    Done once at registration rather than in a server interceptor, which costs a continuation per
    call (measured ~150 us per call on a 2-core machine).

    ready: while it returns False (e.g. a shard replaying its log), calls get UNAVAILABLE.
    authorize: called with (method, metadata) before the handler; raises to refuse the call.
    precheck: called with a large request's size before it is parsed (see LAZY_PARSE_BYTES).
    """
    service = descriptor_pool.Default().FindServiceByName(service_name)
    handlers = {}
    for method in service.methods:
        inner = getattr(servicer, method.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            guarded(inner, f"/{service_name}/{method.name}", ready, authorize, precheck),
            request_deserializer=_deserializer(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString,
        )
    return handlers


def guarded(
    inner: Callable[[Any, Any], Awaitable[T]],
    method: str,
    ready: Callable[[], bool] | None,
    authorize: Authorize | None,
    precheck: Precheck | None = None,
) -> Callable[[Any, Any], Awaitable[T]]:
    """`inner` (a handler taking a request and its context) with the server's error mapping,
    readiness, authorization, metrics and tracing: what every RPC gets, over gRPC or in process."""

    async def call(request: Any, context: Any) -> T:
        started = time.perf_counter()
        REQUEST_ID.set(request_id_from(context.invocation_metadata()))
        code = grpc.StatusCode.OK
        try:
            if ready is not None and not ready():
                code = grpc.StatusCode.UNAVAILABLE
                await context.abort(code, "still loading its data (health: NOT_SERVING): retry shortly")
            if authorize is not None:
                authorize(method, context.invocation_metadata())
            if isinstance(request, Unparsed):
                if precheck is not None:
                    precheck(len(request.data))
                context = SizedContext(context, len(request.data))
                request = await asyncio.to_thread(request.parse)
            if isinstance(request, Undecodable):
                raise InvalidArgument(
                    f"the request is not a valid {request.message_type} message ({request.error}): "
                    "send a message encoded from the vecshard.v1 protos"
                )
            with span(method, context.invocation_metadata()):
                return await inner(request, context)
        except VecshardError as err:
            code = err.code
            details = _bounded(err.details)
            await context.abort(err.code, details, trailing_metadata=retry_trailers(err.code, details, err.retry_after))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as err:  # a bug: report it as such, never as the user's fault
            code = grpc.StatusCode.INTERNAL
            log.exception("unexpected error in %s", method)
            await context.abort(code, _bounded(f"internal error in {method}: {type(err).__name__}: {err}"))
        finally:
            observe_rpc(method, code.name, started)
        raise AssertionError("context.abort returned")  # (it raises)

    call.__name__ = getattr(inner, "__name__", "rpc")
    call.__doc__ = inner.__doc__
    return call


def retry_trailers(code: grpc.StatusCode, details: str, retry_after_s: float | None) -> tuple[tuple[str, Any], ...]:
    """The trailing metadata of a refusal with a retry-after hint: `retry-after-ms` (any client reads
    it) and the standard google.rpc.Status with a RetryInfo detail in grpc-status-details-bin (what
    grpc-status aware clients and proxies read). Empty without a hint."""
    if retry_after_s is None:
        return ()
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2

    ms = max(1, round(retry_after_s * 1000))
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=ms // 1000, nanos=ms % 1000 * 10**6))
    )
    status = status_pb2.Status(code=code.value[0], message=details, details=[detail])
    return ((RETRY_AFTER_HEADER, str(ms)), ("grpc-status-details-bin", status.SerializeToString()))


def _bounded(details: str) -> str:
    """An error message cut to MAX_DETAILS characters: it echoes inputs, and travels as a header
    (a 20,000-character name once turned INVALID_ARGUMENT into RESOURCE_EXHAUSTED)."""
    return details if len(details) <= MAX_DETAILS else details[: MAX_DETAILS - 15] + " ... (cut short)"


class Server:
    """A grpc.aio server with health, reflection and SIGTERM/SIGINT-driven graceful shutdown."""

    def __init__(self, settings: Settings, service_names: Sequence[str]) -> None:
        self.settings = settings
        # No SO_REUSEPORT (grpc's default is on): a second server on a busy port must fail to bind,
        # not silently split the connections with an unrelated cluster.
        self.server = grpc.aio.server(options=[*settings.grpc_options(), ("grpc.so_reuseport", 0)])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        enable_reflection(self.server, [*self.service_names, health.SERVICE_NAME])
        self.port = 0

    def bind(self, host: str, port: int) -> int:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        s = self.settings
        try:
            if s.tls_cert and s.tls_key:
                creds = server_credentials(s.tls_cert, s.tls_key, s.tls_client_ca)
                self.port = self.server.add_secure_port(address, creds)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as err:
            raise SystemExit(f"cannot listen on {address}: {err} (is the port in use?)") from None
        if self.port == 0:
            raise SystemExit(f"cannot listen on {address} (is the port in use?)")
        return self.port

    def add_service(
        self,
        servicer: Any,
        service_name: str,
        ready: Callable[[], bool] | None = None,
        authorize: Authorize | None = None,
        precheck: Precheck | None = None,
    ) -> None:
        """Serve `servicer`'s RPCs of `service_name` through `service_handlers`."""
        handlers = service_handlers(servicer, service_name, ready, authorize, precheck)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
        self.server.add_registered_method_handlers(service_name, handlers)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def run(
        self,
        ready: Callable[[], Awaitable[None]] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        port_file: Path | None = None,
        exit_with_parent: bool = False,
    ) -> None:
        """Start, report SERVING, wait for SIGTERM/SIGINT, then stop gracefully.

        exit_with_parent: also stop when the parent process goes away (children of a local
        cluster must not outlive it, even when it is killed with SIGKILL).
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.set_serving(False)  # reachable for health checks, not yet for work
        await self.server.start()
        if ready is not None:
            await ready()
        await self.set_serving(True)
        if port_file is not None:
            write_port_file(port_file, self.port)
        watchdog = asyncio.create_task(_watch_parent(stop)) if exit_with_parent else None
        await stop.wait()
        if watchdog is not None:
            watchdog.cancel()
        log.info("shutting down: health NOT_SERVING, finishing in-flight calls (grace %.1fs)", self.settings.grace_s)
        await self.set_serving(False)
        if self.settings.drain_s:
            await asyncio.sleep(self.settings.drain_s)  # let load balancers see NOT_SERVING first
        await self.server.stop(self.settings.grace_s)
        if on_stop is not None:
            await on_stop()
        log.info("stopped")


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection as both `grpc.reflection.v1` (what current tools speak) and `v1alpha`.

    grpcio-reflection ships only v1alpha; v1 is the same protocol with the same messages under
    another package name, so the library's servicer answers both.
    """
    names = [*service_names, REFLECTION_V1, reflection.SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for service in (REFLECTION_V1, reflection.SERVICE_NAME):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def write_port_file(path: Path, port: int) -> None:
    """Write the bound port atomically, so a parent polling the file never reads half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


async def _watch_parent(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    log.warning("parent process %d is gone: shutting down", parent)
    stop.set()
