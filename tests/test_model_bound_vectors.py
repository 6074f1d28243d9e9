"""A collection bound to an embedding model takes raw vectors only with that model's fingerprint (#25
item 9): without one, Add and Search are FAILED_PRECONDITION saying how to get it, and nothing is
written, so two embedding spaces never mix silently. Vectors from `embed` with the fingerprint, and
texts the server embeds, are taken as before."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from vecshard import Client
from vecshard.errors import FailedPrecondition
from vecshard_server.cluster.local import LocalCluster

TEXTS = ["a red apple on a table", "the stock market fell today", "a cat sleeping in the sun"]


def test_raw_vectors_need_the_collections_model_fingerprint(cluster_of: Callable[[int], LocalCluster]) -> None:
    name = "model_bound_raw"
    with Client(cluster_of(2).address, timeout=300) as c:
        c.create_collection(name, 0, metric=None, model="minilm")
        try:
            made = c.embed(TEXTS, model="minilm", role="passage")
            foreign = np.random.default_rng(1).standard_normal((3, made.vectors.shape[1])).astype(np.float32)
            with pytest.raises(FailedPrecondition, match="model_fingerprint") as err:
                c.add(name, [1, 2, 3], foreign)
            assert "minilm" in err.value.details and made.fingerprint in err.value.details
            assert c.count(name) == 0  # nothing written
            with pytest.raises(FailedPrecondition, match="model_fingerprint"):
                c.search(name, foreign[:1], k=1)
            with pytest.raises(FailedPrecondition, match="come from model"):
                c.add(name, [1, 2, 3], made.vectors, model_fingerprint="other-model:1:384:norm")
            assert c.count(name) == 0

            c.add(name, [1, 2, 3], made.vectors, model_fingerprint=made.fingerprint)
            c.add(name, [4], texts=["a dog running on the beach"])
            assert c.count(name) == 4
            query = c.embed(["an apple"], model="minilm", role="query")
            by_vector = c.search(name, query.vectors, k=2, model_fingerprint=query.fingerprint)
            by_text = c.search(name, texts=["an apple"], k=2)
            assert by_vector.ids.tolist() == by_text.ids.tolist() and by_text.ids[0, 0] == 1
        finally:
            c.drop_collection(name)


def test_a_collection_without_a_model_takes_raw_vectors_as_before(cluster_of: Callable[[int], LocalCluster]) -> None:
    name = "model_free_raw"
    with Client(cluster_of(2).address, timeout=60) as c:
        c.create_collection(name, 4)
        try:
            c.add(name, [1, 2], np.eye(2, 4, dtype=np.float32))
            assert c.search(name, np.eye(1, 4, dtype=np.float32), k=1).ids[0, 0] == 1
        finally:
            c.drop_collection(name)
