"""Metrics (Prometheus, on a separate port per process), structured logs and request ids.

Every RPC is counted and timed in one place (rpc.guard); the coordinator times each shard call; the
shard exports its vectors and index state per collection; embedding, WAL fsyncs and checkpoints
have their own histograms. A request id taken from the caller's `x-request-id` metadata (or made
up) follows the call to the shards and into every log line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
ROLE = {"name": "vecshard"}

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
REPLICAS_DIVERGED = Gauge(
    "vecshard_replicas_diverged",
    "1 while the replicas of a shard group hold different data for a collection",
    ["group", "collection"],
)
RPCS = Counter("vecshard_rpcs", "RPCs handled, by method and status code", ["role", "method", "code"])
RPC_SECONDS = Histogram("vecshard_rpc_seconds", "RPC latency by method", ["role", "method"], buckets=_LATENCY)
SHARD_CALL_SECONDS = Histogram(
    "vecshard_shard_call_seconds", "coordinator -> shard replica call latency", ["shard", "method"], buckets=_LATENCY
)
EMBED_SECONDS = Histogram(
    "vecshard_embed_seconds", "embedding latency per request", ["model", "kind"], buckets=_LATENCY
)
EMBED_BATCH = Histogram(
    "vecshard_embed_batch_size",
    "inputs per embedding request",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
WAL_SYNC_SECONDS = Histogram("vecshard_wal_fsync_seconds", "write-ahead log fsync latency", buckets=_LATENCY)
RESHARD_POINTS = Gauge(
    "vecshard_reshard_points",
    "a reshard's points: scanned (copied to the new placement), moved (to another "
    "group), total (in the collection when the copy began)",
    ["collection", "kind"],
)
RESHARD_ACTIVE = Gauge("vecshard_reshard_active", "1 while a reshard of the collection runs here", ["collection"])
CHECKPOINT_SECONDS = Histogram("vecshard_checkpoint_seconds", "checkpoint (snapshot) duration", buckets=_LATENCY)


class CollectionCollector(Collector):
    """Per-collection gauges read at scrape time: vectors stored and whether the index is trained."""

    def __init__(self, collections: Callable[[], Iterable[tuple[str, int, bool]]]) -> None:
        self._collections = collections

    def collect(self) -> Iterable[GaugeMetricFamily]:
        vectors = GaugeMetricFamily("vecshard_vectors", "vectors stored on this shard", labels=["collection"])
        trained = GaugeMetricFamily("vecshard_index_trained", "1 when the IVF index is trained", labels=["collection"])
        for name, count, is_trained in self._collections():
            vectors.add_metric([name], count)
            trained.add_metric([name], 1.0 if is_trained else 0.0)
        yield vectors
        yield trained


def start_metrics(role: str, port: int | None, host: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` (None or 0: off). Labels every RPC metric with `role`."""
    ROLE["name"] = role
    if port:
        try:
            start_http_server(port, addr=host)
        except OSError as err:
            raise SystemExit(f"cannot serve metrics on {host}:{port}: {err.strerror} (is the port in use?)") from None
        logging.getLogger(__name__).info("metrics on http://%s:%d/metrics", host, port)


def register_collections(collections: Callable[[], Iterable[tuple[str, int, bool]]]) -> None:
    REGISTRY.register(CollectionCollector(collections))


def request_id_from(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and value:
            return str(value)[:64]
    return secrets.token_hex(8)


# The labelled children of RPCS and RPC_SECONDS per (role, method, code): `labels()` costs a few
# microseconds a call, and every query observes one call per shard it reaches.
_CHILDREN: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def observe_rpc(method: str, code: str, started: float) -> None:
    key = (ROLE["name"], method, code)
    children = _CHILDREN.get(key)
    if children is None:
        service, _, name = method.rpartition("/")
        # A coordinator with local shards serves both sides: each call is counted under its own role.
        role = "shard" if service.endswith(".Shard") else ROLE["name"]
        children = _CHILDREN[key] = (RPCS.labels(role, name, code), RPC_SECONDS.labels(role, name))
    children[0].inc()
    children[1].observe(time.perf_counter() - started)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "role": ROLE["name"],
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, role: str, json_format: bool) -> None:
    ROLE["name"] = role
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        JsonFormatter() if json_format else logging.Formatter(f"%(asctime)s %(levelname)s {role} %(name)s: %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


# -- tracing (optional: the `otel` extra) ---------------------------------------------------------

_TRACER: Any = None


def setup_tracing(role: str, exporter: str) -> None:
    """Trace RPCs with OpenTelemetry: exporter "console" (JSON spans on stdout) or "otlp" (the
    standard OTEL_EXPORTER_OTLP_* variables say where). Each RPC is a span; each coordinator->shard
    call a child span; the trace context travels to the shards in the call metadata."""
    global _TRACER
    if not exporter:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        raise SystemExit("tracing needs the otel extra: pip install 'vecshard[otel]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": f"vecshard-{role}"}))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise SystemExit(f"unknown VECSHARD_OTEL_EXPORTER {exporter!r}: use console or otlp")
    trace.set_tracer_provider(provider)
    _TRACER = trace.get_tracer("vecshard")


def span(name: str, metadata: Iterable[tuple[str, Any]] | None = None, attributes: dict[str, Any] | None = None) -> Any:
    """A tracing span (a no-op context manager when tracing is off), continuing a remote parent."""
    if _TRACER is None:
        import contextlib

        return contextlib.nullcontext()
    from opentelemetry.propagate import extract

    parent = extract({k: v for k, v in metadata or () if isinstance(v, str)}) if metadata is not None else None
    return _TRACER.start_as_current_span(name, context=parent, attributes=attributes or None)


def trace_headers() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata (empty when tracing is off)."""
    if _TRACER is None:
        return []
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return list(carrier.items())
