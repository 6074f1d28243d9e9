"""A partition's searches: plain top-k (on the accelerator copy when there is one), filtered plans,
and the exact distances that re-rank a compressed kind's candidates.

A `Searcher` is made per call, under the partition's read lock, from the parts it reads (`Storage`
for the vectors and indexes, the `PayloadStore` for filters, and the partition's count and settings):
it holds no state of its own beyond that call, so it is a composed helper of `engine.ShardIndex`
rather than a slice of it. Results are ordered as `ranking` says.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.results import FLT_MAX
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.kinds import faiss_metric
from vecshard_server.shard.payloads import PayloadStore
from vecshard_server.shard.ranking import Search, ordered, ranked
from vecshard_server.shard.storage import Storage

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


def pad_distance(spec: CollectionSpec) -> float:
    """The distance of padding results (-1 ids): the worst in the metric's direction."""
    return float(-FLT_MAX if spec.larger_is_better else FLT_MAX)


def search_work(spec: CollectionSpec, count: int, trained: bool, nq: int, nprobe: int) -> int:
    """About how many multiply-adds a search of nq queries over `count` vectors takes (vectors scanned x dim)."""
    if not trained:
        return nq * count * spec.dim
    probe = max(1, min(nprobe or spec.nprobe, spec.nlist))
    return nq * (count * probe // max(1, spec.nlist) + spec.nlist) * spec.dim


class Searcher:
    """One search call over a partition; the caller holds the partition's read lock meanwhile."""

    POSTFILTER_RESULTS = 1 << 16  # candidates per request filtered by lookup before an IDSelector pays
    BITMAP_IDS = 1 << 27  # ids below this get a bitmap IDSelector (16 MiB at most)

    def __init__(
        self, spec: CollectionSpec, storage: Storage, payloads: PayloadStore, count: int, tie_budget: int
    ) -> None:
        self.spec = spec
        self.storage = storage
        self.payloads = payloads
        self.count = count  # the ids stored
        self.tie_budget = tie_budget  # results per faiss call when searching again past a tie
        self.pad = pad_distance(spec)

    def ranked(self, queries: F32, k: int, search: Search, n: int = -1) -> tuple[F32, I64]:
        """`ranking.ranked` over n (default: all stored) vectors."""
        n = self.count if n < 0 else n
        return ranked(queries, k, search, n, self.spec.larger_is_better, self.tie_budget)

    def ordered(self, D: F32, I: I64, k: int) -> tuple[F32, I64]:
        return ordered(D, I, k, self.spec.larger_is_better)

    def probe(self, nprobe: int) -> int:
        """The lists a trained search probes (0: the collection's nprobe)."""
        return max(1, min(nprobe or self.spec.nprobe, self.spec.nlist))

    def search(self, queries: F32, k: int, nprobe: int) -> tuple[F32, I64]:
        """The top-k of each query (exact while untrained), by (distance, id)."""
        storage = self.storage
        if storage.centroids is None:
            return self.ranked(queries, k, storage.cpu_search(0))
        probe = self.probe(nprobe)
        copy = storage.search_copy()
        cpu = storage.cpu_search(probe)
        if copy is None:
            return self.ranked(queries, k, cpu)
        params = faiss.SearchParametersIVF(nprobe=probe)  # type: ignore[call-arg]
        pad = self.pad

        def run(q: F32, fetch: int) -> tuple[F32, I64]:
            if not copy.can_answer(fetch):
                return cpu(q, fetch)
            D, I, short = copy.search(q, fetch, params, pad)
            if short.any():  # too many tombstones among these rows' results for the copy
                D[short], I[short] = cpu(q[short], fetch)
            return D, I

        return self.ranked(queries, k, run)

    def filtered(
        self, queries: F32, k: int, nprobe: int, f: ppb.Filter, exact_ratio: float
    ) -> tuple[F32, I64, ppb.FilterPlan]:
        """The top-k among the points matching `f`, and the plan that ran. Never fewer than
        min(k, matches) hits per query.

        Plans: "exact" computes distances to every match (recall 1.0) when that costs no more than
        the IVF search would scan (times `exact_ratio`); otherwise an IVF search at nprobe whose
        candidates are filtered ("ivf-postfilter": matches are common, so k / pass-rate candidates hold
        k of them), or restricted to the matches by an IDSelector ("ivf-filtered"); rows still short of
        hits probe twice as many lists, up to nlist (where the search is exhaustive over the matches).
        Untrained partitions: "exact", or "flat-filtered" (the whole partition, restricted)."""
        mask, unindexed = self.payloads.matching(f)
        if self.payloads.vectorless:  # points stored without a vector are not searched
            mask &= self.payloads.with_vector(mask.size)
        m, n, nq = int(np.count_nonzero(mask)), self.count, queries.shape[0]
        plan = ppb.FilterPlan(matches=m, unindexed_fields=unindexed)
        D = np.full((nq, k), self.pad, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)
        if m == 0:
            plan.plan = "none"
        elif self.storage.centroids is None:
            if 4 * m <= n:
                D, I = self._exact_among(queries, k, mask)
                plan.plan = "exact"
            else:
                D, I = self.ranked(queries, k, self.storage.cpu_search(0, self._selector(mask)), n=m)
                plan.plan = "flat-filtered"
        else:
            probe = self.probe(nprobe)
            if m * self.spec.nlist <= n * probe * exact_ratio:
                D, I = self._exact_among(queries, k, mask)
                plan.plan = "exact"
            else:
                D, I, plan.nprobe, plan.plan = self._ivf_filtered(queries, k, probe, m, mask)
        return D, I, plan

    def _exact_among(self, queries: F32, k: int, mask: Mask) -> tuple[F32, I64]:
        """Exact top-k over the vectors of the points where `mask` (over payload slots) is set."""
        members = np.ascontiguousarray(self.payloads.ids_of(mask))
        flat = faiss.IndexFlat(self.spec.dim, faiss_metric(self.spec.metric))
        flat.add(np.ascontiguousarray(self.storage.vectors(members), dtype=np.float32))

        def search(q: F32, fetch: int) -> tuple[F32, I64]:
            D, I = flat.search(q, fetch)
            return D, np.where(I >= 0, members[np.maximum(I, 0)], -1)

        return self.ranked(queries, k, search, n=members.size)

    def _selector(self, mask: Mask) -> Any:
        """An IDSelector accepting exactly the points where `mask` is set: a bitmap indexed by id when the ids
        are small enough (a millisecond to build for a million ids), else a hashed set of them (or of
        the rest, when smaller)."""
        members = np.ascontiguousarray(self.payloads.ids_of(mask))
        top = int(members.max()) + 1 if members.size else 0
        if top <= self.BITMAP_IDS:
            bits = np.zeros(top, dtype=bool)
            bits[members] = True
            bitmap = np.packbits(bits, bitorder="little")
            bitmap_sel = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))  # n: bytes, not bits
            bitmap_sel.referenced = bitmap  # type: ignore[attr-defined]  # kept alive with the selector
            return bitmap_sel
        if 2 * members.size <= self.count:
            batch = faiss.IDSelectorBatch(members.size, faiss.swig_ptr(members))
            batch.referenced = members  # type: ignore[attr-defined]  # kept alive with the selector
            return batch
        rest = np.ascontiguousarray(self.payloads.ids_of(~mask))
        batch = faiss.IDSelectorBatch(rest.size, faiss.swig_ptr(rest))
        batch.referenced = rest  # type: ignore[attr-defined]
        sel = faiss.IDSelectorNot(batch)
        sel.referenced = batch  # type: ignore[attr-defined]
        return sel

    def _ivf_filtered(self, queries: F32, k: int, probe: int, m: int, mask: Mask) -> tuple[F32, I64, int, str]:
        """(D, I, the largest nprobe used, plan) of a trained partition's filtered search."""
        n, nq, nlist = self.count, queries.shape[0], self.spec.nlist
        need = min(k, m)
        D = np.full((nq, k), self.pad, dtype=np.float32)
        I = np.full((nq, k), -1, dtype=np.int64)
        rows = np.arange(nq)
        plan = "ivf-filtered"
        fetch = min(n, -(-k * n // m) * 3 // 2 + 16)
        counts = self.payloads.list_counts(mask, nlist)
        # the `probe` nearest lists holding matches, and more until they hold the share of the
        # matches an unfiltered search scans of all points (and at least k)
        target = max(need, -(-m * probe // nlist))
        likely = rows
        frozen = self.storage.frozen is not None
        if not frozen:  # filtering candidates pays where the nearest lists hold their share
            _, near = self.storage.index.quantizer.search(np.ascontiguousarray(queries, dtype=np.float32), probe)
            likely = np.flatnonzero(counts[np.maximum(near, 0)].sum(axis=1) >= target)
        if likely.size and likely.size * fetch <= self.POSTFILTER_RESULTS:
            plan = "ivf-postfilter"
            rows = self._postfilter(queries, k, probe, fetch, need, mask, likely, D, I)
        used = probe
        if rows.size:
            plan = "ivf-filtered"
            sel = self._selector(mask)
            if not frozen:  # probe the nearest lists holding matches, as many as it takes
                search, width = self._lists_with_matches(probe, target, counts, sel)
                D[rows], I[rows] = self.ranked(queries[rows], k, search, n=m)
                used = width[0]
            else:  # while a snapshot is written: twice the lists until every row has its hits
                while rows.size:
                    used = probe
                    rD, rI = self.ranked(queries[rows], k, self.storage.cpu_search(probe, sel), n=m)
                    done = ((rI >= 0).sum(axis=1) >= need) | (probe >= nlist)
                    D[rows[done]], I[rows[done]] = rD[done], rI[done]
                    rows = rows[~done]
                    probe = min(nlist, 2 * probe)
        return D, I, used, plan

    def _postfilter(
        self, queries: F32, k: int, probe: int, fetch: int, need: int, mask: Mask, likely: I64, D: F32, I: I64
    ) -> I64:
        """Fill rows `likely` of (D, I) from `fetch` unfiltered candidates each, filtered by lookup;
        returns the rows still short of `need` hits (those not in `likely` included)."""
        pad = self.pad
        cD, cI = self.storage.cpu_search(probe)(queries[likely], fetch)
        ok = self.payloads.contains(cI.reshape(-1), mask).reshape(cI.shape) & (cI >= 0)
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # passing candidates first, best first
        pD, pI = np.take_along_axis(cD, order, axis=1), np.take_along_axis(cI, order, axis=1)
        passed = np.take_along_axis(ok, order, axis=1)
        pD, pI = np.where(passed, pD, pad), np.where(passed, pI, -1)
        D[likely], I[likely] = self.ordered(np.ascontiguousarray(pD), np.ascontiguousarray(pI), k)
        short = np.zeros(queries.shape[0], dtype=bool)
        short[likely[ok.sum(axis=1) < need]] = True
        short[np.setdiff1d(np.arange(queries.shape[0]), likely)] = True
        return np.flatnonzero(short)

    def _lists_with_matches(
        self, probe: int, target: int, counts: npt.NDArray[np.int64], sel: Any
    ) -> tuple[Search, list[int]]:
        """A search (for `ranked`) of each query's lists holding matches (counts per list), restricted
        by `sel`: the `probe` nearest of them; further ones until they hold `target` matches; and
        every one whose centroid is as close to the nearest of them as an unfiltered search's
        `probe`-th centroid is to its first (the same width of shell, moved out to where the matches
        begin: when they begin far away, many lists lie at about the same distance). Also a cell
        holding the most lists any call probed."""
        index = self.storage.index
        nlist = index.nlist
        holding = counts > 0
        width = [0]
        sign = -1.0 if self.spec.larger_is_better else 1.0  # coarse distances as "smaller is nearer"

        def search(q: F32, fetch: int) -> tuple[F32, I64]:
            q = np.ascontiguousarray(q, dtype=np.float32)
            coarse_d, order = index.quantizer.search(q, nlist)  # every list, nearest first
            has = holding[order]
            rank = np.cumsum(has, axis=1)
            before = np.cumsum(counts[order], axis=1) - counts[order]  # matches in the nearer lists
            near = sign * coarse_d.astype(np.float64)
            shell = near[:, min(probe, nlist) - 1] - near[:, 0]
            first = np.take_along_axis(near, np.argmax(has, axis=1)[:, None], axis=1)[:, 0]
            take = has & ((rank <= probe) | (before < target) | (near <= (first + shell)[:, None]))
            w = max(1, int(take.sum(axis=1).max()))
            width[0] = max(width[0], w)
            pos = np.argsort(~take, axis=1, kind="stable")[:, :w]  # the taken lists, nearest first
            assign = np.where(np.take_along_axis(take, pos, axis=1), np.take_along_axis(order, pos, axis=1), -1)
            assign = np.ascontiguousarray(assign, dtype=np.int64)
            dis = np.ascontiguousarray(np.take_along_axis(coarse_d, pos, axis=1), dtype=np.float32)
            n = q.shape[0]
            D = np.empty((n, fetch), dtype=np.float32)
            I = np.empty((n, fetch), dtype=np.int64)
            params = faiss.SearchParametersIVF(nprobe=w, sel=sel)  # type: ignore[call-arg]
            index.search_preassigned_c(
                n,
                faiss.swig_ptr(q),
                fetch,
                faiss.swig_ptr(assign),
                faiss.swig_ptr(dis),
                faiss.swig_ptr(D),
                faiss.swig_ptr(I),
                False,
                params,
            )
            return D, I

        return search, width


def refine_distances(spec: CollectionSpec, queries: F32, shape: tuple[int, int], rows: F32, have: Mask) -> F32:
    """The exact distances (squared L2, or inner product: as faiss's IndexRefineFlat computes them to
    re-rank) of each query to its candidates' `rows` (nq x c of them, flattened, each with whether it
    is `have`: stored), the padding distance where not. `rows` is overwritten."""
    nq, c = shape
    V = rows.reshape(nq, c, spec.dim)
    Q = np.asarray(queries, dtype=np.float32)
    if spec.larger_is_better:
        d = np.einsum("qcd,qd->qc", V, Q)
    else:
        V -= Q[:, None, :]  # (in place: no second candidates-sized array)
        d = np.einsum("qcd,qcd->qc", V, V)
    return np.where(have.reshape(nq, c), d, np.float32(pad_distance(spec))).astype(np.float32)
