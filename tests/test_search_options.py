"""Search options (#25 item 4, first part): `offset` pages exactly (hits offset .. offset + k - 1 of a
search for offset + k, the same as one index over the same data) and `score_threshold` keeps hits
within the threshold in the metric's direction; on 1 and 3 shards, in both shard modes (the
`cluster_of` fixture), through the coalesced path (a few queries), the direct path (more queries)
and the filtered path with payloads."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from vecshard import Client
from vecshard.errors import InvalidArgument
from vecshard_server.cluster.local import LocalCluster

DIM = 16
N = 1500


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=60) as c:
        yield c


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, DIM)).astype(np.float32), rng.standard_normal((20, DIM)).astype(np.float32)


def _exact(x: np.ndarray, q: np.ndarray, k: int, metric: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlat(DIM, metric)
    index.add(x)
    return index.search(q, k)


@pytest.mark.parametrize("metric", ["l2", "inner_product"])
def test_offset_pages_exactly_like_one_index(client: Client, metric: str) -> None:
    name = f"opt_offset_{metric}"
    x, q = _data(3)
    client.create_collection(name, DIM, metric=metric)
    try:
        client.add(name, np.arange(N), x, payloads=[{"i": i, "even": i % 2 == 0} for i in range(N)])
        D0, I0 = _exact(x, q, 12, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
        for nq in (3, 20):  # a coalesced round, then the direct path
            D, I = client.search(name, q[:nq], k=5, offset=7)
            np.testing.assert_array_equal(I, I0[:nq, 7:12])
            np.testing.assert_allclose(D, D0[:nq, 7:12], rtol=1e-4, atol=1e-4)
            whole = client.search(name, q[:nq], k=12)
            np.testing.assert_array_equal(I, whole.ids[:, 7:12])
        # Filtered, with payloads: the page of the matching points, each hit with its own payload.
        paged = client.search(name, q[:4], k=3, offset=2, filter="even = true", with_payload=True)
        full = client.search(name, q[:4], k=5, filter="even = true", with_payload=True)
        np.testing.assert_array_equal(paged.ids, full.ids[:, 2:5])
        for hits in paged.hits():
            assert len(hits) == 3 and all(h.payload == {"i": h.id, "even": True} for h in hits)
        # Paging past the data: padding.
        D, I = client.search(name, q[:2], k=5, offset=N - 2)
        assert (I[:, :2] >= 0).all() and (I[:, 2:] == -1).all()
    finally:
        client.drop_collection(name)


def test_score_threshold_keeps_hits_in_the_metrics_direction(client: Client) -> None:
    x, q = _data(5)
    for metric, faiss_metric in (("l2", faiss.METRIC_L2), ("inner_product", faiss.METRIC_INNER_PRODUCT)):
        name = f"opt_threshold_{metric}"
        client.create_collection(name, DIM, metric=metric)
        try:
            client.add(name, np.arange(N), x, payloads=[{"i": i} for i in range(N)])
            D0, I0 = _exact(x, q, 10, faiss_metric)
            t = float(np.median(D0[:, 4]))  # about half the rows keep 5 or more of their 10
            keep = D0 <= t if metric == "l2" else D0 >= t
            expect = np.where(keep, I0, -1)
            for nq in (3, 20):
                res = client.search(name, q[:nq], k=10, score_threshold=t)
                np.testing.assert_array_equal(res.ids, expect[:nq])
                kept = res.ids >= 0
                np.testing.assert_allclose(res.distances[kept], D0[:nq][kept], rtol=1e-4, atol=1e-4)
                assert 0 < kept.sum() < kept.size
            # After an offset, with payloads: padding has none, kept hits their own.
            res = client.search(name, q[:3], k=6, offset=2, score_threshold=t, with_payload=True)
            np.testing.assert_array_equal(res.ids, expect[:3, 2:8])
            assert res.payloads is not None
            for row_ids, row_payloads in zip(res.ids.tolist(), res.payloads, strict=True):
                assert [p and p["i"] for p in row_payloads] == [i if i >= 0 else None for i in row_ids]
        finally:
            client.drop_collection(name)


def test_bad_offsets_and_thresholds_are_invalid_argument(client: Client) -> None:
    name = "opt_bad"
    client.create_collection(name, DIM)
    try:
        client.add(name, [1], np.ones((1, DIM), np.float32))
        with pytest.raises(InvalidArgument, match="max_k"):
            client.search(name, np.ones((1, DIM), np.float32), k=10, offset=4090)
        with pytest.raises(InvalidArgument, match="finite"):
            client.search(name, np.ones((1, DIM), np.float32), k=1, score_threshold=math.nan)
        with pytest.raises(InvalidArgument, match="offset"):
            client.search(name, np.ones((1, DIM), np.float32), k=1, offset=-1)
        assert client.search(name, np.ones((1, DIM), np.float32), k=1, offset=4095).ids.tolist() == [[-1]]
    finally:
        client.drop_collection(name)


def test_cli_search_offset_and_score_threshold(cluster_of: Callable[[int], LocalCluster], tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from vecshard_server.cli.main import cli

    address, name = cluster_of(2).address, "opt_cli"
    x, q = _data(9)
    vectors = tmp_path / "q.npy"
    np.save(vectors, q[:1])
    with Client(address, timeout=60) as c:
        c.create_collection(name, DIM)
        try:
            c.add(name, np.arange(N), x)
            D0, I0 = _exact(x, q[:1], 6, faiss.METRIC_L2)

            def hits(*extra: str) -> list[int]:
                args = ["search", name, "--vectors", str(vectors), "-k", "3", "--json", "--address", address, *extra]
                out = CliRunner().invoke(cli, args)
                assert out.exit_code == 0, out.output
                return [h["id"] for h in json.loads(out.output)[0]["hits"]]

            assert hits("--offset", "3") == I0[0, 3:6].tolist()
            assert hits("--score-threshold", str(float(D0[0, 1]) + 1e-3)) == I0[0, :2].tolist()
        finally:
            c.drop_collection(name)
