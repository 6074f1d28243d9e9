"""The fusion arithmetic of hybrid search (coordinator/fusion.py), checked on hand-made lists: RRF
and linear fusion (min-max normalisation in each leg's direction, all-equal legs, absent hits),
the order (fused score descending, ties by id), each hit's leg scores and ranks, depth, paging and
the score threshold; and a brute-force recomputation on random lists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vecshard_server.common.results import FLT_MAX
from vecshard_server.coordinator.fusion import Leg, linear, rrf

NAN = float("nan")
PAD = -1


def _leg(ids: list[list[int]], scores: list[list[float]], higher: bool) -> Leg:
    return Leg(np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float32), higher)


def _same(a: np.ndarray, b: list[float]) -> None:
    np.testing.assert_allclose(a, np.array(b, dtype=np.float32), rtol=1e-6, equal_nan=True)


def test_rrf_sums_reciprocal_ranks_and_breaks_ties_by_id() -> None:
    dense = _leg([[3, 1, 2]], [[0.1, 0.2, 0.5]], higher=False)  # L2 distances: 3 is the best
    keyword = _leg([[2, 4, PAD]], [[5.0, 1.0, -float(FLT_MAX)]], higher=True)
    f = rrf(dense, keyword, 60)
    # 2: 1/63 + 1/61; 3: 1/61; 1 and 4: 1/62 each (tied: the smaller id first).
    assert f.ids.tolist() == [[2, 3, 1, 4]]
    _same(f.scores[0], [1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62])
    assert f.dense_ranks.tolist() == [[3, 1, 2, 0]] and f.keyword_ranks.tolist() == [[1, 0, 0, 2]]
    _same(f.dense_scores[0], [0.5, 0.1, 0.2, NAN])
    _same(f.keyword_scores[0], [5.0, NAN, NAN, 1.0])
    small = rrf(dense, keyword, 1)  # rrf_k = 1: 2 has 1/4 + 1/2, 3 has 1/2
    _same(small.scores[0][:2], [1 / 4 + 1 / 2, 1 / 2])
    with pytest.raises(ValueError):
        rrf(dense, keyword, 0)


def test_linear_normalises_each_leg_in_its_direction() -> None:
    dense = _leg([[10, 20, 30]], [[0.9, 0.5, 0.1]], higher=True)  # similarities: 1, 0.5, 0
    keyword = _leg([[30, 40]], [[8.0, 2.0]], higher=True)  # 1, 0
    f = linear(dense, keyword, (0.7, 0.3))
    assert f.ids.tolist() == [[10, 20, 30, 40]]
    _same(f.scores[0], [0.7, 0.35, 0.3, 0.0])
    assert f.dense_ranks.tolist() == [[1, 2, 3, 0]] and f.keyword_ranks.tolist() == [[0, 0, 1, 2]]
    l2 = _leg([[5, 6, 7]], [[1.0, 2.0, 3.0]], higher=False)  # distances: the smallest is 1
    g = linear(l2, _leg([[7]], [[4.0]], higher=True), (1.0, 1.0))
    # 5: 1; 6: 0.5; 7: 0 + 1 (a single keyword hit normalises to 1).
    assert g.ids.tolist() == [[5, 7, 6]]
    _same(g.scores[0], [1.0, 1.0, 0.5])  # 5 and 7 tie: the smaller id first
    same = linear(_leg([[8, 9]], [[2.0, 2.0]], higher=False), _leg([[PAD]], [[-1.0]], higher=True))
    assert same.ids.tolist() == [[8, 9]]  # all equal: 1 each
    _same(same.scores[0], [1.0, 1.0])
    _same(same.keyword_scores[0], [NAN, NAN])
    assert linear(dense, keyword, (0.0, 1.0)).ids.tolist() == [[30, 10, 20, 40]]  # (ties at 0 by id)
    with pytest.raises(ValueError):
        linear(dense, keyword, (-0.1, 1.0))


def test_rows_depth_page_and_threshold() -> None:
    dense = _leg([[1, 2, PAD], [PAD, PAD, PAD]], [[0.0, 1.0, FLT_MAX], [FLT_MAX] * 3], higher=False)
    keyword = _leg([[2, 3], [7, 6]], [[2.0, 1.0], [3.0, 3.0]], higher=True)
    f = rrf(dense, keyword, 60, depth=5)
    assert f.ids.tolist() == [[2, 1, 3, -1, -1], [7, 6, -1, -1, -1]]
    assert f.scores[0, 3] == -FLT_MAX and math.isnan(float(f.dense_scores[1, 0]))
    assert rrf(dense, keyword, 60, depth=2).ids.tolist() == [[2, 1], [7, 6]]
    page = f.page(1, 2)
    assert page.ids.tolist() == [[1, 3], [6, -1]]
    assert page.dense_ranks.tolist() == [[1, 0], [0, 0]] and page.keyword_ranks.tolist() == [[0, 2], [2, 0]]
    kept = f.page(0, 3, threshold=1 / 61)  # 2: 1/62 + 1/61, 1: 1/61, 3: 1/62; 7: 1/61, 6: 1/62
    assert kept.ids.tolist() == [[2, 1, -1], [7, -1, -1]]
    assert kept.keyword_ranks.tolist() == [[1, 0, 0], [1, 0, 0]]
    assert np.isnan(kept.keyword_scores[0, 1:]).all() and (kept.scores[:, 2] == -FLT_MAX).all()
    wide = f.page(4, 3)  # past the fused list: padding
    assert wide.ids.tolist() == [[-1, -1, -1], [-1, -1, -1]]
    f.page(0, 2, threshold=10.0)
    assert f.ids[0, 0] == 2  # a page is a copy


def _brute(dense: Leg, keyword: Leg, mode: str, rrf_k: int, weights: tuple[float, float]) -> list[list[tuple]]:
    """Per query [(id, fused, dense score, dense rank, keyword score, keyword rank)] by plain Python."""
    out = []
    for q in range(dense.ids.shape[0]):
        legs = []
        for leg in (dense, keyword):
            hits = [(int(i), float(s)) for i, s in zip(leg.ids[q], leg.scores[q], strict=True) if i >= 0]
            values = [s for _, s in hits]
            best, worst = (max, min) if leg.higher_is_better else (min, max)
            b, w = (best(values), worst(values)) if values else (0.0, 0.0)
            norm = {i: 1.0 if b == w else (s - w) / (b - w) for i, s in hits}
            legs.append({i: (r + 1, s, norm[i]) for r, (i, s) in enumerate(hits)})
        rows = []
        for i in sorted(set(legs[0]) | set(legs[1])):
            d, k = legs[0].get(i), legs[1].get(i)
            if mode == "rrf":
                fused = sum(1 / (rrf_k + x[0]) for x in (d, k) if x)
            else:
                fused = weights[0] * (d[2] if d else 0) + weights[1] * (k[2] if k else 0)
            rows.append(
                (
                    i,
                    float(np.float32(fused)),
                    d[1] if d else NAN,
                    d[0] if d else 0,
                    k[1] if k else NAN,
                    k[0] if k else 0,
                )
            )
        rows.sort(key=lambda r: (-r[1], r[0]))
        out.append(rows)
    return out


@pytest.mark.parametrize("mode", ["rrf", "linear"])
@pytest.mark.parametrize("dense_higher", [False, True])
def test_fusion_equals_a_brute_force_recomputation(mode: str, dense_higher: bool) -> None:
    rng = np.random.default_rng(7)
    nq, n = 30, 12
    legs = []
    for higher in (dense_higher, True):
        ids = np.full((nq, n), -1, dtype=np.int64)
        scores = np.full((nq, n), -FLT_MAX if higher else FLT_MAX, dtype=np.float32)
        for q in range(nq):
            m = int(rng.integers(0, n + 1))
            ids[q, :m] = rng.choice(40, size=m, replace=False)
            s = np.sort(rng.integers(0, 6, size=m).astype(np.float32))  # ties on purpose
            scores[q, :m] = s[::-1] if higher else s
        legs.append(Leg(ids, scores, higher))
    weights = (0.4, 1.3)
    f = rrf(legs[0], legs[1], 5) if mode == "rrf" else linear(legs[0], legs[1], weights)
    expected = _brute(legs[0], legs[1], mode, 5, weights)
    for q, rows in enumerate(expected):
        m = len(rows)
        assert f.ids[q, :m].tolist() == [r[0] for r in rows]
        assert (f.ids[q, m:] == -1).all()
        np.testing.assert_allclose(f.scores[q, :m], [r[1] for r in rows], rtol=1e-6)
        np.testing.assert_allclose(f.dense_scores[q, :m], [r[2] for r in rows], equal_nan=True)
        assert f.dense_ranks[q, :m].tolist() == [r[3] for r in rows]
        np.testing.assert_allclose(f.keyword_scores[q, :m], [r[4] for r in rows], equal_nan=True)
        assert f.keyword_ranks[q, :m].tolist() == [r[5] for r in rows]
