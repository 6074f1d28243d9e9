"""Payload values as facets, groups and ordered scrolls see them: scalar keys, their order, their
protobuf form, and the cursors of ordered scrolls.

A scalar payload value becomes a `Key` (kind, value): numbers by value (an integral float is the
int it equals, so 3 and 3.0 are one value, reported as 3), then date-times (an instant in
microseconds, only where a DATETIME payload index says the field holds them), then strings (by
Unicode code point), then bools. Tuples compare in that order, so `sorted` over keys is the
documented order of facets' ties, groups' ties and OrderBy. Nulls, objects and lists are no keys
(a list's elements are, one by one).
"""

from __future__ import annotations

import math
from typing import Any

from vecshard.errors import InvalidArgument
from vecshard.v1 import payload_pb2 as ppb

NUMBER, DATETIME, STRING, BOOL = 0, 1, 2, 3
Key = tuple[int, Any]

_INT64 = 1 << 63
_BAD = "cursor is not one this server gave (pass a page's next_cursor as it came)"


def scalar_key(x: Any) -> Key | None:
    """The key of a payload leaf value, None for nulls, objects and lists."""
    if isinstance(x, bool):
        return (BOOL, x)
    if isinstance(x, int):
        return (NUMBER, x)
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if x.is_integer() and -_INT64 <= x < _INT64:
            return (NUMBER, int(x))
        return (NUMBER, x)
    if isinstance(x, str):
        return (STRING, x)
    return None


def keys_of(leaves: list[Any]) -> list[Key]:
    """The distinct keys of a field's leaf values, in key order."""
    out = {k for x in leaves if (k := scalar_key(x)) is not None}
    return sorted(out) if len(out) > 1 else list(out)


def key_to_value(key: Key) -> ppb.Value:
    """A key as the Value a reply carries (a date-time as its instant's microseconds: never a group
    or facet value, only inside cursors)."""
    kind, v = key
    if kind == BOOL:
        return ppb.Value(bool_value=v)
    if kind == STRING:
        return ppb.Value(string_value=v)
    if isinstance(v, float):
        return ppb.Value(double_value=v)
    return ppb.Value(int_value=v)


def value_key(v: ppb.Value) -> Key | None:
    """The key of a scalar Value (None for null, list, struct or unset)."""
    kind = v.WhichOneof("kind")
    if kind == "bool_value":
        return (BOOL, v.bool_value)
    if kind == "int_value":
        return (NUMBER, v.int_value)
    if kind == "double_value":
        return scalar_key(v.double_value)
    if kind == "string_value":
        return (STRING, v.string_value)
    return None


def encode_keys(keys: list[Key]) -> bytes:
    """Keys as bytes (kind, value pairs in a ListValue): a shard's ordered page tells the coordinator
    each point's order key this way."""
    out = ppb.ListValue()
    for kind, v in keys:
        out.values.append(ppb.Value(int_value=kind))
        out.values.append(key_to_value((NUMBER if kind == DATETIME else kind, v)))
    data: bytes = out.SerializeToString()
    return data


def decode_keys(data: bytes) -> list[Key]:
    """`encode_keys`'s keys back."""
    values = ppb.ListValue.FromString(data).values
    out: list[Key] = []
    for i in range(0, len(values) - 1, 2):
        kind = values[i].int_value
        out.append(_typed(kind, values[i + 1]))
    return out


def _typed(kind: int, value: ppb.Value) -> Key:
    """The key of `kind` whose value travels as `value` (InvalidArgument when they disagree)."""
    key = value_key(value)
    if key is None or key[0] != (NUMBER if kind == DATETIME else kind):
        raise InvalidArgument(_BAD)
    return (kind, key[1])


class Descending:
    """A key compared the other way round (descending order; ties still by ascending id)."""

    __slots__ = ("key",)

    def __init__(self, key: Key) -> None:
        self.key = key

    def __lt__(self, other: Descending) -> bool:
        return bool(other.key < self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descending) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def place(key: Key, point_id: int, descending: bool) -> tuple[Any, int]:
    """A point's place in a scroll ordered by its key (ascending or descending), ties by id."""
    return (Descending(key) if descending else key, point_id)


# -- cursors ---------------------------------------------------------------------------------------

_ID, _BY = "id", "by"
CURSOR_VERSION = b"\x01"


def id_cursor(next_start_id: int) -> bytes:
    """The cursor of a scroll in id order that goes on at next_start_id."""
    out = ppb.ListValue(values=[ppb.Value(string_value=_ID), ppb.Value(int_value=next_start_id)])
    data: bytes = out.SerializeToString()
    return CURSOR_VERSION + data


def order_cursor(key: str, descending: bool, after: Key, after_id: int) -> bytes:
    """The cursor of a scroll ordered by payload field `key` that goes on after the point (after, after_id)."""
    kind, v = after
    out = ppb.ListValue(
        values=[
            ppb.Value(string_value=_BY),
            ppb.Value(string_value=key),
            ppb.Value(bool_value=descending),
            ppb.Value(int_value=kind),
            key_to_value((NUMBER if kind == DATETIME else kind, v)),
            ppb.Value(int_value=after_id),
        ]
    )
    data: bytes = out.SerializeToString()
    return CURSOR_VERSION + data


def read_cursor(data: bytes) -> tuple[int, None] | tuple[None, tuple[str, bool, Key, int]]:
    """(next_start_id, None) of an id-order cursor, or (None, (key, descending, after, after_id)) of
    an ordered one; InvalidArgument for bytes no page gave."""
    if not data.startswith(CURSOR_VERSION):
        raise InvalidArgument(_BAD)
    try:
        values = ppb.ListValue.FromString(data[1:]).values
    except Exception:  # (a DecodeError: bytes that are no cursor)
        raise InvalidArgument(_BAD) from None
    kinds = [v.WhichOneof("kind") for v in values]
    if kinds == ["string_value", "int_value"] and values[0].string_value == _ID and values[1].int_value >= 0:
        return values[1].int_value, None
    shape = ["string_value", "string_value", "bool_value", "int_value"]
    if len(values) == 6 and kinds[:4] == shape and values[0].string_value == _BY and kinds[5] == "int_value":
        after = _typed(values[3].int_value, values[4])
        return None, (values[1].string_value, values[2].bool_value, after, values[5].int_value)
    raise InvalidArgument(_BAD)
