"""Keyword statistics stay exact through what moves or rebuilds a text index: an online reshard
(3 -> 2 shard groups: the new partitions get the same analyzer and BM25 parameters) and kill -9 of
every shard process with a restart (the index is rebuilt from the snapshot's and the log's
payloads). Scores equal bm25s "lucene" on the shard analyzer's tokens before and after."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vecshard import Client
from vecshard_server.cluster.local import LocalCluster

from .test_keyword_search import DIM, Reference, bodies, check_row

QUERIES = ["quick brown fox", "Term7 lazy", "jumping dogs over", "term42", "the and of"]


def _check(c: Client, name: str, body: dict[int, object], k1: float = 0.9, b: float = 0.6) -> None:
    ref = Reference(body, stemmer="english", stopwords="english", k1=k1, b=b)
    res = c.search(name, keyword=QUERIES, k=20)
    assert res.higher_is_better
    for q, text in enumerate(QUERIES):
        check_row(res.ids[q].tolist(), res.distances[q].tolist(), ref.scores(text), 20)


def _load(c: Client, name: str) -> dict[int, object]:
    ids, body, payloads = bodies(300, seed=5)
    c.create_collection(name, DIM)
    vectors = np.random.default_rng(5).standard_normal((len(ids), DIM)).astype(np.float32)
    c.add(name, ids, vectors, payloads=payloads)
    c.create_payload_index(name, "body", "text", stemmer="english", stopwords="english", k1=0.9, b=0.6)
    # writes that change the statistics: removes, an upsert of new texts, a payload overwrite
    c.remove(name, ids[:20])
    for i in ids[:20]:
        body.pop(i, None)
    c.add(name, ids[20:30], vectors[20:30], payloads=[{"body": "quick brown fox term7"}] * 10, on_conflict="replace")
    body.update({i: "quick brown fox term7" for i in ids[20:30]})
    c.set_payload(name, {"body": "lazy dogs jumping"}, ids=ids[30:35])
    body.update({i: "lazy dogs jumping" for i in ids[30:35]})
    return body


def test_a_reshard_keeps_the_analyzer_and_the_statistics(name: str) -> None:
    with LocalCluster(shards=3, log_level="WARNING") as cluster, Client(cluster.address, timeout=120) as c:
        body = _load(c, name)
        _check(c, name, body)
        c.reshard(2, collections=[name], wait=True)
        text = c.describe(name).text_indexes["body"]
        assert (text.stemmer, text.stopwords) == ("english", "english")
        assert (text.k1, text.b) == (np.float32(0.9), np.float32(0.6))
        assert text.documents == sum(isinstance(v, str) for v in body.values())
        _check(c, name, body)


def test_kill_9_and_restart_rebuild_the_same_index(tmp_path: Path, name: str) -> None:
    env = {"VECSHARD_CHECKPOINT_INTERVAL_S": "1"}
    with LocalCluster(shards=2, data_dir=tmp_path, env=env, log_level="WARNING") as cluster:
        with Client(cluster.address, timeout=120) as c:
            body = _load(c, name)
            time.sleep(2.5)  # a checkpoint snapshots these; the next writes are only in the log
            c.set_payload(c.describe(name).name, {"body": "brown fox quick quick"}, ids=[1000 + 7 * 40])
            body[1000 + 7 * 40] = "brown fox quick quick"
            _check(c, name, body)
            for shard in cluster.shards:
                shard.kill()
            for shard in cluster.shards:
                shard.restart()
            _check(c, name, body)
            assert c.describe(name).text_indexes["body"].stemmer == "english"
