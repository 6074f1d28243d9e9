"""The accelerated search path (GPU IVF copies of the CPU index): over-fetch past tombstones, copy
rebuilds, and CPU fallbacks for L1 and k > 2048. Here it runs with a CPU clone through the same code;
the `gpu` tests run it on a real GPU wherever faiss sees one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import pytest

from vecshard import Client
from vecshard.types import IndexType, Metric
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.accel import GPU_MAX_K, Accelerator, CloneAccelerator, detect
from vecshard_server.shard.engine import ShardIndex, train_centroids

from .conftest import clustered
from .test_ties import duplicates, reference


class Watched:
    """An accelerator wrapper that counts clones and copy searches and records every two calls on its
    copies that overlap in time: they share one faiss resources object, which is not thread-safe."""

    def __init__(self, inner: Accelerator) -> None:
        self.inner = inner
        self.name = inner.name
        self.lock = inner.lock
        self.clones = self.searches = self.overlaps = 0
        self._busy = threading.Lock()
        self._count = threading.Lock()

    def call(self, fn: Callable[[], Any]) -> Any:
        if not self._busy.acquire(blocking=False):
            with self._count:
                self.overlaps += 1
            return fn()
        try:
            time.sleep(0.0005)  # widen the window an unserialised call would overlap
            return fn()
        finally:
            self._busy.release()

    def clone(self, cpu_index: Any) -> Any:
        self.clones += 1
        return _WatchedIndex(self, self.call(lambda: self.inner.clone(cpu_index)))


class _WatchedIndex:
    def __init__(self, owner: Watched, index: Any) -> None:
        self.owner, self.index = owner, index

    def search(self, x: np.ndarray, k: int, params: Any = None) -> Any:
        with self.owner._count:
            self.owner.searches += 1
        return self.owner.call(lambda: self.index.search(x, k, params=params))

    def add_with_ids(self, x: np.ndarray, ids: np.ndarray) -> None:
        self.owner.call(lambda: self.index.add_with_ids(x, ids))


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
    _agree(*a.search(q, k, nprobe), *b.search(q, k, nprobe), on_gpu=b.device.startswith("cuda"))


def _agree(D1: np.ndarray, I1: np.ndarray, D2: np.ndarray, I2: np.ndarray, on_gpu: bool) -> None:
    np.testing.assert_allclose(D1, D2, rtol=1e-5, atol=1e-4)
    if not on_gpu:  # a CPU clone computes the very same floats
        np.testing.assert_array_equal(I1, I2)
        return
    # A GPU's distances differ from the CPU's in the last bits: ids may differ only between results
    # whose distances are within that error (their order, or which of them the k-th place cuts).
    close = {"rtol": 1e-5, "atol": 1e-4}
    for r in np.flatnonzero((I1 != I2).any(axis=1)):
        for (Da, Ia), (Db, Ib) in (((D1[r], I1[r]), (D2[r], I2[r])), ((D2[r], I2[r]), (D1[r], I1[r]))):
            for j in np.flatnonzero(Ia != Ib):
                moved = np.isclose(Db[Ib == Ia[j]], Da[j], **close).any()
                cut = Ia[j] not in Ib and np.isclose(Db[-1], Da[j], **close)
                assert moved or cut, f"row {r}: id {Ia[j]} at {j} ({Da[j]}) vs {Ib.tolist()} / {Db.tolist()}"


def _exercise(accelerator: Accelerator, expect_device: str) -> None:
    for metric in (Metric.L2, Metric.INNER_PRODUCT, Metric.COSINE, Metric.L1):
        watched = Watched(accelerator)
        plain, fast, data = _pair(metric, watched)
        accelerated = metric is not Metric.L1
        q = data[5000:5050] + 0.01
        assert fast.device == (expect_device if accelerated else "cpu")
        _same(plain, fast, q, 10, 4)
        for part in (plain, fast):  # adds reach the copy; removals become tombstones
            part.add(np.arange(5000, 5500), data[5000:5500], False)
            part.remove(np.arange(0, 5000, 3))
        _same(plain, fast, q, 10, 4)
        _same(plain, fast, data[:50], 25, 16)  # the removed vectors themselves, exhaustive probe
        readded, fresh = np.arange(1, 600, 3), data[5500:5700]
        for part in (plain, fast):  # ids removed while the copy holds their tombstones ...
            part.remove(readded)
        _same(plain, fast, data[readded], 5, 16)
        for part in (plain, fast):  # ... come back with new vectors
            part.add(readded, fresh, False)
        _same(plain, fast, fresh, 5, 16)  # found with their new vectors ...
        _same(plain, fast, data[readded], 5, 16)  # ... and never with their old ones
        if metric is Metric.L2:
            assert (fast.search(fresh, 1, 16)[1][:, 0] == readded).all()
        clones = watched.clones
        for part in (plain, fast):  # upserts of ids cloned with the copy and of ids re-added to it
            part.add(np.concatenate([np.arange(2, 60, 3), readded[:20]]), data[5700:5740], True)
        _same(plain, fast, data[5700:5740], 5, 8)
        _same(plain, fast, data[np.arange(2, 60, 3)], 5, 16)  # the replaced vectors are gone
        _same(plain, fast, q, 10, 4)
        assert watched.clones == clones  # the copy took the upsert: no rebuild
        _same(plain, fast, q, GPU_MAX_K + 10, 4)  # above the GPU k limit: served by the CPU index
        for part in (plain, fast):  # many removals: the copy is rebuilt instead of over-fetching
            part.remove(np.arange(1, 5500, 3))
        _same(plain, fast, q, 10, 16)
        assert watched.overlaps == 0 and (watched.clones > clones) == accelerated  # rebuilt after the removals


def _exercise_many_tombstones(accelerator: Accelerator) -> None:
    """A partition of 50k vectors: tombstones never push k + tombstones past GPU_MAX_K (the copy is
    rebuilt first), so the copy keeps serving every search, and always exactly."""
    spec = CollectionSpec("c", 8, Metric.L2, IndexType.IVF_FLAT, nlist=64, nprobe=8, train_threshold=10**9)
    data = clustered(50_000, 8, seed=11)
    watched = Watched(accelerator)
    plain, fast = ShardIndex(spec, 10**7), ShardIndex(spec, 10**7, watched)
    centroids = train_centroids(data[:20_000], spec, 1)
    for part in (plain, fast):
        part.install_quantizer(centroids)
        part.add(np.arange(50_000), data, False)
    q = data[::1000] + 0.01
    gone = np.random.default_rng(3).permutation(50_000)[:4000]
    missed = []
    for removed, batch in enumerate(np.split(gone, 16), start=1):
        for part in (plain, fast):
            part.remove(batch)
        for k, nprobe in ((10, 8), (100, 64), (GPU_MAX_K - 100, 8)):
            searches = watched.searches
            _same(plain, fast, q, k, nprobe)
            if watched.searches == searches:
                missed.append(f"k={k} after {removed * 250} removals")
    assert not missed, f"the CPU index served searches instead of the copy: {missed}"
    _same(plain, fast, data[gone[:50]], 10, 64)
    assert watched.clones >= 3 and watched.overlaps == 0
    for part in (plain, fast):  # past MAX_TOMBSTONES: a fresh copy ...
        part.remove(np.setdiff1d(np.arange(50_000), gone)[:1100])
    _same(plain, fast, q, 10, 8)
    clones = watched.clones
    near = np.unique(plain.search(q[:3], 300, 8)[1])
    for part in (plain, fast):  # ... then tombstones packed into a few queries' results
        part.remove(near)
    _same(plain, fast, q, 10, 8)
    _same(plain, fast, q, GPU_MAX_K - 100, 8)  # those rows' capped over-fetch is short: the CPU answers them
    assert watched.clones == clones


def _exercise_concurrency(accelerator: Accelerator) -> None:
    """Searches from several threads on two partitions sharing the accelerator, one of them taking
    adds meanwhile: no two calls overlap on the shared resources, and every answer is the CPU's."""
    watched = Watched(accelerator)
    plain, fast, data = _pair(Metric.L2, watched)
    _, other, _ = _pair(Metric.INNER_PRODUCT, watched)
    for part in (plain, fast):
        part.remove(np.arange(0, 5000, 7))
    cases = [(data[i * 40 : i * 40 + 40] + 0.01, 5 + 3 * i, 4 + i % 12) for i in range(12)]
    expected = [plain.search(x, k, nprobe) for x, k, nprobe in cases]
    on_gpu = fast.device.startswith("cuda")
    errors: list[BaseException] = []

    def searching(offset: int) -> None:
        try:
            for j in range(24):
                x, k, nprobe = cases[(j + offset) % len(cases)]
                _agree(*expected[(j + offset) % len(cases)], *fast.search(x, k, nprobe), on_gpu=on_gpu)
                other.search(x, k, nprobe)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    def adding() -> None:
        for start in range(5000, 6000, 50):
            other.add(np.arange(start, start + 50), data[start - 5000 : start - 4950], False)

    threads = [threading.Thread(target=searching, args=(i,)) for i in range(4)] + [threading.Thread(target=adding)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert watched.overlaps == 0, f"{watched.overlaps} calls overlapped on the shared accelerator resources"


def _exercise_ties(accelerator: Accelerator) -> None:
    """Duplicates inserted with descending ids: the copy path breaks ties by the smaller id like the CPU,
    including when k + 1 or the tie extension outgrows GPU_MAX_K (then the CPU index answers)."""
    ids, x = duplicates(groups=8, per_group=400, seed=2)
    for metric in (Metric.L2, Metric.INNER_PRODUCT, Metric.COSINE):
        spec = CollectionSpec("c", 8, metric, IndexType.IVF_FLAT, nlist=8, nprobe=8, train_threshold=10**9)
        stored = x / 2 if metric is Metric.COSINE else x  # the coordinator stores unit vectors
        watched = Watched(accelerator)
        plain, fast = ShardIndex(spec, 10**7), ShardIndex(spec, 10**7, watched)
        centroids = train_centroids(np.unique(stored, axis=0), spec, 1)
        for part in (plain, fast):
            part.install_quantizer(centroids)
            for start in range(0, ids.size, 400):
                part.add(ids[start : start + 400], stored[start : start + 400], False)
        queries = stored[:8]
        for removed in (False, True):
            for k in (1, 10, 399, 1000, GPU_MAX_K - 8, GPU_MAX_K, 3000):
                searches = watched.searches
                D, I = fast.search(queries, k, 8)
                keep = ~np.isin(ids, np.arange(3, 2000, 5)) if removed else np.ones(ids.size, bool)
                rD, rI = reference(metric.value, ids[keep], x[keep], queries, k)
                np.testing.assert_array_equal(I, rI, err_msg=f"{metric} k={k} removed={removed}")
                np.testing.assert_allclose(D, rD, rtol=1e-6, atol=1e-5)
                _same(plain, fast, queries, k, 8)
                if k < 1000:
                    assert watched.searches > searches  # served by the copy
            for part in (plain, fast):
                part.remove(np.arange(3, 2000, 5))


def test_accelerated_path_equals_cpu_with_a_cpu_clone() -> None:
    _exercise(CloneAccelerator(), "cpu-clone")


def test_accelerated_path_keeps_serving_a_large_partition_with_many_tombstones() -> None:
    _exercise_many_tombstones(CloneAccelerator())


def test_accelerated_searches_from_several_threads_are_serialised_and_exact() -> None:
    _exercise_concurrency(CloneAccelerator())


def test_accelerated_path_breaks_ties_by_id() -> None:
    _exercise_ties(CloneAccelerator())


@pytest.mark.gpu
def test_accelerated_path_equals_cpu_on_a_gpu() -> None:
    if not (hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0):
        pytest.skip("faiss sees no GPU here (faiss-gpu not installed, or no CUDA device)")
    accelerator = detect("auto")
    assert accelerator is not None
    _exercise(accelerator, "cuda:0")
    _exercise_many_tombstones(accelerator)
    _exercise_concurrency(accelerator)
    _exercise_ties(accelerator)


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
