"""Compressed IVF kinds (IVF_SQ8, IVF_SQFP16, IVF_PQ), with and without refine.

The coordinator trains the whole index once (coarse centroids and the SQ ranges or PQ codebooks)
and installs the same trained state on every shard; DescribeCollection(include_centroids) hands it
out as `codec`, an empty faiss index. So through a running cluster, for S = 1, 2, 3 shards:
- a search equals one in-process faiss index built from that codec over the same data;
- with refine_factor r, it equals faiss's IndexRefineFlat over that index (k_factor r);
- Get returns the exact float vectors (kept on disk), not the lossy codes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import pytest

from vecshard import Client, InvalidArgument

from .conftest import clustered
from .support import run_vecshard

DIM, N, NLIST, K = 24, 3000, 16, 10
KINDS = ["ivf_sq8", "ivf_sqfp16", "ivf_pq"]


def ranked(D: np.ndarray, I: np.ndarray, larger: bool, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows re-ordered by (distance in the metric's direction, id), cut to k: vecshard's order."""
    key = -D if larger else D
    order = np.lexsort((np.where(I >= 0, I, np.iinfo(np.int64).max), key), axis=1)[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """Same ids in the same places and distances within float error; where float noise swapped two
    near-equal distances, the ids may differ only within such a near-tie."""
    (D, I), (rD, rI) = got, want
    np.testing.assert_allclose(D, rD, rtol=1e-4, atol=1e-3)
    for row in np.flatnonzero((I != rI).any(axis=1)):
        for j in np.flatnonzero(I[row] != rI[row]):
            near = np.isclose(rD[row], rD[row, j], rtol=1e-4, atol=1e-3)
            assert near.sum() > 1 or j == K - 1, (row, j, I[row], rI[row], D[row], rD[row])


def build(c: Client, name: str, kind: str, metric: str, seed: int, **extra: int):
    rng = np.random.default_rng(seed)
    data = clustered(N, DIM, seed=seed)
    ids = rng.choice(10**12, size=N, replace=False).astype(np.int64)
    queries = clustered(30, DIM, seed=99) + rng.normal(0, 0.5, size=(30, DIM)).astype(np.float32)
    pq = {"pq_m": 8} if kind == "ivf_pq" else {}
    c.create_collection(
        name, DIM, metric=metric, index=kind, nlist=NLIST, nprobe=4, train_threshold=10**9, **pq, **extra
    )
    for part in np.array_split(np.arange(N), 3):
        c.add(name, ids[part], data[part])
    info = c.train(name)
    assert info.trained and all(s.trained for s in info.shards)
    local_data, local_q = data.copy(), queries.copy()
    if metric == "cosine":
        faiss.normalize_L2(local_data)
        faiss.normalize_L2(local_q)
    codec = c.describe(name, include_centroids=True).codec
    assert codec
    return data, ids, local_data, local_q, queries, codec


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("metric", ["l2", "inner_product", "cosine"])
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_sharded_equals_single_index_of_the_codec(
    client_of: Callable[[int], Client], name: str, shards: int, metric: str, kind: str
) -> None:
    c = client_of(shards)
    data, ids, local_data, local_q, queries, codec = build(c, name, kind, metric, seed=shards * 7 + len(metric))
    single = faiss.deserialize_index(np.frombuffer(codec, dtype=np.uint8))
    assert single.ntotal == 0 and single.is_trained and single.nlist == NLIST
    single.add_with_ids(local_data, ids)
    larger = metric != "l2"
    for nprobe in (1, 4, NLIST):
        single.nprobe = nprobe
        assert_same(c.search(name, queries, K, nprobe=nprobe), ranked(*single.search(local_q, K + 20), larger, K))

    # Get returns the float vectors themselves (the codes are lossy), normalised for cosine.
    got = c.get(name, ids[:50])
    if metric == "cosine":  # (normalised by the server, here by faiss: float rounding apart)
        np.testing.assert_allclose(got, local_data[:50], rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, data[:50])

    # Refine: the best k * r of all shards by code distance, re-ranked by exact distance, as
    # IndexRefineFlat over the single index (sequential ids there: it looks vectors up by label).
    base = faiss.deserialize_index(np.frombuffer(codec, dtype=np.uint8))
    refine = faiss.IndexRefineFlat(base)
    refine.add(local_data)
    for r in (2, 4):
        params = faiss.IndexRefineSearchParameters(k_factor=r, base_index_params=faiss.SearchParametersIVF(nprobe=4))
        rD, rI = refine.search(local_q, K, params=params)
        want = ranked(rD, np.where(rI >= 0, ids[np.maximum(rI, 0)], -1), larger, K)
        assert_same(c.search(name, queries, K, refine_factor=r), want)
    c.drop_collection(name)


def test_refine_factor_of_the_collection_is_the_default(client: Client, name: str) -> None:
    data, ids, local_data, local_q, queries, codec = build(client, name, "ivf_pq", "l2", seed=5, refine_factor=3)
    assert client.describe(name).refine_factor == 3
    base = faiss.deserialize_index(np.frombuffer(codec, dtype=np.uint8))
    refine = faiss.IndexRefineFlat(base)
    refine.add(local_data)
    params = faiss.IndexRefineSearchParameters(k_factor=3, base_index_params=faiss.SearchParametersIVF(nprobe=4))
    rD, rI = refine.search(local_q, K, params=params)
    assert_same(client.search(name, queries, K), ranked(rD, ids[rI], False, K))
    # refine_factor=1 turns it off for one search: the plain compressed distances.
    base = faiss.deserialize_index(np.frombuffer(codec, dtype=np.uint8))
    base.add_with_ids(local_data, ids)
    base.nprobe = 4
    assert_same(client.search(name, queries, K, refine_factor=1), ranked(*base.search(local_q, K + 20), False, K))


def test_writes_after_training_stay_exact(client: Client, name: str) -> None:
    """Upserts and removes after training: the float store follows (Get, refine), the index too."""
    data, ids, local_data, local_q, queries, codec = build(client, name, "ivf_sq8", "l2", seed=11)
    rng = np.random.default_rng(3)
    changed = ids[:300]
    new = rng.normal(size=(300, DIM)).astype(np.float32)
    client.add(name, changed, new, upsert=True)
    client.remove(name, ids[300:600])
    np.testing.assert_array_equal(client.get(name, changed), new)
    keep = np.concatenate([np.arange(300), np.arange(600, N)])
    all_data = np.concatenate([new, data[600:]])
    all_ids = ids[keep]
    single = faiss.deserialize_index(np.frombuffer(codec, dtype=np.uint8))
    single.add_with_ids(all_data, all_ids)
    single.nprobe = NLIST
    assert_same(client.search(name, queries, K, nprobe=NLIST), ranked(*single.search(queries, K + 20), False, K))
    assert client.describe(name).count == N - 300


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"index": "ivf_pq", "metric": "l1", "nlist": 4}, "use IVF_FLAT for L1"),
        ({"index": "ivf_pq", "nlist": 4, "pq_m": 5}, "pq_m (5) must divide dim (24)"),
        ({"index": "ivf_pq", "nlist": 4, "pq_nbits": 17}, "pq_nbits must be between 1 and 16"),
        ({"index": "ivf_sq8", "nlist": 4, "pq_m": 4}, "apply to IVF_PQ only"),
        ({"index": "ivf_flat", "nlist": 4, "refine_factor": 2}, "refine_factor applies to IVF_SQ8"),
        ({"index": "flat", "refine_factor": 2}, "applies to IVF collections only"),
        ({"index": "ivf_sq8", "nlist": 4, "refine_factor": 65}, "refine_factor must be at most 64"),
    ],
)
def test_bad_configs(client: Client, name: str, kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(InvalidArgument, match=text.replace("(", r"\(").replace(")", r"\)")):
        client.create_collection(name, DIM, **kwargs)  # type: ignore[arg-type]
    assert name not in [c.name for c in client.list_collections()]


def test_bad_refine_in_search(client: Client, name: str) -> None:
    client.create_collection(name, DIM, index="ivf_flat", nlist=4)
    client.add(name, np.arange(10), np.ones((10, DIM), np.float32))
    with pytest.raises(InvalidArgument, match="refine_factor applies to IVF_SQ8"):
        client.search(name, np.ones((1, DIM), np.float32), 3, refine_factor=2)
    other = name + "b"
    client.create_collection(other, DIM, index="ivf_sq8", nlist=4)
    client.add(other, np.arange(10), np.ones((10, DIM), np.float32))
    with pytest.raises(InvalidArgument, match="over max_k"):
        client.search(other, np.ones((1, DIM), np.float32), 1000, refine_factor=64)
    with pytest.raises(InvalidArgument, match="at most 64"):
        client.search(other, np.ones((1, DIM), np.float32), 3, refine_factor=65)


def test_kill_9_and_restart_keep_codes_and_floats(tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    """kill -9 (log replay: the install record carries the codec), then a graceful restart
    (snapshots: codes in index.faiss, floats in vectors.npy, codec in codec.faiss): the same
    results and vectors each time; a damaged vectors.npy refuses to start."""
    from vecshard_server.cluster.local import LocalCluster

    with LocalCluster(shards=2, data_dir=tmp_path, log_level="ERROR") as cluster:
        with Client(cluster.address, timeout=60) as c:
            data, ids, _, _, queries, codec = build(c, name, "ivf_pq", "l2", seed=21, refine_factor=2)
            c.add(name, ids[:100], data[100:200], upsert=True)
            c.remove(name, ids[200:300])
            before = c.search(name, queries, K, nprobe=NLIST)
            vectors = c.get(name, ids[:100])
            for shard in cluster.shards:
                shard.kill()
            for shard in cluster.shards:
                shard.restart()
            assert c.describe(name, include_centroids=True).codec == codec
            after = c.search(name, queries, K, nprobe=NLIST)
            np.testing.assert_array_equal(after.ids, before.ids)
            np.testing.assert_array_equal(c.get(name, ids[:100]), vectors)
            for shard in cluster.shards:
                shard.terminate()  # graceful: writes snapshots
            for shard in cluster.shards:
                assert shard.wait(60) == 0
                shard.restart()
            np.testing.assert_array_equal(c.search(name, queries, K, nprobe=NLIST).ids, before.ids)
            np.testing.assert_array_equal(c.get(name, ids[:100]), vectors)
            assert c.describe(name).count == N - 100
        snapshots = sorted(tmp_path.glob(f"**/collections/{name}/vectors.npy"))
        assert len(snapshots) == 2
        for shard in cluster.shards:
            shard.terminate()
            shard.wait(60)
    blob = bytearray(snapshots[0].read_bytes())
    blob[-5] ^= 0x01
    snapshots[0].write_bytes(bytes(blob))
    result = run_vecshard("shard", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(snapshots[0].parents[2]))
    assert result.returncode != 0 and "vectors.npy does not match the checksum" in result.stderr


def test_snapshot_during_upserts_is_consistent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A snapshot taken while upserts replace vectors: the floats written are those of the frozen
    state (the digest recomputed from the loaded floats equals the one recorded at the freeze)."""
    import threading

    from vecshard.v1 import types_pb2
    from vecshard_server.common.config import Settings
    from vecshard_server.common.spec import CollectionSpec
    from vecshard_server.shard.engine import ShardIndex, _digest_of, train_state

    cfg = types_pb2.CollectionConfig(
        name="c", dim=DIM, metric=types_pb2.METRIC_L2, index_type=types_pb2.INDEX_TYPE_IVF_SQ8, nlist=NLIST
    )
    spec = CollectionSpec.validate(cfg, Settings())
    part = ShardIndex(spec, 10**6)
    data = clustered(20_000, DIM, seed=3)
    part.add(np.arange(20_000), data, False)
    centroids, codec = train_state(data[:5000], spec, 1)
    part.install_quantizer(centroids, None, 1, 7, codec)
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def upserts() -> None:
        while not stop.is_set():
            ids = rng.choice(20_000, size=200, replace=False)
            part.add(ids, rng.normal(size=(200, DIM)).astype(np.float32), True)
            part.remove(rng.choice(20_000, size=20, replace=False))

    t = threading.Thread(target=upserts)
    t.start()
    try:
        for i in range(4):
            part.save(tmp_path / f"s{i}")
    finally:
        stop.set()
        t.join()
    for i in range(4):
        loaded = ShardIndex.load(tmp_path / f"s{i}", 10**6)
        assert loaded.digest == _digest_of(*loaded._export())
        assert loaded.codec == codec


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_sq8"])
@pytest.mark.parametrize("shards", [1, 2])
def test_hnsw_coarse_quantizer_is_shipped_and_exact(
    client_of: Callable[[int], Client], name: str, shards: int, kind: str
) -> None:
    """An HNSW graph over the centroids, built once at training and shipped in the codec: every
    shard probes the same lists, so the cluster equals the single index of that codec."""
    c = client_of(shards)
    nlist = 64
    rng = np.random.default_rng(shards)
    data = clustered(N, DIM, seed=shards + 40)
    ids = rng.choice(10**12, size=N, replace=False).astype(np.int64)
    queries = clustered(30, DIM, seed=98) + rng.normal(0, 0.5, size=(30, DIM)).astype(np.float32)
    c.create_collection(name, DIM, index=kind, nlist=nlist, nprobe=4, train_threshold=10**9, coarse_quantizer="hnsw")
    c.add(name, ids, data)
    c.train(name)
    info = c.describe(name, include_centroids=True)
    assert info.coarse_quantizer == "hnsw" and info.codec
    single = faiss.deserialize_index(np.frombuffer(info.codec, dtype=np.uint8))
    assert isinstance(faiss.downcast_index(single.quantizer), faiss.IndexHNSWFlat)
    np.testing.assert_array_equal(single.quantizer.reconstruct_n(0, nlist), info.centroids)
    single.add_with_ids(data, ids)
    for nprobe in (1, 8, nlist):
        single.nprobe = nprobe
        assert_same(c.search(name, queries, K, nprobe=nprobe), ranked(*single.search(queries, K + 20), False, K))
    c.drop_collection(name)


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ({"expected_size": 10_000}, {"index_type": "flat", "nlist": 0}),
        (
            {"expected_size": 1_000_000},
            {"index_type": "ivf_flat", "nlist": 4096, "nprobe": 128, "coarse_quantizer": "flat"},
        ),
        (
            {"expected_size": 1_000_000, "target_recall": 0.99},
            {"index_type": "ivf_flat", "nlist": 4096, "nprobe": 512},
        ),
        (
            {"expected_size": 100_000_000, "memory_budget": 40 << 30},
            {"index_type": "ivf_sq8", "nlist": 32768, "coarse_quantizer": "hnsw", "refine_factor": 0},
        ),
        (
            {"expected_size": 100_000_000, "memory_budget": 10 << 30},
            {"index_type": "ivf_pq", "nlist": 32768, "pq_m": 16, "refine_factor": 8, "coarse_quantizer": "hnsw"},
        ),
    ],
)
def test_sizing_guide_picks_the_index(client: Client, name: str, given: dict, want: dict) -> None:  # type: ignore[type-arg]
    info = client.create_collection(name, 128, **given)
    got = {key: getattr(info, key) for key in want}
    assert got == want
    assert info.expected_size == given["expected_size"]
    client.add(name, np.arange(5), np.ones((5, 128), np.float32))  # a working collection
    client.drop_collection(name)


@pytest.mark.parametrize(
    ("given", "text"),
    [
        ({"expected_size": 10**6, "nlist": 100}, "leave nlist, nprobe"),
        ({"expected_size": 10**6, "target_recall": 1.5}, "target_recall must be between 0 and 1"),
        ({"memory_budget": 10**9}, "need expected_size"),
        ({"index": "ivf_flat", "nlist": 8, "coarse_quantizer": "graph"}, "unknown coarse_quantizer"),
        ({"index": "flat", "coarse_quantizer": "hnsw"}, "applies to IVF collections only"),
    ],
)
def test_bad_sizing(client: Client, name: str, given: dict, text: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidArgument, match=text):
        client.create_collection(name, 128, **given)
    assert name not in [c.name for c in client.list_collections()]


def test_a_codec_that_is_not_the_collections_is_refused() -> None:
    """InstallQuantizer's codec is checked before anything changes: garbage, another kind, another
    nlist, a filled index, or centroids that are not the codec's own are INVALID_ARGUMENT."""
    from vecshard.errors import InvalidArgument as Refused
    from vecshard.v1 import types_pb2
    from vecshard_server.common.config import Settings
    from vecshard_server.common.spec import CollectionSpec
    from vecshard_server.shard.engine import ShardIndex, train_state

    def spec(kind: int, nlist: int = 8) -> CollectionSpec:
        cfg = types_pb2.CollectionConfig(name="c", dim=DIM, metric=types_pb2.METRIC_L2, index_type=kind, nlist=nlist)
        return CollectionSpec.validate(cfg, Settings())

    pq, sq = spec(types_pb2.INDEX_TYPE_IVF_PQ), spec(types_pb2.INDEX_TYPE_IVF_SQ8)
    x = clustered(4000, DIM, seed=1)
    centroids, codec = train_state(x, sq, 1)
    part = ShardIndex(sq, 10**6)
    part.add(np.arange(100), x[:100], False)
    filled = faiss.deserialize_index(np.frombuffer(codec, dtype=np.uint8))
    filled.add(x[:10])
    for bad, text in [
        (b"not an index", "must be a serialized empty trained faiss index"),
        (train_state(x, pq, 1)[1], "needs an empty trained IndexIVFScalarQuantizer"),
        (train_state(x, spec(types_pb2.INDEX_TYPE_IVF_SQ8, 16), 1)[1], "nlist"),
        (faiss.serialize_index(filled).tobytes(), "ntotal=10"),
    ]:
        with pytest.raises(Refused, match=text):
            part.install_quantizer(centroids, None, 1, 1, bad)
    with pytest.raises(Refused, match="does not hold the centroids sent with it"):
        part.install_quantizer(centroids + 1, None, 1, 1, codec)
    assert not part.trained and part.count == 100  # nothing changed
    part.install_quantizer(centroids, None, 1, 1, codec)
    assert part.trained and part.count == 100


def _sq8_partition(n: int = 4000) -> tuple[Any, np.ndarray]:
    from vecshard.v1 import types_pb2
    from vecshard_server.common.config import Settings
    from vecshard_server.common.spec import CollectionSpec
    from vecshard_server.shard.engine import ShardIndex, train_state

    cfg = types_pb2.CollectionConfig(
        name="c", dim=DIM, metric=types_pb2.METRIC_L2, index_type=types_pb2.INDEX_TYPE_IVF_SQ8, nlist=8
    )
    spec = CollectionSpec.validate(cfg, Settings())
    part = ShardIndex(spec, 10**6)
    x = clustered(n, DIM, seed=2)
    part.add(np.arange(n), x, False)
    centroids, codec = train_state(x, spec, 1)
    part.install_quantizer(centroids, None, 1, 1, codec)
    return part, x


def test_a_removal_between_search_and_refine_never_returns_the_removed_point(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The shard searches, then re-scores with the floats under a second read lock: a removal
    injected between the two steps drops the removed candidates (id -1), never returns them."""
    import asyncio

    from vecshard import wire
    from vecshard.v1 import types_pb2
    from vecshard.v1 import vector_search_pb2 as pb
    from vecshard_server.common.config import Settings
    from vecshard_server.coordinator.local import LocalContext
    from vecshard_server.shard.service import ShardService

    service = ShardService(Settings(), None)
    service.recover()
    cfg = types_pb2.CollectionConfig(
        name="c", dim=DIM, metric=types_pb2.METRIC_L2, index_type=types_pb2.INDEX_TYPE_IVF_SQ8, nlist=8
    )
    service._create(cfg)
    part = service.collections["c"]
    x = clustered(4000, DIM, seed=2)
    part.add(np.arange(4000), x, False)
    from vecshard_server.shard.engine import train_state

    centroids, codec = train_state(x, part.spec, 1)
    part.install_quantizer(centroids, None, 1, 1, codec)
    q = x[:3] + 0.01
    original = part.refined
    removed: list[int] = []
    places: list[int] = []  # where the removed ids stood among the candidates

    def remove_then_refine(queries: np.ndarray, I: np.ndarray, wait: bool = True) -> Any:
        victims = I[:, :3].reshape(-1)  # the best candidates, removed after the search saw them
        part.remove(victims)
        removed.extend(victims.tolist())
        places.append(int(np.isin(I, victims).sum()))
        return original(queries, I, wait)

    part.refined = remove_then_refine  # type: ignore[method-assign]
    request = pb.SearchRequest(collection="c", queries=wire.pack_matrix(q), k=5, nprobe=8, refine_factor=4)
    reply = asyncio.run(service.Search(request, LocalContext([], 30)))  # type: ignore[arg-type]
    ids = np.frombuffer(reply.ids, dtype=np.int64)
    assert removed and not set(ids.tolist()) & set(removed)
    assert (ids == -1).sum() == places[0]  # dropped as missing, the rest kept
    service.close()


@pytest.mark.parametrize("name", ["codec.faiss", "vectors.npy", "vector_ids.npy"])
def test_a_damaged_byte_in_a_compressed_snapshot_file_refuses_to_load(tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    from vecshard_server.shard.engine import ShardIndex, SnapshotCorrupt

    part, x = _sq8_partition()
    part.save(tmp_path / "s")
    loaded = ShardIndex.load(tmp_path / "s", 10**6)  # intact: every float back
    np.testing.assert_array_equal(loaded.get(np.arange(4000))[0], x)
    path = tmp_path / "s" / name
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(SnapshotCorrupt, match=name.replace(".", r"\.")):
        ShardIndex.load(tmp_path / "s", 10**6)
