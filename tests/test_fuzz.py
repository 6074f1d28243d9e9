"""Property-based fuzzing of the public RPCs with malformed inputs (hypothesis), in both shard modes:
each answer is success or a status docs/api.md documents for that RPC's user mistakes (with a
message), never INTERNAL or UNKNOWN; after each test the server is still SERVING and answers a valid
search."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecshard import Client
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster

from .support import SHARD_MODES, not_an_answer, serving

C = grpc.StatusCode
# What a request with mistakes in it may get, per RPC (docs/api.md, "Errors"). Every RPC: INVALID_ARGUMENT
# (a malformed field, or a collection name no collection can have), NOT_FOUND (no such collection or
# model) and RESOURCE_EXHAUSTED (over a size limit: docs/limits.md). Never a status of a cluster in
# trouble (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED: this one is healthy), of authentication
# (UNAUTHENTICATED, PERMISSION_DENIED: it has none), INTERNAL or UNKNOWN.
ANY_RPC = frozenset({C.INVALID_ARGUMENT, C.NOT_FOUND, C.RESOURCE_EXHAUSTED})
MISTAKES = {
    "Add": ANY_RPC | {C.FAILED_PRECONDITION, C.ALREADY_EXISTS},
    "Search": ANY_RPC | {C.FAILED_PRECONDITION},
    "Get": ANY_RPC,
    "Remove": ANY_RPC,
    "CreateCollection": ANY_RPC | {C.ALREADY_EXISTS},
    "DropCollection": ANY_RPC,
    "DescribeCollection": ANY_RPC,
    "Train": ANY_RPC | {C.FAILED_PRECONDITION},
    "Embed": ANY_RPC,
}
OUTCOMES: Counter[str] = Counter()
EXAMPLES = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Fuzzed:
    """The cluster under fuzz and a client of it."""

    cluster: LocalCluster
    client: Client

    def assert_still_serving(self) -> None:
        """SERVING, its collections there, and a valid search answered."""
        assert serving(self.cluster.address)
        c = self.client
        assert {"fz_flat", "fz_ivf"} <= {info.name for info in c.list_collections()}
        assert c.describe("fz_ivf").trained
        for name in ("fz_flat", "fz_ivf"):
            res = c.search(name, np.full((1, 4), 0.5), k=3)
            assert res.ids.shape == (1, 3) and (res.ids >= 0).all(), res


@pytest.fixture(scope="module", params=SHARD_MODES)
def fuzzed(request: pytest.FixtureRequest) -> Iterator[Fuzzed]:
    env = {"VECSHARD_MAX_MESSAGE_BYTES": str(4 << 20), "VECSHARD_MAX_EMBED_BATCH": "8"}
    with (
        LocalCluster(shards=2, env=env, log_level="ERROR", shard_mode=request.param) as cluster,
        Client(cluster.address, timeout=60) as c,
    ):
        c.create_collection("fz_flat", 4)
        c.create_collection("fz_ivf", 4, metric="cosine", index="ivf_flat", nlist=4)
        c.add("fz_flat", np.arange(50), np.random.default_rng(0).random((50, 4)))
        c.add("fz_ivf", np.arange(300), np.random.default_rng(1).random((300, 4)) + 0.1)
        c.train("fz_ivf")
        yield Fuzzed(cluster, c)
        print(f"\n{request.param} shards, fuzzed requests by outcome: {dict(sorted(OUTCOMES.items()))}")
        OUTCOMES.clear()


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


def call(method: Callable[..., object], request: object) -> grpc.StatusCode:
    """Send one fuzzed request; its outcome must be success or one of the RPC's documented mistakes."""
    rpc = getattr(method, "_method", b"").decode().rsplit("/", 1)[-1]
    try:
        method(request, timeout=60)
        code, details = C.OK, ""
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
        assert code in MISTAKES[rpc], f"{rpc} -> {code.name}: {details} for {request}"
    assert not not_an_answer(code, details), f"{rpc} -> {code.name} ({not_an_answer(code, details)}) for {request}"
    OUTCOMES[f"{rpc} {code.name}"] += 1
    return code


# Each fuzz_* sends its examples to the cluster test_fuzz gives it; test_fuzz then checks it still serves.


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
def fuzz_add(c: Client, name: str, ids: bytes, vectors, upsert: bool, texts, imgs, fp: str) -> None:  # type: ignore[no-untyped-def]
    request = pb.AddRequest(
        collection=name, ids=ids, vectors=vectors, upsert=upsert, texts=texts, images=imgs, model_fingerprint=fp
    )
    call(c.stub.Add, request)


@EXAMPLES
@given(name=names, queries=matrices, k=u32, nprobe=u32, partial=st.booleans(), texts=texts)
def fuzz_search(c: Client, name: str, queries, k: int, nprobe: int, partial: bool, texts) -> None:  # type: ignore[no-untyped-def]
    request = pb.SearchRequest(collection=name, queries=queries, k=k, nprobe=nprobe, allow_partial=partial, texts=texts)
    call(c.stub.Search, request)


@EXAMPLES
@given(name=names, ids=id_bytes, missing=st.booleans())
def fuzz_remove_and_get(c: Client, name: str, ids: bytes, missing: bool) -> None:
    call(c.stub.Get, pb.GetRequest(collection=name, ids=ids, allow_missing=missing))
    call(c.stub.Remove, pb.RemoveRequest(collection=name.replace("fz_", "zz_"), ids=ids))


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
def fuzz_collections(
    c: Client, name: str, dim: int, metric: int, index: int, nlist: int, nprobe: int, threshold: int, model: str
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
    if call(c.stub.CreateCollection, pb.CreateCollectionRequest(config=config)) == C.OK:
        assert call(c.stub.DropCollection, pb.DropCollectionRequest(name=name)) == C.OK  # just created
    call(c.stub.DescribeCollection, pb.DescribeCollectionRequest(name=name, include_centroids=True))
    call(c.stub.Train, pb.TrainRequest(collection=name if name != "fz_ivf" else "missing", max_training_points=dim))


@EXAMPLES
@given(model=st.sampled_from(["", "minilm", "nope", "x" * 200]), texts=texts, imgs=images, role=st.integers(0, 5))
def fuzz_embed(c: Client, model: str, texts, imgs, role: int) -> None:  # type: ignore[no-untyped-def]
    call(c.stub.Embed, types_pb2.EmbedRequest(model=model, texts=texts, images=imgs, role=role))


@pytest.mark.parametrize(
    "fuzz",
    [fuzz_add, fuzz_search, fuzz_remove_and_get, fuzz_collections, fuzz_embed],
    ids=["add", "search", "remove_and_get", "collections", "embed"],
)
def test_fuzz(fuzzed: Fuzzed, fuzz: Callable[[Client], None]) -> None:
    fuzz(fuzzed.client)
    fuzzed.assert_still_serving()
