"""Filter extensions (#25 item 8) against served clusters (1 and 3 shards, both shard modes): string
ranges (by code point), datetime ranges (RFC 3339 date-times compared as instants), match_except, and
keys with dots (a backtick-quoted part; a list of parts in the dict form). Each case runs in the text
form and the dict form and is compared with a brute-force Python answer over the same data (Count,
Scroll, and filtered Search against faiss), on a collection without payload indexes, one with keyword /
integer indexes, and one with datetime / float / bool indexes (the same answers); writes by these
filters; payload selectors with quoted keys; and bad input (INVALID_ARGUMENT naming the condition,
nothing written)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import faiss
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecshard import Client, InvalidArgument, wire
from vecshard.filter_text import FilterSyntaxError, parse_filter
from vecshard.payload import datetime_micros, filter_to_proto, join_key, key_parts, parse_datetime, payload_to_proto
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard.v1 import vector_search_pb2_grpc as pb_grpc
from vecshard_server.cluster.local import LocalCluster

DIM = 8
N = 320
UTC = dt.UTC
BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)
# 24 instants over four days; several lie within hours of each other, so offsets reorder their spellings
MOMENTS = sorted(
    BASE + dt.timedelta(hours=int(h), seconds=int(s), microseconds=int(us))
    for h, s, us in zip(
        np.random.default_rng(1).integers(-48, 48, 24),
        np.random.default_rng(2).integers(0, 3600, 24),
        np.random.default_rng(3).integers(0, 1_000_000, 24),
        strict=True,
    )
)
OFFSETS = [dt.timedelta(0), dt.timedelta(hours=2), dt.timedelta(hours=-5, minutes=-30), dt.timedelta(hours=14)]
INVALID_DATES = [
    "2024-01-01",
    "2024-01-01T10:00:00",
    "2024-01-01T10:00Z",
    "20240101T100000Z",
    "2024-01-01T10:00:00+0200",
    "2024-02-30T10:00:00Z",
    "2024-01-01T24:00:00Z",
    "tomorrow",
]
TITLES = ["", "A", "Apple", "apple", "B", "b", "ba", "banana", "m", "M", "Zebra", "z", "é", "éa", "中", "😀", "a b"]
COLORS = ["red", "green", "blue"]
SPELLINGS: dict[str, dt.datetime] = {}  # every date-time string the tests write, and its instant


def spell(d: dt.datetime, style: int) -> str:
    """d as an RFC 3339 string in one of five styles, every one naming exactly the instant d."""
    local = d.astimezone(dt.timezone(OFFSETS[style % len(OFFSETS)]))
    base = f"{local:%Y-%m-%dT%H:%M:%S}"
    if style == 0:
        s = f"{d.astimezone(UTC):%Y-%m-%dT%H:%M:%S}.{d.microsecond:06d}Z"
    elif style == 1:
        s = local.isoformat()
    elif style == 2:
        s = f"{d.astimezone(UTC):%Y-%m-%d %H:%M:%S}.{d.microsecond:06d}z"
    elif style == 3:  # nine digits: the microsecond is kept, the rest cut off
        s = f"{base}.{local.microsecond:06d}789{local:%z}"
        s = s[:-2] + ":" + s[-2:]
    else:  # -00:00: UTC with no preferred local offset
        s = f"{d.astimezone(UTC):%Y-%m-%dT%H:%M:%S}.{d.microsecond:06d}-00:00"
    SPELLINGS[s] = d
    return s


def make_payloads(seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)

    def date() -> str:
        if rng.random() < 0.12:
            return INVALID_DATES[int(rng.integers(len(INVALID_DATES)))]
        return spell(MOMENTS[int(rng.integers(len(MOMENTS)))], int(rng.integers(5)))

    def pick(options: list[Any]) -> Any:
        return options[int(rng.integers(len(options)))]

    out = []
    for _ in range(N):
        p: dict[str, Any] = {}
        r = rng.random()
        if r < 0.85:
            p["title"] = (
                pick(TITLES)
                if r < 0.6
                else [pick(TITLES), pick(TITLES)]
                if r < 0.7
                else int(rng.integers(0, 3))
                if r < 0.75
                else None
                if r < 0.8
                else []
            )
        r = rng.random()
        if r < 0.8:
            p["created"] = date() if r < 0.6 else [date(), date()] if r < 0.7 else 20240101 if r < 0.75 else None
        r = rng.random()
        if r < 0.6:
            p["meta"] = {"when": date() if r < 0.5 else None}
        r = rng.random()
        if r < 0.85:
            p["tag"] = (
                pick(COLORS)
                if r < 0.5
                else [pick(COLORS), pick([*COLORS, None])]
                if r < 0.65
                else 1
                if r < 0.7
                else True
                if r < 0.75
                else None
                if r < 0.8
                else []
            )
        r = rng.random()
        if r < 0.85:
            p["n"] = (
                int(rng.integers(0, 5))
                if r < 0.6
                else float(rng.integers(0, 8)) / 2
                if r < 0.7
                else [int(rng.integers(0, 5)), int(rng.integers(0, 5))]
                if r < 0.8
                else "2"
            )
        r = rng.random()
        if r < 0.7:
            p["a.b"] = pick(["x", "y"]) if r < 0.5 else {"c": int(rng.integers(0, 4))}
        r = rng.random()
        if r < 0.6:
            p["a"] = {"b": pick(["x", "y", "z"])} if r < 0.45 else {"b": {"c": int(rng.integers(0, 4))}}
        if rng.random() < 0.25:
            p["`q"] = int(rng.integers(0, 3))
        out.append(p)
    return out


PAYLOADS = make_payloads(11)
VECTORS = np.random.default_rng(12).standard_normal((N, DIM)).astype(np.float32)
QUERIES = np.random.default_rng(13).standard_normal((3, DIM)).astype(np.float32)


# -- the reference: payload.proto's rules, in plain Python, over keys given as lists of parts --------


def leaves(payload: dict[str, Any], parts: list[str]) -> list[Any]:
    nodes: list[Any] = [payload]
    for part in parts:
        nxt = []
        for node in nodes:
            stack = [node]
            while stack:
                v = stack.pop()
                if isinstance(v, list):
                    stack.extend(v)
                elif isinstance(v, dict) and part in v:
                    nxt.append(v[part])
        nodes = nxt
    out: list[Any] = []

    def flat(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                flat(x)
        else:
            out.append(v)

    for v in nodes:
        flat(v)
    return out


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _same(x: Any, v: Any) -> bool:
    if isinstance(v, bool) or isinstance(x, bool):
        return isinstance(x, bool) and isinstance(v, bool) and x == v
    if isinstance(v, str) or isinstance(x, str):
        return bool(x == v)
    return _number(x) and _number(v) and x == v


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _instant(x: Any) -> dt.datetime | None:
    return SPELLINGS.get(x) if isinstance(x, str) else None


def cond_holds(c: dict[str, Any], payload: dict[str, Any]) -> bool:
    if "key" not in c:
        return matches(c, payload)
    vals = leaves(payload, c["key"])
    if "match" in c:
        return any(_same(x, c["match"]) for x in vals)
    if "match_any" in c:
        return any(_same(x, v) for x in vals for v in c["match_any"])
    if "match_except" in c:
        return any(x is not None for x in vals) and not any(_same(x, v) for x in vals for v in c["match_except"])
    if "range" in c:
        strings = isinstance(next(iter(c["range"].values())), str)
        kind_ok: Callable[[Any], bool] = (lambda x: isinstance(x, str)) if strings else _number
        return any(kind_ok(x) and all(OPS[o](x, b) for o, b in c["range"].items()) for x in vals)
    if "datetime_range" in c:
        bounds = {o: SPELLINGS[b] for o, b in c["datetime_range"].items()}
        return any((t := _instant(x)) is not None and all(OPS[o](t, b) for o, b in bounds.items()) for x in vals)
    if "is_empty" in c:
        return all(x is None for x in vals)
    assert c.keys() == {"key", "exists"}
    return any(x is not None for x in vals)


def matches(f: dict[str, Any], payload: dict[str, Any]) -> bool:
    return (
        all(cond_holds(c, payload) for c in f.get("must", []))
        and (not f.get("should") or any(cond_holds(c, payload) for c in f["should"]))
        and not any(cond_holds(c, payload) for c in f.get("must_not", []))
    )


def expected_ids(f: dict[str, Any], payloads: list[dict[str, Any]] = PAYLOADS) -> list[int]:
    return [i for i, p in enumerate(payloads) if matches(f, p)]


# -- the cases: text form, dict form (keys as lists of parts) ---------------------------------------

FIRST = "0001-01-01T00:00:00Z"  # the first instant there is
SPELLINGS[FIRST] = dt.datetime(1, 1, 1, tzinfo=UTC)
D = [spell(MOMENTS[i], i % 5) for i in range(len(MOMENTS))]  # one spelling of each moment
D2 = [spell(MOMENTS[i], (i + 2) % 5) for i in range(len(MOMENTS))]  # another spelling of each


def one(key: list[str], **test: Any) -> dict[str, Any]:
    return {"must": [{"key": key, **test}]}


CASES: list[tuple[str, dict[str, Any]]] = [
    # string ranges, by code point
    ('title >= "b"', one(["title"], range={"gte": "b"})),
    ('title < "a"', one(["title"], range={"lt": "a"})),
    ('"a" <= title < "b"', one(["title"], range={"gte": "a", "lt": "b"})),
    ('title > "z"', one(["title"], range={"gt": "z"})),
    ('title <= ""', one(["title"], range={"lte": ""})),
    ('"ba" < title <= "é"', one(["title"], range={"gt": "ba", "lte": "é"})),
    (
        'title >= "m" or title < "B"',
        {"should": [{"key": ["title"], "range": {"gte": "m"}}, {"key": ["title"], "range": {"lt": "B"}}]},
    ),
    ('not title >= "b"', {"must_not": [{"key": ["title"], "range": {"gte": "b"}}]}),
    ("title >= 1", one(["title"], range={"gte": 1})),  # numbers only: the strings never
    ('n > "1"', one(["n"], range={"gt": "1"})),  # strings only: the numbers never
    ('created < "2024-01-01T"', one(["created"], range={"lt": "2024-01-01T"})),  # the strings, not instants
    ('meta.when >= "2024-01-02"', one(["meta", "when"], range={"gte": "2024-01-02"})),
    # datetime ranges, as instants
    (f'created >= datetime("{D[12]}")', one(["created"], datetime_range={"gte": D[12]})),
    (f'created > datetime("{D2[12]}")', one(["created"], datetime_range={"gt": D2[12]})),
    (f'created < datetime("{D[3]}")', one(["created"], datetime_range={"lt": D[3]})),
    (f'created <= datetime("{D2[3]}")', one(["created"], datetime_range={"lte": D2[3]})),
    (
        f'datetime("{D[5]}") <= created < datetime("{D2[18]}")',
        one(["created"], datetime_range={"gte": D[5], "lt": D2[18]}),
    ),
    (f'created = datetime("{D2[7]}")', one(["created"], datetime_range={"gte": D2[7], "lte": D2[7]})),
    (
        f'created != datetime("{D[7]}")',
        {"must_not": [{"key": ["created"], "datetime_range": {"gte": D[7], "lte": D[7]}}]},
    ),
    (f'meta.when <= datetime("{D[15]}")', one(["meta", "when"], datetime_range={"lte": D[15]})),
    (
        f'created >= datetime("{FIRST}")',  # every date-time value
        one(["created"], datetime_range={"gte": FIRST}),
    ),
    (
        f'not created > datetime("{D[0]}")',
        {"must_not": [{"key": ["created"], "datetime_range": {"gt": D[0]}}]},
    ),
    # match_except: a value, none of them listed
    ('tag except ["red"]', one(["tag"], match_except=["red"])),
    ('tag except ["red", "green"]', one(["tag"], match_except=["red", "green"])),
    ("tag except [1, true]", one(["tag"], match_except=[1, True])),
    ('tag not in ["red"]', {"must_not": [{"key": ["tag"], "match_any": ["red"]}]}),  # the other reading
    ("n except [1, 2]", one(["n"], match_except=[1, 2])),
    ("n except [2.0, 1.5]", one(["n"], match_except=[2.0, 1.5])),
    ('n except ["2"]', one(["n"], match_except=["2"])),
    (
        'tag except ["blue"] or tag is empty',
        {"should": [{"key": ["tag"], "match_except": ["blue"]}, {"key": ["tag"], "is_empty": True}]},
    ),
    ('not tag except ["blue"]', {"must_not": [{"key": ["tag"], "match_except": ["blue"]}]}),
    ('title except ["", "b"]', one(["title"], match_except=["", "b"])),
    # keys with dots: `a.b` is the top-level key "a.b"; a.b is "b" inside "a"
    ('`a.b` = "x"', one(["a.b"], match="x")),
    ('a.b = "x"', one(["a", "b"], match="x")),
    ("`a.b`.c >= 1", one(["a.b", "c"], range={"gte": 1})),
    ("a.b.c >= 1", one(["a", "b", "c"], range={"gte": 1})),
    ("`a.b` exists", one(["a.b"], exists=True)),
    ('`a.b` except ["x"]', one(["a.b"], match_except=["x"])),
    ('`a.b` >= "y"', one(["a.b"], range={"gte": "y"})),
    (r"`\`q` in [0, 1]", one(["`q"], match_any=[0, 1])),
    # together
    (
        f'(`a.b` = "x" or a.b = "y") and created >= datetime("{D[10]}") and tag except ["red"]',
        {
            "must": [
                {"should": [{"key": ["a.b"], "match": "x"}, {"key": ["a", "b"], "match": "y"}]},
                {"key": ["created"], "datetime_range": {"gte": D[10]}},
                {"key": ["tag"], "match_except": ["red"]},
            ]
        },
    ),
]


def with_string_keys(f: Any) -> Any:
    """The filter with every key list written as its path ("`a.b`.c")."""
    if isinstance(f, list):
        return [with_string_keys(x) for x in f]
    if isinstance(f, dict):
        return {k: join_key(v) if k == "key" else with_string_keys(v) for k, v in f.items()}
    return f


# -- collections ----------------------------------------------------------------------------------

# field -> PayloadIndexType, per indexed collection. The second: keyword and integer indexes (string
# ranges from the keyword index); the third: datetime indexes, and indexes of other kinds than the
# field's values mostly are (their values are read from the payloads).
INDEXES = {
    "kw": {
        "title": ppb.PAYLOAD_INDEX_TYPE_KEYWORD,
        "tag": ppb.PAYLOAD_INDEX_TYPE_KEYWORD,
        "n": ppb.PAYLOAD_INDEX_TYPE_INTEGER,
        "`a.b`": ppb.PAYLOAD_INDEX_TYPE_KEYWORD,
        "a.b": ppb.PAYLOAD_INDEX_TYPE_KEYWORD,
        "created": ppb.PAYLOAD_INDEX_TYPE_KEYWORD,
        "`meta`.when": ppb.PAYLOAD_INDEX_TYPE_KEYWORD,  # another spelling of meta.when: the same index
        "```q`": ppb.PAYLOAD_INDEX_TYPE_INTEGER,
    },
    "dt": {
        "created": ppb.PAYLOAD_INDEX_TYPE_DATETIME,
        "meta.when": ppb.PAYLOAD_INDEX_TYPE_DATETIME,
        "title": ppb.PAYLOAD_INDEX_TYPE_FLOAT,
        "tag": ppb.PAYLOAD_INDEX_TYPE_BOOL,
        "n": ppb.PAYLOAD_INDEX_TYPE_FLOAT,
        "`a.b`.c": ppb.PAYLOAD_INDEX_TYPE_INTEGER,
        "a.b.c": ppb.PAYLOAD_INDEX_TYPE_INTEGER,
    },
}


def create_index(stub: pb_grpc.VectorSearchStub, collection: str, field: str, kind: int) -> None:
    stub.CreatePayloadIndex(pb.CreatePayloadIndexRequest(collection=collection, field=field, type=kind), timeout=60)


class Loaded:
    """A cluster's client and raw stub, and collections holding the data: "plain" (no payload index),
    or indexed as an INDEXES entry says."""

    def __init__(self, cluster: LocalCluster, tag: str, kinds: tuple[str, ...]) -> None:
        self.client = Client(cluster.address, timeout=60)
        self.channel = grpc.insecure_channel(cluster.address)
        self.stub = pb_grpc.VectorSearchStub(self.channel)
        self.names = {kind: f"fx_{tag}_{kind}" for kind in kinds}
        for kind, name in self.names.items():
            self.client.create_collection(name, DIM)
            self.client.add(name, np.arange(N), VECTORS, payloads=PAYLOADS)
            for field, index_type in INDEXES.get(kind, {}).items():
                create_index(self.stub, name, field, index_type)

    def close(self) -> None:
        for name in self.names.values():
            self.client.drop_collection(name)
        self.channel.close()
        self.client.close()


@pytest.fixture(scope="module", params=[1, 3], ids=["1shard", "3shards"])
def loaded(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Loaded]:
    """The data without payload indexes and with keyword / integer ones."""
    cluster = cluster_of(request.param)
    data = Loaded(cluster, f"{request.param}{cluster.shard_mode[0]}", ("plain", "kw"))
    yield data
    data.close()


@pytest.fixture(scope="module", params=[1, 3], ids=["1shard", "3shards"])
def loaded_dt(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Loaded]:
    """The data with datetime indexes (and float / bool / integer ones on fields of other kinds)."""
    cluster = cluster_of(request.param)
    data = Loaded(cluster, f"{request.param}{cluster.shard_mode[0]}", ("dt",))
    yield data
    data.close()


def exact_search(ids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's exact L2 top-k over the matching points (ids, -1 padded), with one more column."""
    index = faiss.IndexIDMap(faiss.IndexFlatL2(DIM))
    if ids:
        index.add_with_ids(VECTORS[ids], np.asarray(ids, dtype=np.int64))
    return index.search(QUERIES, k + 1)


def check_answers(lo: Loaded, f: Any, want: list[int], what: str) -> None:
    """Count, Scroll and a filtered Search of every collection give the reference's answer."""
    k = 6
    dist, ref = exact_search(want, k)
    for kind, name in lo.names.items():
        msg = f"{what} on {kind}: {f}"
        assert lo.client.count(name, f) == len(want), msg
        assert [p.id for p in lo.client.scroll(name, f, with_payload=False, page_size=101)] == want, msg
        res = lo.client.search(name, QUERIES, k, filter=f)
        tied = np.zeros(dist.shape, dtype=bool)
        close = np.isclose(dist[:, 1:], dist[:, :-1], rtol=1e-6)
        tied[:, 1:] |= close
        tied[:, :-1] |= close
        np.testing.assert_array_equal(np.where(tied[:, :k], -2, res.ids), np.where(tied[:, :k], -2, ref[:, :k]), msg)


def check_case(lo: Loaded, text: str, f: dict[str, Any]) -> None:
    want = expected_ids(f)
    parsed = parse_filter(text)
    if len(f) == 1 and len(next(iter(f.values()))) == 1:  # one condition: the text means the dict
        assert parsed == with_string_keys(f)
    check_answers(lo, text, want, "text")
    check_answers(lo, with_string_keys(f), want, "dict with key paths")
    assert filter_to_proto(f) == filter_to_proto(with_string_keys(f))  # key lists: the same message


@pytest.mark.parametrize(("text", "f"), CASES, ids=[t for t, _ in CASES])
def test_cases_match_brute_force(loaded: Loaded, text: str, f: dict[str, Any]) -> None:
    """Each case, in the text form and the dict form (key paths; key lists make the same message),
    equals the reference, without payload indexes and with keyword / integer ones."""
    check_case(loaded, text, f)


@pytest.mark.parametrize(("text", "f"), CASES, ids=[t for t, _ in CASES])
def test_cases_match_brute_force_with_datetime_indexes(loaded_dt: Loaded, text: str, f: dict[str, Any]) -> None:
    """The same with datetime indexes on the date-time fields (and indexes of other kinds than most
    values of their fields: float on strings, bool on colors)."""
    check_case(loaded_dt, text, f)


def test_the_cases_are_not_trivial() -> None:
    """Every case keeps some points and drops others, so a wrong answer cannot pass as right."""
    for text, f in CASES:
        assert 0 < len(expected_ids(f)) < N, text


# -- random filters over the new tests ------------------------------------------------------------

KEYS: dict[str, list[str]] = {
    "title": ["title"],
    "created": ["created"],
    "when": ["meta", "when"],
    "tag": ["tag"],
    "n": ["n"],
    "ab": ["a.b"],
    "a_b": ["a", "b"],
}
STRINGS = st.sampled_from([*TITLES, "c", "2024-01-01", "x", "y", "red", "s"])
DATES = st.integers(0, len(MOMENTS) - 1).flatmap(lambda i: st.integers(0, 4).map(lambda s: spell(MOMENTS[i], s)))
VALUES = st.one_of(STRINGS, st.sampled_from([*COLORS, "x", "y", "z"]), st.integers(0, 4), st.booleans(), st.just(1.5))


@st.composite
def conditions(draw: st.DrawFn, depth: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["srange", "drange", "except", "match", "filter" if depth < 2 else "exists"]))
    if kind == "filter":
        return draw(filters(depth + 1))
    key = KEYS[draw(st.sampled_from(sorted(KEYS)))]
    if kind == "match":
        return {"key": key, "match": draw(VALUES)}
    if kind == "exists":
        return {"key": key, "exists": True}
    if kind == "except":
        return {"key": key, "match_except": draw(st.lists(VALUES, min_size=1, max_size=3))}
    ops = draw(st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=2, unique=True))
    if kind == "srange":
        return {"key": key, "range": {o: draw(STRINGS) for o in ops}}
    return {"key": key, "datetime_range": {o: draw(DATES) for o in ops}}


@st.composite
def filters(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    f: dict[str, Any] = {}
    for group in ("must", "should", "must_not"):
        conds = draw(st.lists(conditions(depth), max_size=2))
        if conds:
            f[group] = conds
    return f


def unindexed(lo: Loaded, kind: str, f: str) -> set[str]:
    """The fields a filtered search of lo's `kind` collection read without an index (every shard's)."""
    res = lo.client.search(lo.names[kind], QUERIES[:1], 3, filter=f)
    assert res.plans
    return {field for plan in res.plans for field in plan.unindexed_fields}


def test_indexes_answer_the_new_tests(loaded: Loaded) -> None:
    """The keyword index answers string ranges and match_except, found by any spelling of its key
    ("`meta`.when" indexes meta.when; "`a.b`" the key "a.b"); without indexes every field is read."""
    f = 'title >= "b" and meta.when < "2024-01-02" and tag except ["red"] and `a.b` = "x" and n except [1]'
    assert unindexed(loaded, "kw", f) == set()
    assert unindexed(loaded, "kw", f.replace("meta.when", "`meta`.`when`")) == set()
    assert unindexed(loaded, "plain", f) == {"title", "meta.when", "tag", "`a.b`", "n"}


def test_datetime_indexes_answer_datetime_ranges(loaded_dt: Loaded) -> None:
    """A datetime index answers datetime_range (other tests on its field read the payloads)."""
    assert unindexed(loaded_dt, "dt", f'created >= datetime("{D[3]}") and meta.when < datetime("{D[9]}")') == set()
    assert unindexed(loaded_dt, "dt", 'created < "2024"') == {"created"}


def check_random(lo: Loaded) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(f=filters())
    def check(f: dict[str, Any]) -> None:
        check_answers(lo, with_string_keys(f), expected_ids(f), "random")

    check()


def test_random_filters_match_brute_force(loaded: Loaded) -> None:
    """Random and/or/not trees of string ranges, datetime ranges, match_except and matches, on keys
    with and without dots, equal the reference, without payload indexes and with keyword ones."""
    check_random(loaded)


def test_random_filters_match_brute_force_with_datetime_indexes(loaded_dt: Loaded) -> None:
    """The same with datetime indexes."""
    check_random(loaded_dt)


# -- writes, selectors, bad input -----------------------------------------------------------------


@pytest.fixture(params=[1, 3], ids=["1shard", "3shards"])
def client(request: pytest.FixtureRequest, cluster_of: Callable[[int], LocalCluster]) -> Iterator[Client]:
    with Client(cluster_of(request.param).address, timeout=60) as c:
        yield c


def test_writes_by_the_new_filters(client: Client, name: str) -> None:
    """SetPayload and Delete by string ranges, datetime ranges, match_except and dotted keys reach
    exactly the reference's points."""
    client.create_collection(name, DIM)
    try:
        client.add(name, np.arange(N), VECTORS, payloads=PAYLOADS)
        payloads = [dict(p) for p in PAYLOADS]
        f = one(["created"], datetime_range={"gte": D[8], "lt": D2[16]})
        assert client.set_payload(name, {"hit": 1}, filter=with_string_keys(f)) == len(expected_ids(f))
        for i in expected_ids(f):
            payloads[i]["hit"] = 1
        g = '`a.b` >= "y" or title < "a"'
        g_dict = {"should": [{"key": ["a.b"], "range": {"gte": "y"}}, {"key": ["title"], "range": {"lt": "a"}}]}
        changed = expected_ids(g_dict, payloads)
        assert client.set_payload(name, {"low": True}, filter=g) == len(changed)
        for i in changed:
            payloads[i]["low"] = True
        gone = expected_ids(one(["tag"], match_except=["red"]), payloads)
        assert client.delete(name, 'tag except ["red"]') == len(gone)
        left = [i for i in range(N) if i not in set(gone)]
        points = list(client.scroll(name, with_payload=True, page_size=150))
        assert [p.id for p in points] == left
        assert all(p.payload == payloads[p.id] for p in points)
    finally:
        client.drop_collection(name)


def test_payload_selectors_take_quoted_keys(client: Client, name: str) -> None:
    """with_payload fields use the key syntax: "`a.b`" is the top-level key "a.b", "a.b" the nested one."""
    client.create_collection(name, DIM)
    try:
        client.add(name, np.arange(N), VECTORS, payloads=PAYLOADS)
        fields = ["`a.b`", "a.b", "```q`", "meta.when"]
        for p in client.scroll(name, with_payload=fields, page_size=150):
            src, want = PAYLOADS[p.id], {}
            if "a.b" in src:
                want["a.b"] = src["a.b"]
            if isinstance(src.get("a"), dict) and "b" in src["a"]:
                want["a"] = {"b": src["a"]["b"]}
            if "`q" in src:
                want["`q"] = src["`q"]
            if "meta" in src:
                want["meta"] = {"when": src["meta"]["when"]}
            assert (p.payload or {}) == want, p.id
    finally:
        client.drop_collection(name)


def _bad_filters() -> list[tuple[ppb.Filter, str]]:
    """(a filter the SDK would refuse before sending, the path and words INVALID_ARGUMENT must name)."""

    def fc(**kw: Any) -> ppb.Condition:
        return ppb.Condition(field=ppb.FieldCondition(**kw))

    s = ppb.Value(string_value="a")
    out = [
        (
            ppb.Filter(must=[fc(key="created", datetime_range=ppb.DatetimeRange(gte="2024-01-01"))]),
            "filter.must[0].datetime_range.gte",
        ),
        (ppb.Filter(must=[fc(key="created", datetime_range=ppb.DatetimeRange(lt="2024-01-01T10:00:00"))]), "RFC 3339"),
        (ppb.Filter(must=[fc(key="c", datetime_range=ppb.DatetimeRange(lte="2024-01-01T10:00:00+0200"))]), "RFC 3339"),
        (
            ppb.Filter(must=[fc(key="c", datetime_range=ppb.DatetimeRange(gt="2024-13-01T10:00:00Z"))]),
            "datetime_range.gt",
        ),
        (ppb.Filter(must=[fc(key="c", datetime_range=ppb.DatetimeRange())]), "datetime_range sets no bound"),
        (
            ppb.Filter(
                should=[
                    ppb.Condition(
                        filter=ppb.Filter(
                            must_not=[
                                fc(key="c", exists=True),
                                fc(key="c", datetime_range=ppb.DatetimeRange(gt="soon")),
                            ]
                        )
                    )
                ]
            ),
            "filter.should[0].must_not[1].datetime_range.gt",
        ),
        (
            ppb.Filter(must=[fc(key="t", range=ppb.Range(gte=s, lt=ppb.Value(int_value=5)))]),
            "mixes number and string bounds",
        ),
        (ppb.Filter(must=[fc(key="t", range=ppb.Range(gte=ppb.Value(bool_value=True)))]), "must be a number"),
        (ppb.Filter(must=[fc(key="t", match_except=ppb.ListValue())]), "match_except is empty"),
        (
            ppb.Filter(must=[fc(key="t", match_except=ppb.ListValue(values=[ppb.Value(null_value=True)]))]),
            "match_except[0]",
        ),
        (ppb.Filter(must=[fc(key="`a.b", exists=True)]), "not closed"),
        (ppb.Filter(must=[fc(key="`a`b", exists=True)]), "filter.must[0].key"),
        (ppb.Filter(must=[fc(key="a..b", exists=True)]), "empty part"),
    ]
    return out


def test_bad_input_is_refused_and_nothing_is_written(client: Client, name: str) -> None:
    """Malformed new conditions sent by a raw client: INVALID_ARGUMENT naming the condition, from
    every RPC taking a filter; a SetPayload or Remove by such a filter writes nothing."""
    client.create_collection(name, DIM)
    channel = grpc.insecure_channel(client.address)
    try:
        client.add(name, np.arange(N), VECTORS, payloads=PAYLOADS)
        stub = pb_grpc.VectorSearchStub(channel)
        for f, words in _bad_filters():
            calls: list[tuple[Callable[..., Any], Any]] = [
                (stub.Search, pb.SearchRequest(collection=name, k=3, queries=wire.pack_matrix(QUERIES[:1]), filter=f)),
                (stub.Count, pb.CountRequest(collection=name, filter=f)),
                (stub.Scroll, pb.ScrollRequest(collection=name, filter=f, limit=10)),
                (stub.Remove, pb.RemoveRequest(collection=name, filter=f)),
                (stub.SetPayload, pb.SetPayloadRequest(collection=name, filter=f, payload=payload_to_proto({"z": 1}))),
            ]
            for call, request in calls:
                with pytest.raises(grpc.RpcError) as info:
                    call(request, timeout=30)
                rpc = type(request).__name__
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, f)
                assert words in (info.value.details() or ""), (rpc, words, info.value.details())
        assert client.count(name) == N
        assert client.count(name, "z exists") == 0
        assert [p.payload or {} for p in client.scroll(name, with_payload=True, page_size=200)] == PAYLOADS
    finally:
        channel.close()
        client.drop_collection(name)


def test_the_sdk_refuses_bad_input_before_sending(client: Client, name: str) -> None:
    """The dict form and the text form check the same things on the client (nothing is sent)."""
    client.create_collection(name, DIM)
    try:
        bad_dicts = [
            ({"key": "c", "datetime_range": {"gte": "2024-01-01"}}, "filter.must[0].datetime_range.gte"),
            ({"key": "c", "datetime_range": {"gte": dt.datetime(2024, 1, 1)}}, "naive datetime"),
            ({"key": "t", "range": {"gte": "a", "lt": 3}}, "mixes number and string"),
            ({"key": "t", "range": {"gte": True}}, "must be a number or a string"),
            ({"key": "t", "match_except": []}, "non-empty list"),
            ({"key": "`a", "exists": True}, "not closed"),
            ({"key": ["a", ""], "exists": True}, "non-empty strings"),
        ]
        for cond, words in bad_dicts:
            with pytest.raises(InvalidArgument, match=words.replace("[", r"\[").replace("]", r"\]")):
                client.count(name, {"must": [cond]})
        with pytest.raises(InvalidArgument, match="RFC 3339"):
            client.count(name, 'created >= datetime("2024-01-01")')
        with pytest.raises(FilterSyntaxError, match="bounds are of one kind"):
            parse_filter('"a" < title < 5')
        # an aware datetime is a bound: sent as its RFC 3339 string
        client.add(
            name, [1, 2], VECTORS[:2], payloads=[{"c": "2024-01-01T00:00:00Z"}, {"c": "2024-01-01T03:00:00+02:00"}]
        )
        since = dt.datetime(2024, 1, 1, 1, tzinfo=UTC)
        assert [p.id for p in client.scroll(name, {"must": [{"key": "c", "datetime_range": {"gte": since}}]})] == [2]
    finally:
        client.drop_collection(name)


def test_key_parts_and_datetimes() -> None:
    """The key syntax and the date-time parser, which the filters and the server share."""
    assert key_parts("meta.lang") == ["meta", "lang"]
    assert key_parts("`a.b`.c") == ["a.b", "c"]
    assert key_parts("`x``y`.`.`") == ["x`y", "."]
    assert key_parts("a`b.c`") == ["a`b", "c`"]
    for parts in (["a.b"], ["`q"], ["a", "b.c", "`", "x`y"], ["é", "a b"]):
        assert key_parts(join_key(parts)) == parts
    for bad in ("", "a.", ".a", "a..b", "`a", "`a`b", "``", "`a`.", "a.`b"):
        with pytest.raises(InvalidArgument):
            key_parts(bad)
    epoch = parse_datetime("1970-01-01T00:00:00Z")
    assert epoch == 0 == parse_datetime("1970-01-01T02:00:00+02:00") == parse_datetime("1969-12-31 19:00:00-05:00")
    assert parse_datetime("1970-01-01t00:00:00.5z") == 500_000
    assert parse_datetime("1970-01-01T00:00:00.1234569Z") == 123_456  # cut, not rounded
    assert parse_datetime("2016-12-31T23:59:60Z") == parse_datetime("2017-01-01T00:00:00Z")
    for s in MOMENTS:
        assert parse_datetime(spell(s, 1)) == (s - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
    for text in (*INVALID_DATES, "2024-01-01T10:00:00+24:00", "0000-01-01T00:00:00Z", "２０２４-01-01T00:00:00Z", ""):
        assert datetime_micros(text) is None, text
        with pytest.raises(InvalidArgument, match="RFC 3339"):
            parse_datetime(text)
