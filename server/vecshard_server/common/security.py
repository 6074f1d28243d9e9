"""TLS for every listener, mutual TLS from coordinators to shards, and API keys on the public API.

API keys (a TOML/JSON file, e.g. a Kubernetes secret: `admin = ["k1"]`, `read = ["k2"]`) arrive in
the `x-api-key` metadata. Read keys may search, get, scroll, count, describe, list, sample and embed;
admin keys may also create, drop, add, remove, train, write payloads and indexes, and reshard.
Checked in one place (rpc.guard), for the public service only: health and reflection stay open for
probes, and shards are reached through mTLS.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from vecshard.errors import PermissionDenied, Unauthenticated
from vecshard_server.common.config import Settings

API_KEY_HEADER = "x-api-key"
INTERNAL_HEADER = "x-vecshard-internal"
# What a read-only key may call; every other public RPC needs an admin key. An allowlist, so a new RPC
# is admin-only until it is listed here (UpdateVectors was once served to read keys by a denylist).
READ_METHODS = frozenset(
    {
        "ListCollections",
        "DescribeCollection",
        "DescribeCluster",
        "Get",
        "Search",
        "Embed",
        "Sample",
        "ListModels",
        "Count",
        "Scroll",
        "Facet",
    }
)


class ApiKeys:
    def __init__(self, admin: Iterable[str], read: Iterable[str]) -> None:
        self.admin = [k for k in admin if k]
        self.read = [k for k in read if k]

    @classmethod
    def load(cls, path: Path) -> ApiKeys:
        text = path.read_text()
        raw: dict[str, Any] = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        keys = cls(raw.get("admin", []), raw.get("read", []))
        if not keys.admin and not keys.read:
            raise ValueError(f"{path} defines no API keys (expected 'admin' and/or 'read' lists)")
        return keys

    @staticmethod
    def _known(key: str, keys: list[str]) -> bool:
        return any(hmac.compare_digest(key, k) for k in keys)

    def check(self, method: str, metadata: Iterable[tuple[str, Any]] | None) -> None:
        """Raise Unauthenticated (no or unknown key) or PermissionDenied (a read key writing)."""
        key = next((str(v) for k, v in metadata or () if k == API_KEY_HEADER), "")
        if not key:
            raise Unauthenticated(f"no API key: send it in the '{API_KEY_HEADER}' metadata")
        if self._known(key, self.admin):
            return
        if not self._known(key, self.read):
            raise Unauthenticated("unknown API key")
        if method.rsplit("/", 1)[-1] not in READ_METHODS:
            raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} needs an admin API key; this key is read-only")


class InternalAuth:
    """The internal plane's check: a shard or embedder serves only callers that send the cluster's
    internal token (coordinators, replica peers) — never a public API key or client certificate."""

    def __init__(self, token: str) -> None:
        self.token = token

    def check(self, method: str, metadata: Iterable[tuple[str, Any]] | None) -> None:
        sent = next((str(v) for k, v in metadata or () if k == INTERNAL_HEADER), "")
        if not sent:
            raise Unauthenticated(
                f"{method} is internal: only coordinators and replica peers of this cluster may call it (they send "
                f"the '{INTERNAL_HEADER}' token)"
            )
        if not hmac.compare_digest(sent, self.token):
            raise Unauthenticated("wrong internal token")


def internal_metadata(settings: Settings) -> list[tuple[str, str]]:
    """What a coordinator or replica sends on every internal call."""
    token = settings.token
    return [(INTERNAL_HEADER, token)] if token else []


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_internal_listener(role: str, host: str, settings: Settings, insecure: bool) -> None:
    """A shard or embedder listening beyond loopback must authenticate its callers: an internal
    token, or mutual TLS (with a CA that signs internal certificates only). Refuse to start without
    one of them unless --insecure says so."""
    if is_loopback(host) or settings.token or settings.tls_client_ca:
        return
    if not insecure:
        raise SystemExit(
            f"vecshard {role}: refusing to listen on {host} without internal authentication: anyone who reaches "
            "this port could read and change every collection. Set VECSHARD_INTERNAL_TOKEN (or "
            "VECSHARD_INTERNAL_TOKEN_FILE) on this process and its coordinators, and/or mutual TLS with an internal "
            "CA (VECSHARD_TLS_CLIENT_CA), or listen on 127.0.0.1, or pass --insecure to accept the risk."
        )
    logging.getLogger(__name__).warning(
        "INSECURE: %s listens on %s without internal authentication (--insecure): anyone who reaches it can read "
        "and change every collection",
        role,
        host,
    )


def _read(path: Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS with this certificate; with client_ca, clients must present a certificate it signed (mTLS)."""
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=_read(client_ca),
        require_client_auth=client_ca is not None,
    )


def channel_credentials(ca: Path | None, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    """Client-side TLS: trust `ca`; present cert/key when given (mTLS)."""
    return grpc.ssl_channel_credentials(_read(ca), _read(key), _read(cert))


def shard_channel(address: str, settings: Settings, options: list[tuple[str, Any]], aio: bool = True) -> Any:
    """A channel to a shard or embedder: mutual TLS when the shard_tls_* settings are given, else
    plaintext. A synchronous channel also sends the internal token on every call; asyncio callers
    add `internal_metadata` themselves (on the hot path, cheaper than a client interceptor)."""
    module: Any = grpc.aio if aio else grpc
    if settings.shard_tls_ca is None:
        channel = module.insecure_channel(address, options=options)
    else:
        if settings.shard_tls_server_name:
            options = [*options, ("grpc.ssl_target_name_override", settings.shard_tls_server_name)]
        creds = channel_credentials(settings.shard_tls_ca, settings.shard_tls_cert, settings.shard_tls_key)
        channel = module.secure_channel(address, creds, options=options)
    metadata = internal_metadata(settings)
    return channel if aio or not metadata else grpc.intercept_channel(channel, _WithMetadata(metadata))


class _WithMetadata(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds fixed metadata (the internal token) to every unary call of a synchronous channel."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details = details._replace(metadata=[*(details.metadata or ()), *self.metadata])
        return continuation(details, request)
