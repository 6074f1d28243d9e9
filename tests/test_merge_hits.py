"""merge_hits: the shards' ShardHits (numpy arrays, as local shards answer them) merged into the global
top-k, checked against one faiss index over all the data, with refine, payloads and filter plans."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from vecshard.payload import payload_from_proto, payload_to_proto
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.search_values import ShardHits, ShardQuery
from vecshard_server.coordinator.merge import merge_hits


def _sharded(x: np.ndarray, shards: int, metric: int) -> list[tuple[faiss.Index, np.ndarray]]:
    out = []
    for s in range(shards):
        ids = np.arange(s, len(x), shards, dtype=np.int64)
        index = faiss.IndexIDMap2(faiss.IndexFlat(x.shape[1], metric))
        index.add_with_ids(x[ids], ids)
        out.append((index, ids))
    return out


@pytest.mark.parametrize("metric", [faiss.METRIC_L2, faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L1])
@pytest.mark.parametrize("shards", [1, 2, 5])
def test_merged_hits_equal_one_index_over_all_the_data(metric: int, shards: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    q = rng.standard_normal((9, 24)).astype(np.float32)
    k = 17
    whole = faiss.IndexIDMap2(faiss.IndexFlat(24, metric))
    whole.add_with_ids(x, np.arange(len(x), dtype=np.int64))
    D0, I0 = whole.search(q, k)
    hits = {s: ShardHits(*index.search(q, k)) for s, (index, _) in enumerate(_sharded(x, shards, metric))}
    merged = merge_hits(hits, k, larger_is_better=metric == faiss.METRIC_INNER_PRODUCT)
    np.testing.assert_array_equal(merged.ids, I0)
    np.testing.assert_allclose(merged.distances, D0, rtol=1e-5, atol=1e-4)
    assert merged.payloads == [] and merged.refined is None


def test_payloads_follow_the_winning_ids_and_padding_gets_an_empty_one() -> None:
    a = ShardHits(
        np.array([[1.0, 3.0]], np.float32),
        np.array([[10, 30]], np.int64),
        payloads=[payload_to_proto({"s": "a10"}), payload_to_proto({"s": "a30"})],
    )
    b = ShardHits(
        np.array([[2.0, np.finfo(np.float32).max]], np.float32),
        np.array([[20, -1]], np.int64),
        payloads=[payload_to_proto({"s": "b20"}), ppb.Payload()],
    )
    merged = merge_hits({1: b, 0: a}, 5, larger_is_better=False, with_payload=True)
    assert merged.ids.tolist() == [[10, 20, 30, -1, -1]]
    assert [payload_from_proto(p) for p in merged.payloads] == [{"s": "a10"}, {"s": "b20"}, {"s": "a30"}, {}, {}]


def test_refined_hits_rerank_by_exact_distance_across_shards() -> None:
    # Code distances put 1 and 2 first; exact distances reverse them and bring 3 in: the global best
    # `candidates` by code distance, then the best k of those by exact distance (IndexRefineFlat).
    a = ShardHits(np.array([[0.1, 0.4]], np.float32), np.array([[1, 3]], np.int64), np.array([[0.9, 0.2]], np.float32))
    b = ShardHits(np.array([[0.2, 0.5]], np.float32), np.array([[2, 4]], np.int64), np.array([[0.5, 0.1]], np.float32))
    merged = merge_hits({0: a, 1: b}, 2, larger_is_better=False)
    # candidates = 2 per shard's width: the best 2 by code distance overall are 1 and 2 (not 3 or 4)
    assert merged.ids.tolist() == [[2, 1]]
    np.testing.assert_allclose(merged.distances, [[0.5, 0.9]])


def test_plans_are_kept_in_group_order() -> None:
    hits = {
        s: ShardHits(np.zeros((1, 1), np.float32), np.array([[s]], np.int64), plans=[ppb.FilterPlan(shard=f"g{s}")])
        for s in (2, 0, 1)
    }
    assert [p.shard for p in merge_hits(hits, 1, False).plans] == ["g0", "g1", "g2"]


def test_shard_query_round_trips_through_its_proto_and_is_encoded_once() -> None:
    q = ShardQuery("c", np.arange(12, dtype=np.float32).reshape(3, 4), k=5, nprobe=2, refine=3)
    back = ShardQuery.from_proto(q.to_proto())
    np.testing.assert_array_equal(back.queries, q.queries)
    assert (back.collection, back.k, back.nprobe, back.refine, back.filter) == ("c", 5, 2, 3, None)
    assert q.encoded() is q.encoded()
    import dataclasses

    chunk = dataclasses.replace(q, queries=q.queries[:1])
    assert ShardQuery.from_proto(type(q.to_proto()).FromString(chunk.encoded())).nq == 1  # not the whole's bytes


def test_hits_read_back_from_a_reply_of_another_shape_are_refused() -> None:
    from vecshard.errors import FailedPrecondition

    reply = ShardHits(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.int64)).to_proto()
    assert ShardHits.from_proto(reply, 2, 3).ids.shape == (2, 3)
    with pytest.raises(FailedPrecondition, match="another config"):
        ShardHits.from_proto(reply, 2, 4)
