"""String ids (IdType STRING): how a string becomes a stored id, and where the string itself is kept.

Shards, the log, placement and every numpy path work on int64 ids. A string id is stored under a
hash of its UTF-8 bytes (blake2b, the collection's `string_id_bits` wide: 63 by default, so every
hash is a valid non-negative id), and the string itself is kept in the point's payload under the
reserved key KEY (""; user payload keys are never empty). The string so travels with the payload
through the log, snapshots, replication and resharding untouched. Two strings with one hash never
become one point: a shard refuses to store a string under a hash another string holds (a collision,
FAILED_PRECONDITION), and treats a request naming a hash held by another string as naming a point
that is not stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from vecshard.errors import InvalidArgument
from vecshard.v1 import payload_pb2 as ppb

KEY = ""  # the payload key holding a point's string id
MAX_BYTES = 256

I64 = npt.NDArray[np.int64]


def string_id_hash(s: str, bits: int) -> int:
    """The stored id of string id `s` in a collection whose hashes are `bits` wide."""
    digest = hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << bits) - 1)


def check(strings: Sequence[str], field: str = "string_ids") -> None:
    """InvalidArgument unless each is 1 to MAX_BYTES bytes of valid UTF-8."""
    for i, s in enumerate(strings):
        try:
            n = len(s.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidArgument(f"{field}[{i}] is not valid UTF-8 (it holds a lone surrogate)") from None
        if not 1 <= n <= MAX_BYTES:
            raise InvalidArgument(f"{field}[{i}] has {n} bytes: a string id has 1 to {MAX_BYTES} bytes of UTF-8")


def hashes(strings: Sequence[str], bits: int, field: str = "string_ids") -> I64:
    """The stored ids of valid string ids (checked: InvalidArgument naming the bad one)."""
    check(strings, field)
    return np.fromiter((string_id_hash(s, bits) for s in strings), dtype=np.int64, count=len(strings))


def unique(strings: Sequence[str], stored: I64, field: str = "string_ids") -> None:
    """InvalidArgument when a string is listed twice, or two strings of one request share a hash."""
    seen: dict[int, str] = {}
    for s, h in zip(strings, stored.tolist(), strict=True):
        other = seen.get(h)
        if other is None:
            seen[h] = s
        elif other == s:
            raise InvalidArgument(f"{field} lists {s!r} twice: each id at most once per request")
        else:
            raise InvalidArgument(
                f"{field} holds {other!r} and {s!r}, whose 64-bit hashes collide: store one of them under another id"
            )


def key_of(payload: ppb.Payload) -> str | None:
    """The string id kept in a stored payload (None: none)."""
    v = payload.fields.get(KEY)
    return v.string_value if v is not None and v.HasField("string_value") else None


def split(payloads: Iterable[ppb.Payload]) -> tuple[list[str], list[ppb.Payload]]:
    """(the string id of each payload, "" where none, the payloads without the reserved key)."""
    keys: list[str] = []
    out: list[ppb.Payload] = []
    for p in payloads:
        if KEY in p.fields:
            keys.append(p.fields[KEY].string_value)
            q = ppb.Payload()
            q.CopyFrom(p)
            del q.fields[KEY]
            out.append(q)
        else:
            keys.append("")
            out.append(p)
    return keys, out


def selector(user: ppb.PayloadSelector) -> ppb.PayloadSelector:
    """What to ask shards for so every returned point carries its string id, besides what the user
    asked for (the caller strips the key, and the payloads when the user wanted none)."""
    if user.enable and not user.fields:
        return user
    return ppb.PayloadSelector(enable=True, fields=[*user.fields, KEY] if user.enable else [KEY])
