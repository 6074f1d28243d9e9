"""Checks of the payloads and filters a public request carries, before any shard is asked.

Shards evaluate filters (shard/payloads.py); checking them here too means a malformed one is refused
once, with the path of the bad part, instead of by every shard (and never half-applied by a write).
"""

from __future__ import annotations

from collections.abc import Sequence

from vecshard.errors import InvalidArgument
from vecshard.payload import MAX_DEPTH, check_payload, key_parts, parse_datetime
from vecshard.v1 import payload_pb2 as ppb
from vecshard_server.common.config import Settings

_MATCHABLE = ("bool_value", "int_value", "double_value", "string_value")
_NUMBERS = ("int_value", "double_value")
_BOUNDS = ("gt", "gte", "lt", "lte")


def check_payloads(payloads: Sequence[ppb.Payload], n: int, settings: Settings) -> None:
    """None, or one payload per point, each at most max_payload_bytes encoded and finite."""
    if not payloads:
        return
    if len(payloads) != n:
        raise InvalidArgument(
            f"got {len(payloads)} payloads for {n} points: send none, or one per id (empty ones allowed)"
        )
    limit = settings.max_payload_bytes
    for i, p in enumerate(payloads):
        size = p.ByteSize()
        if size > limit:
            raise InvalidArgument(
                f"payloads[{i}] is {size:,} bytes encoded, over max_payload_bytes={limit:,}: store large content "
                "elsewhere and keep a reference, or raise VECSHARD_MAX_PAYLOAD_BYTES"
            )
        check_payload(p, f"payloads[{i}]")


def check_filter(f: ppb.Filter, settings: Settings, path: str = "filter", write: str = "") -> None:
    """A filter every shard can evaluate: known tests with values of the right kinds (RFC 3339
    date-times in datetime_range; text: any string, one condition), key paths
    (vecshard.payload.key_parts), at most max_filter_conditions conditions and values, nested at
    most MAX_DEPTH deep. For a write (`write` names it), an empty filter is refused: it would match
    every point, and a client that sends an empty message where it meant none would change them
    all."""
    if write and not (f.must or f.should or f.must_not):
        raise InvalidArgument(
            f"{path} is empty, so this {write} would reach every point: send a condition (to reach every point on "
            "purpose: must_not [has_id []]), or drop the collection"
        )
    budget = [settings.max_filter_conditions]
    _filter(f, path, 0, budget, settings)


def check_keys(keys: Sequence[str], path: str) -> None:
    """Payload key paths a request names outside a filter (with_payload.fields, DELETE_KEYS keys, an
    index's field, ...), in FieldCondition.key's syntax: InvalidArgument naming path[i] for a bad one."""
    for i, key in enumerate(keys):
        key_parts(key, f"{path}[{i}]")


def _spend(budget: list[int], n: int, path: str, settings: Settings) -> None:
    budget[0] -= n
    if budget[0] < 0:
        raise InvalidArgument(
            f"{path}: the filter has more than max_filter_conditions={settings.max_filter_conditions} conditions "
            "and values; use a payload field that groups them"
        )


def _filter(f: ppb.Filter, path: str, depth: int, budget: list[int], settings: Settings) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{path} nests filters more than {MAX_DEPTH} levels deep")
    for group in ("must", "should", "must_not"):
        for i, c in enumerate(getattr(f, group)):
            _condition(c, f"{path}.{group}[{i}]", depth, budget, settings)


def _condition(c: ppb.Condition, path: str, depth: int, budget: list[int], settings: Settings) -> None:
    _spend(budget, 1, path, settings)
    kind = c.WhichOneof("kind")
    if kind == "filter":
        _filter(c.filter, path, depth + 1, budget, settings)
        return
    if kind == "has_id":
        if len(c.has_id) % 8:
            raise InvalidArgument(f"{path}.has_id has {len(c.has_id)} bytes: pack ids as little-endian int64")
        _spend(budget, len(c.has_id) // 8, path, settings)
        return
    if kind != "field":
        raise InvalidArgument(f"{path} is empty: set field, filter or has_id")
    fc = c.field
    key_parts(fc.key, f"{path}.key")
    test = fc.WhichOneof("test")
    if test == "match":
        if fc.match.WhichOneof("kind") not in _MATCHABLE:
            raise InvalidArgument(f"{path}.match must be a string, a number or a bool (use is_null for null)")
    elif test in ("match_any", "match_except"):
        values = getattr(fc, test).values
        if not values:
            raise InvalidArgument(f"{path}.{test} is empty: list at least one value")
        _spend(budget, len(values), path, settings)
        for j, v in enumerate(values):
            if v.WhichOneof("kind") not in _MATCHABLE:
                raise InvalidArgument(f"{path}.{test}[{j}] must be a string, a number or a bool")
    elif test == "range":
        _range(fc.range, f"{path}.range")
    elif test == "datetime_range":
        bounds = [b for b in _BOUNDS if getattr(fc.datetime_range, b)]
        if not bounds:
            raise InvalidArgument(
                f"{path}.datetime_range sets no bound: set gt, gte, lt or lte to an RFC 3339 date-time"
            )
        for b in bounds:
            parse_datetime(getattr(fc.datetime_range, b), f"{path}.datetime_range.{b}")
    elif test == "text":
        pass  # (a string: every analysed term present; one without terms matches nothing)
    elif test in ("is_null", "is_empty", "exists"):
        if not getattr(fc, test):
            raise InvalidArgument(f"{path}.{test} must be true (negate it with must_not)")
    else:
        raise InvalidArgument(
            f"{path} sets no test: set match, match_any, match_except, range, datetime_range, text, is_null, is_empty "
            "or exists"
        )


def _range(r: ppb.Range, path: str) -> None:
    """Bounds that are all numbers (not NaN) or all strings, at least one."""
    bounds = [b for b in _BOUNDS if r.HasField(b)]
    if not bounds:
        raise InvalidArgument(f"{path} sets no bound: set gt, gte, lt or lte")
    kinds = set()
    for b in bounds:
        v = getattr(r, b)
        kind = v.WhichOneof("kind")
        if kind == "string_value":
            kinds.add("string")
        elif kind in _NUMBERS and v.double_value == v.double_value:
            kinds.add("number")
        else:
            raise InvalidArgument(
                f"{path}.{b} must be a number (int or double, not NaN) or a string (for date-times use datetime_range)"
            )
    if len(kinds) > 1:
        raise InvalidArgument(f"{path} mixes number and string bounds: a range holds numbers or strings, not both")
