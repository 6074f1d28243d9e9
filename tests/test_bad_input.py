"""Every bad input gets its status code and a message saying what to fix, and nothing is written.

Requests go through the raw generated stub (as any-language clients send them), so the server's own
checks are tested, not the SDK's; a cluster with small limits makes the limits reachable.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from vecshard import Client, InvalidArgument
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

from .conftest import clustered
from .support import expect_status, run_vecshard, service_methods

LIMITS = {
    "VECSHARD_MAX_MESSAGE_BYTES": str(1024 * 1024),
    "VECSHARD_MAX_K": "100",
    "VECSHARD_MAX_BATCH": "3000",
    "VECSHARD_MAX_DIM": "512",
    "VECSHARD_MAX_NLIST": "256",
    "VECSHARD_MAX_COLLECTIONS": "6",
    "VECSHARD_MAX_VECTORS_PER_SHARD": "1000",
}
DIM = 8
C = grpc.StatusCode


@pytest.fixture(scope="module")
def limited_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(shards=2, env=LIMITS, log_level="ERROR") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def limited(limited_cluster: LocalCluster) -> Iterator[Client]:
    # The client allows big messages, so the limit that answers is the server's.
    with Client(limited_cluster.address, timeout=30) as c:
        c.create_collection("flat", DIM)
        c.create_collection("ivf", DIM, index="ivf_flat", nlist=16)
        c.create_collection("cos", DIM, metric="cosine")
        c.add("flat", np.arange(100), clustered(100, DIM))
        c.add("cos", np.arange(10), clustered(10, DIM))
        yield c


def m(x: np.ndarray, rows: int | None = None, cols: int | None = None, data: bytes | None = None):
    x = np.ascontiguousarray(x, dtype="<f4")
    return types_pb2.FloatMatrix(
        data=x.tobytes() if data is None else data,
        rows=x.shape[0] if rows is None else rows,
        cols=x.shape[1] if cols is None else cols,
    )


def ids(*values: int) -> bytes:
    return np.array(values, dtype="<i8").tobytes()


def add(coll: str, id_bytes: bytes, mat: types_pb2.FloatMatrix, upsert: bool = False) -> pb.AddRequest:
    return pb.AddRequest(collection=coll, ids=id_bytes, vectors=mat, upsert=upsert)


def cfg(**kw) -> pb.CreateCollectionRequest:
    base = {"name": "newcoll", "dim": DIM, "metric": types_pb2.METRIC_L2, "index_type": types_pb2.INDEX_TYPE_FLAT}
    return pb.CreateCollectionRequest(config=types_pb2.CollectionConfig(**{**base, **kw}))


IVF = types_pb2.INDEX_TYPE_IVF_FLAT


@pytest.mark.parametrize(
    ("request_", "code", "match"),
    [
        (cfg(name=""), C.INVALID_ARGUMENT, "name"),
        (cfg(name="9lives"), C.INVALID_ARGUMENT, "a letter first"),
        (cfg(name="x" * 65), C.INVALID_ARGUMENT, "1-64"),
        (cfg(name="a/b"), C.INVALID_ARGUMENT, "name"),
        (cfg(name="newcoll\n"), C.INVALID_ARGUMENT, "name"),  # a $ anchor once let this through
        (cfg(dim=0), C.INVALID_ARGUMENT, "dim"),
        (cfg(dim=513), C.INVALID_ARGUMENT, "between 1 and 512"),
        (cfg(metric=0), C.INVALID_ARGUMENT, "metric"),
        (cfg(metric=9), C.INVALID_ARGUMENT, "metric"),
        (cfg(index_type=0), C.INVALID_ARGUMENT, "index_type"),
        (cfg(nlist=4), C.INVALID_ARGUMENT, "nlist applies to IVF collections only"),
        (cfg(index_type=IVF), C.INVALID_ARGUMENT, "nlist between 1 and 256"),
        (cfg(index_type=IVF, nlist=257), C.INVALID_ARGUMENT, "nlist"),
        (cfg(index_type=IVF, nlist=8, nprobe=9), C.INVALID_ARGUMENT, "cannot exceed nlist"),
        (cfg(index_type=IVF, nlist=8, train_threshold=7), C.INVALID_ARGUMENT, "train_threshold"),
        (cfg(name="flat"), C.ALREADY_EXISTS, "already exists"),
    ],
)
def test_create_collection_refuses(limited: Client, request_, code, match) -> None:
    expect_status(code, limited.stub.CreateCollection, request_, match=match)


def test_max_collections(limited: Client) -> None:
    names = [i.name for i in limited.list_collections()]
    made = []
    try:
        for n in range(6 - len(names)):
            limited.stub.CreateCollection(cfg(name=f"fill{n}"))
            made.append(f"fill{n}")
        expect_status(C.RESOURCE_EXHAUSTED, limited.stub.CreateCollection, cfg(name="onemore"), match="max_collections")
    finally:
        for n in made:
            limited.drop_collection(n)


X = clustered(4, DIM, seed=3)
NAN = X.copy()
NAN[2, 1] = np.nan
INF = X.copy()
INF[0, 0] = np.inf


@pytest.mark.parametrize(
    ("request_", "code", "match"),
    [
        (add("nope", ids(1), m(X[:1])), C.NOT_FOUND, "does not exist"),
        (add("bad name!", ids(1), m(X[:1])), C.INVALID_ARGUMENT, "name"),
        (add("flat", b"", m(X[:0])), C.INVALID_ARGUMENT, "empty"),
        (add("flat", ids(1000, 1001, 1002, 1003)[:-3], m(X)), C.INVALID_ARGUMENT, "multiple of 8"),
        (add("flat", ids(1000, 1001, 1002), m(X)), C.INVALID_ARGUMENT, "3 ids for 4 vectors"),
        (add("flat", ids(1000, 1001, 1002, 1003), m(X, rows=5)), C.INVALID_ARGUMENT, "bytes"),
        (add("flat", ids(1000, 1001, 1002, 1003), m(X, data=X.tobytes()[:-1])), C.INVALID_ARGUMENT, "bytes"),
        (add("flat", ids(1000, 1001), m(clustered(2, DIM + 1))), C.INVALID_ARGUMENT, "dimension 9"),
        (add("flat", ids(1000, 1001, 1002, 1003), m(NAN)), C.INVALID_ARGUMENT, "NaN or Inf in rows 2"),
        (add("flat", ids(1000, 1001, 1002, 1003), m(INF)), C.INVALID_ARGUMENT, "NaN or Inf"),
        (add("flat", ids(1000, -5, 1002, 1003), m(X)), C.INVALID_ARGUMENT, ">= 0"),
        (add("flat", ids(1000, 1001, 1000, 1003), m(X)), C.INVALID_ARGUMENT, "must be unique within one request"),
        (add("flat", ids(1000, 1001, 1002, 5), m(X)), C.ALREADY_EXISTS, "upsert"),
        (add("cos", ids(1000, 1001), m(np.vstack([X[:1], np.zeros((1, DIM))]))), C.INVALID_ARGUMENT, "zero"),
        (add("flat", ids(1000), m(np.full((1, DIM), 3e38))), C.INVALID_ARGUMENT, "overflow float32"),
        (add("cos", ids(1000), m(np.full((1, DIM), 3e38))), C.INVALID_ARGUMENT, "overflow float32"),
        (
            add("flat", np.arange(1000, 4001, dtype="<i8").tobytes(), m(clustered(3001, DIM))),
            C.RESOURCE_EXHAUSTED,
            "max_batch",
        ),
        (
            add("flat", np.arange(1000, 3000, dtype="<i8").tobytes(), m(clustered(2000, DIM))),
            C.RESOURCE_EXHAUSTED,
            "max_vectors_per_shard",
        ),
        (add("flat", ids(*range(1000, 1000 + 2**15)), m(clustered(2**15, DIM))), C.RESOURCE_EXHAUSTED, ""),
    ],
)
def test_add_refuses_and_writes_nothing(limited: Client, request_, code, match) -> None:
    before = limited.describe("flat").count
    expect_status(code, limited.stub.Add, request_, match=match)
    assert limited.describe("flat").count == before
    got = limited.get("flat", np.arange(1000, 1004), allow_missing=True)
    assert np.isnan(got).all(), "a refused Add left vectors behind"


def search(coll: str, q: np.ndarray, k: int = 5, nprobe: int = 0, **kw) -> pb.SearchRequest:
    return pb.SearchRequest(collection=coll, queries=m(q), k=k, nprobe=nprobe, **kw)


@pytest.mark.parametrize(
    ("request_", "code", "match"),
    [
        (search("nope", X), C.NOT_FOUND, "does not exist"),
        (search("flat", X[:0]), C.INVALID_ARGUMENT, "empty"),
        (search("flat", clustered(2, DIM + 2)), C.INVALID_ARGUMENT, "dimension"),
        (search("flat", NAN), C.INVALID_ARGUMENT, "NaN"),
        (search("flat", X, k=0), C.INVALID_ARGUMENT, "k must be between 1 and max_k=100"),
        (search("flat", X, k=101), C.INVALID_ARGUMENT, "max_k=100"),
        (search("flat", X, nprobe=2), C.INVALID_ARGUMENT, "FLAT"),
        (search("ivf", X, nprobe=17), C.INVALID_ARGUMENT, "cannot exceed"),
        (search("cos", np.zeros((1, DIM))), C.INVALID_ARGUMENT, "zero"),
        (search("flat", np.full((1, DIM), -3e38)), C.INVALID_ARGUMENT, "overflow float32"),
        (search("flat", clustered(2000, DIM), k=100), C.RESOURCE_EXHAUSTED, "fewer queries"),
        (pb.SearchRequest(collection="flat", queries=m(X, data=b"\0" * 3), k=1), C.INVALID_ARGUMENT, "bytes"),
    ],
)
def test_search_refuses(limited: Client, request_, code, match) -> None:
    expect_status(code, limited.stub.Search, request_, match=match)


def test_other_rpcs_refuse(limited: Client) -> None:
    s = limited.stub
    expect_status(C.INVALID_ARGUMENT, s.Remove, pb.RemoveRequest(collection="flat", ids=b""), match="empty")
    expect_status(C.INVALID_ARGUMENT, s.Remove, pb.RemoveRequest(collection="flat", ids=ids(-1)), match=">= 0")
    expect_status(C.NOT_FOUND, s.Remove, pb.RemoveRequest(collection="nope", ids=ids(1)))
    expect_status(C.INVALID_ARGUMENT, s.Get, pb.GetRequest(collection="flat", ids=b"\1\2"), match="multiple of 8")
    expect_status(C.NOT_FOUND, s.Get, pb.GetRequest(collection="flat", ids=ids(1, 5000)), match="5000")
    too_many = np.arange(2900, dtype="<i8").tobytes()  # 2900 x 8 dims x 4 bytes fit in 1 MiB
    assert s.Get(pb.GetRequest(collection="flat", ids=too_many, allow_missing=True)).vectors.rows == 2900
    big = pb.CreateCollectionRequest(config=types_pb2.CollectionConfig(name="wide", dim=512, metric=1, index_type=1))
    s.CreateCollection(big)
    try:
        expect_status(C.RESOURCE_EXHAUSTED, s.Get, pb.GetRequest(collection="wide", ids=too_many), match="ids per call")
    finally:
        limited.drop_collection("wide")
    expect_status(C.NOT_FOUND, s.DescribeCollection, pb.DescribeCollectionRequest(name="nope"))
    expect_status(C.INVALID_ARGUMENT, s.DescribeCollection, pb.DescribeCollectionRequest(name=""))
    expect_status(C.NOT_FOUND, s.DropCollection, pb.DropCollectionRequest(name="nope"))
    expect_status(C.FAILED_PRECONDITION, s.Train, pb.TrainRequest(collection="flat"), match="FLAT")
    expect_status(C.FAILED_PRECONDITION, s.Train, pb.TrainRequest(collection="ivf"), match="add more vectors")
    assert limited.describe("flat").count == 100  # and the server still serves


def test_sdk_checks_locally_before_sending(limited: Client) -> None:
    with pytest.raises(InvalidArgument, match="must be unique within one request"):
        limited.add("flat", [1, 1], clustered(2, DIM))
    with pytest.raises(InvalidArgument, match="2 ids for 3 vectors"):
        limited.add("flat", [7001, 7002], clustered(3, DIM))
    with pytest.raises(InvalidArgument, match="unknown metric"):
        limited.create_collection("x", 4, metric="hamming")
    assert limited.describe("flat").count == 100


def test_found_by_attack_each_gets_its_status(limited: Client) -> None:
    """Cases an outside attack turned into UNKNOWN, INTERNAL or RESOURCE_EXHAUSTED."""
    s = limited.stub
    details = expect_status(C.INVALID_ARGUMENT, s.DescribeCollection, pb.DescribeCollectionRequest(name="x" * 20000))
    assert len(details) <= 1000 and "20000 characters" in details
    expect_status(
        C.INVALID_ARGUMENT, s.Train, pb.TrainRequest(collection="ivf", max_training_points=5), match="below nlist"
    )
    top = 2**64 - 1
    assert s.Sample(pb.SampleRequest(collection="flat", max_points=10, seed=top)).ids
    limited.create_collection("seeded", DIM, index="ivf_flat", nlist=2, train_threshold=1000)
    try:
        limited.add("seeded", np.arange(20), clustered(20, DIM))
        assert s.Train(pb.TrainRequest(collection="seeded", seed=top)).training_state == pb.TRAINING_STATE_TRAINED
    finally:
        limited.drop_collection("seeded")


GARBAGE = [b"\xff", b"\x0a\xff\x01", b"\x12\x05ab", b"\x08" + b"\xff" * 11]


@pytest.mark.parametrize("service", ["vecshard.v1.VectorSearch", "vecshard.v1.Shard"])
def test_undecodable_bytes_get_invalid_argument_on_every_rpc(limited_cluster: LocalCluster, service: str) -> None:
    """Raw bytes that are no valid message once got UNKNOWN (DecodeError raised in grpcio)."""
    from vecshard.v1 import shard_pb2  # noqa: F401 - registers vecshard.v1.Shard

    address = limited_cluster.address if service.endswith("VectorSearch") else limited_cluster.shards[0].address
    with grpc.insecure_channel(address) as ch:
        for method, _, _ in service_methods(service):
            call = ch.unary_unary(f"/{service}/{method}")
            for blob in GARBAGE:
                with pytest.raises(grpc.RpcError) as info:
                    call(blob, timeout=10)
                assert info.value.code() == C.INVALID_ARGUMENT, (method, blob, info.value.details())
                assert "not a valid vecshard.v1." in info.value.details()
    with Client(limited_cluster.address) as c:
        assert c.describe("flat").count == 100  # still serving, nothing written


def test_a_busy_port_fails_to_bind_naming_it(limited_cluster: LocalCluster) -> None:
    """grpc's SO_REUSEPORT once let a second server share a port and split its connections."""
    port = limited_cluster.shards[0].port
    result = run_vecshard("shard", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr, result.stderr
