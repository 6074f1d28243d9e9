"""The text filter syntax (vecshard.filter_text): each construct, precedence, exact int64, escapes and
quoted keys (a part with dots is one part), string and datetime ranges, `except`, and errors that point
at the right column and say what was expected. No cluster needed (tests/test_filter_extensions.py runs
the new constructs against clusters)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vecshard.filter_text import FilterSyntaxError, parse_filter

EXAMPLES = settings(max_examples=150, deadline=None, derandomize=True)


def m(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "match": value}


A, B, C = m("a", 1), m("b", 2), m("c", 3)

OK: list[tuple[str, dict[str, Any]]] = [
    # equality and inequality
    ('lang = "en"', {"must": [m("lang", "en")]}),
    ('lang == "en"', {"must": [m("lang", "en")]}),
    ("lang = 'en'", {"must": [m("lang", "en")]}),
    ("n = 5", {"must": [m("n", 5)]}),
    ("n = -5", {"must": [m("n", -5)]}),
    ("n = +5", {"must": [m("n", 5)]}),
    ("f = 1.5", {"must": [m("f", 1.5)]}),
    ("f = -2e3", {"must": [m("f", -2000.0)]}),
    ("f = .5", {"must": [m("f", 0.5)]}),
    ("flag = true", {"must": [m("flag", True)]}),
    ("flag = FALSE", {"must": [m("flag", False)]}),
    ("x != 5", {"must_not": [m("x", 5)]}),
    ('x != "a"', {"must_not": [m("x", "a")]}),
    # ranges
    ("year > 2020", {"must": [{"key": "year", "range": {"gt": 2020}}]}),
    ("year >= 2020", {"must": [{"key": "year", "range": {"gte": 2020}}]}),
    ("year < 2020", {"must": [{"key": "year", "range": {"lt": 2020}}]}),
    ("year <= 2020", {"must": [{"key": "year", "range": {"lte": 2020}}]}),
    ("score>=-0.5", {"must": [{"key": "score", "range": {"gte": -0.5}}]}),
    ("2020 <= year < 2030", {"must": [{"key": "year", "range": {"gte": 2020, "lt": 2030}}]}),
    ("2030 > year >= 2020", {"must": [{"key": "year", "range": {"lt": 2030, "gte": 2020}}]}),
    ("5 < x", {"must": [{"key": "x", "range": {"gt": 5}}]}),
    # string ranges (by code point), chained too
    ('x > "a"', {"must": [{"key": "x", "range": {"gt": "a"}}]}),
    ('title >= "m"', {"must": [{"key": "title", "range": {"gte": "m"}}]}),
    ('"a" <= t < "n"', {"must": [{"key": "t", "range": {"gte": "a", "lt": "n"}}]}),
    ("'z' > t", {"must": [{"key": "t", "range": {"lt": "z"}}]}),
    ('x < "2024-01-01"', {"must": [{"key": "x", "range": {"lt": "2024-01-01"}}]}),
    # datetime ranges: the bound kept as written
    (
        'created >= datetime("2024-01-01T00:00:00Z")',
        {"must": [{"key": "created", "datetime_range": {"gte": "2024-01-01T00:00:00Z"}}]},
    ),
    (
        "c < DateTime ( '2024-05-01 12:00:00.5+02:00' )",
        {"must": [{"key": "c", "datetime_range": {"lt": "2024-05-01 12:00:00.5+02:00"}}]},
    ),
    (
        'datetime("2024-01-01T00:00:00Z") <= c < datetime("2025-01-01T00:00:00-05:30")',
        {"must": [{"key": "c", "datetime_range": {"gte": "2024-01-01T00:00:00Z", "lt": "2025-01-01T00:00:00-05:30"}}]},
    ),
    (
        'c = datetime("2024-01-01T00:00:00z")',
        {"must": [{"key": "c", "datetime_range": {"gte": "2024-01-01T00:00:00z", "lte": "2024-01-01T00:00:00z"}}]},
    ),
    (
        'c != datetime("2024-01-01T00:00:00Z")',
        {"must_not": [{"key": "c", "datetime_range": {"gte": "2024-01-01T00:00:00Z", "lte": "2024-01-01T00:00:00Z"}}]},
    ),
    ("datetime = 1", {"must": [m("datetime", 1)]}),  # a key named datetime (no parenthesis follows)
    ("datetime.x >= 3", {"must": [{"key": "datetime.x", "range": {"gte": 3}}]}),
    # match_except
    ('tag except ["a", "b"]', {"must": [{"key": "tag", "match_except": ["a", "b"]}]}),
    ("tag EXCEPT [1, 2.5, true,]", {"must": [{"key": "tag", "match_except": [1, 2.5, True]}]}),
    ('not tag except ["a"]', {"must_not": [{"key": "tag", "match_except": ["a"]}]}),
    ("`except` = 1", {"must": [m("except", 1)]}),
    ("exception = 1", {"must": [m("exception", 1)]}),
    # match_any
    ('tag in ["a", "b"]', {"must": [{"key": "tag", "match_any": ["a", "b"]}]}),
    ("tag in [1, 2,]", {"must": [{"key": "tag", "match_any": [1, 2]}]}),
    ('tag not in ["a"]', {"must_not": [{"key": "tag", "match_any": ["a"]}]}),
    # null, empty, exists
    ("x is null", {"must": [{"key": "x", "is_null": True}]}),
    ("x is not null", {"must_not": [{"key": "x", "is_null": True}]}),
    ("x is empty", {"must": [{"key": "x", "is_empty": True}]}),
    ("x is not empty", {"must_not": [{"key": "x", "is_empty": True}]}),
    ("x exists", {"must": [{"key": "x", "exists": True}]}),
    ("not x exists", {"must_not": [{"key": "x", "exists": True}]}),
    # point ids, and a payload key named id
    ("id = 5", {"must": [{"has_id": [5]}]}),
    ("id == 5", {"must": [{"has_id": [5]}]}),
    ("id in [1, 2, 3]", {"must": [{"has_id": [1, 2, 3]}]}),
    ("id != 5", {"must_not": [{"has_id": [5]}]}),
    ("id not in [1]", {"must_not": [{"has_id": [1]}]}),
    ("`id` = 5", {"must": [m("id", 5)]}),
    ("idx = 5", {"must": [m("idx", 5)]}),
    # keys
    ('meta.lang = "en"', {"must": [m("meta.lang", "en")]}),
    ("`my key`.sub = 1", {"must": [m("my key.sub", 1)]}),
    ("a-b.c_d2 = 1", {"must": [m("a-b.c_d2", 1)]}),
    ("_x = 1", {"must": [m("_x", 1)]}),
    ("été = 1", {"must": [m("été", 1)]}),
    ("meta.`id` = 1", {"must": [m("meta.id", 1)]}),
    ("`and`.`NULL` = 1", {"must": [m("and.NULL", 1)]}),
    ("android = 1", {"must": [m("android", 1)]}),
    ("not-a = 1", {"must": [m("not-a", 1)]}),
    (r"`a\`b` = 1", {"must": [m("a`b", 1)]}),
    # a part in backticks is one key part, dots included; the dict's key quotes it (key_parts syntax)
    ('`a.b` = "x"', {"must": [m("`a.b`", "x")]}),
    ("`a.b`.c.`d` = 1", {"must": [m("`a.b`.c.d", 1)]}),
    ("x.`1.5`.`.` = 1", {"must": [m("x.`1.5`.`.`", 1)]}),
    (r"`\`x.y` = 1", {"must": [m("```x.y`", 1)]}),
    (r"`\`x` = 1", {"must": [m("```x`", 1)]}),
    # and / or / not, flattening, precedence
    ("a = 1 and b = 2 and c = 3", {"must": [A, B, C]}),
    ("a = 1 or b = 2 or c = 3", {"should": [A, B, C]}),
    ("a = 1 or b = 2 and c = 3", {"should": [A, {"must": [B, C]}]}),
    ("a = 1 and b = 2 or c = 3", {"should": [{"must": [A, B]}, C]}),
    ("(a = 1 or b = 2) and c = 3", {"must": [{"should": [A, B]}, C]}),
    ("a = 1 and (b = 2 and c = 3)", {"must": [A, B, C]}),
    ("a = 1 or (b = 2 or c = 3)", {"should": [A, B, C]}),
    ("((a = 1))", {"must": [A]}),
    ("not a = 1", {"must_not": [A]}),
    ("not a = 1 and b = 2", {"must": [B], "must_not": [A]}),
    ("not (a = 1 or b = 2)", {"must_not": [A, B]}),
    ("not (a = 1 and b = 2)", {"must_not": [{"must": [A, B]}]}),
    ("not not a = 1", {"must": [A]}),
    ("not (a != 1)", {"must": [A]}),
    ("a != 1 and b = 2", {"must": [B], "must_not": [A]}),
    ("a != 1 or b = 2", {"should": [{"must_not": [A]}, B]}),
    # case-insensitive keywords, whitespace
    (
        "X IN [1] AND Y IS NOT NULL OR NOT Z EXISTS",
        {
            "should": [
                {"must": [{"key": "X", "match_any": [1]}], "must_not": [{"key": "Y", "is_null": True}]},
                {"must_not": [{"key": "Z", "exists": True}]},
            ]
        },
    ),
    ("Id In [7] aNd flag = True", {"must": [{"has_id": [7]}, m("flag", True)]}),
    ("  a = 1\n\tand\r\n b = 2  ", {"must": [A, B]}),
    # text: every analysed word present (issue #26)
    ('body ~ "sharded search"', {"must": [{"key": "body", "text": "sharded search"}]}),
    ("meta.body ~ 'x'", {"must": [{"key": "meta.body", "text": "x"}]}),
    ('not body ~ "draft" and lang = "en"', {"must": [m("lang", "en")], "must_not": [{"key": "body", "text": "draft"}]}),
    ('a ~ "x" or b ~ ""', {"should": [{"key": "a", "text": "x"}, {"key": "b", "text": ""}]}),
    ('`in` ~ "x"', {"must": [{"key": "in", "text": "x"}]}),
    # escapes
    (r'x = "a\"b\\c\nd\u00e9\/"', {"must": [m("x", 'a"b\\c\nd\u00e9/')]}),
    (r'x = "\ud83d\ude00 \t\r\b\f"', {"must": [m("x", "\U0001f600 \t\r\b\f")]}),
    (r"x = 'it\'s \"q\"'", {"must": [m("x", 'it\'s "q"')]}),
    ("x = 'say \"hi\"'", {"must": [m("x", 'say "hi"')]}),
    ('x = "ünïcödé"', {"must": [m("x", "ünïcödé")]}),
    ('x = ""', {"must": [m("x", "")]}),
]


@pytest.mark.parametrize(("text", "expected"), OK)
def test_parses(text: str, expected: dict[str, Any]) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("x = 9007199254740993", 9007199254740993),  # 2**53 + 1: a float would round it
        ("x = 9223372036854775807", 2**63 - 1),
        ("x = -9223372036854775808", -(2**63)),
        ("x = 0", 0),
    ],
)
def test_integers_stay_exact_int64(text: str, value: int) -> None:
    cond = parse_filter(text)["must"][0]
    assert cond["match"] == value and type(cond["match"]) is int
    assert parse_filter(text.replace("=", "in [") + "]")["must"][0]["match_any"] == [value]
    rng = parse_filter(text.replace("=", ">="))["must"][0]["range"]["gte"]
    assert rng == value and type(rng) is int


def test_types_of_values() -> None:
    values = parse_filter('x in [1, 1.0, "1", true]')["must"][0]["match_any"]
    assert [type(v) for v in values] == [int, float, str, bool]


ERRORS: list[tuple[str, int, int, str]] = [  # text, line, column, part of the message
    ("", 1, 1, "empty"),
    ("   ", 1, 1, "empty"),
    ('lang = "en" and year >= ', 1, 24, "expected a value after '>=', got end of input"),
    ("(a = 1", 1, 7, "expected 'and', 'or' or ')' after 1, got end of input"),
    ("((a = 1) or b = 2", 1, 18, "')'"),
    ("a = 1)", 1, 6, "expected 'and', 'or' or end of input after 1, got ')'"),
    ("x in [1, 2", 1, 11, "expected ',' or ']' after 2"),
    ("x in [1 2]", 1, 9, "expected ',' or ']'"),
    ("x in 1", 1, 6, "expected '['"),
    ("x in []", 1, 7, "expected a value after '['"),
    ("x = 1 y = 2", 1, 7, "expected 'and', 'or' or end of input"),
    ("x", 1, 2, "expected an operator (=, !=, <, <=, >, >=, in, except, is, exists, ~)"),
    ("x @ 1", 1, 3, "expected an operator"),
    ("x is", 1, 5, "expected 'not', 'null' or 'empty'"),
    ("x is nul", 1, 6, "expected 'not', 'null' or 'empty'"),
    ("not", 1, 4, "expected a condition after 'not'"),
    ("a = 1 or or b = 2", 1, 10, "expected a condition after 'or', got 'or'"),
    ("a = 1 and", 1, 10, "expected a condition after 'and'"),
    ('"a" = x', 1, 5, "expected a comparison (<, <=, >, >=)"),
    ("a. = 1", 1, 4, "expected a key after '.'"),
    ("x = y", 1, 5, "expected a value"),
    ("x = null", 1, 5, "is null"),
    ("id > 5", 1, 4, "expected"),
    ("x = 9223372036854775808", 1, 5, "int64"),
    ("x = -9223372036854775809", 1, 5, "int64"),
    ("x in [1, 99999999999999999999]", 1, 10, "int64"),
    ("x = 1e999", 1, 5, "too large"),
    ("x >= true", 1, 6, "ranges compare numbers, strings or datetime"),
    ("false < x", 1, 1, "expected a condition"),
    ('1 < x < "z"', 1, 9, "bounds are of one kind: this one is a string, the first a number"),
    ('"a" < x <= 5', 1, 12, "this one is a number, the first a string"),
    ('1 < x < datetime("2024-01-01T00:00:00Z")', 1, 18, "this one is a datetime, the first a number"),
    ('x >= datetime("2024-01-01")', 1, 15, "not an RFC 3339 date-time with an offset"),
    ('x >= datetime("2024-01-01T00:00:00")', 1, 15, "RFC 3339"),
    ('x >= datetime("2024-02-30T00:00:00Z")', 1, 15, "RFC 3339"),
    ('x >= datetime("2024-01-01T24:00:00Z")', 1, 15, "RFC 3339"),
    ('datetime("nope") < x', 1, 10, "RFC 3339"),
    ('x = datetime("2024-01-01T00:00:00+2:00")', 1, 14, "RFC 3339"),
    ("x >= datetime(5)", 1, 15, "expected"),
    ("x >= datetime(", 1, 15, "expected a value after '('"),
    ('x in [datetime("2024-01-01T00:00:00Z")]', 1, 7, "expected a value after '['"),
    ("x except []", 1, 11, "expected a value after '['"),
    ("x except 1", 1, 10, "expected '[' after 'except'"),
    ("x not except [1]", 1, 7, "expected 'in'"),
    ("except = 1", 1, 1, "(a key that is a keyword goes in backticks: `except`)"),
    ("1 < x > 3", 1, 7, "one way"),
    (r'x = "a\qb"', 1, 7, "bad escape '\\q'"),
    (r'x = "ab\u12"', 1, 8, "bad escape"),
    (r'x = "\ud83d"', 1, 5, "surrogate"),
    ('x = "abc', 1, 5, "unterminated string"),
    ("x = 'abc", 1, 5, "unterminated string"),
    ('x = "a\nb"', 1, 5, "unterminated string"),
    ("`abc = 1", 1, 1, "unterminated quoted key"),
    ("`` = 1", 1, 1, "cannot be empty"),
    ("and = 1", 1, 1, "expected a condition, got 'and' (a key that is a keyword goes in backticks: `and`)"),
    ("b = 1 and null = 1", 1, 11, "`null`"),
    ("a.in = 1", 1, 3, "expected a key after '.', got 'in'"),
    ("id.x = 1", 1, 3, "expected '=' or '!=', 'in' or 'not' after 'id'"),
    ("id = -1", 1, 6, "non-negative"),
    ("id in [1, 2.5]", 1, 11, "non-negative integers"),
    ('id = "7"', 1, 6, "non-negative integers"),
    ("body ~ 5", 1, 8, 'takes a quoted string of words, like body ~ "sharded search"'),
    ("body ~ true", 1, 8, "takes a quoted string"),
    ("body ~", 1, 7, "expected a value after '~', got end of input"),
    ('~ "x"', 1, 1, "expected a condition"),
    ("a = 1 and\n  b >", 2, 6, "expected a value after '>'"),
    ("a = 1\nor\n  b = @", 3, 7, "expected a value after '='"),
]


@pytest.mark.parametrize(("text", "line", "column", "part"), ERRORS)
def test_errors_point_at_the_spot(text: str, line: int, column: int, part: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    e = info.value
    assert (e.text, e.line, e.column) == (text, line, column)
    assert part in e.message
    assert isinstance(e, ValueError) and e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
    where = f"line {line}, column {column}" if "\n" in text else f"column {column}"
    head, src, caret = str(e).split("\n")
    assert head == f"filter syntax error at {where}: {e.message}"
    assert src == "  " + text.split("\n")[line - 1].rstrip("\r")
    assert caret == "  " + " " * (column - 1) + "^"
    # No parser internals: terminal names (NAME, _AND, $END ...) or lark's class names.
    message = e.message.replace(text, "").replace("RFC 3339", "")
    assert not re.search(r"\$END|\b_?[A-Z]{3,}\b|Token|Unexpected|lark", message)


def test_caret_keeps_tabs() -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter("\tx = @")
    assert str(info.value).split("\n")[2] == "  \t    ^"


def test_not_a_string() -> None:
    with pytest.raises(TypeError):
        parse_filter(b"x = 1")  # type: ignore[arg-type]


# Property: the dict means what the text means. Random and/or/not trees over a few conditions, written
# with the fewest parentheses the precedence allows, are checked against Python's own evaluation on
# every payload.
ATOMS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "a = 1": lambda p: p.get("a") == 1,
    "b != 0": lambda p: p.get("b") != 0,
    "c in [1]": lambda p: p.get("c") == 1,
    "a > 0": lambda p: p.get("a", 0) > 0,
    "c exists": lambda p: "c" in p,
    "id in [1]": lambda p: p["id"] == 1,
}
PAYLOADS = [
    {"id": i, "a": a, "b": b} | ({} if c is None else {"c": c})
    for i in (0, 1)
    for a in (0, 1)
    for b in (0, 1)
    for c in (0, 1, None)
]
RANGE_OPS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
Tree = Any  # ("atom", text) | ("not", Tree) | ("and" | "or", Tree, Tree)
TREES = st.recursive(
    st.sampled_from(sorted(ATOMS)).map(lambda a: ("atom", a)),
    lambda kids: st.tuples(st.just("not"), kids) | st.tuples(st.sampled_from(["and", "or"]), kids, kids),
    max_leaves=8,
)


def render(t: Tree, outer: int = 0) -> str:
    """t as text, parenthesised only where the precedence (or 1, and 2, not 3) needs it."""
    if t[0] == "atom":
        return str(t[1])
    prec = {"or": 1, "and": 2, "not": 3}[t[0]]
    text = f"not {render(t[1], 3)}" if t[0] == "not" else f" {t[0]} ".join(render(k, prec + 1) for k in t[1:])
    return f"({text})" if prec < outer else text


def truth(t: Tree, p: dict[str, Any]) -> bool:
    if t[0] == "atom":
        return ATOMS[t[1]](p)
    if t[0] == "not":
        return not truth(t[1], p)
    return truth(t[1], p) and truth(t[2], p) if t[0] == "and" else truth(t[1], p) or truth(t[2], p)


def holds(f: dict[str, Any], p: dict[str, Any]) -> bool:
    """A filter dict or condition evaluated the way the server will."""
    if "has_id" in f:
        return p["id"] in f["has_id"]
    if "key" in f:
        present, v = f["key"] in p, p.get(f["key"], 0)
        if "match" in f:
            return present and v == f["match"]
        if "match_any" in f:
            return present and v in f["match_any"]
        if "range" in f:
            return present and all(RANGE_OPS[op](v, bound) for op, bound in f["range"].items())
        assert f.keys() == {"key", "exists"}
        return present
    assert f and f.keys() <= {"must", "should", "must_not"} and all(f.values())  # no empty parts
    return (
        all(holds(c, p) for c in f.get("must", []))
        and (not f.get("should") or any(holds(c, p) for c in f["should"]))
        and not any(holds(c, p) for c in f.get("must_not", []))
    )


@EXAMPLES
@given(TREES)
def test_meaning_matches_python(t: Tree) -> None:
    for text in (render(t), render(t, 4)):  # fewest parentheses, and every group parenthesised
        f = parse_filter(text)
        assert all(holds(f, p) == truth(t, p) for p in PAYLOADS), (text, f)


@EXAMPLES
@given(
    st.lists(
        st.sampled_from(
            [
                "a",
                "b.c",
                "id",
                "`k`",
                "=",
                "!=",
                "<",
                ">=",
                "in",
                "except",
                "datetime(",
                '"2024-01-01T00:00:00Z"',
                ")",
                "not",
                "is",
                "null",
                "empty",
                "exists",
                "and",
                "or",
                "(",
                ")",
                "[",
                "]",
                ",",
                "1",
                "-2",
                "1.5",
                '"s"',
                "'t'",
                "true",
                "@",
                '"',
                "`",
                "\\",
                "\n",
                ".",
            ]
        ),
        max_size=10,
    )
    | st.text(max_size=20)
)
# Inputs that certainly fail, so the position checks below always run (at the end, past it, a later line).
@example(["a", "="])
@example("a = 1 and\n(b = @")
@example("a = 1\n)")
def test_only_filter_syntax_errors(tokens: list[str] | str) -> None:
    text = tokens if isinstance(tokens, str) else " ".join(tokens)
    # The examples' exact error positions (line, column): just past the end, on a later line, its start.
    known = {"a =": (1, 4), "a = 1 and\n(b = @": (2, 6), "a = 1\n)": (2, 1)}
    try:
        f = parse_filter(text)
    except FilterSyntaxError as e:
        lines = text.split("\n")
        if text in known:
            assert (e.line, e.column) == known[text], (text, e.line, e.column)
        assert e.line in range(1, len(lines) + 1), (text, e.line)
        assert e.column in range(1, len(lines[e.line - 1]) + 2), (text, e.line, e.column)  # in the line or just past
        assert "^" in str(e) and e.message in str(e), str(e)  # the caret under the spot, and what was expected
    else:
        assert text not in known, (text, f)
        assert f and f.keys() <= {"must", "should", "must_not"}
