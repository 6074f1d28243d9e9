r"""Parse a human-readable filter string into the SDK's filter dict.

    >>> parse_filter('lang = "en" and (year >= 2020 or tag in ["a", "b"])')

Syntax (keywords are case-insensitive; `not` binds tighter than `and`, which binds tighter than `or`;
parentheses group):

    key = v   key == v   key != v                     equality            -> match
    key > v   key >= v   key < v   key <= v           numbers or strings  -> range
    2020 <= key < 2030   (also 5 < key, "a" <= key)   chained comparison  -> range
    key >= datetime("2024-05-01T00:00:00Z")           instants            -> datetime_range
    key = datetime("...")   key != datetime("...")    the same instant    -> datetime_range gte = lte
    key in [v, ...]   key not in [v, ...]                                 -> match_any
    key except [v, ...]                                                   -> match_except
    key ~ "words"                                                         -> text
    key is null   key is not null   key is empty   key is not empty      -> is_null / is_empty
    key exists   not key exists                                           -> exists
    id = 5   id != 5   id in [1, 2]   id not in [1, 2]                    -> has_id (point ids)
    a and b   a or b   not a   (a)

Ranges compare numbers with number bounds and strings with string bounds (by Unicode code point:
"B" < "a" < "b" < "ba"); a chained comparison's two bounds are of one kind. `datetime("...")` holds an
RFC 3339 date-time with an offset ("2024-05-01T12:00:00+02:00", "...Z"); it compares the field's
RFC 3339 string values as instants ("2024-05-01T12:00:00+02:00" = "2024-05-01T10:00:00Z").
`key ~ "words"` holds when the field is a string holding every word of "words" once both are analysed
as the field's "text" payload index analyses (Unicode word tokens, lowercased, then its stopwords
dropped and its stemmer applied; without a text index: tokens and lowercasing only), so
body ~ "Sharded SEARCH" matches "search over sharded indexes"; words that analyse to nothing (all
stopwords) match no point. Negate it with not: not body ~ "draft".
`key except [a, b]` holds when the field has a value (not null) and none of its values is listed: a
point without the field does not match. `key not in [a, b]` holds when no value is listed, a missing
field included.

A key is a dotted path of identifiers (letters, digits, `_`, `-`; not starting with a digit), e.g.
`meta.lang`. A part with other characters, or that is a keyword (the bare word `id` is the point id),
goes in backticks: `my key`.sub, `id`, meta.`in`. A part in backticks is one key part, dots included:
`a.b` = "x" tests the top-level key "a.b" (the dict's key is then "`a.b`", see vecshard.payload.key_parts).
Values: "double" or 'single' quoted strings with JSON escapes (\" \' \\ \/ \b \f \n \r \t \u00e9; \`
in a quoted key), integers (int64, kept exact), floats (1.5, -2e3, .5), true, false. Every bad input
raises `FilterSyntaxError`, whose message points at the spot with a caret.
"""

from __future__ import annotations

import math
import re
from typing import Any, cast

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedToken

from vecshard.payload import datetime_micros, join_key

__all__ = ["FilterSyntaxError", "parse_filter"]

_GRAMMAR = r"""
?start: or_
?or_: and_ (_OR and_)*
?and_: not_ (_AND not_)*
?not_: NOT not_ -> neg
     | "(" or_ ")"
     | cond
?cond: key EQ value                      -> match
     | key EQ dt                         -> match_dt
     | key CMP bound                     -> cmp
     | lead CMP key (CMP bound)?         -> cmp_rev
     | key NOT? _IN vlist                -> any_
     | key _EXCEPT vlist                 -> except_
     | key _IS NOT? (NULL | EMPTY)       -> check
     | key EXISTS                        -> check
     | key _TILDE value                  -> text_
     | _ID EQ value                      -> ids
     | _ID NOT? _IN vlist                -> ids
key: (NAME | BQKEY) ("." (NAME | BQKEY))*
vlist: "[" value ("," value)* ","? "]"
?value: STRING | INT | FLOAT | TRUE | FALSE
?bound: value | dt
?lead: INT | FLOAT | STRING | dt
dt: _DATETIME "(" STRING ")"

BQKEY: /`(?:[^`\\\n]|\\.)*`/
STRING: /"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'/
FLOAT.2: /[+-]?(?:\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)/
INT: /[+-]?\d+/
EQ: /==?|!=/
_TILDE: "~"
CMP: /[<>]=?/
_DATETIME.3: /datetime(?=\s*\()/i
%ignore /\s+/
"""
_KEYWORDS = {
    "and": "_AND",
    "or": "_OR",
    "not": "NOT",
    "in": "_IN",
    "except": "_EXCEPT",
    "is": "_IS",
    "null": "NULL",
    "empty": "EMPTY",
    "exists": "EXISTS",
    "true": "TRUE",
    "false": "FALSE",
    "id": "_ID",
}
# A keyword is a whole word (not the start of `android` or `in-stock`), case-insensitive; a NAME is never one.
_GRAMMAR += "".join(f"{term}.2: /{word}(?![\\w-])/i\n" for word, term in _KEYWORDS.items())
_GRAMMAR += f"NAME: /(?!(?:{'|'.join(_KEYWORDS)})(?![\\w-]))[^\\W\\d][\\w-]*/i\n"
_VALUES = {"STRING", "INT", "FLOAT", "TRUE", "FALSE"}
_RANGE_OPS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
_CHECKS = {"NULL": "is_null", "EMPTY": "is_empty", "EXISTS": "exists"}
_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">="}
_ESCAPES = {'"': '"', "'": "'", "`": "`", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
# How terminals read in "expected ...", in this order; each phrase is said once. A set of terminals that
# can only mean "a condition" or "an operator" is said as that.
_READABLE = {
    "NAME": "a key",
    "BQKEY": "a key",
    "_ID": "'id'",
    "LPAR": "'('",
    "DOT": "'.'",
    "EQ": "'=' or '!='",
    "CMP": "a comparison (<, <=, >, >=)",
    "_IN": "'in'",
    "_EXCEPT": "'except'",
    "_IS": "'is'",
    "_TILDE": "'~'",
    "NOT": "'not'",
    "EXISTS": "'exists'",
    "NULL": "'null'",
    "EMPTY": "'empty'",
    "LSQB": "'['",
    "COMMA": "','",
    "RSQB": "']'",
    "_AND": "'and'",
    "_OR": "'or'",
    "RPAR": "')'",
    "$END": "end of input",
    **dict.fromkeys([*_VALUES, "_DATETIME"], "a value"),
}
_CONDITION = ({"NAME", "BQKEY", "_ID", "NOT", "LPAR", "INT", "FLOAT", "STRING", "_DATETIME"}, "a condition")
_OPERATOR = (
    {"DOT", "EQ", "CMP", "_IN", "_EXCEPT", "NOT", "_IS", "EXISTS", "_TILDE"},
    "an operator (=, !=, <, <=, >, >=, in, except, is, exists, ~)",
)


class FilterSyntaxError(ValueError):
    """A filter string that does not parse. `str()` is the message, the position and the line with a caret
    under the bad spot; `.text` is the input, `.line` and `.column` the position (1-based), `.message`
    the message alone."""

    def __init__(self, text: str, line: int, column: int, message: str) -> None:
        self.text, self.line, self.column, self.message = text, line, column, message
        lines = text.split("\n")
        src = lines[line - 1].rstrip("\r") if line <= len(lines) else ""
        pad = "".join(c if c == "\t" else " " for c in src[: column - 1])
        where = f"line {line}, column {column}" if len(lines) > 1 else f"column {column}"
        super().__init__(f"filter syntax error at {where}: {message}\n  {src}\n  {pad}^")


class _Fail(Exception):
    """A semantic error found while building the dict, at a token; parse_filter adds the text."""

    def __init__(self, tok: Token, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.line, self.column, self.message = tok.line or 1, (tok.column or 1) + offset, message


def _unquote(tok: Token) -> str:
    def escape(m: re.Match[str]) -> str:
        if len(m[1]) == 5:
            return chr(int(m[1][1:], 16))
        if m[1] in _ESCAPES:
            return _ESCAPES[m[1]]
        raise _Fail(tok, f"bad escape '\\{m[1]}' (use \\\" \\' \\\\ \\n \\t \\uXXXX ...)", 1 + m.start())

    out = _ESCAPE.sub(escape, tok[1:-1])
    try:  # join \uXXXX surrogate pairs
        return out.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise _Fail(tok, "a \\u escape is half of a surrogate pair") from None


def _literal(tok: Token) -> Any:
    if tok.type == "STRING":
        return _unquote(tok)
    if tok.type == "INT":
        n = int(tok)
        if not -(2**63) <= n < 2**63:
            raise _Fail(tok, f"integer {tok} is outside the int64 range")
        return n
    if tok.type == "FLOAT":
        x = float(tok)
        if not math.isfinite(x):
            raise _Fail(tok, f"number {tok} is too large for a float")
        return x
    return tok.type == "TRUE"


def _bound(tok: Token) -> tuple[str, Any]:
    """(the kind of a range bound: "number", "string" or "datetime", its value)."""
    if tok.type == "DATETIME":
        return "datetime", str(tok)
    if tok.type in ("INT", "FLOAT", "STRING"):
        return "string" if tok.type == "STRING" else "number", _literal(tok)
    raise _Fail(tok, f'ranges compare numbers, strings or datetime("..."); use = for booleans (got {tok})')


def _range(key: str, bounds: dict[str, Any], kind: str) -> dict[str, Any]:
    return _leaf({"key": key, "datetime_range" if kind == "datetime" else "range": bounds})


def _point_id(tok: Token) -> int:
    if tok.type != "INT" or tok.startswith("-"):
        raise _Fail(tok, f"point ids are non-negative integers, got {tok}")
    return cast(int, _literal(tok))


def _leaf(cond: dict[str, Any], negate: bool = False) -> dict[str, Any]:
    return {"must_not" if negate else "must": [cond]}


def _cond(f: dict[str, Any]) -> Any:
    """A filter as a condition inside another: {"must": [c]} is just c."""
    return f["must"][0] if f.keys() == {"must"} and len(f["must"]) == 1 else f


@v_args(inline=True)
class _Build(Transformer[Token, dict[str, Any]]):
    """Builds the filter dict bottom-up; every condition rule returns a filter dict."""

    def or_(self, *fs: dict[str, Any]) -> dict[str, Any]:
        return {"should": [c for f in fs for c in (f["should"] if f.keys() == {"should"} else [_cond(f)])]}

    def and_(self, *fs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {"must": [], "must_not": []}
        for f in fs:
            if f.keys() <= out.keys():  # a and (b and not c): one level
                for k, conds in f.items():
                    out[k] += conds
            else:
                out["must"].append(f)
        return {k: v for k, v in out.items() if v}

    def neg(self, _not: Token, f: dict[str, Any]) -> dict[str, Any]:
        if f.keys() == {"should"}:  # not (a or b) = none of a, b
            return {"must_not": f["should"]}
        if f.keys() == {"must_not"} and len(f["must_not"]) == 1:  # not not a = a
            return {"must": f["must_not"]}
        return {"must_not": [_cond(f)]}

    def key(self, *parts: Token) -> str:
        names = [_unquote(p) if p.type == "BQKEY" else str(p) for p in parts]
        for p, name in zip(parts, names, strict=True):
            if not name:
                raise _Fail(p, "a quoted key part cannot be empty")
        return join_key(names)

    def vlist(self, *values: Token) -> list[Token]:
        return list(values)

    def dt(self, text: Token) -> Token:
        value = _unquote(text)
        if datetime_micros(value) is None:
            raise _Fail(text, 'not an RFC 3339 date-time with an offset: write e.g. datetime("2024-05-01T12:00:00Z")')
        return Token.new_borrow_pos("DATETIME", value, text)

    def match(self, key: str, op: Token, v: Token) -> dict[str, Any]:
        return _leaf({"key": key, "match": _literal(v)}, op == "!=")

    def match_dt(self, key: str, op: Token, v: Token) -> dict[str, Any]:
        return _leaf({"key": key, "datetime_range": {"gte": str(v), "lte": str(v)}}, op == "!=")

    def cmp(self, key: str, op: Token, v: Token) -> dict[str, Any]:
        kind, value = _bound(v)
        return _range(key, {_RANGE_OPS[op]: value}, kind)

    def cmp_rev(self, lo: Token, op: Token, key: str, *upper: Token) -> dict[str, Any]:
        kind, value = _bound(lo)
        bounds = {_RANGE_OPS[_FLIP[op]]: value}
        if upper:  # chained: lo < key < hi
            op2, hi = upper
            if op[0] != op2[0]:
                raise _Fail(op2, "a chained comparison must go one way, like 1 < x <= 5 or 5 > x >= 1")
            kind2, value2 = _bound(hi)
            if kind2 != kind:
                raise _Fail(
                    hi, f"a chained comparison's bounds are of one kind: this one is a {kind2}, the first a {kind}"
                )
            bounds[_RANGE_OPS[op2]] = value2
        return _range(key, bounds, kind)

    def any_(self, key: str, *rest: Any) -> dict[str, Any]:
        return _leaf({"key": key, "match_any": [_literal(v) for v in rest[-1]]}, len(rest) == 2)

    def except_(self, key: str, values: list[Token]) -> dict[str, Any]:
        return _leaf({"key": key, "match_except": [_literal(v) for v in values]})

    def text_(self, key: str, v: Token) -> dict[str, Any]:
        if v.type != "STRING":
            raise _Fail(v, f'~ takes a quoted string of words, like body ~ "sharded search" (got {v})')
        return _leaf({"key": key, "text": _unquote(v)})

    def check(self, key: str, *rest: Token) -> dict[str, Any]:
        return _leaf({"key": key, _CHECKS[rest[-1].type]: True}, len(rest) == 2)

    def ids(self, *rest: Any) -> dict[str, Any]:
        values = rest[-1] if isinstance(rest[-1], list) else [rest[-1]]
        negate = bool(rest[0] == "!=" or len(rest) == 2 and isinstance(rest[1], list))  # "!=", or "not" before "in"
        return _leaf({"has_id": [_point_id(v) for v in values]}, negate)


_PARSER = Lark(_GRAMMAR, parser="lalr", lexer="contextual", transformer=_Build(), maybe_placeholders=False)


def _expected(names: set[str]) -> str:
    phrases = []
    for group, phrase in (_CONDITION, _OPERATOR):
        if group <= names:
            names, phrases = names - group, [phrase]
    for name, phrase in _READABLE.items():
        if name in names and phrase not in phrases:
            phrases.append(phrase)
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _context(text: str, pos: int, fallback: set[str]) -> tuple[set[str], str]:
    """What could come at pos, and ' after <the token before pos>' ('' at the start). The error's own
    parser state may have reduced past the spot, and LALR states merge lookaheads from other contexts
    (after `x = 1` a ']'), so re-parse the text before pos and ask the parser, which tries each terminal."""
    last: Token | None = None
    try:
        parser = _PARSER.parse_interactive(text[:pos])
        for last in parser.iter_parse():  # noqa: B007 - the loop feeds the parser; last is the last token
            pass
        names = set(parser.accepts())  # type: ignore[no-untyped-call]
    except (LarkError, _Fail):
        names = fallback
    if last is None:
        return names, ""
    shown = last if len(last) <= 24 else last[:20] + "..."
    return names, f" after {shown}" if last.type in _VALUES | {"BQKEY"} else f" after '{shown}'"


def parse_filter(text: str) -> dict[str, Any]:
    """Parse a filter string (syntax in the module docstring) into the SDK's filter dict:
    {"must": [...], "should": [...], "must_not": [...]}, empty keys left out; the top level is always a
    filter dict. Raises FilterSyntaxError, with the position and what was expected, for any bad input."""
    if not isinstance(text, str):
        raise TypeError(f"a filter is a str, got {type(text).__name__}")
    if not text.strip():
        raise FilterSyntaxError(text, 1, 1, "the filter is empty; expected a condition")
    try:
        result: dict[str, Any] = _PARSER.parse(text)  # type: ignore[assignment]
    except _Fail as e:
        raise FilterSyntaxError(text, e.line, e.column, e.message) from None
    except UnexpectedCharacters as e:
        pos: int = e.pos_in_stream or 0
        char = text[pos]
        if char in "\"'`":
            what = "string" if char != "`" else "quoted key"
            raise FilterSyntaxError(text, e.line, e.column, f"unterminated {what}: no closing {char}") from None
        names, after = _context(text, pos, set(e.allowed or ()))
        message = f"expected {_expected(names)}{after}, got the character {char!r}"
        raise FilterSyntaxError(text, e.line, e.column, message) from None
    except UnexpectedToken as e:
        tok = e.token
        at_end = tok.type == "$END"
        line = (tok.end_line if at_end else tok.line) or 1
        column = (tok.end_column if at_end else tok.column) or 1
        pos = len(text) if at_end else tok.start_pos or 0
        names, after = _context(text, pos, set(e.expected))
        got = "end of input" if at_end else f"value {tok}" if tok.type in _VALUES else f"'{tok}'"
        message = f"expected {_expected(names)}{after}, got {got}"
        if tok.lower() in _KEYWORDS and "NAME" in names:
            message += f" (a key that is a keyword goes in backticks: `{tok}`)"
        elif tok.type == "NULL" and names & _VALUES:
            message += " (to test for null, write: key is null)"
        raise FilterSyntaxError(text, line, column, message) from None
    return result
