"""TLS to the coordinator, mutual TLS between coordinator and shards, API keys (admin vs read-only),
with certificates made at test time."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vecshard import TLS, Client, PermissionDenied, Unavailable, VecshardError
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb

from .certs import CA
from .support import start_role


def test_tls_mtls_and_api_keys(tmp_path: Path) -> None:
    ca, other_ca = CA(tmp_path), CA(tmp_path, "some-other-ca")
    shard_cert, shard_key = ca.issue("shard-0")
    coord_cert, coord_key = ca.issue("coordinator")
    client_cert, client_key = ca.issue("intruder")  # a valid client cert, but for the wrong purpose
    keys = tmp_path / "keys.toml"
    keys.write_text('admin = ["admin-secret"]\nread = ["read-secret"]\n')
    shard_tls = {
        "VECSHARD_TLS_CERT": str(shard_cert),
        "VECSHARD_TLS_KEY": str(shard_key),
        "VECSHARD_TLS_CLIENT_CA": str(ca.path),
    }
    shard = start_role(["shard", "--log-level", "ERROR"], tmp_path / "s", shard_tls)
    shard_addr = shard.address
    coord = start_role(
        ["coordinator", "--shard", shard_addr, "--log-level", "ERROR"],
        tmp_path / "c",
        {
            "VECSHARD_TLS_CERT": str(coord_cert),
            "VECSHARD_TLS_KEY": str(coord_key),
            "VECSHARD_SHARD_TLS_CA": str(ca.path),
            "VECSHARD_SHARD_TLS_CERT": str(coord_cert),
            "VECSHARD_SHARD_TLS_KEY": str(coord_key),
            "VECSHARD_API_KEYS_FILE": str(keys),
        },
    )
    address = coord.address
    tls = TLS(root_cert=ca.path)
    try:
        with Client(address, tls=tls, timeout=20) as anonymous:
            with pytest.raises(VecshardError) as err:
                anonymous.list_collections()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with Client(address, tls=tls, api_key="wrong", timeout=20) as wrong:
            with pytest.raises(VecshardError, match="unknown API key"):
                wrong.list_collections()
        with Client(address, tls=tls, api_key="admin-secret", timeout=20) as admin:
            admin.create_collection("secure", 4)
            admin.add("secure", [1, 2], np.eye(2, 4))
        with Client(address, tls=tls, api_key="read-secret", timeout=20) as reader:
            assert reader.search("secure", np.eye(1, 4), k=1).ids[0, 0] == 1
            with pytest.raises(PermissionDenied, match="admin API key"):
                reader.add("secure", [3], np.ones((1, 4)))
            with pytest.raises(PermissionDenied):
                reader.drop_collection("secure")
        # health needs no key (probes), but still TLS
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(ca.path.read_bytes())) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        # plaintext, or a server certificate from another CA: no connection
        with Client(address, timeout=5, retries=False) as plain:
            with pytest.raises(Unavailable):
                plain.list_collections()
        with Client(address, tls=TLS(root_cert=other_ca.path), api_key="admin-secret", timeout=5, retries=False) as c:
            with pytest.raises(Unavailable):
                c.list_collections()
        # the shard only talks to holders of a certificate from its CA
        no_cert = grpc.ssl_channel_credentials(ca.path.read_bytes())
        with grpc.secure_channel(shard_addr, no_cert) as ch:
            with pytest.raises(grpc.RpcError) as rpc_err:
                shard_pb2_grpc.ShardStub(ch).ListCollections(pb.ListCollectionsRequest(), timeout=5)
            assert rpc_err.value.code() == grpc.StatusCode.UNAVAILABLE
        with_cert = grpc.ssl_channel_credentials(
            ca.path.read_bytes(), client_key.read_bytes(), client_cert.read_bytes()
        )
        with grpc.secure_channel(shard_addr, with_cert) as ch:
            names = [
                c.config.name
                for c in shard_pb2_grpc.ShardStub(ch)
                .ListCollections(pb.ListCollectionsRequest(), timeout=5)
                .collections
            ]
            assert names == ["secure"]
    finally:
        for p in (coord, shard):
            p.terminate()
            p.wait(30)
