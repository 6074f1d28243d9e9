"""TLS for every listener, mutual TLS from coordinators to shards, and API keys on the public API.

API keys (a TOML/JSON file, e.g. a Kubernetes secret: `admin = ["k1"]`, `read = ["k2"]`) arrive in
the `x-api-key` metadata. Read keys may search, get, describe, list, sample and embed; admin keys
may also create, drop, add, remove and train. Checked in one place (rpc.guard), for the public
service only: health and reflection stay open for probes, and shards are reached through mTLS.
"""

from __future__ import annotations

import hmac
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from vecshard.errors import PermissionDenied, Unauthenticated
from vecshard_server.common.config import Settings

API_KEY_HEADER = "x-api-key"
WRITE_METHODS = frozenset({"CreateCollection", "DropCollection", "Add", "Remove", "Train"})


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
        if method.rsplit("/", 1)[-1] in WRITE_METHODS:
            raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} needs an admin API key; this key is read-only")


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
    """A channel to a shard: mutual TLS when the shard_tls_* settings are given, else plaintext."""
    module: Any = grpc.aio if aio else grpc
    if settings.shard_tls_ca is None:
        return module.insecure_channel(address, options=options)
    if settings.shard_tls_server_name:
        options = [*options, ("grpc.ssl_target_name_override", settings.shard_tls_server_name)]
    creds = channel_credentials(settings.shard_tls_ca, settings.shard_tls_cert, settings.shard_tls_key)
    return module.secure_channel(address, creds, options=options)
