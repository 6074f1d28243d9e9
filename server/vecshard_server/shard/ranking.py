"""The order of search results: by (distance in the metric's direction, id), ties included.

faiss orders a row by distance only, and of ids tied at the k-th place keeps whichever it met first;
vecshard's answers must not depend on the order vectors were stored in (replicas, shard counts and
snapshots differ in it), so of equal distances the smaller id comes first and wins the last places.
Functions over any search that keeps faiss's contract (rows best first, -1 padding last).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Search = Callable[[F32, int], tuple[F32, I64]]  # (queries, results per row) -> (D, I)


def ranked(
    queries: F32, k: int, search: Search, n: int, larger_is_better: bool, budget: int, fetch: int = 0
) -> tuple[F32, I64]:
    """The top-k of `search` over `n` stored vectors, with ties broken by the smaller id. faiss keeps
    whichever tied ids it met first at the k boundary, so it is asked for k + 1: rows whose (k+1)-th
    result ties the k-th are searched again with twice the results (at most n, in chunks of rows
    holding at most `budget` results) until their whole tie group is in; then rows are sorted by
    (distance, id) and cut to k. Without a tie at the boundary that is one faiss call."""
    if k < 1 or k >= n:  # all stored vectors fit in k: no tie can cross the boundary
        return ordered(*search(queries, k), k, larger_is_better)
    fetch = fetch or k + 1
    D, I = search(queries, fetch)
    more = (I[:, -1] >= 0) & (D[:, -1] == D[:, k - 1]) if fetch < n else np.zeros(len(I), dtype=bool)
    out_d, out_i = ordered(D, I, k, larger_is_better)
    del D, I
    rows = np.flatnonzero(more)
    fetch = min(2 * fetch, n)
    step = max(1, budget // fetch)
    for start in range(0, rows.size, step):
        chunk = rows[start : start + step]
        out_d[chunk], out_i[chunk] = ranked(queries[chunk], k, search, n, larger_is_better, budget, fetch)
    return out_d, out_i


def ordered(D: F32, I: I64, k: int, larger_is_better: bool) -> tuple[F32, I64]:
    """Rows (sorted by distance) re-sorted by (distance in the metric's direction, id), cut to k."""
    tied = ((D[:, 1:] == D[:, :-1]) & (I[:, 1:] >= 0)).any(axis=1)
    if tied.any():
        d, i = D[tied], I[tied]
        key = np.where(i >= 0, -d if larger_is_better else d, np.inf)
        order = np.lexsort((np.where(i >= 0, i, np.iinfo(np.int64).max), key), axis=1)
        D, I = D.copy(), I.copy()
        D[tied], I[tied] = np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)
    return np.ascontiguousarray(D[:, :k]), np.ascontiguousarray(I[:, :k])
