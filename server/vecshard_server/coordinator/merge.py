"""Merging per-shard top-k results into the global top-k.

faiss's `merge_knn_results` / `ResultHeap` give the right order for either metric direction, but
they break distance ties by shard order and keep duplicate ids. vecshard promises ties broken by
the smaller id on every path (results must not depend on which shard answered first, nor on the
number of shards) and no duplicate ids (the same id can appear twice while it is being moved or
replicated). So this is one vectorised numpy sort, checked against faiss.merge_knn_results in the
tests on tie-free data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.results import pad_distance
from vecshard_server.common.search_values import ShardHits


def merge_topk(
    distances: Sequence[npt.NDArray[np.float32]],
    ids: Sequence[npt.NDArray[np.int64]],
    k: int,
    larger_is_better: bool,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Merge S result sets of shape (nq, k_s) into the best k per row.

    Rows are ordered best first by (distance in the metric's direction, id); each id appears at
    most once per row (its best distance kept); missing entries are padded with id -1 and the
    faiss padding distance.
    """
    D = np.concatenate([np.asarray(d, dtype=np.float32) for d in distances], axis=1)
    Id = np.concatenate([np.asarray(i, dtype=np.int64) for i in ids], axis=1)
    if D.shape[0] * D.shape[1] <= SMALL:
        return _merge_small(D, Id, k, larger_is_better)
    order, pad = _best(D, Id, k, larger_is_better)
    return _taken(D, Id, order, pad, k, larger_is_better)


SMALL = 256  # results to merge below which plain Python beats numpy's per-call overhead


def _merge_small(
    D: npt.NDArray[np.float32], Id: npt.NDArray[np.int64], k: int, larger_is_better: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """merge_topk for a few rows (a single query's search): the same order, in Python."""
    pad = pad_distance(larger_is_better)
    out_d = np.full((D.shape[0], k), pad, dtype=np.float32)
    out_i = np.full((D.shape[0], k), -1, dtype=np.int64)
    sign = -1.0 if larger_is_better else 1.0
    for r, (drow, irow) in enumerate(zip(D.tolist(), Id.tolist(), strict=True)):
        best: dict[int, float] = {}
        for d, i in zip(drow, irow, strict=True):
            if i >= 0 and d * sign != float("inf"):
                key = d * sign
                if i not in best or key < best[i]:
                    best[i] = key
        top = sorted(best.items(), key=lambda e: (e[1], e[0]))[:k]
        for j, (i, key) in enumerate(top):
            out_i[r, j] = i
            out_d[r, j] = key * sign
    return out_d, out_i


def merge_refined(
    distances: Sequence[npt.NDArray[np.float32]],
    ids: Sequence[npt.NDArray[np.int64]],
    refined: Sequence[npt.NDArray[np.float32]],
    k: int,
    candidates: int,
    larger_is_better: bool,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Re-ranking across shards, as faiss's IndexRefineFlat over all the data does: the best
    `candidates` of all shards by compressed distance, then their best k by exact (`refined`)
    distance. Each shard sent its best `candidates` with both distances."""
    D = np.concatenate([np.asarray(d, dtype=np.float32) for d in distances], axis=1)
    R = np.concatenate([np.asarray(r, dtype=np.float32) for r in refined], axis=1)
    Id = np.concatenate([np.asarray(i, dtype=np.int64) for i in ids], axis=1)
    order, pad = _best(D, Id, candidates, larger_is_better)
    cand_r, cand_i = _taken(R, Id, order, pad, candidates, larger_is_better)
    return merge_topk([cand_r], [cand_i], k, larger_is_better)


def _best(
    D: npt.NDArray[np.float32], Id: npt.NDArray[np.int64], k: int, larger_is_better: bool
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """The columns of each row's best k entries, best first (duplicate ids dropped, ties by id),
    and which of them are padding."""
    # Sort key: smaller is better; padding (-1) sorts last.
    key = -D if larger_is_better else D.copy()
    valid = Id >= 0
    key[~valid] = np.inf
    # Drop duplicate ids: order each row by (id, key) and keep each id's first (best) entry.
    by_id = np.lexsort((key, Id), axis=1)
    ids_sorted = np.take_along_axis(Id, by_id, axis=1)
    dup = np.zeros_like(valid)
    dup[:, 1:] = ids_sorted[:, 1:] == ids_sorted[:, :-1]
    dup &= ids_sorted >= 0
    if dup.any():
        dup_orig = np.zeros_like(dup)
        np.put_along_axis(dup_orig, by_id, dup, axis=1)
        key[dup_orig] = np.inf
    tie_id = np.where((Id >= 0) & (key != np.inf), Id, np.iinfo(np.int64).max)
    order = np.lexsort((tie_id, key), axis=1)[:, :k]
    return order, np.take_along_axis(key, order, axis=1) == np.inf


def _taken(
    D: npt.NDArray[np.float32],
    Id: npt.NDArray[np.int64],
    order: npt.NDArray[np.intp],
    pad: npt.NDArray[np.bool_],
    k: int,
    larger_is_better: bool,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    out_d = np.take_along_axis(D, order, axis=1)
    out_i = np.take_along_axis(Id, order, axis=1)
    out_d[pad] = pad_distance(larger_is_better)
    out_i[pad] = -1
    if out_d.shape[1] < k:
        nq, extra = out_d.shape[0], k - out_d.shape[1]
        out_d = np.hstack([out_d, np.full((nq, extra), pad_distance(larger_is_better), np.float32)])
        out_i = np.hstack([out_i, np.full((nq, extra), -1, np.int64)])
    return np.ascontiguousarray(out_d), np.ascontiguousarray(out_i)


def merge_hits(
    hits: Mapping[int, ShardHits],
    k: int,
    larger_is_better: bool,
    with_payload: bool = False,
    with_vectors: bool = False,
) -> ShardHits:
    """The shards' answers to one search (by group) merged into the global top-k: `merge_refined`
    when they carry exact distances (refine), else `merge_topk`; with the winners' payloads and
    vectors (each id's as its shard sent them) and every shard's filter plans."""
    parts = [hits[s] for s in sorted(hits)]
    distances = [p.distances for p in parts]
    ids = [p.ids for p in parts]
    refined = [p.refined for p in parts if p.refined is not None]
    if refined and len(refined) == len(parts):
        D, I = merge_refined(distances, ids, refined, k, parts[0].ids.shape[1], larger_is_better)
    else:
        D, I = merge_topk(distances, ids, k, larger_is_better)
    winners = I.reshape(-1).tolist() if with_payload or with_vectors else []
    payloads: list[ppb.Payload] = []
    if with_payload:
        by_id: dict[int, ppb.Payload] = {}
        for p in parts:
            for i, payload in zip(p.ids.reshape(-1).tolist(), p.payloads, strict=False):
                if i >= 0:
                    by_id[i] = payload
        empty = ppb.Payload()
        payloads = [by_id.get(i, empty) for i in winners]
    vectors = None
    if with_vectors:
        dim = next((p.vectors.shape[1] for p in parts if p.vectors is not None), 0)
        vectors = np.zeros((len(winners), dim), dtype=np.float32)
        rows: dict[int, npt.NDArray[np.float32]] = {}
        for p in parts:
            if p.vectors is not None:
                for i, row in zip(p.ids.reshape(-1).tolist(), p.vectors, strict=False):
                    if i >= 0:
                        rows[i] = row
        for j, i in enumerate(winners):
            if i >= 0 and i in rows:
                vectors[j] = rows[i]
    return ShardHits(D, I, None, payloads, [plan for p in parts for plan in p.plans], vectors)
