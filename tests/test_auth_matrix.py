"""No way around authentication: every RPC of every service, with every kind of credential, at every
port of every deployment shape. Counted: calls served that must have been refused. It must be 0.

"Served" means the handler ran (any answer but UNAUTHENTICATED, PERMISSION_DENIED, or no connection);
requests are empty messages, so a served call changes nothing. Health and reflection stay open by
design (probes, tooling) and are not in the matrix. The Kubernetes shape is checked by
test_deploy.test_manifests_run_as_written (the rendered manifests run as written).
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from vecshard.v1 import embedder_pb2, shard_pb2, vector_search_pb2  # noqa: F401 - register the services

from .certs import CA
from .support import run_vecshard, serve_process, service_methods, start_role

PUBLIC, INTERNAL, EMBEDDER = "vecshard.v1.VectorSearch", "vecshard.v1.Shard", "vecshard.v1.Embedder"
SERVICES = {"coordinator": PUBLIC, "shard": INTERNAL, "embedder": EMBEDDER}
# What a read-only key may call (the test's own list, not the server's): everything else changes data,
# placement or backups and needs an admin key.
READS = {
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
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
INTERNAL_TOKEN = "s3cret-internal"  # the roles-alone shape's (serve makes its own, unknown here)


@dataclass
class Credential:
    name: str
    metadata: list[tuple[str, str]]
    client_cert: tuple[bytes, bytes] | None = None  # (key, cert) presented over TLS


@dataclass
class Port:
    kind: str  # "coordinator", "shard" or "embedder"
    address: str
    root_ca: bytes | None = None  # TLS when set


def _channel(port: Port, cred: Credential) -> grpc.Channel:
    if port.root_ca is None:
        return grpc.insecure_channel(port.address)
    key, cert = cred.client_cert or (None, None)
    return grpc.secure_channel(port.address, grpc.ssl_channel_credentials(port.root_ca, key, cert))


def _served(channel: grpc.Channel, service: str, method: str, request_class: type, metadata: list) -> bool:
    call = channel.unary_unary(
        f"/{service}/{method}", request_serializer=lambda m: m.SerializeToString(), response_deserializer=lambda b: b
    )
    try:
        call(request_class(), timeout=5, metadata=metadata or None)
        return True
    except grpc.RpcError as err:
        if err.code() in REFUSED:
            return False
        if err.code() == grpc.StatusCode.UNAVAILABLE and "handler" not in (err.details() or ""):
            return False  # no connection (e.g. TLS without an accepted client certificate)
        return True


def _must_refuse(keys: bool, port: str, cred: Credential, method: str) -> bool:
    """What the call must get, from what it carries: shards serve only the cluster's internal token;
    with API keys on, the coordinator serves admin keys everything and read keys only the reads."""
    sent = dict(cred.metadata)
    if cred.name == "no client cert":  # every port of that shape requires mutual TLS
        return True
    if port in ("shard", "embedder"):  # the internal plane: only the cluster's own processes
        return sent.get("x-vecshard-internal") != INTERNAL_TOKEN
    if not keys:
        return False
    key = sent.get("x-api-key")
    if key == "admin-key":
        return False
    if key == "read-key":
        return method not in READS
    return True


def run_matrix(ports: list[Port], credentials: list[Credential], keys: bool) -> Counter[str]:
    counts: Counter[str] = Counter()
    for p in ports:
        service, port = SERVICES[p.kind], p.kind
        for cred in credentials:
            with _channel(p, cred) as ch:
                for method, request_class, _ in service_methods(service):
                    served = _served(ch, service, method, request_class, cred.metadata)
                    refuse = _must_refuse(keys, port, cred, method)
                    counts["calls"] += 1
                    counts["served" if served else "refused"] += 1
                    if served and refuse:
                        counts["served_when_refused"] += 1
                        counts[f"VIOLATION {port} {cred.name} {method}"] += 1
                    if not served and not refuse:
                        counts[f"unexpectedly refused {port} {cred.name} {method}"] += 1
    return counts


def _serve(
    tmp: Path, env: dict[str, str], mode: str = "remote"
) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """`vecshard serve`; yields (process, coordinator address, shard addresses: none in local mode,
    where the shards have no port of their own)."""
    proc, address, shards = serve_process(tmp / "data", "--shard-mode", mode, env=env)
    try:
        if mode == "local":
            assert shards == ["local-shard-0", "local-shard-1"], shards
            shards = []
        yield proc, address, shards
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def _keys(tmp: Path) -> Path:
    keys = tmp / "keys.toml"
    keys.write_text('admin = ["admin-key"]\nread = ["read-key"]\n')
    return keys


API = [
    Credential("no credential", []),
    Credential("wrong key", [("x-api-key", "nope")]),
    Credential("read key", [("x-api-key", "read-key")]),
    Credential("admin key", [("x-api-key", "admin-key")]),
    Credential("public token guess", [("x-vecshard-internal", "guess")]),
]


@pytest.mark.parametrize("mode", ["remote", "local"])
@pytest.mark.parametrize("keys", [False, True], ids=["serve-plaintext", "serve-plaintext-keys"])
def test_serve_plaintext(tmp_path: Path, keys: bool, mode: str) -> None:
    env = {"VECSHARD_API_KEYS_FILE": str(_keys(tmp_path))} if keys else {}
    for _, address, shards in _serve(tmp_path, env, mode):
        assert all(s.startswith("127.0.0.1:") for s in shards), shards  # shards stay on loopback
        counts = run_matrix([Port("coordinator", address), *(Port("shard", a) for a in shards)], API, keys)
        print(f"\nauth matrix, vecshard serve plaintext{' + API keys' if keys else ''}: {dict(counts)}")
        assert counts["served_when_refused"] == 0, counts
        assert not [k for k in counts if k.startswith("unexpectedly")], counts


@pytest.mark.parametrize("mode", ["remote", "local"])
def test_serve_with_tls_and_keys(tmp_path: Path, mode: str) -> None:
    """Every process of serve gets the same TLS settings and client CA: a client certificate made for
    the public API was accepted by the shard ports (18 of 18 calls). The internal token stops it."""
    ca = CA(tmp_path)
    cert, key = ca.issue("vecshard")
    client_cert, client_key = ca.issue("a-public-client")
    env = {
        "VECSHARD_TLS_CERT": str(cert),
        "VECSHARD_TLS_KEY": str(key),
        "VECSHARD_TLS_CLIENT_CA": str(ca.path),
        "VECSHARD_SHARD_TLS_CA": str(ca.path),
        "VECSHARD_SHARD_TLS_CERT": str(cert),
        "VECSHARD_SHARD_TLS_KEY": str(key),
        "VECSHARD_API_KEYS_FILE": str(_keys(tmp_path)),
    }
    pub = (client_key.read_bytes(), client_cert.read_bytes())
    creds = [Credential(c.name + " + public client cert", c.metadata, pub) for c in API]
    creds.append(Credential("no client cert", [("x-api-key", "admin-key")]))
    for _, address, shards in _serve(tmp_path, env, mode):
        root = ca.path.read_bytes()
        counts = run_matrix(
            [Port("coordinator", address, root), *(Port("shard", a, root) for a in shards)], creds, True
        )
        print(f"\nauth matrix, vecshard serve TLS + mTLS + API keys: {dict(counts)}")
        assert counts["served_when_refused"] == 0, counts
        assert not [k for k in counts if k.startswith("unexpectedly")], counts


def test_roles_alone_with_mtls_and_internal_token(tmp_path: Path) -> None:
    ca, internal_ca = CA(tmp_path), CA(tmp_path, "internal-ca")
    cert, key = ca.issue("coordinator")
    shard_cert, shard_key = internal_ca.issue("shard")
    client_cert, client_key = ca.issue("a-public-client")
    token = {"VECSHARD_INTERNAL_TOKEN": INTERNAL_TOKEN}
    shard_env = {
        "VECSHARD_TLS_CERT": str(shard_cert),
        "VECSHARD_TLS_KEY": str(shard_key),
        "VECSHARD_TLS_CLIENT_CA": str(internal_ca.path),
        **token,
    }
    shard = start_role(["shard", "--log-level", "ERROR"], tmp_path / "s.port", shard_env)
    embedder = start_role(["embedder", "--log-level", "ERROR"], tmp_path / "e.port", shard_env)
    coord_env = {
        "VECSHARD_TLS_CERT": str(cert),
        "VECSHARD_TLS_KEY": str(key),
        "VECSHARD_SHARD_TLS_CA": str(internal_ca.path),
        "VECSHARD_SHARD_TLS_CERT": str(shard_cert),
        "VECSHARD_SHARD_TLS_KEY": str(shard_key),
        "VECSHARD_API_KEYS_FILE": str(_keys(tmp_path)),
        **token,
    }
    coord = start_role(
        ["coordinator", "--shard", shard.address, "--log-level", "ERROR"], tmp_path / "c.port", coord_env
    )
    try:
        pub = (client_key.read_bytes(), client_cert.read_bytes())
        internal = (shard_key.read_bytes(), shard_cert.read_bytes())
        creds = [
            *API,
            Credential("public client cert", [("x-api-key", "admin-key")], pub),
            Credential("internal cert without token", [], internal),
            Credential("internal token", [("x-vecshard-internal", INTERNAL_TOKEN)], internal),
        ]
        # The coordinator speaks TLS with the public CA, the shard with the internal one (and mTLS).
        counts = run_matrix([Port("coordinator", coord.address, ca.path.read_bytes())], creds, True)
        internal_root = internal_ca.path.read_bytes()
        shard_counts = run_matrix([Port("shard", shard.address, internal_root)], creds, True)
        embedder_counts = run_matrix([Port("embedder", embedder.address, internal_root)], creds, True)
        print(
            f"\nauth matrix, roles alone (mTLS with an internal CA + token): coordinator {dict(counts)}; "
            f"shard {dict(shard_counts)}; embedder {dict(embedder_counts)}"
        )
        for c in (counts, shard_counts, embedder_counts):
            assert c["served_when_refused"] == 0, c
            assert not [k for k in c if k.startswith("unexpectedly")], c
        assert embedder_counts["served"] > 0  # the internal token is served: the matrix can tell
    finally:
        for p in (coord, shard, embedder):
            p.terminate()
            p.wait(30)


def test_a_shard_beyond_loopback_without_internal_auth_refuses_to_start(tmp_path: Path) -> None:
    result = run_vecshard("shard", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode != 0 and "refusing to listen on 0.0.0.0 without internal authentication" in result.stderr
    assert "--insecure" in result.stderr
