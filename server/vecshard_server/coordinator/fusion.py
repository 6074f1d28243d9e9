"""The fusion of a hybrid search's two legs: pure arithmetic on numpy arrays, no I/O.

Each leg is a list of hits per query, best first, deduplicated (the merge's output): a dense leg
(distances or similarities, in its metric's direction) and a keyword leg (BM25 scores, higher is
better). A hit's rank in a leg is its position there, from 1.

- RRF (reciprocal rank fusion): fused = sum over the legs holding the hit of 1 / (rrf_k + rank).
- LINEAR: fused = w_dense * dense' + w_keyword * keyword', where each leg's scores are min-max
  normalised over its own hits (that query's candidates) to [0, 1] with 1 the best in the leg's
  direction (all of them equal: 1), and a leg that does not hold the hit adds 0.

The fused list is ordered by fused score, higher first, ties by the smaller id, where the score is
compared as the float32 the reply carries (so equal shown scores are always in id order). Each hit
keeps its score and rank in each leg (NaN and 0 where absent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vecshard_server.common.results import pad_distance

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]

RRF_K = 60  # the rank constant when none is given (Cormack et al., and Elasticsearch's default)


@dataclass(frozen=True)
class Leg:
    """One leg's hits: ids (nq, n) best first, -1 padding (after the real hits), and their scores
    (distances or similarities: `higher_is_better` says which way is better)."""

    ids: I64
    scores: F32
    higher_is_better: bool

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.ids >= 0)

    def ranks(self) -> I32:
        """Each hit's rank in the leg (from 1), 0 for padding."""
        nq, n = self.ids.shape
        pos = np.broadcast_to(np.arange(1, n + 1, dtype=np.int32), (nq, n))
        return np.where(self.valid, pos, 0).astype(np.int32)

    def normalised(self) -> F64:
        """min-max normalised scores per query over the leg's hits: 1 the best, 0 the worst (all
        equal: 1); 0 for padding."""
        valid = self.valid
        s = self.scores.astype(np.float64)
        if not self.higher_is_better:
            s = -s
        lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
        hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
        span = hi - lo
        flat = ~(span > 0)  # (all equal, or no hits: the rows without hits are masked below)
        out = np.where(flat, 1.0, (s - lo) / np.where(flat, 1.0, span))
        return np.where(valid, out, 0.0)


@dataclass(frozen=True)
class Fused:
    """A fused list per query (nq, m), best first: ids (-1 padding), fused scores (the padding's
    -FLT_MAX), and each hit's score and rank in each leg (NaN and 0 where the leg lacks it)."""

    ids: I64
    scores: F32
    dense_scores: F32
    dense_ranks: I32
    keyword_scores: F32
    keyword_ranks: I32

    def page(self, offset: int, k: int, threshold: float | None = None) -> Fused:
        """Columns offset .. offset + k - 1 (padded to k), hits whose fused score is below
        `threshold` made padding (scores: higher is better, kept when >= threshold)."""
        nq = self.ids.shape[0]
        cols = _padded(self, offset + k)

        def cut(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            return a[:, offset : offset + k].copy()

        out = Fused(*(cut(a) for a in cols))  # type: ignore[arg-type]
        if threshold is not None:
            drop = (out.ids >= 0) & (out.scores < np.float32(threshold))
            _blank(out, drop)
        assert out.ids.shape == (nq, k)
        return out


def _padded(f: Fused, width: int) -> tuple[npt.NDArray[np.generic], ...]:
    """The columns of f, padded to at least `width`."""
    nq, m = f.ids.shape
    extra = max(0, width - m)
    if not extra:
        return (f.ids, f.scores, f.dense_scores, f.dense_ranks, f.keyword_scores, f.keyword_ranks)
    empty = _empty(nq, extra)
    return (
        np.hstack([f.ids, empty.ids]),
        np.hstack([f.scores, empty.scores]),
        np.hstack([f.dense_scores, empty.dense_scores]),
        np.hstack([f.dense_ranks, empty.dense_ranks]),
        np.hstack([f.keyword_scores, empty.keyword_scores]),
        np.hstack([f.keyword_ranks, empty.keyword_ranks]),
    )


def _empty(nq: int, m: int) -> Fused:
    """nq rows of m padding entries."""
    return Fused(
        np.full((nq, m), -1, np.int64),
        np.full((nq, m), pad_distance(True), np.float32),
        np.full((nq, m), np.nan, np.float32),
        np.zeros((nq, m), np.int32),
        np.full((nq, m), np.nan, np.float32),
        np.zeros((nq, m), np.int32),
    )


def _blank(f: Fused, where: npt.NDArray[np.bool_]) -> None:
    """Make the entries at `where` padding (in place)."""
    f.ids[where] = -1
    f.scores[where] = pad_distance(True)
    f.dense_scores[where] = np.nan
    f.keyword_scores[where] = np.nan
    f.dense_ranks[where] = 0
    f.keyword_ranks[where] = 0


def rrf(dense: Leg, keyword: Leg, rrf_k: int = RRF_K, depth: int | None = None) -> Fused:
    """Reciprocal rank fusion: each leg holding a hit adds 1 / (rrf_k + its rank there); the best
    `depth` per query (None: every hit of either leg)."""
    if rrf_k < 1:
        raise ValueError(f"rrf_k must be >= 1, got {rrf_k}")

    def part(leg: Leg) -> F64:
        r = leg.ranks()
        return np.where(r > 0, 1.0 / (rrf_k + r.astype(np.float64)), 0.0)

    return fuse(dense, keyword, part(dense), part(keyword), depth)


def linear(dense: Leg, keyword: Leg, weights: tuple[float, float] = (1.0, 1.0), depth: int | None = None) -> Fused:
    """w_dense * dense' + w_keyword * keyword' over each leg's min-max normalised scores (0 where
    the leg lacks the hit); the best `depth` per query (None: every hit of either leg)."""
    wd, wk = (float(w) for w in weights)
    if not (wd >= 0 and wk >= 0):
        raise ValueError(f"weights must be >= 0, got {weights}")
    return fuse(dense, keyword, wd * dense.normalised(), wk * keyword.normalised(), depth)


def fuse(dense: Leg, keyword: Leg, dense_part: F64, keyword_part: F64, depth: int | None = None) -> Fused:
    """The fused list from each leg's contribution per hit (aligned with the leg's ids): a hit's
    fused score is the sum of its contributions, ordered higher first (as float32), ties by id."""
    nq = dense.ids.shape[0]
    if keyword.ids.shape[0] != nq:
        raise ValueError(f"the legs have {nq} and {keyword.ids.shape[0]} queries")
    nd = dense.ids.shape[1]
    ids = np.hstack([dense.ids, keyword.ids])
    part = np.hstack([dense_part, keyword_part])
    valid = ids >= 0
    rows = np.broadcast_to(np.arange(nq)[:, None], ids.shape)[valid]
    cols = np.broadcast_to(np.arange(ids.shape[1])[None, :], ids.shape)[valid]
    hit_ids, contrib = ids[valid], part[valid]
    # One entry per (query, id): group the legs' entries (each leg holds an id at most once).
    order = np.lexsort((hit_ids, rows))
    rows, cols, hit_ids, contrib = rows[order], cols[order], hit_ids[order], contrib[order]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (hit_ids[1:] != hit_ids[:-1])
    starts = np.flatnonzero(first)
    u = np.cumsum(first) - 1  # each entry's (query, id) group
    total = np.add.reduceat(contrib, starts) if starts.size else np.zeros(0)
    n = starts.size
    u_rows, u_ids = rows[starts], hit_ids[starts]
    u_scores = total.astype(np.float32)
    legs = _empty(1, n)
    d_scores, d_ranks, k_scores, k_ranks = (
        legs.dense_scores[0],
        legs.dense_ranks[0],
        legs.keyword_scores[0],
        legs.keyword_ranks[0],
    )
    in_dense = cols < nd
    d_scores[u[in_dense]] = dense.scores[rows[in_dense], cols[in_dense]]
    d_ranks[u[in_dense]] = cols[in_dense] + 1
    kcols = cols[~in_dense] - nd
    k_scores[u[~in_dense]] = keyword.scores[rows[~in_dense], kcols]
    k_ranks[u[~in_dense]] = kcols + 1
    # Best first per query: fused score descending, then id ascending.
    best = np.lexsort((u_ids, -u_scores, u_rows))
    per_row = np.bincount(u_rows, minlength=nq)
    width = depth if depth is not None else (int(per_row.max()) if n else 0)
    out = _empty(nq, width)
    row_start = np.concatenate([[0], np.cumsum(per_row)[:-1]])
    sorted_rows = u_rows[best]
    pos = np.arange(n) - row_start[sorted_rows]
    keep = pos < width
    r, c, b = sorted_rows[keep], pos[keep], best[keep]
    out.ids[r, c] = u_ids[b]
    out.scores[r, c] = u_scores[b]
    out.dense_scores[r, c] = d_scores[b]
    out.dense_ranks[r, c] = d_ranks[b]
    out.keyword_scores[r, c] = k_scores[b]
    out.keyword_ranks[r, c] = k_ranks[b]
    return out
