"""Prometheus metrics on a separate port per role, JSON logs, and a request id followed from the
coordinator to the shards."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from vecshard import Client, InvalidArgument
from vecshard.v1 import vector_search_pb2 as pb

from .conftest import clustered
from .support import free_port, start_role


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _value(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_metrics_logs_and_request_ids(tmp_path: Path) -> None:
    shard_mp, coord_mp = free_port(), free_port()
    json_logs = ["--log-format", "json"]
    shard = start_role(
        ["shard", "--metrics-port", str(shard_mp), *json_logs], tmp_path / "s.port", stderr=tmp_path / "shard.log"
    )
    shard_addr = shard.address
    coord = start_role(
        ["coordinator", "--shard", shard_addr, "--metrics-port", str(coord_mp), *json_logs],
        tmp_path / "c.port",
        stderr=tmp_path / "coord.log",
    )
    try:
        address = coord.address
        with Client(address) as c:
            c.create_collection("m", 8, index="ivf_flat", nlist=4, train_threshold=10**6)
            c.add("m", np.arange(300), clustered(300, 8))
            for _ in range(5):
                c.search("m", clustered(2, 8), k=3)
            try:
                c.search("m", clustered(2, 8), k=0)
            except InvalidArgument:
                pass
            c.stub.Train(pb.TrainRequest(collection="m"), metadata=(("x-request-id", "trace-42"),))
        coord_text, shard_text = _metrics(coord_mp), _metrics(shard_mp)
        assert _value(coord_text, 'vecshard_rpcs_total{code="OK",method="Search",role="coordinator"}') == 5
        assert (
            _value(coord_text, 'vecshard_rpcs_total{code="INVALID_ARGUMENT",method="Search",role="coordinator"}') == 1
        )
        assert _value(coord_text, "vecshard_rpc_seconds_count{") >= 9
        assert _value(coord_text, f'vecshard_shard_call_seconds_count{{method="Search",shard="{shard_addr}"}}') == 5
        assert _value(shard_text, 'vecshard_vectors{collection="m"}') == 300
        assert _value(shard_text, 'vecshard_index_trained{collection="m"}') == 1
        assert _value(shard_text, 'vecshard_rpcs_total{code="OK",method="Search",role="shard"}') == 5
    finally:
        for p in (coord, shard):
            p.terminate()
            p.wait(30)
    shard_lines = [
        json.loads(line) for line in (tmp_path / "shard.log").read_text().splitlines() if line.startswith("{")
    ]
    assert shard_lines and all({"ts", "level", "role", "msg"} <= set(e) for e in shard_lines)
    installed = [e for e in shard_lines if "installed" in e["msg"]]
    assert installed and installed[0]["request_id"] == "trace-42"  # followed from the coordinator's caller
    coord_lines = [
        json.loads(line) for line in (tmp_path / "coord.log").read_text().splitlines() if line.startswith("{")
    ]
    assert any(e["msg"].startswith("trained m") and e["request_id"] == "trace-42" for e in coord_lines)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_answers_v1_and_v1alpha(cluster_of, version: str) -> None:  # type: ignore[no-untyped-def]
    """grpcurl, Postman and current grpc tools speak grpc.reflection.v1; older ones v1alpha. The two
    protocols share their messages, so v1alpha's classes encode what a v1 client sends."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    cluster = cluster_of(2)
    for address in (cluster.address, *(s.address for s in cluster.shards[:1])):  # (local shards: no port)
        with grpc.insecure_channel(address) as ch:
            call = ch.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            service = "vecshard.v1.VectorSearch" if address == cluster.address else "vecshard.v1.Shard"
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=service),
            ]
            listed, described = list(call(iter(requests), timeout=10))
        names = {s.name for s in listed.list_services_response.service}
        assert {service, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in described.file_descriptor_response.file_descriptor_proto
        ]
        assert any(svc.name == service.rsplit(".", 1)[1] for f in files for svc in f.service)


def test_traces_one_span_per_shard_call_under_the_search_span(tmp_path: Path) -> None:
    env = {"VECSHARD_OTEL_EXPORTER": "console"}
    quiet = ["--log-level", "ERROR"]
    shards = [
        start_role(["shard", *quiet], tmp_path / f"s{i}", env, stdout=tmp_path / f"shard{i}.out") for i in range(2)
    ]
    addrs = [s.address for s in shards]
    coord = start_role(
        ["coordinator", "--shard", addrs[0], "--shard", addrs[1], *quiet],
        tmp_path / "c",
        env,
        stdout=tmp_path / "coord.out",
    )
    try:
        with Client(coord.address) as c:
            c.create_collection("t", 4)
            c.add("t", [1, 2, 3], np.eye(3, 4))
            c.search("t", np.eye(1, 4), k=2)
    finally:
        for p in (coord, *shards):
            p.terminate()
            p.wait(30)

    def spans(path: Path) -> list[dict[str, object]]:
        text, out, decoder, i = path.read_text(), [], json.JSONDecoder(), 0
        while (i := text.find("{", i)) >= 0:
            obj, end = decoder.raw_decode(text, i)
            out.append(obj)
            i = end
        return out

    coord_spans = spans(tmp_path / "coord.out")
    search = next(s for s in coord_spans if s["name"] == "/vecshard.v1.VectorSearch/Search")  # type: ignore[union-attr]
    calls = [s for s in coord_spans if s["name"] == "shard/Search"]
    assert len(calls) == 2
    assert all(s["parent_id"] == search["context"]["span_id"] for s in calls)  # type: ignore[index]
    assert {s["attributes"]["vecshard.shard"] for s in calls} == set(addrs)  # type: ignore[index]
    shard_spans = [
        s for i in range(2) for s in spans(tmp_path / f"shard{i}.out") if s["name"] == "/vecshard.v1.Shard/Search"
    ]
    assert len(shard_spans) == 2
    call_ids = {s["context"]["span_id"] for s in calls}  # type: ignore[index]
    assert {s["parent_id"] for s in shard_spans} == call_ids  # the context crossed to the shards
    assert {s["context"]["trace_id"] for s in shard_spans} == {search["context"]["trace_id"]}  # type: ignore[index]
