"""The accelerated search path (GPU IVF copies of the CPU index): over-fetch past tombstones, copy
rebuilds, and CPU fallbacks for L1 and k > 2048. Here it runs with a CPU clone through the same code;
the `gpu` tests run it on a real GPU wherever faiss sees one."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from vecshard import Client
from vecshard.types import IndexType, Metric
from vecshard_server.cli.cluster import LocalCluster
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.accel import GPU_MAX_K, Accelerator, CloneAccelerator, detect
from vecshard_server.shard.engine import ShardIndex, train_centroids

from .conftest import clustered


def _pair(metric: Metric, accelerator: Accelerator) -> tuple[ShardIndex, ShardIndex, np.ndarray]:
    spec = CollectionSpec("c", 16, metric, IndexType.IVF_FLAT, nlist=16, nprobe=4, train_threshold=10**9)
    data = clustered(6000, 16, seed=4)
    if metric is Metric.COSINE:
        faiss.normalize_L2(data)
    plain, fast = ShardIndex(spec, 10**7), ShardIndex(spec, 10**7, accelerator)
    for part in (plain, fast):
        part.add(np.arange(5000), data[:5000], False)
    centroids = train_centroids(data[:5000], spec, 1)
    for part in (plain, fast):
        part.install_quantizer(centroids)
    return plain, fast, data


def _same(a: ShardIndex, b: ShardIndex, q: np.ndarray, k: int, nprobe: int) -> None:
    (D1, I1), (D2, I2) = a.search(q, k, nprobe), b.search(q, k, nprobe)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, rtol=1e-5, atol=1e-4)


def _exercise(accelerator: Accelerator, expect_device: str) -> None:
    for metric in (Metric.L2, Metric.INNER_PRODUCT, Metric.COSINE, Metric.L1):
        plain, fast, data = _pair(metric, accelerator)
        q = data[5000:5050] + 0.01
        assert fast.device == ("cpu" if metric is Metric.L1 else expect_device)
        _same(plain, fast, q, 10, 4)
        for part in (plain, fast):  # adds reach the copy; removals become tombstones
            part.add(np.arange(5000, 5500), data[5000:5500], False)
            part.remove(np.arange(0, 5000, 3))
        _same(plain, fast, q, 10, 4)
        _same(plain, fast, data[:50], 25, 16)  # the removed vectors themselves, exhaustive probe
        for part in (plain, fast):  # an upsert of stored ids invalidates the copy; it is rebuilt
            part.add(np.arange(1, 60, 3), data[5500:5520], True)
        _same(plain, fast, data[5500:5520], 5, 8)
        _same(plain, fast, q, GPU_MAX_K + 10, 4)  # above the GPU k limit: served by the CPU index
        for part in (plain, fast):  # many removals: the copy is rebuilt instead of over-fetching
            part.remove(np.arange(1, 5500, 3))
        _same(plain, fast, q, 10, 16)


def test_accelerated_path_equals_cpu_with_a_cpu_clone() -> None:
    _exercise(CloneAccelerator(), "cpu-clone")


@pytest.mark.gpu
def test_accelerated_path_equals_cpu_on_a_gpu() -> None:
    if not (hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0):
        pytest.skip("faiss sees no GPU here (faiss-gpu not installed, or no CUDA device)")
    accelerator = detect("auto")
    assert accelerator is not None
    _exercise(accelerator, "cuda:0")


def test_device_selection() -> None:
    assert detect("cpu") is None
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    assert (detect("auto") is None) == (gpus == 0)
    with pytest.raises(ValueError, match="faiss sees"):
        detect(f"cuda:{gpus}")
    with pytest.raises(ValueError, match="auto, cpu or cuda:N"):
        detect("tpu")


def test_cluster_with_accelerated_shards_equals_single_index(name: str) -> None:
    data = clustered(3000, 16, seed=6)
    with LocalCluster(shards=2, env={"VECSHARD_DEVICE": "clone"}, log_level="ERROR") as cluster:
        with Client(cluster.address) as c:
            c.create_collection(name, 16, index="ivf_flat", nlist=8, nprobe=3, train_threshold=10**9)
            c.add(name, np.arange(3000), data)
            c.train(name)
            c.remove(name, np.arange(0, 3000, 4))
            centroids = c.describe(name, include_centroids=True).centroids
            quantizer = faiss.IndexFlatL2(16)
            quantizer.add(centroids)
            single = faiss.IndexIVFFlat(quantizer, 16, 8)
            keep = np.setdiff1d(np.arange(3000), np.arange(0, 3000, 4))
            single.add_with_ids(data[keep], keep)
            single.nprobe = 3
            D, I = c.search(name, data[:40], k=10)
            rD, rI = single.search(data[:40], 10)
            np.testing.assert_array_equal(I, rI)
            np.testing.assert_allclose(D, rD, rtol=1e-5, atol=1e-4)
