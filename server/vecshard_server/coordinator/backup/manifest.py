"""A backup's manifest: `ID/manifest.json`, written last (a backup without it is incomplete).

It is the BackupInfo message as JSON (field names as in the proto), with `format` and the SHA-256
of its own content (`manifest_sha256`), so a damaged or foreign manifest is refused by name. Each
file it lists carries its size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from typing import Any

from google.protobuf import json_format

from vecshard.errors import FailedPrecondition, InvalidArgument, NotFound
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.backup_store import Store

FORMAT = "vecshard-backup/1"
MANIFEST = "manifest.json"
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def new_id() -> str:
    """A new backup's id: its UTC time (ids sort by age), and 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def check_id(backup_id: str) -> str:
    if not ID_RE.fullmatch(backup_id) or ".." in backup_id:
        raise InvalidArgument(
            f"backup id {backup_id!r} is invalid: ids are as `vecshard backup list` prints them "
            "(letters, digits, '.', '_', '-')"
        )
    return backup_id


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def dump(info: pb.BackupInfo) -> bytes:
    body = json_format.MessageToDict(info, preserving_proto_field_name=True)
    body["format"] = FORMAT
    body["manifest_sha256"] = _checksum(body)
    return json.dumps(body, indent=1, sort_keys=True).encode()


def load(data: bytes, where: str, backup_id: str) -> pb.BackupInfo:
    """The manifest's BackupInfo; FAILED_PRECONDITION naming `where` when it is damaged or foreign."""
    try:
        body = json.loads(data)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise FailedPrecondition(f"{where} is damaged ({err}): not a readable backup manifest") from None
    if body.get("format") != FORMAT:
        raise FailedPrecondition(
            f"{where} is not a vecshard backup's manifest (format {body.get('format')!r}, expected {FORMAT!r})"
        )
    claimed = body.pop("manifest_sha256", None)
    if claimed != _checksum(body):
        raise FailedPrecondition(f"{where} is damaged: its content does not match its checksum (manifest_sha256)")
    info = pb.BackupInfo()
    try:
        json_format.ParseDict(body, info)
    except json_format.ParseError as err:
        raise FailedPrecondition(f"{where} is damaged ({err})") from None
    if info.id != backup_id:
        raise FailedPrecondition(f"{where} belongs to backup {info.id!r}, not {backup_id!r}: it was moved or copied")
    return info


def read(store: Store, backup_id: str) -> pb.BackupInfo:
    """The manifest of backup `backup_id` at `store`: NOT_FOUND when there is no such backup (or it
    is incomplete), FAILED_PRECONDITION when it is damaged or foreign."""
    check_id(backup_id)
    where = f"{store.uri.rstrip('/')}/{backup_id}/{MANIFEST}"
    try:
        data = store.get_bytes(f"{backup_id}/{MANIFEST}")
    except NotFound:
        raise NotFound(
            f"backup {backup_id!r} does not exist at {store.uri} (or is incomplete: no {MANIFEST}); "
            "`vecshard backup list` shows the complete ones"
        ) from None
    return load(data, where, backup_id)


def summary(info: pb.BackupInfo) -> pb.BackupInfo:
    """The manifest without its file lists (ListBackups)."""
    out = pb.BackupInfo()
    out.CopyFrom(info)
    for c in out.collections:
        del c.files[:]
    return out


def files_of(info: pb.BackupInfo) -> list[pb.BackupFile]:
    return [f for c in info.collections for f in c.files]


def verify(store: Store, info: pb.BackupInfo, names: set[str] | None = None) -> tuple[list[str], int, int]:
    """Read every file (of the collections `names`, default all) and check its size and SHA-256:
    (problems, files checked, bytes read)."""
    problems, checked, read_bytes = [], 0, 0
    for coll in info.collections:
        if names is not None and coll.config.name not in names:
            continue
        for f in coll.files:
            where = f"{store.uri.rstrip('/')}/{info.id}/{f.path}"
            checked += 1
            h = hashlib.sha256()
            size = 0
            try:
                for chunk in store.chunks(f"{info.id}/{f.path}"):
                    h.update(chunk)
                    size += len(chunk)
            except NotFound:
                problems.append(f"{where} is missing")
                continue
            read_bytes += size
            if size != f.size:
                problems.append(f"{where} has {size:,} bytes, the manifest says {f.size:,}")
            elif h.hexdigest() != f.sha256:
                problems.append(f"{where} does not match its SHA-256 in the manifest (damaged)")
    return problems, checked, read_bytes
