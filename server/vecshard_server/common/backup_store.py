"""Where backups are kept: a directory on the server machine, or S3-compatible storage (boto3).

A location is a URI: an absolute path (`/backups`, or `file:///backups`) or `s3://bucket/prefix`.
Keys are `/`-separated paths below the location (`ID/manifest.json`, `ID/COLL/g0/index.faiss`).
Both the coordinator (manifests, restores) and the shards (their partitions' files) use it, so it
lives here, below both.

S3: the endpoint is the request's `s3_endpoint`, else boto3's own AWS_ENDPOINT_URL, else AWS; the
region and credentials come from the standard AWS environment and config chain of the server
process. Nothing secret is ever logged or put in an error message. Uploads are multipart above
MULTIPART_BYTES (boto3's TransferConfig), in MULTIPART_BYTES parts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vecshard.errors import InvalidArgument, NotFound, Unavailable

MULTIPART_BYTES = 16 << 20
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class Store(Protocol):
    """A backup location. Every method raises Unavailable when the storage cannot be reached and
    NotFound for a key (or bucket) that does not exist."""

    uri: str

    def local_dir(self, key: str) -> Path | None:
        """The local directory to write `key`'s files into directly (a directory location), or None
        (write elsewhere, then `put_file` each)."""
        ...

    def put_file(self, local: Path, key: str) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, local: Path) -> None: ...
    def chunks(self, key: str) -> Iterator[bytes]: ...
    def size(self, key: str) -> int | None:
        """The object's size, None if it does not exist."""
        ...

    def children(self) -> list[str]:
        """The names of the top-level folders (backup ids)."""
        ...

    def delete(self, key: str) -> None:
        """Delete one object (absent: nothing to do)."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete everything below `prefix/`; returns how many files went."""
        ...

    def check(self) -> None:
        """Refuse an unreachable location (UNAVAILABLE) or a missing bucket (NOT_FOUND)."""
        ...


def open_store(uri: str, s3_endpoint: str = "") -> Store:
    """The location a request names; INVALID_ARGUMENT for a malformed one."""
    if not uri:
        raise InvalidArgument("location is empty: give an absolute directory path on the server, or s3://bucket/prefix")
    if "\x00" in uri or len(uri) > 1024 or any(len(part.encode()) > 255 for part in uri.split("/")):
        raise InvalidArgument(f"location {uri[:80]!r} is invalid: a NUL byte, or a name over 255 bytes")
    if s3_endpoint and not (s3_endpoint.startswith(("http://", "https://")) and len(s3_endpoint) < 1024):
        raise InvalidArgument(f"s3_endpoint {s3_endpoint[:80]!r} is not an http:// or https:// URL")
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise InvalidArgument(f"location {uri!r} names no bucket: write s3://bucket/prefix")
        return S3Store(uri, bucket, prefix.strip("/"), s3_endpoint)
    if "://" in uri and not uri.startswith("file://"):
        raise InvalidArgument(f"location {uri!r} is neither a directory path nor s3://bucket/prefix")
    path = Path(uri.removeprefix("file://"))
    if not path.is_absolute():
        raise InvalidArgument(
            f"location {uri!r} is a relative path: give an absolute directory path on the server machine "
            "(the coordinator's and the shards' working directories differ)"
        )
    return DirStore(uri, path)


def _os_errors(fn: Any) -> Any:
    """A directory location's OSError (permissions, a full disk) as UNAVAILABLE, naming the path."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as err:
            raise Unavailable(f"the backup location cannot be used: {err.strerror} ({err.filename})") from None

    return call


@dataclass
class DirStore:
    uri: str
    root: Path

    def _path(self, key: str) -> Path:
        return self.root / key

    def local_dir(self, key: str) -> Path | None:
        return self._path(key)

    @_os_errors
    def put_file(self, local: Path, key: str) -> None:
        target = self._path(key)
        if local.resolve() == target.resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    @_os_errors
    def put_bytes(self, key: str, data: bytes) -> None:
        """Written to a temporary name, fsynced and renamed: readers see all of it or nothing."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(target)

    @_os_errors
    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self._path(key)} does not exist") from None

    @_os_errors
    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(self._path(key), local)
        except FileNotFoundError:
            raise NotFound(f"{self._path(key)} does not exist") from None

    def chunks(self, key: str) -> Iterator[bytes]:
        try:
            fh = open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"{self._path(key)} does not exist") from None
        with fh:
            yield from iter(lambda: fh.read(CHUNK), b"")

    @_os_errors
    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    @_os_errors
    def children(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    @_os_errors
    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    @_os_errors
    def delete_prefix(self, prefix: str) -> int:
        path = self._path(prefix)
        if not path.exists():
            return 0
        n = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path, ignore_errors=True)
        return n

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise Unavailable(f"cannot create the backup directory {self.root}: {err.strerror}") from None


class S3Store:
    """An S3 bucket and prefix, through boto3 (imported when first used)."""

    def __init__(self, uri: str, bucket: str, prefix: str, endpoint: str) -> None:
        self.uri, self.bucket, self.prefix, self.endpoint = uri, bucket, prefix, endpoint
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
            self._client = boto3.client("s3", endpoint_url=self.endpoint or None, config=config)
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, err: Exception, what: str) -> Exception:
        """The vecshard error for a boto3 failure (its code and message only: never credentials)."""
        from botocore.exceptions import ClientError, NoCredentialsError, ParamValidationError

        if isinstance(err, ParamValidationError):
            return InvalidArgument(f"{what}: {self.uri} is not a valid S3 location ({err})")

        if isinstance(err, NoCredentialsError):
            return Unavailable(
                f"{what}: no AWS credentials on the server (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or an instance role for the coordinator and shard processes)"
            )
        if isinstance(err, ClientError):
            error: dict[str, Any] = dict(err.response.get("Error", {}))
            code = str(error.get("Code", ""))
            if code in ("NoSuchBucket",):
                return NotFound(f"{what}: bucket {self.bucket!r} does not exist: create it first")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{what}: s3://{self.bucket}/{what.split(' ')[-1]} does not exist")
            message = str(error.get("Message", ""))
            return Unavailable(f"{what}: S3 answered {code or 'an error'} ({message})")
        return Unavailable(f"{what}: the S3 endpoint cannot be reached ({type(err).__name__})")

    def local_dir(self, key: str) -> Path | None:
        return None

    def put_file(self, local: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES)
        try:
            self.client.upload_file(str(local), self.bucket, self._key(key), Config=config)
        except Exception as err:
            raise self._fail(err, f"upload of {key}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as err:
            raise self._fail(err, f"upload of {key}") from None

    def get_bytes(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as err:
            raise self._fail(err, f"read of {key}") from None
        return body

    def get_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._key(key), str(local))
        except Exception as err:
            raise self._fail(err, f"download of {key}") from None

    def chunks(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as err:
            raise self._fail(err, f"read of {key}") from None
        yield from iter(lambda: body.read(CHUNK), b"")

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as err:
            failed = self._fail(err, f"size of {key}")
            if isinstance(failed, NotFound):
                return None
            raise failed from None
        return int(head["ContentLength"])

    def _list(self, prefix: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            yield from paginator.paginate(**kwargs)
        except Exception as err:
            raise self._fail(err, f"listing of {self.uri}") from None

    def children(self) -> list[str]:
        base = self._key("")
        out = []
        for page in self._list(base, "/"):
            out += [p["Prefix"][len(base) :].strip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(out)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as err:
            raise self._fail(err, f"delete of {key}") from None

    def delete_prefix(self, prefix: str) -> int:
        keys = [o["Key"] for page in self._list(self._key(prefix) + "/") for o in page.get("Contents", [])]
        for a in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[a : a + 1000]], "Quiet": True}
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete=batch)
            except Exception as err:
                raise self._fail(err, f"delete of {prefix}") from None
        return len(keys)

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as err:
            failed = self._fail(err, f"location {self.uri}")
            from botocore.exceptions import ClientError

            code = str(err.response.get("Error", {}).get("Code")) if isinstance(err, ClientError) else ""
            if code in ("404", "NoSuchBucket"):
                failed = NotFound(f"bucket {self.bucket!r} does not exist at the S3 endpoint: create it first")
            raise failed from None
