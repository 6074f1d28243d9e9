"""Coordinator coalescing: concurrent small searches of one collection share shard fan-outs, and
each caller still gets exactly its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from vecshard import AsyncClient, Client
from vecshard_server.coordinator.coalesce import Coalescer, Identity

from .conftest import clustered


def _rows_run(sizes: list[int]) -> Any:
    async def run(key: Any, x: np.ndarray, contexts: list[Any]) -> Any:
        sizes.append(x.shape[0])
        await asyncio.sleep(0.005)  # a fan-out takes a while: callers arriving meanwhile wait for the next round
        return x[:, :1] * 2, x[:, :1].astype(np.int64), {"key": key}

    return run


def test_each_caller_gets_its_own_rows_and_rounds_are_shared() -> None:
    sizes: list[int] = []
    coalescer = Coalescer(_rows_run(sizes), max_rows=64)

    async def main() -> list[Any]:
        calls = [coalescer.search("k", np.full((1 + i % 3, 4), i, np.float32), None) for i in range(100)]
        return await asyncio.gather(*calls)

    out = asyncio.run(main())
    for i, (D, I, extra) in enumerate(out):
        assert D.shape == (1 + i % 3, 1) and (D == 2 * i).all() and (I == i).all() and extra == {"key": "k"}
    assert sum(sizes) == sum(1 + i % 3 for i in range(100))
    assert len(sizes) < 100 / 4 and max(sizes) <= 64  # shared rounds, none over max_rows


def test_a_lone_search_goes_at_once_and_keys_do_not_mix() -> None:
    sizes: list[int] = []
    coalescer = Coalescer(_rows_run(sizes))

    async def main() -> None:
        D, _, extra = await coalescer.search("a", np.ones((1, 2), np.float32), None)
        assert sizes == [1] and extra == {"key": "a"}
        outs = await asyncio.gather(
            *(coalescer.search(k, np.full((1, 2), n, np.float32), None) for n, k in enumerate("abab"))
        )
        assert [o[2]["key"] for o in outs] == list("abab")
        assert [int(o[1][0, 0]) for o in outs] == [0, 1, 2, 3]

    asyncio.run(main())


def test_an_error_reaches_every_caller_of_its_round_only() -> None:
    rounds = []

    async def run(key: Any, x: np.ndarray, contexts: list[Any]) -> Any:
        rounds.append(x.shape[0])
        await asyncio.sleep(0.005)
        if len(rounds) == 2:
            raise RuntimeError("shard down")
        return x, x.astype(np.int64), {}

    coalescer = Coalescer(run)

    def one() -> Any:
        return asyncio.ensure_future(coalescer.search("k", np.ones((1, 1), np.float32), None))

    async def main() -> tuple[list[Any], Any]:
        first = [one() for _ in range(3)]  # the first goes at once; the others wait for round 2
        await asyncio.sleep(0.002)  # round 1 is in flight: these join round 2 too
        later = [one() for _ in range(3)]
        out = await asyncio.gather(*first, *later, return_exceptions=True)
        return out, await one()  # round 3

    out, last = asyncio.run(main())
    assert rounds == [1, 5, 1]
    assert isinstance(out[0], tuple)
    assert all(isinstance(o, RuntimeError) for o in out[1:])
    assert isinstance(last, tuple)


def test_identity_keys() -> None:
    a, b = object(), object()
    assert Identity(a) == Identity(a) and hash(Identity(a)) == hash(Identity(a)) and Identity(a) != Identity(b)


def test_concurrent_searches_answer_as_one_by_one(client_of: Callable[[int], Client], name: str) -> None:
    c = client_of(2)
    x = clustered(4000, 16, seed=8)
    c.create_collection(name, 16, index="ivf_flat", nlist=16, nprobe=4)
    c.add(name, np.arange(4000), x)
    c.train(name)
    queries = x[:60] + 0.05
    want = [c.search(name, queries[i : i + 1], 5) for i in range(60)]
    want_wide = c.search(name, queries[:3], 7, nprobe=16)

    async def main() -> list[Any]:
        async with AsyncClient(c.address) as ac:
            calls = [ac.search(name, queries[i : i + 1], 5) for i in range(60)]
            calls.append(ac.search(name, queries[:3], 7, nprobe=16))  # another shape: another round
            return await asyncio.gather(*calls)

    got = asyncio.run(main())
    for g, w in zip(got[:60], want, strict=True):
        np.testing.assert_array_equal(g.ids, w.ids)
        np.testing.assert_array_equal(g.distances, w.distances)
    np.testing.assert_array_equal(got[60].ids, want_wide.ids)
    c.drop_collection(name)


@pytest.mark.parametrize("bad", ["dim", "nan"])
def test_a_bad_query_fails_alone(client_of: Callable[[int], Client], name: str, bad: str) -> None:
    c = client_of(2)
    c.create_collection(name, 8)
    c.add(name, np.arange(100), np.ones((100, 8), np.float32))
    wrong = np.ones((1, 9), np.float32) if bad == "dim" else np.full((1, 8), np.nan, np.float32)

    async def main() -> list[Any]:
        async with AsyncClient(c.address) as ac:
            calls = [ac.search(name, np.ones((1, 8), np.float32), 3) for _ in range(10)]
            calls.insert(5, ac.search(name, wrong, 3))
            return await asyncio.gather(*calls, return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[5], Exception) and "INVALID_ARGUMENT" in str(out[5])
    assert all(not isinstance(o, Exception) and o.ids.shape == (1, 3) for i, o in enumerate(out) if i != 5)
    c.drop_collection(name)
