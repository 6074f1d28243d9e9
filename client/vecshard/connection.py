"""How the SDK connects: every channel option in one place (message size, keepalive, retries, TLS,
API key), shared by `Client` and `AsyncClient`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

DEFAULT_ADDRESS = "localhost:50051"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
API_KEY_HEADER = "x-api-key"

# Retries happen inside gRPC, per the service config: only UNAVAILABLE (the server or a shard is
# momentarily unreachable) is retried, with exponential backoff, and only for calls that read.
# Writes are never retried behind the caller's back: an upsert that answered UNAVAILABLE may have
# been applied on some groups, and replaying it after another client's later write (a remove, say)
# would bring back what that write undid. A failed write is the caller's to retry, knowingly.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


READ_METHODS = (
    "ListCollections",
    "DescribeCollection",
    "Get",
    "Search",
    "Sample",
    "Embed",
    "ListModels",
)


@dataclass(frozen=True)
class TLS:
    """TLS settings: the CA that signed the server's certificate, and optionally a client
    certificate and key for mutual TLS. Paths to PEM files."""

    root_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(p: Path | None) -> bytes | None:
            return Path(p).read_bytes() if p else None

        return grpc.ssl_channel_credentials(read(self.root_cert), read(self.client_key), read(self.client_cert))


def channel_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    keepalive_s: float | None = 55.0,
    retries: bool = True,
) -> list[tuple[str, Any]]:
    """gRPC channel options: message limits, keepalive pings, and the retry service config."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1 if retries else 0),
    ]
    if keepalive_s:
        options += [
            ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    if retries:
        names = [{"service": "vecshard.v1.VectorSearch", "method": m} for m in READ_METHODS]
        config = {"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]}
        options.append(("grpc.service_config", json.dumps(config)))
    return options


def _credentials(tls: TLS | None, api_key: str | None) -> grpc.ChannelCredentials | None:
    if tls is None and api_key is None:
        return None
    if tls is None:
        raise ValueError("an API key travels only over TLS: pass tls=TLS(root_cert=...) as well")
    creds = tls.credentials()
    if api_key:
        creds = grpc.composite_channel_credentials(
            creds, grpc.metadata_call_credentials(lambda _ctx, cb: cb(((API_KEY_HEADER, api_key),), None))
        )
    return creds


def open_channel(
    address: str,
    *,
    aio: bool = False,
    tls: TLS | None = None,
    api_key: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    keepalive_s: float | None = 55.0,
    retries: bool = True,
) -> Any:
    """A sync (`grpc.Channel`) or asyncio (`grpc.aio.Channel`) channel with vecshard's options."""
    options = channel_options(max_message_bytes, keepalive_s, retries)
    creds = _credentials(tls, api_key)
    module: Any = grpc.aio if aio else grpc
    if creds is None:
        return module.insecure_channel(address, options=options)
    return module.secure_channel(address, creds, options=options)
