"""Keyword search on the shards (shard/keyword_rpcs.py): the two phases a coordinator runs
(KeywordStats on every group, the statistics summed, KeywordSearch with them, the hits merged by
score then id) give bm25s's "lucene" answer over the whole collection, on 1, 2 and 3 shards, through
removes, upserts and payload edits, with filters; in-process services, shard processes in both modes
through the coordinator's fan-out, and a shard process killed with -9 and restarted (the index
rebuilt from snapshot and log, with its analyzer); and the errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest
from google.protobuf.message import Message

from vecshard import wire
from vecshard.errors import FailedPrecondition, InvalidArgument
from vecshard.payload import payload_to_proto
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.placement import Placement
from vecshard_server.coordinator import shard_api
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.shard.analysis import Analyzer
from vecshard_server.shard.service import ShardService

from .support import ShardBackend, open_shard, partition_config, start_role

DIM = 4
T = 60.0
TEXT = ppb.PAYLOAD_INDEX_TYPE_TEXT
ENGLISH = ppb.TextIndexParams(stemmer="english", stopwords="english", k1=1.5, b=0.6)
WORDS = ["running", "runs", "searched", "searching", "index", "shards", "vector", "ranking", "scores", "café"]
WORDS += ["words", "the", "of", "and", "a", "is", "to", "naïve", "42", "東京"]
QUERIES = ["running searches", "the index of shards", "café naïve", "vector ranking scores scores", "東京 42"]
QUERIES += ["the of and", "", "absent words"]
FLT_MAX = np.float32(3.4028235e38)


def bodies(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 25)), p=p)) for _ in range(n)]


def payloads(ids: list[int], texts: list[str]) -> dict[int, dict[str, Any]]:
    return {i: {"body": t, "lang": ["en", "fr"][i % 2]} for i, t in zip(ids, texts, strict=True)}


Ask = Callable[[str, dict[int, Message]], Awaitable[dict[int, Any]]]


def in_process(services: list[ShardService]) -> Ask:
    """Calls of the shard services' handlers, by group."""

    async def ask(method: str, requests: dict[int, Message]) -> dict[int, Any]:
        return {g: await getattr(services[g], method)(r, None) for g, r in requests.items()}

    return ask


OPS = {
    "CreateCollection": shard_api.CREATE_COLLECTION,
    "Add": shard_api.ADD,
    "Remove": shard_api.REMOVE,
    "SetPayload": shard_api.SET_PAYLOAD,
    "CreatePayloadIndex": shard_api.CREATE_PAYLOAD_INDEX,
    "KeywordStats": shard_api.KEYWORD_STATS,
    "KeywordSearch": shard_api.KEYWORD_SEARCH,
}


def fanned(shards: ShardSet) -> Ask:
    """The same calls through a coordinator's fan-out (gRPC to shard processes, or local shards)."""

    async def ask(method: str, requests: dict[int, Message]) -> dict[int, Any]:
        return (await shards.call(OPS[method], requests, T)).results  # type: ignore[arg-type]

    return ask


class Collection:
    """A collection on S groups (jump placement), and the model of what it holds."""

    def __init__(self, ask: Ask, name: str, groups: int, params: ppb.TextIndexParams = ENGLISH) -> None:
        self.ask, self.name, self.groups, self.params = ask, name, groups, params
        self.model: dict[int, dict[str, Any]] = {}
        self.vectors: dict[int, np.ndarray] = {}

    def all(self, request: Message) -> dict[int, Message]:
        return dict.fromkeys(range(self.groups), request)

    async def create(self, index: bool = True) -> None:
        await self.ask("CreateCollection", self.all(partition_config(self.name, DIM, self.groups)))
        if index:
            await self.create_index()

    async def create_index(self) -> None:
        await self.ask("CreatePayloadIndex", self.all(self.index_request()))

    def index_request(self) -> pb.CreatePayloadIndexRequest:
        return pb.CreatePayloadIndexRequest(collection=self.name, field="body", type=TEXT, text=self.params)

    async def add(self, points: dict[int, dict[str, Any]], upsert: bool = False) -> None:
        ids = np.array(sorted(points), dtype=np.int64)
        x = np.random.default_rng(int(ids.sum())).standard_normal((ids.size, DIM)).astype(np.float32)
        requests = {}
        for g, pos in enumerate(Placement("jump", self.groups).split(ids)):
            if pos.size:
                requests[g] = pb.AddRequest(
                    collection=self.name,
                    ids=wire.pack_ids(ids[pos]),
                    vectors=wire.pack_matrix(x[pos]),
                    payloads=[payload_to_proto(points[int(i)]) for i in ids[pos]],
                    upsert=upsert,
                )
        await self.ask("Add", requests)
        self.model.update(points)
        self.vectors.update(zip(ids.tolist(), x, strict=True))

    async def remove(self, ids: list[int]) -> None:
        await self.ask("Remove", self.all(pb.RemoveRequest(collection=self.name, ids=wire.pack_ids(np.array(ids)))))
        for i in ids:
            self.model.pop(i, None)

    async def set_payload(self, ids: list[int], patch: dict[str, Any], mode: int) -> None:
        req = pb.SetPayloadRequest(
            collection=self.name, ids=wire.pack_ids(np.array(ids)), payload=payload_to_proto(patch), mode=mode
        )
        await self.ask("SetPayload", self.all(req))
        for i in ids:
            if i in self.model:
                self.model[i] = {**self.model[i], **patch} if mode == pb.SET_PAYLOAD_MODE_MERGE else dict(patch)

    async def keyword(
        self, texts: list[str], k: int, f: ppb.Filter | None = None, **options: Any
    ) -> tuple[np.ndarray, np.ndarray, list[pb.SearchResponse]]:
        """The coordinator's two phases: (scores nq x k, ids nq x k, the shards' replies)."""
        stats = await self.ask("KeywordStats", self.all(spb.KeywordStatsRequest(collection=self.name, texts=texts)))
        replies = list(stats.values())
        terms = [list(q.terms) for q in replies[0].queries]
        assert all([list(q.terms) for q in r.queries] == terms for r in replies)  # every shard analyses alike
        df = [np.sum([list(r.queries[i].df) for r in replies], axis=0).astype(int).tolist() for i in range(len(texts))]
        request = spb.KeywordSearchRequest(
            collection=self.name,
            queries=[spb.QueryTerms(terms=t, df=d if t else []) for t, d in zip(terms, df, strict=True)],
            documents=sum(r.documents for r in replies),
            tokens=sum(r.tokens for r in replies),
            k=k,
            **options,
        )
        if f is not None:
            request.filter.CopyFrom(f)
        found = list((await self.ask("KeywordSearch", self.all(request))).values())
        assert all(r.higher_is_better for r in found)
        D = np.concatenate([np.frombuffer(r.distances, np.float32).reshape(len(texts), k) for r in found], axis=1)
        I = np.concatenate([np.frombuffer(r.ids, np.int64).reshape(len(texts), k) for r in found], axis=1)
        order = np.lexsort((np.where(I < 0, np.iinfo(np.int64).max, I), -D), axis=1)[:, :k]
        return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1), found

    def reference(self, texts: list[str], k: int, allowed: Callable[[dict[str, Any]], bool] = lambda p: True):
        """bm25s's "lucene" top k over the documents, padded as the shards pad."""
        analyzer = Analyzer(self.params)
        docs = {i: analyzer.analyze(p["body"]) for i, p in sorted(self.model.items()) if isinstance(p.get("body"), str)}
        ids = np.array(list(docs), dtype=np.int64)
        r = bm25s.BM25(method="lucene", k1=analyzer.k1, b=analyzer.b, dtype="float64")
        r.index(list(docs.values()), show_progress=False)
        D = np.full((len(texts), k), -FLT_MAX, dtype=np.float32)
        I = np.full((len(texts), k), -1, dtype=np.int64)
        for row, text in enumerate(texts):
            q = [t for t in analyzer.analyze(text) if t in r.vocab_dict]
            scores = r.get_scores(q) if q else np.zeros(ids.size)
            hit = np.flatnonzero((scores > 0) & np.array([allowed(self.model[int(i)]) for i in ids], dtype=bool))
            top = hit[np.lexsort((ids[hit], -scores[hit].astype(np.float32)))][:k]
            D[row, : top.size], I[row, : top.size] = scores[top], ids[top]
        return D, I

    async def check(self, k: int = 10) -> None:
        D, I, _ = await self.keyword(QUERIES, k)
        want_D, want_I = self.reference(QUERIES, k)
        np.testing.assert_array_equal(I, want_I)
        np.testing.assert_allclose(D, want_D, rtol=1e-5)
        english = ppb.Filter(
            must=[ppb.Condition(field=ppb.FieldCondition(key="lang", match=ppb.Value(string_value="en")))]
        )
        D, I, replies = await self.keyword(QUERIES, k, english)
        want_D, want_I = self.reference(QUERIES, k, lambda p: p.get("lang") == "en")
        np.testing.assert_array_equal(I, want_I)
        np.testing.assert_allclose(D, want_D, rtol=1e-5)
        assert all(len(r.plans) == 1 and r.plans[0].matches > 0 for r in replies)


async def writes(c: Collection) -> None:
    """Removes, upserts (new texts, stored ids and new ones) and payload edits of the text field."""
    rng = np.random.default_rng(21)
    stored = sorted(c.model)
    await c.remove(rng.choice(stored, 40, replace=False).tolist())
    upserted = rng.choice(260, 60, replace=False).tolist()
    await c.add(payloads(upserted, bodies(60, seed=22)), upsert=True)
    edited = rng.choice(sorted(c.model), 30, replace=False).tolist()
    await c.set_payload(edited[:10], {"body": 17}, pb.SET_PAYLOAD_MODE_MERGE)  # not a string any more
    await c.set_payload(edited[10:20], {"lang": "en", "body": "running words"}, pb.SET_PAYLOAD_MODE_MERGE)
    await c.set_payload(edited[20:], {"other": 1}, pb.SET_PAYLOAD_MODE_OVERWRITE)  # the field gone


@pytest.mark.parametrize("groups", [1, 3])
def test_two_phases_on_1_and_3_shards_equal_bm25s_through_writes(groups: int, name: str) -> None:
    services = [open_shard(None) for _ in range(groups)]

    async def scenario() -> None:
        c = Collection(in_process(services), name, groups)
        await c.create(index=False)
        await c.add(payloads(list(range(100)), bodies(100, seed=20)))
        await c.create_index()  # over the stored payloads
        await c.add(payloads(list(range(100, 200)), bodies(100, seed=23)))  # and kept up to date
        await c.check()
        await writes(c)
        await c.check()
        await c.check(k=500)  # every document

    asyncio.run(scenario())


def test_hits_carry_payloads_and_vectors_and_pad_like_search(name: str) -> None:
    services = [open_shard(None) for _ in range(2)]

    async def scenario() -> None:
        c = Collection(in_process(services), name, 2)
        await c.create()
        await c.add(payloads(list(range(30)), bodies(30, seed=30)))
        selector = ppb.PayloadSelector(enable=True, fields=["body"])
        D, I, replies = await c.keyword(["index running", "the"], 50, with_payload=selector, with_vectors=True)
        assert (I[1] == -1).all() and (D[1] == -FLT_MAX).all()  # only stopwords: no hits, not an error
        for r in replies:
            ids = np.frombuffer(r.ids, np.int64)
            assert len(r.payloads) == ids.size and wire.unpack_matrix(r.vectors).shape == (ids.size, DIM)
            rows = wire.unpack_matrix(r.vectors)
            for i, payload, row in zip(ids.tolist(), r.payloads, rows, strict=True):
                if i < 0:
                    assert not payload.fields and not row.any()
                else:
                    assert payload.fields["body"].string_value == c.model[i]["body"] and "lang" not in payload.fields
                    np.testing.assert_array_equal(row, c.vectors[i])
        analyzer = Analyzer(ENGLISH)
        matching = [i for i, p in c.model.items() if {"index", "run"} & set(analyzer.analyze(p["body"]))]
        assert sorted(I[0][I[0] >= 0].tolist()) == sorted(matching)

    asyncio.run(scenario())


def test_through_the_fanout_in_both_shard_modes(backend: ShardBackend, name: str) -> None:
    async def scenario() -> None:
        async with backend.shard_set() as shards:
            c = Collection(fanned(shards), name, len(shards), ppb.TextIndexParams())
            await c.create()
            await c.add(payloads(list(range(150)), bodies(150, seed=40)))
            await c.check()
            await writes(c)
            await c.check()
            other = Collection(fanned(shards), name + "_plain", len(shards))
            await other.create(index=False)
            with pytest.raises(FailedPrecondition, match=r"create_payload_index\(.*\"text\"\)"):
                await other.keyword(["words"], 5)

    asyncio.run(scenario())


def test_bad_requests_are_refused_and_nothing_is_written(name: str, tmp_path: Path) -> None:
    s = open_shard(tmp_path)

    async def scenario() -> None:
        c = Collection(in_process([s]), name, 1)
        await c.create(index=False)
        await c.add(payloads([1, 2], ["running words", "the index"]))
        with pytest.raises(FailedPrecondition, match=r"no text index: create one with create_payload_index\("):
            await c.keyword(["words"], 5)
        for params, match in [
            (ppb.TextIndexParams(stemmer="klingon"), "stemmer 'klingon' is not supported: use one of .*english"),
            (ppb.TextIndexParams(stopwords="elvish"), "stopwords 'elvish' is not supported: use one of .*english"),
            (ppb.TextIndexParams(k1=-1), "k1 must be"),
            (ppb.TextIndexParams(b=2), "b must be"),
        ]:
            c.params = params
            with pytest.raises(InvalidArgument, match=match):
                await c.ask("CreatePayloadIndex", c.all(c.index_request()))
        bad_kind = pb.CreatePayloadIndexRequest(collection=name, field="lang", type=1, text=ENGLISH)
        with pytest.raises(InvalidArgument, match="TEXT indexes only"):
            await c.ask("CreatePayloadIndex", c.all(bad_kind))
        assert s.collections[name].payload_indexes == []
        c.params = ENGLISH
        await c.create_index()
        await c.ask("CreatePayloadIndex", c.all(pb.CreatePayloadIndexRequest(collection=name, field="lang", type=1)))
        for field, match in [("lang", "field 'lang' .* has no text index"), ("nope", "has no text index")]:
            with pytest.raises(InvalidArgument, match=match):
                await c.ask("KeywordStats", c.all(spb.KeywordStatsRequest(collection=name, field=field, texts=["x"])))
        second = pb.CreatePayloadIndexRequest(collection=name, field="title", type=TEXT)
        await c.ask("CreatePayloadIndex", c.all(second))
        with pytest.raises(InvalidArgument, match="text indexes on body, title: name one as keyword_field"):
            await c.keyword(["words"], 5)
        base = {"collection": name, "field": "body", "documents": 2, "tokens": 3}
        for request, match in [
            (spb.KeywordSearchRequest(**base, k=0), "k must be between 1"),
            (spb.KeywordSearchRequest(**base, k=5, queries=[spb.QueryTerms(terms=["run"])]), "one df per term"),
        ]:
            with pytest.raises(InvalidArgument, match=match):
                await c.ask("KeywordSearch", c.all(request))

    asyncio.run(scenario())
    s.close()
    again = open_shard(tmp_path)  # the refused indexes were never logged
    assert again.collections[name].payload_indexes == [("body", TEXT), ("lang", 1), ("title", TEXT)]
    again.close()


def test_describe_lists_a_text_index_with_its_params_and_counts(name: str) -> None:
    s = open_shard(None)

    async def scenario() -> None:
        c = Collection(in_process([s]), name, 1)
        await c.create()
        await c.add({1: {"body": "Running runs"}, 2: {"body": "the"}, 3: {"body": 5}, 4: {"x": 1}})

    asyncio.run(scenario())
    (index,) = s.collections[name].payload_index_protos()
    assert (index.field, index.type, index.text.stemmer, index.text.stopwords) == ("body", TEXT, "english", "english")
    assert (round(index.text.k1, 6), round(index.text.b, 6)) == (1.5, 0.6)
    stats = index.text_stats
    assert (stats.documents, stats.tokens, stats.terms, stats.skipped) == (2, 2, 1, 1)
    s.close()


def _snapshot_indexes(data_dir: Path, name: str) -> list[Any]:
    metas = list(data_dir.rglob("meta.json"))
    return [json.loads(m.read_text())["payload_indexes"] for m in metas if m.parent.name == name]


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot-and-log", "log-only"])
def test_the_index_is_rebuilt_after_kill_9_and_restart(snapshot: bool, name: str, tmp_path: Path) -> None:
    """The index's definition comes back from the snapshot (meta.json's payload_indexes records the
    params) or from the log's CreatePayloadIndex record, and its postings from the payloads."""
    env = {"VECSHARD_CHECKPOINT_INTERVAL_S": "1" if snapshot else "600"}
    shard = start_role(["shard", "--data-dir", str(tmp_path / "d"), "--log-level", "ERROR"], tmp_path / "port", env)

    async def run(step: Callable[[Collection], Awaitable[None]], c: Collection | None = None) -> Collection:
        shards = ShardSet([shard.address], Settings())
        try:
            assert not await shards.wait_serving(60)
            c = c or Collection(fanned(shards), name, 1)
            c.ask = fanned(shards)
            await step(c)
            return c
        finally:
            await shards.close()

    async def first(c: Collection) -> None:
        await c.create()
        await c.add(payloads(list(range(120)), bodies(120, seed=50)))

    async def more(c: Collection) -> None:
        await writes(c)  # only in the log
        await c.check()

    try:
        c = asyncio.run(run(first))
        if snapshot:
            deadline = time.monotonic() + 30
            while not any(_snapshot_indexes(tmp_path / "d", name)):
                assert time.monotonic() < deadline, "no snapshot was written"
                time.sleep(0.2)
            (recorded,) = _snapshot_indexes(tmp_path / "d", name)
            assert recorded == [["body", TEXT, {"stemmer": "english", "stopwords": "english", "k1": 1.5, "b": 0.6}]]
        c = asyncio.run(run(more, c))
        shard.kill()
        if not snapshot:
            assert not _snapshot_indexes(tmp_path / "d", name)
        shard.restart()
        asyncio.run(run(Collection.check, c))  # the same answers
        shard.terminate()
        assert shard.wait(30) == 0
        shard.restart()
        asyncio.run(run(Collection.check, c))  # from the final snapshot alone
    finally:
        shard.kill()
