"""Snapshots stall neither searches nor writes, and lose nothing written while they run.

A snapshot (`ShardIndex.save`) once held the partition's read lock while faiss wrote the index and
the file was hashed and fsynced: seconds at a million vectors. Writes waited for it, and since the
lock prefers writers, every search arriving behind a waiting write waited too.

Here every `faiss.write_index` of the engine is held open (after writing) by a gate until the test
has done its work, so "while the snapshot is being written" is a fact, not a timing: writes and
searches must complete while the save is provably still inside write_index. Results meanwhile must
equal a reference (exact brute force, or IVF semantics over the same centroids: a vector is found
iff its list is probed), ties broken by id, and so must the state after the snapshot and after a
crash and recovery from the snapshot plus the log.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np
import pytest

from vecshard import wire
from vecshard.types import IndexType, Metric
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.results import pad_distance
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard import engine
from vecshard_server.shard.accel import CloneAccelerator
from vecshard_server.shard.engine import ShardIndex, assign_lists, faiss_metric, row_hashes
from vecshard_server.shard.locks import RWLock
from vecshard_server.shard.service import ShardService

from .support import open_shard, shard_add, shard_remove
from .test_ties import family

DIM, NLIST = 8, 6
T = TypeVar("T")
PATIENCE = 15.0  # seconds an operation may take before it counts as waiting for the snapshot


class Gate:
    """Holds every faiss.write_index call, after it wrote its file, until `release` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = faiss.write_index

        def gated(index: Any, path: str) -> None:
            real(index, path)
            self.calls += 1
            self.entered.set()
            assert self.release.wait(120), "the test never released the snapshot"

        monkeypatch.setattr(engine.faiss, "write_index", gated)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    g = Gate()
    g.install(monkeypatch)
    yield g
    g.release.set()  # a failed test leaves no thread blocked


def within(fn: Callable[[], T], what: str) -> T:
    """fn() run in a thread: fails the test when it has not finished after PATIENCE seconds (it is
    waiting for the snapshot, which the gate holds until the test releases it)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # re-raised in the test's thread
            box["error"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(PATIENCE)
    if t.is_alive():
        pytest.fail(f"{what} did not complete while the snapshot was being written: it waits for the snapshot")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def start_save(part: ShardIndex, directory: Path, gate: Gate) -> threading.Thread:
    saver = threading.Thread(target=part.save, args=(directory,), daemon=True)
    saver.start()
    assert gate.entered.wait(60), "the save never reached write_index"
    return saver


# -- the reference ------------------------------------------------------------------------------


class Model:
    """What a partition must hold and answer: exact search by (distance in the metric's direction,
    id), restricted for a trained IVF partition to the vectors whose list the query probes."""

    def __init__(self, spec: CollectionSpec) -> None:
        self.spec = spec
        self.centroids: np.ndarray | None = None
        self.store: dict[int, np.ndarray] = {}
        self.seen: set[int] = set()

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        for i, v in zip(ids.tolist(), x, strict=True):
            self.store[i] = np.array(v, dtype=np.float32)
        self.seen.update(ids.tolist())

    def remove(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            self.store.pop(i, None)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array(sorted(self.store), dtype=np.int64)
        x = np.stack([self.store[i] for i in ids.tolist()]) if ids.size else np.empty((0, DIM), np.float32)
        return ids, x

    def digest(self) -> int:
        ids, x = self.arrays()
        return int(row_hashes(ids, x).sum(dtype=np.uint64)) if ids.size else 0

    def search(self, q: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        ids, x = self.arrays()
        m = self.spec.metric
        x64, q64 = x.astype(np.float64), q.astype(np.float64)
        if m is Metric.L2:
            dist = ((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
        elif m is Metric.L1:
            dist = np.abs(q64[:, None, :] - x64[None, :, :]).sum(-1)
        else:
            dist = q64 @ x64.T
        key = -dist if m.larger_is_better else dist.copy()
        if self.centroids is not None:
            lists = assign_lists(self.spec, self.centroids, x)
            quantizer = faiss.IndexFlat(DIM, faiss_metric(m))
            quantizer.add(self.centroids)
            _, probed = quantizer.search(q, nprobe or self.spec.nprobe)
            key[~(lists[None, :, None] == probed[:, None, :]).any(-1)] = np.inf
        D = np.full((len(q), k), pad_distance(m.larger_is_better), dtype=np.float32)
        I = np.full((len(q), k), -1, dtype=np.int64)
        for r in range(len(q)):
            order = np.lexsort((ids, key[r]))[:k]
            order = order[np.isfinite(key[r][order])]
            D[r, : order.size], I[r, : order.size] = dist[r][order], ids[order]
        return D, I


def assert_equal(part: ShardIndex, model: Model, queries: np.ndarray, what: str) -> None:
    """Searches (several k and nprobe), reads by id, count and digest all equal the model's."""
    n = len(model.store)
    nprobes = (1, 3, NLIST) if model.centroids is not None else (0,)
    for nprobe in nprobes:
        for k in sorted({1, 3, 7, 20, 50, max(1, n - 1), n + 3}):
            D, I = part.search(queries, k, nprobe)
            rD, rI = model.search(queries, k, nprobe)
            np.testing.assert_array_equal(I, rI, err_msg=f"{what}: k={k} nprobe={nprobe}")
            np.testing.assert_allclose(D, rD, rtol=1e-6, atol=1e-5, err_msg=f"{what}: k={k} nprobe={nprobe}")
    seen = np.array(sorted(model.seen), dtype=np.int64)
    got, found, _ = part.get(seen)
    np.testing.assert_array_equal(found, [i in model.store for i in seen.tolist()], err_msg=what)
    want = np.stack([model.store[i] for i in seen[found].tolist()]) if found.any() else got[found]
    np.testing.assert_array_equal(got[found], want, err_msg=what)
    ids, x = model.arrays()
    page_ids, page_x, _, _, _, _ = part.export_page(-1, 10**6)
    np.testing.assert_array_equal(page_ids, ids, err_msg=what)
    np.testing.assert_array_equal(page_x, x, err_msg=what)
    assert part.count == n, what
    assert part.digest == model.digest(), what


def spec_of(metric: str, ivf: bool) -> CollectionSpec:
    if ivf:
        return CollectionSpec(
            "c", DIM, Metric(metric), IndexType.IVF_FLAT, nlist=NLIST, nprobe=2, train_threshold=10**9
        )
    return CollectionSpec("c", DIM, Metric(metric), IndexType.FLAT)


# -- (1) and (2): in one partition --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf_accel"])
@pytest.mark.parametrize("metric", ["l2", "inner_product", "l1"])
def test_results_while_a_snapshot_is_written_equal_the_reference(
    tmp_path: Path, gate: Gate, metric: str, kind: str
) -> None:
    """Adds, upserts (of ids in the snapshot and of ids added since), removes and re-adds complete
    while the index is being written; after each, searches (ties cut at every boundary, across the
    snapshot's index and the writes made since), reads by id, count and digest equal the reference."""
    rng = np.random.default_rng(len(metric) * 7 + len(kind))
    spec = spec_of(metric, kind != "flat")
    part = ShardIndex(spec, 10**6, CloneAccelerator() if kind == "ivf_accel" else None)
    model = Model(spec)
    pool = family(70, seed=3)  # few distinct integer vectors: exact distances, many ties

    def vectors(n: int) -> np.ndarray:
        return np.ascontiguousarray(pool[rng.integers(0, pool.shape[0], n)])

    ids = rng.choice(np.arange(1000, 100_000), size=400, replace=False).astype(np.int64)
    for start in range(0, ids.size, 100):
        x = vectors(100)
        part.add(ids[start : start + 100], x, False)
        model.add(ids[start : start + 100], x)
    if kind != "flat":
        centroids = rng.normal(size=(NLIST, DIM)).astype(np.float32)
        part.install_quantizer(centroids)
        model.centroids = centroids
    queries = np.ascontiguousarray(np.vstack([pool[:6], family(80, seed=4)[70:76]]))
    assert_equal(part, model, queries, "before the snapshot")

    saver = start_save(part, tmp_path / "c", gate)
    written = part._index

    def add(new_ids: np.ndarray, upsert: bool, what: str) -> None:
        x = vectors(new_ids.size)
        within(lambda: part.add(new_ids, x, upsert), what)
        model.add(new_ids, x)
        within(lambda: assert_equal(part, model, queries, f"{kind} {metric}: after {what}"), f"searches after {what}")

    def remove(gone: np.ndarray, what: str) -> None:
        assert within(lambda: part.remove(gone), what) == sum(i in model.store for i in gone.tolist())
        model.remove(gone)
        within(lambda: assert_equal(part, model, queries, f"{kind} {metric}: after {what}"), f"searches after {what}")

    fresh = np.arange(1, 61, dtype=np.int64)  # smaller than every stored id: they win ties against them
    add(fresh[:30], False, "adds of new ids")
    assert part._frozen is not None  # the writes go to the delta; the index being written is untouched
    add(ids[:25], True, "upserts of ids in the snapshot")
    add(fresh[:10], True, "upserts of ids added during the snapshot")
    remove(np.concatenate([ids[20:50], fresh[5:15], [999_999]]), "removes of both kinds (and of an absent id)")
    add(np.concatenate([ids[30:40], fresh[5:8]]), False, "re-adds of removed ids")
    add(np.concatenate([ids[:5], ids[30:33], fresh[30:60]]), True, "mixed upserts and adds")
    assert saver.is_alive() and part._frozen is not None, "the snapshot ended before the writes"

    gate.release.set()
    saver.join(60)
    assert not saver.is_alive()
    assert part._frozen is None and part._index is written  # the writes were folded into it
    assert part._index.ntotal == part.count == len(model.store)
    assert_equal(part, model, queries, f"{kind} {metric}: after the snapshot")
    # The snapshot holds the state at the freeze: the 400 vectors, nothing written since.
    loaded = ShardIndex.load(tmp_path / "c", 10**6)
    assert loaded.count == 400 and loaded.trained == (kind != "flat")


def test_a_merge_from_a_peer_during_a_snapshot_keeps_the_newest_of_each_id(tmp_path: Path, gate: Gate) -> None:
    """A peer's entries merged while a snapshot is written (versioned upserts and tombstones, some
    newer than the partition's, some older) reach searches at once, and the snapshot's end keeps them."""
    spec = spec_of("l2", ivf=False)
    part, model = ShardIndex(spec, 10**6), Model(spec)
    x = family(200, seed=1)
    part.add(np.arange(100), x[:100], False, None, 100)  # everything at version 100
    model.add(np.arange(100), x[:100])
    saver = start_save(part, tmp_path / "c", gate)
    # The peer's page: ids 0..49 at version 50 (older: ignored), 50..149 at 150 (newer or new: taken),
    # and tombstones of 0..4 at 99 (older: ignored) and 95..99 at 200 (newer: removed).
    versions = np.where(np.arange(150) < 50, 50, 150)
    within(lambda: part.add(np.arange(150), x[50:200], True, None, versions), "a merged page")
    within(lambda: part.remove(np.r_[0:5, 95:100], None, np.r_[[99] * 5, [200] * 5]), "merged tombstones")
    model.add(np.arange(50, 150), x[100:200])
    model.remove(np.arange(95, 100))
    assert part.count == 145 and part.tombstones == 5
    assert_equal(part, model, x[:8], "during the snapshot")
    gate.release.set()
    saver.join(60)
    assert_equal(part, model, x[:8], "after the snapshot")
    loaded = ShardIndex.load(tmp_path / "c", 10**6)  # the state at the freeze, versions included
    assert loaded.count == 100 and loaded.max_version == 100
    assert loaded.add(np.arange(10), x[:10], True, None, 99) == (0, 0, 0)  # older than what it holds


# -- (1) and (3): a shard service over a data dir ------------------------------------------------


def _install(s: ShardService, centroids: np.ndarray, mode: int = 0) -> None:
    req = spb.InstallQuantizerRequest(collection="c", centroids=wire.pack_matrix(centroids), epoch=1, mode=mode)
    asyncio.run(s.InstallQuantizer(req, None))


def _search(s: ShardService, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    req = pb.SearchRequest(collection="c", queries=wire.pack_matrix(q), k=k)
    res = asyncio.run(s.Search(req, None))
    return (np.frombuffer(res.distances, "<f4").reshape(len(q), k), np.frombuffer(res.ids, "<i8").reshape(len(q), k))


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_a_checkpoint_stalls_nothing_and_recovery_keeps_every_write_made_during_it(
    tmp_path: Path, gate: Gate, kind: str
) -> None:
    rng = np.random.default_rng(5)
    spec = spec_of("l2", kind == "ivf")
    s, model = open_shard(tmp_path), Model(spec)
    s._create(spec.to_proto())
    x = family(1000, seed=2)
    shard_add(s, "c", np.arange(500), x[:500], False)
    model.add(np.arange(500), x[:500])
    if kind == "ivf":
        model.centroids = rng.normal(size=(NLIST, DIM)).astype(np.float32)
        _install(s, model.centroids)
    part = s.collections["c"]
    queries = x[:10]

    saver = threading.Thread(target=s.checkpoint, daemon=True)
    saver.start()
    assert gate.entered.wait(60)
    frozen_lsn = part.applied_lsn
    steps = 25

    def work() -> int:
        for step in range(steps):
            new = np.array([1000 + step])
            assert shard_add(s, "c", new, x[500 + step : 501 + step], False).added == 1
            model.add(new, x[500 + step : 501 + step])
            old = np.array([step * 7])  # an id in the snapshot, replaced
            shard_add(s, "c", old, x[600 + step : 601 + step], True)
            model.add(old, x[600 + step : 601 + step])
            gone = np.array([step * 7 + 3, 1000 + step - 1])  # one in the snapshot, one added just before
            assert shard_remove(s, "c", gone).removed == sum(i in model.store for i in gone.tolist())
            model.remove(gone)
            D, I = _search(s, queries, 10)
            rD, rI = model.search(queries, 10, 0)
            np.testing.assert_array_equal(I, rI, err_msg=f"step {step}")
            np.testing.assert_allclose(D, rD, rtol=1e-6, atol=1e-5)
        return steps

    assert within(work, f"{steps} rounds of add, upsert, remove and search") == steps
    assert saver.is_alive(), "the checkpoint finished before the writes: the test proves nothing"
    gate.release.set()
    saver.join(60)
    assert not saver.is_alive()
    assert_equal(part, model, queries, "after the checkpoint")
    meta = json.loads((tmp_path / "collections" / "c" / "meta.json").read_text())
    assert meta["lsn"] == frozen_lsn == part.snapshot_lsn < part.applied_lsn  # the writes since are in the log
    assert meta["count"] == 500

    crashed = open_shard(tmp_path)  # the first one never closed: a crash
    assert_equal(crashed.collections["c"], model, queries, "after a crash and recovery")
    assert crashed.collections["c"].applied_lsn == part.applied_lsn
    crashed.checkpoint()  # a snapshot of the state the writes were folded into
    assert_equal(open_shard(tmp_path).collections["c"], model, queries, "after a second checkpoint and recovery")


def test_a_training_activated_during_a_checkpoint(tmp_path: Path, gate: Gate) -> None:
    """Prepare and activate replace the index: the snapshot under way writes the untrained one (its
    lsn is before the install, which recovery replays from the log)."""
    rng = np.random.default_rng(8)
    spec = spec_of("inner_product", ivf=True)
    s, model = open_shard(tmp_path), Model(spec)
    s._create(spec.to_proto())
    x = family(600, seed=6)
    shard_add(s, "c", np.arange(300), x[:300], False)
    model.add(np.arange(300), x[:300])
    saver = threading.Thread(target=s.checkpoint, daemon=True)
    saver.start()
    assert gate.entered.wait(60)
    centroids = rng.normal(size=(NLIST, DIM)).astype(np.float32)
    within(lambda: shard_add(s, "c", np.arange(300, 350), x[300:350], False), "an add")
    within(lambda: shard_remove(s, "c", np.arange(0, 300, 9)), "a remove")
    within(lambda: _install(s, centroids, spb.INSTALL_MODE_PREPARE), "prepare")
    within(lambda: shard_add(s, "c", np.arange(350, 400), x[350:400], False), "an add")
    within(lambda: _install(s, centroids, spb.INSTALL_MODE_ACTIVATE), "activate")
    within(lambda: shard_add(s, "c", np.arange(400, 420), x[400:420], True), "an add")
    model.add(np.arange(300, 420), x[300:420])
    model.remove(np.arange(0, 300, 9))
    model.centroids = centroids
    part = s.collections["c"]
    assert part.trained and part._frozen is None
    assert_equal(part, model, x[:6], "after activation")
    gate.release.set()
    saver.join(60)
    assert_equal(part, model, x[:6], "after the checkpoint")
    meta = json.loads((tmp_path / "collections" / "c" / "meta.json").read_text())
    assert not meta["trained"] and meta["count"] == 300
    assert_equal(open_shard(tmp_path).collections["c"], model, x[:6], "after a crash and recovery")


# -- the lock -----------------------------------------------------------------------------------


def _waiting(lock: RWLock, n: int) -> None:
    """Until `n` threads wait on the lock."""
    deadline = time.monotonic() + 30
    while len(lock._cond._waiters) < n:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def _order(first: tuple[str, str], second: tuple[str, str], third: tuple[str, str]) -> list[str]:
    """Three threads take an RWLock, each (mode "read" or "write", label): the first holds it while
    the second, then the third, queue for it. The labels in the order they got it."""
    lock, order = RWLock(), []
    holding, release = threading.Event(), threading.Event()

    def take(mode: str, label: str, hold: bool) -> None:
        with lock.read() if mode == "read" else lock.write():
            if hold:
                holding.set()
                release.wait(30)
            order.append(label)

    threads = [
        threading.Thread(target=take, args=(*who, i == 0), daemon=True) for i, who in enumerate((first, second, third))
    ]
    threads[0].start()
    assert holding.wait(30)
    threads[1].start()
    _waiting(lock, 1)
    threads[2].start()
    _waiting(lock, 2)
    release.set()
    for t in threads:
        t.join(30)
    return order


def test_a_reader_waiting_for_a_writer_goes_before_the_next_writer() -> None:
    """A stream of writes cannot starve searches: a writer's release lets in the readers that waited
    for it before the next writer."""
    order = _order(("write", "w1"), ("read", "r"), ("write", "w2"))
    assert order == ["w1", "r", "w2"]


def test_a_waiting_writer_goes_before_later_readers() -> None:
    """A stream of searches cannot starve writes: readers arriving while a writer waits wait for it."""
    order = _order(("read", "r1"), ("write", "w"), ("read", "r2"))
    assert order == ["r1", "w", "r2"]
