"""Property-based fuzzing of every public RPC with malformed inputs (hypothesis): each answer is a
documented status, never INTERNAL/UNKNOWN, and the server keeps serving afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecshard import Client
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

C = grpc.StatusCode
DOCUMENTED = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED}
OUTCOMES: Counter[str] = Counter()
EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzz_client() -> Iterator[Client]:
    env = {"VECSHARD_MAX_MESSAGE_BYTES": str(4 << 20), "VECSHARD_MAX_EMBED_BATCH": "8"}
    with LocalCluster(shards=2, env=env, log_level="ERROR") as cluster, Client(cluster.address, timeout=60) as c:
        c.create_collection("fz_flat", 4)
        c.create_collection("fz_ivf", 4, metric="cosine", index="ivf_flat", nlist=4)
        c.add("fz_flat", np.arange(50), np.random.default_rng(0).random((50, 4)))
        c.add("fz_ivf", np.arange(300), np.random.default_rng(1).random((300, 4)) + 0.1)
        c.train("fz_ivf")
        yield c
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(cluster.address))
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        assert c.search("fz_flat", np.zeros((1, 4)) + 0.5, k=3).ids.shape == (1, 3)  # still serving
        print(f"\nfuzzed requests by outcome: {dict(sorted(OUTCOMES.items()))} (total {sum(OUTCOMES.values())})")


existing = st.sampled_from(["fz_flat", "fz_ivf"])
names = st.one_of(
    existing, existing, existing, st.sampled_from(["missing", "", "a" * 65, "bad name", "0x"]), st.text(max_size=80)
)
id_bytes = st.one_of(
    st.binary(max_size=70),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=9).map(lambda v: np.array(v, dtype="<i8").tobytes()),
    st.lists(st.integers(0, 400), max_size=9).map(lambda v: np.array(v, dtype="<i8").tobytes()),
)
u32 = st.one_of(st.integers(0, 10), st.integers(0, 2**32 - 1))
floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


@st.composite
def packed(draw: st.DrawFn) -> types_pb2.FloatMatrix:
    """A well-framed matrix, possibly holding NaN/Inf and of any (small) shape."""
    rows, cols = draw(st.integers(0, 9)), draw(st.integers(0, 6))
    values = draw(st.lists(floats, min_size=rows * cols, max_size=rows * cols))
    return types_pb2.FloatMatrix(data=np.array(values, dtype="<f4").tobytes(), rows=rows, cols=cols)


matrices = st.one_of(st.builds(types_pb2.FloatMatrix, data=st.binary(max_size=200), rows=u32, cols=u32), packed())
texts = st.lists(st.text(max_size=40), max_size=10)
images = st.lists(st.binary(max_size=60), max_size=3)


def call(method: Callable[..., object], request: object) -> None:
    try:
        method(request, timeout=60)
        code = C.OK
    except grpc.RpcError as err:
        code = err.code()
        assert code in DOCUMENTED, f"{code}: {err.details()} for {request}"
        assert err.details(), "an error without a message"
    OUTCOMES[f"{getattr(method, '_method', b'').decode().rsplit('/', 1)[-1]} {code.name}"] += 1


@EXAMPLES
@given(
    name=names,
    ids=id_bytes,
    vectors=matrices,
    upsert=st.booleans(),
    texts=texts,
    imgs=images,
    fp=st.sampled_from(["", "minilm:0:384:norm"]),
)
def test_add(fuzz_client: Client, name: str, ids: bytes, vectors, upsert: bool, texts, imgs, fp: str) -> None:  # type: ignore[no-untyped-def]
    call(
        fuzz_client.stub.Add,
        pb.AddRequest(
            collection=name, ids=ids, vectors=vectors, upsert=upsert, texts=texts, images=imgs, model_fingerprint=fp
        ),
    )


@EXAMPLES
@given(name=names, queries=matrices, k=u32, nprobe=u32, partial=st.booleans(), texts=texts)
def test_search(fuzz_client: Client, name: str, queries, k: int, nprobe: int, partial: bool, texts) -> None:  # type: ignore[no-untyped-def]
    call(
        fuzz_client.stub.Search,
        pb.SearchRequest(collection=name, queries=queries, k=k, nprobe=nprobe, allow_partial=partial, texts=texts),
    )


@EXAMPLES
@given(name=names, ids=id_bytes, missing=st.booleans())
def test_remove_and_get(fuzz_client: Client, name: str, ids: bytes, missing: bool) -> None:
    call(fuzz_client.stub.Get, pb.GetRequest(collection=name, ids=ids, allow_missing=missing))
    call(fuzz_client.stub.Remove, pb.RemoveRequest(collection=name.replace("fz_", "zz_"), ids=ids))


@EXAMPLES
@given(
    name=names,
    dim=u32,
    metric=st.integers(0, 6),
    index=st.integers(0, 4),
    nlist=u32,
    nprobe=u32,
    threshold=st.integers(0, 2**64 - 1),
    model=st.sampled_from(["", "minilm", "nope"]),
)
def test_collections(
    fuzz_client: Client,
    name: str,
    dim: int,
    metric: int,
    index: int,
    nlist: int,
    nprobe: int,
    threshold: int,
    model: str,
) -> None:
    config = types_pb2.CollectionConfig(
        name=name,
        dim=dim,
        metric=metric,
        index_type=index,
        nlist=nlist,
        nprobe=nprobe,
        train_threshold=threshold,
        embedding_model=model,
    )
    stub = fuzz_client.stub
    try:
        stub.CreateCollection(pb.CreateCollectionRequest(config=config), timeout=60)
        OUTCOMES["CreateCollection OK"] += 1
        stub.DropCollection(pb.DropCollectionRequest(name=name), timeout=60)
    except grpc.RpcError as err:
        assert err.code() in DOCUMENTED, f"{err.code()}: {err.details()} for {config}"
        OUTCOMES[f"CreateCollection {err.code().name}"] += 1
    call(stub.DescribeCollection, pb.DescribeCollectionRequest(name=name, include_centroids=True))
    call(stub.Train, pb.TrainRequest(collection=name if name != "fz_ivf" else "missing", max_training_points=dim))


@EXAMPLES
@given(model=st.sampled_from(["", "minilm", "nope", "x" * 200]), texts=texts, imgs=images, role=st.integers(0, 5))
def test_embed(fuzz_client: Client, model: str, texts, imgs, role: int) -> None:  # type: ignore[no-untyped-def]
    call(fuzz_client.stub.Embed, types_pb2.EmbedRequest(model=model, texts=texts, images=imgs, role=role))
