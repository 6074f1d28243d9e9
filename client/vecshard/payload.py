"""Payloads and filters: Python values <-> proto (payload.proto), shared by the SDK and the server.

A payload is a JSON-like dict: str keys; None, bool, int (int64), float, str, lists and nested
dicts. Integers stay integers (never doubles), so int64 values round-trip exactly.

A filter is a dict of the shape of the `Filter` message (or a `Filter` itself):

    {"must": [{"key": "lang", "match": "en"}, {"key": "year", "range": {"gte": 2020}}],
     "should": [...], "must_not": [...]}

where each condition is a nested filter dict, `{"has_id": [1, 2]}`, or `{"key": path, TEST: ...}`
with TEST one of match (a value), match_any (a list), match_except (a list), range
({"gt"|"gte"|"lt"|"lte": bound}, every bound a number or every bound a string), datetime_range
(bounds are RFC 3339 strings with an offset, or timezone-aware `datetime`s), text (a str: the field
is a string holding every word of it once analysed, as the field's "text" index analyses, e.g.
{"key": "body", "text": "sharded search"}), is_null / is_empty / exists (True).
`vecshard.filter_text.parse_filter` reads the same from text; docs/filters.md describes each test.

A key is a path in FieldCondition.key's syntax (`key_parts`): "meta.lang", or "`a.b`.c" for the key
"c" inside the top-level key "a.b". In the dict form it may also be a list of parts, each taken as it
is: ["a.b", "c"] is "`a.b`.c" (`join_key`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from vecshard.errors import InvalidArgument
from vecshard.v1 import payload_pb2 as ppb

JsonValue = None | bool | int | float | str | list[Any] | dict[str, Any]
PayloadDict = dict[str, Any]
FilterLike = Mapping[str, Any] | ppb.Filter

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_DEPTH = 32  # nesting of payload values and of filter groups

_TESTS = ("match", "match_any", "match_except", "range", "datetime_range", "text", "is_null", "is_empty", "exists")
_BOUNDS = ("gt", "gte", "lt", "lte")
_LISTS = ("match_any", "match_except")


# -- keys -----------------------------------------------------------------------------------------


def key_parts(key: str, what: str = "key") -> list[str]:
    """The parts of a key path: "meta.lang" -> ["meta", "lang"]; a part in backticks is one part,
    dots included, with `` for a backtick inside it: "`a.b`.c" -> ["a.b", "c"]. A part not starting
    with a backtick ends at the next dot, as it is ("a`b" -> ["a`b"]). InvalidArgument (naming
    `what`) for an empty key or part, an unclosed backtick, or a closing one not followed by a dot."""
    if not isinstance(key, str):
        raise InvalidArgument(f"{what} must be a str (a dotted path like 'meta.lang'), got {type(key).__name__}")
    parts = _key_parts(key)
    if isinstance(parts, str):
        raise InvalidArgument(f"{what} {key!r} is not a key path: {parts}")
    return list(parts)


@functools.lru_cache(maxsize=4096)
def _key_parts(key: str) -> tuple[str, ...] | str:
    """The parts, or what is wrong (a str)."""
    if not key:
        return "it is empty (keys are non-empty; write a dotted path like 'meta.lang')"
    parts: list[str] = []
    i, n = 0, len(key)
    while True:
        if key.startswith("`", i):
            chunks, j = [], i + 1
            while True:
                k = key.find("`", j)
                if k < 0:
                    return f"the backtick at character {i + 1} is not closed (`` inside a quoted part is a backtick)"
                chunks.append(key[j:k])
                if not key.startswith("`", k + 1):
                    break
                chunks.append("`")
                j = k + 2
            part, i = "".join(chunks), k + 1
            if i < n and key[i] != ".":
                return f"the quoted part closed at character {k + 1} must be followed by '.' or the end"
        else:
            k = key.find(".", i)
            k = n if k < 0 else k
            part, i = key[i:k], k
        if not part:
            return "it has an empty part (parts are non-empty; put a part with dots in backticks: `a.b`)"
        parts.append(part)
        if i == n:
            return tuple(parts)
        i += 1
        if i == n:
            return "it ends with '.' (parts are non-empty)"


def join_key(parts: Sequence[str]) -> str:
    """The key path of these parts, each taken as it is (the inverse of `key_parts`): a part holding
    a dot or starting with a backtick goes in backticks. ["a.b", "c"] -> "`a.b`.c"."""
    if isinstance(parts, str) or not parts:
        raise InvalidArgument(f"a key's parts are a non-empty list of strings, got {parts!r}")
    out = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise InvalidArgument(f"key parts are non-empty strings, got {part!r} in {list(parts)!r}")
        out.append(f"`{part.replace('`', '``')}`" if "." in part or part.startswith("`") else part)
    return ".".join(out)


# -- date-times -----------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_DAY = _dt.date(1970, 1, 1).toordinal()


def parse_datetime(s: str, what: str = "datetime") -> int:
    """An RFC 3339 date-time with an offset ("2024-05-01T12:00:00+02:00", "...Z") as microseconds since
    1970-01-01T00:00:00Z: the instant it names. InvalidArgument (naming `what`) for anything else."""
    us = datetime_micros(s) if isinstance(s, str) else None
    if us is None:
        raise InvalidArgument(
            f"{what} is {s!r}, not an RFC 3339 date-time with an offset: write e.g. '2024-05-01T12:00:00Z' or "
            "'2024-05-01T12:00:00.5+02:00'"
        )
    return us


@functools.lru_cache(maxsize=65536)
def datetime_micros(s: str) -> int | None:
    """`parse_datetime`, None where it would refuse (for payload values, which may be anything)."""
    m = _RFC3339.fullmatch(s)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if hour > 23 or minute > 59 or second > 60:
        return None
    try:
        days = _dt.date(year, month, day).toordinal() - _EPOCH_DAY
    except ValueError:
        return None
    offset = 0
    if m[8]:
        oh, om = int(m[9]), int(m[10])
        if oh > 23 or om > 59:
            return None
        offset = (oh * 60 + om) * (1 if m[8] == "+" else -1)
    micros = int((m[7] or "0")[:6].ljust(6, "0"))
    return ((days * 24 + hour) * 60 + minute - offset) * 60_000_000 + second * 1_000_000 + micros


def value_to_proto(v: Any, path: str = "payload", depth: int = 0) -> ppb.Value:
    """One Python value as a `Value`; InvalidArgument (naming `path`) for what JSON cannot hold."""
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{path} is nested more than {MAX_DEPTH} levels deep")
    if v is None:
        return ppb.Value(null_value=True)
    if isinstance(v, bool | np.bool_):
        return ppb.Value(bool_value=bool(v))
    if isinstance(v, int | np.integer):
        if not INT64_MIN <= int(v) <= INT64_MAX:
            raise InvalidArgument(f"{path} = {v} does not fit in int64")
        return ppb.Value(int_value=int(v))
    if isinstance(v, float | np.floating):
        if not math.isfinite(v):
            raise InvalidArgument(f"{path} is {v}: payload numbers must be finite (JSON has no NaN or Inf)")
        return ppb.Value(double_value=float(v))
    if isinstance(v, str):
        return ppb.Value(string_value=v)
    if isinstance(v, Mapping):
        return ppb.Value(struct_value=payload_to_proto(v, path, depth + 1))
    if isinstance(v, list | tuple):
        items = [value_to_proto(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v)]
        return ppb.Value(list_value=ppb.ListValue(values=items))
    raise InvalidArgument(
        f"{path} is a {type(v).__name__}: payload values are None, bool, int, float, str, lists and dicts"
    )


def payload_to_proto(
    d: Mapping[str, Any] | None, path: str = "payload", depth: int = 0, *, stored: bool = False
) -> ppb.Payload:
    """A dict (None: empty) as a `Payload`. stored: a payload as a shard stores it, whose top level may
    hold the empty key (a string-id collection keeps each point's string id there)."""
    if d is None:
        return ppb.Payload()
    if not isinstance(d, Mapping):
        raise InvalidArgument(f"{path} must be a dict with str keys, got {type(d).__name__}")
    out = ppb.Payload()
    for k, v in d.items():
        if not isinstance(k, str) or not (k or stored):
            raise InvalidArgument(f"{path} has the key {k!r}: keys are non-empty strings")
        out.fields[k].CopyFrom(value_to_proto(v, f"{path}.{k}", depth))
    return out


def value_from_proto(v: ppb.Value) -> Any:
    """A `Value` as a Python value (an unset Value reads as None)."""
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return payload_from_proto(v.struct_value)
    if kind == "list_value":
        return [value_from_proto(x) for x in v.list_value.values]
    if kind is None or kind == "null_value":
        return None
    return getattr(v, kind)


def payload_from_proto(p: ppb.Payload) -> PayloadDict:
    """A `Payload` as a dict."""
    return {k: value_from_proto(v) for k, v in p.fields.items()}


def check_value(v: ppb.Value, path: str, depth: int = 0) -> None:
    """Refuse what a client in another language could send but a payload cannot hold."""
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{path} is nested more than {MAX_DEPTH} levels deep")
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{path} is a Value with no kind set: set one (null_value for null)")
    if kind == "double_value" and not math.isfinite(v.double_value):
        raise InvalidArgument(f"{path} is {v.double_value}: payload numbers must be finite")
    elif kind == "list_value":
        for i, x in enumerate(v.list_value.values):
            check_value(x, f"{path}[{i}]", depth + 1)
    elif kind == "struct_value":
        check_payload(v.struct_value, path, depth + 1)


def check_payload(p: ppb.Payload, path: str = "payload", depth: int = 0) -> None:
    for k, v in p.fields.items():
        if not k:
            raise InvalidArgument(f"{path} has an empty key: keys are non-empty strings")
        check_value(v, f"{path}.{k}", depth)


# -- filters ------------------------------------------------------------------------------------


def filter_to_proto(f: FilterLike | None, path: str = "filter") -> ppb.Filter | None:
    """An SDK filter dict (or a `Filter`) as a `Filter`; None stays None. InvalidArgument names the
    path of the bad part, e.g. filter.must[1].range."""
    if f is None or isinstance(f, ppb.Filter):
        return f
    return _filter(f, path, 0)


def _filter(f: Any, path: str, depth: int) -> ppb.Filter:
    if not isinstance(f, Mapping):
        raise InvalidArgument(f"{path} must be a dict with must / should / must_not lists, got {type(f).__name__}")
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{path} nests filters more than {MAX_DEPTH} levels deep")
    unknown = set(f) - {"must", "should", "must_not"}
    if unknown:
        raise InvalidArgument(f"{path} has unknown keys {sorted(unknown)}: a filter has must, should and must_not")
    out = ppb.Filter()
    for group in ("must", "should", "must_not"):
        conds = f.get(group) or []
        if isinstance(conds, Mapping):
            conds = [conds]
        if not isinstance(conds, Sequence) or isinstance(conds, str):
            raise InvalidArgument(f"{path}.{group} must be a list of conditions")
        getattr(out, group).extend(_condition(c, f"{path}.{group}[{i}]", depth) for i, c in enumerate(conds))
    return out


def _condition(c: Any, path: str, depth: int) -> ppb.Condition:
    if not isinstance(c, Mapping):
        raise InvalidArgument(f"{path} must be a dict, got {type(c).__name__}")
    if "has_id" in c:
        if len(c) != 1:
            raise InvalidArgument(f"{path}: has_id stands alone in its condition")
        ids = np.asarray(c["has_id"]).reshape(-1)
        if ids.size and (not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any()):
            raise InvalidArgument(f"{path}.has_id must list ids (integers >= 0)")
        return ppb.Condition(has_id=ids.astype("<i8").tobytes())
    if "key" not in c:
        if set(c) <= {"must", "should", "must_not"}:  # a nested group ({} matches every point)
            return ppb.Condition(filter=_filter(c, path, depth + 1))
        raise InvalidArgument(f"{path} needs a 'key' (a field condition), 'has_id', or must/should/must_not")
    key = _key(c["key"], f"{path}.key")
    tests = [t for t in _TESTS if t in c]
    extra = set(c) - {"key", *_TESTS}
    if len(tests) != 1 or extra:
        raise InvalidArgument(f"{path} must have 'key' and exactly one of {', '.join(_TESTS)}")
    test = tests[0]
    arg = c[test]
    fc = ppb.FieldCondition(key=key)
    if test == "match":
        fc.match.CopyFrom(_match_value(arg, f"{path}.match"))
    elif test in _LISTS:
        if not isinstance(arg, Sequence) or isinstance(arg, str) or not arg:
            raise InvalidArgument(f"{path}.{test} must be a non-empty list of values")
        getattr(fc, test).values.extend(_match_value(x, f"{path}.{test}[{i}]") for i, x in enumerate(arg))
    elif test == "range":
        _range(arg, fc.range, f"{path}.range")
    elif test == "text":
        if not isinstance(arg, str):
            raise InvalidArgument(f"{path}.text must be a str (words the field must all hold), got {arg!r}")
        fc.text = arg
    elif test == "datetime_range":
        if not isinstance(arg, Mapping) or not arg or set(arg) - set(_BOUNDS):
            raise InvalidArgument(f"{path}.datetime_range must be a dict of gt / gte / lt / lte date-times")
        for b, x in arg.items():
            setattr(fc.datetime_range, b, _datetime_bound(x, f"{path}.datetime_range.{b}"))
    else:
        if arg is not True:
            raise InvalidArgument(f"{path}.{test} must be True (negate with must_not)")
        setattr(fc, test, True)
    return ppb.Condition(field=fc)


def _key(key: Any, path: str) -> str:
    """A condition's key: a path (checked), or a list of parts (joined)."""
    if isinstance(key, list | tuple):
        return join_key(key)
    if not isinstance(key, str):
        raise InvalidArgument(f"{path} must be a dotted path like 'meta.lang' (or a list of parts), got {key!r}")
    key_parts(key, path)
    return key


def _range(arg: Any, out: ppb.Range, path: str) -> None:
    if not isinstance(arg, Mapping) or not arg or set(arg) - set(_BOUNDS):
        raise InvalidArgument(f"{path} must be a dict of gt / gte / lt / lte bounds (all numbers or all strings)")
    kinds = set()
    for b, x in arg.items():
        if isinstance(x, str):
            kinds.add("string")
        elif isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
            raise InvalidArgument(f"{path}.{b} must be a number or a string, got {x!r} (date-times: datetime_range)")
        elif x != x:
            raise InvalidArgument(f"{path}.{b} is NaN")
        else:
            kinds.add("number")
        getattr(out, b).CopyFrom(value_to_proto(x, f"{path}.{b}"))
    if len(kinds) > 1:
        raise InvalidArgument(f"{path} mixes number and string bounds: a range holds numbers or strings, not both")


def _datetime_bound(x: Any, path: str) -> str:
    """A datetime_range bound as its RFC 3339 string (checked); an aware datetime is written as one."""
    if isinstance(x, _dt.datetime):
        if x.utcoffset() is None:
            raise InvalidArgument(f"{path} is a naive datetime: give it a timezone (e.g. tzinfo=timezone.utc)")
        x = x.isoformat()
    parse_datetime(x, path)
    return cast(str, x)


def _match_value(x: Any, path: str) -> ppb.Value:
    if x is None or isinstance(x, list | tuple | Mapping):
        raise InvalidArgument(f"{path} must be a string, a number or a bool (use is_null for null)")
    return value_to_proto(x, path)


def filter_from_proto(f: ppb.Filter) -> dict[str, Any]:
    """A `Filter` as the SDK's dict form (for display and tests)."""
    out: dict[str, Any] = {}
    for group in ("must", "should", "must_not"):
        conds = getattr(f, group)
        if conds:
            out[group] = [_condition_from_proto(c) for c in conds]
    return out


def _condition_from_proto(c: ppb.Condition) -> dict[str, Any]:
    kind = c.WhichOneof("kind")
    if kind == "filter":
        return filter_from_proto(c.filter)
    if kind == "has_id":
        return {"has_id": np.frombuffer(c.has_id, dtype="<i8").tolist()}
    fc = c.field
    test = fc.WhichOneof("test")
    if test == "match":
        return {"key": fc.key, "match": value_from_proto(fc.match)}
    if test in _LISTS:
        return {"key": fc.key, test: [value_from_proto(v) for v in getattr(fc, test).values]}
    if test == "range":
        return {
            "key": fc.key,
            "range": {b: value_from_proto(getattr(fc.range, b)) for b in _BOUNDS if fc.range.HasField(b)},
        }
    if test == "text":
        return {"key": fc.key, "text": fc.text}
    if test == "datetime_range":
        return {
            "key": fc.key,
            test: {b: getattr(fc.datetime_range, b) for b in _BOUNDS if getattr(fc.datetime_range, b)},
        }
    return {"key": fc.key, cast(str, test): True}
