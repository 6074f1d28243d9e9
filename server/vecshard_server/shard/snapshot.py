"""A partition's snapshot files: their format, checksums, atomic publication and checked reading.

A snapshot is a directory:
- index.faiss: the faiss index (flat or IVF; compressed kinds' codes only);
- versions.npy, tombstones.npy: 2 x n int64 (id, version) pairs of the stored and removed ids;
- payloads.npy: the non-empty payloads (see `_pack_payloads`);
- vectorless.npy (only when there are any): the ids of points stored without a vector (not in index.faiss);
- vectors.npy, vector_ids.npy (compressed kinds): the exact floats and their ids;
- codec.faiss (kinds trained with a codec): the trained empty index;
- meta.json: the collection's config, counters, the lsn covered, and the SHA-256 of every file and of
  itself (`meta_sha256`), so a damaged file or field is refused rather than served.
It is written into `<dir>.tmp`, fsynced, and renamed over `<dir>`.

Functions only, over what the partition (`engine.ShardIndex.save` / `load`) hands them: the partition
decides what is frozen under its lock and when; this module only writes and reads files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from vecshard.payload import PayloadDict
from vecshard.types import IndexType, Metric
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.idmap import Frozen, IdVersions, pairs_of
from vecshard_server.shard.payloads import encode, payload_from_blob
from vecshard_server.shard.vectors import VectorStore

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

SAVE_ROWS = 1 << 16  # vector rows per step when writing vectors.npy
# meta.json's last fields: attributes of the partition, restored by its load
EPOCH_FIELDS = ("train_epoch", "train_id", "writes", "max_version", "incarnation")


class SnapshotCorrupt(RuntimeError):
    """A snapshot on disk does not match its recorded checksum or contents."""


@dataclasses.dataclass
class SnapshotState:
    """What a snapshot writes besides its index, recorded under the partition's write lock at the freeze."""

    versions: Frozen  # the stored ids' versions (copy-on-write: no copy made)
    tombs: Frozen  # the removed ids' versions
    payloads: tuple[I64, list[PayloadDict | None]]  # (id, payload) by slot
    codec: bytes | None  # kinds trained with a codec: the codec (b"" while untrained)
    head: dict[str, Any]  # meta.json's first fields: config, trained, count, lsn, digest
    payload_indexes: list[list[Any]]  # [field, PayloadIndexType] (TEXT: and its params as JSON)
    epoch: dict[str, int]  # meta.json's last fields: the training, writes, max_version, incarnation
    lsn: int  # the last logged write the snapshot covers
    vectorless: I64 = dataclasses.field(default_factory=lambda: np.empty(0, dtype=np.int64))  # payload-only ids


# -- writing --------------------------------------------------------------------------------------


def fresh_dir(directory: Path) -> Path:
    """An empty `<directory>.tmp` to write a snapshot of `directory` into."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_index(index: Any, tmp: Path) -> None:
    faiss.write_index(index, str(tmp / "index.faiss"))


def write_tables(tmp: Path, state: SnapshotState) -> list[str]:
    """versions.npy, tombstones.npy and payloads.npy; returns their names."""
    np.save(tmp / "versions.npy", pairs_of(state.versions))
    np.save(tmp / "tombstones.npy", pairs_of(state.tombs))
    np.save(tmp / "payloads.npy", _pack_payloads(*state.payloads))
    if state.vectorless.size:
        np.save(tmp / "vectorless.npy", np.sort(state.vectorless))
        return ["versions", "tombstones", "payloads", "vectorless"]
    return ["versions", "tombstones", "payloads"]


def write_vectors(tmp: Path, ids_by_slot: I64, raw: VectorStore) -> list[str]:
    """vectors.npy and vector_ids.npy: the frozen slots' rows (held unchanged meanwhile), in chunks,
    never all in memory; returns their names."""
    slots = np.flatnonzero(ids_by_slot >= 0)
    np.save(tmp / "vector_ids.npy", ids_by_slot[slots])
    out = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(slots.size, raw.dim))
    for a in range(0, slots.size, SAVE_ROWS):
        out[a : a + SAVE_ROWS] = raw.rows(slots[a : a + SAVE_ROWS])
    out.flush()
    del out
    return ["vectors", "vector_ids"]


def write_rest(
    directory: Path, tmp: Path, state: SnapshotState, raw: VectorStore | None, release: Callable[[], None]
) -> None:
    """Write the files after index.faiss into `tmp` (the vectors from `raw`, compressed kinds: then
    `release` runs, however that went) and publish it as `directory`."""
    names = write_tables(tmp, state)
    if raw is not None:
        try:
            by_slot = state.payloads[0]
            if state.vectorless.size:  # (no row of theirs holds a vector)
                by_slot = np.where(np.isin(by_slot, state.vectorless), -1, by_slot)
            names += write_vectors(tmp, by_slot, raw)
        finally:
            release()
    finish(directory, tmp, state, names)


def finish(directory: Path, tmp: Path, state: SnapshotState, names: list[str]) -> None:
    """Write the codec and meta.json (with the checksums of index.faiss and of the `names` tables)
    into `tmp`, and publish it as `directory`."""
    meta = dict(state.head)
    if state.codec is not None:
        (tmp / "codec.faiss").write_bytes(state.codec)
        meta["codec_sha256"] = _sha256(tmp / "codec.faiss")
    sums = {f"{name}_sha256": _sha256(tmp / f"{name}.npy") for name in names}
    meta["payload_indexes"] = state.payload_indexes
    _publish(directory, tmp, {**meta, "sha256": _sha256(tmp / "index.faiss"), **sums, **state.epoch})


def _publish(directory: Path, tmp: Path, meta: dict[str, Any]) -> None:
    """Write meta.json into `tmp`, fsync it all and rename it to `directory` atomically."""
    meta["meta_sha256"] = _meta_checksum(meta)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    fd = os.open(directory.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pack_payloads(ids: I64, payloads: list[PayloadDict | None]) -> npt.NDArray[np.uint8]:
    """Non-empty payloads as one uint8 array: n, then n (id, length) int64 pairs, then the canonical
    bytes of each payload in that order."""
    pairs = [(int(i), encode(p)) for i, p in zip(ids.tolist(), payloads, strict=True) if p]
    head = np.array([len(pairs)] + [x for i, b in pairs for x in (i, len(b))], dtype="<i8")
    return np.frombuffer(head.tobytes() + b"".join(b for _, b in pairs), dtype=np.uint8)


# -- reading --------------------------------------------------------------------------------------


def read_meta(directory: Path) -> tuple[dict[str, Any], CollectionSpec]:
    """meta.json, checked, and the collection's config in it."""
    try:
        meta: dict[str, Any] = json.loads((directory / "meta.json").read_text())
        if "meta_sha256" in meta and meta["meta_sha256"] != _meta_checksum(meta):
            raise ValueError("its content does not match its own checksum (meta_sha256)")
        if "meta_sha256" not in meta and ("train_epoch" in meta or "train_id" in meta):
            # Written by a version that always checksums: a damaged key must not turn the check off.
            raise ValueError("its checksum (meta_sha256) is missing")
        spec = spec_from_json(meta["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise SnapshotCorrupt(
            f"{directory}/meta.json is damaged ({err}): refusing to start, since it could hide acknowledged "
            "writes. Restore the shard's data dir from a backup, or delete this replica's data dir so it "
            "catches up from its peers."
        ) from None
    return meta, spec


def read_index(directory: Path, meta: dict[str, Any], spec: CollectionSpec) -> tuple[Any, bytes]:
    """(the index, the codec: b"" unless the kind is trained with one), checked."""
    index_path = directory / "index.faiss"
    if not index_path.exists() or _sha256(index_path) != meta.get("sha256"):
        raise SnapshotCorrupt(
            f"{index_path} does not match the checksum in meta.json: refusing to start. Restore the shard's "
            "data dir from a backup or a replica."
        )
    index = faiss.read_index(str(index_path))
    codec = b""
    if spec.trained_codec:
        codec_path = directory / "codec.faiss"
        if not codec_path.exists() or _sha256(codec_path) != meta.get("codec_sha256"):
            raise SnapshotCorrupt(f"{codec_path} does not match the checksum in meta.json: refusing to start")
        codec = codec_path.read_bytes()
    return index, codec


def read_versions(directory: Path, meta: dict[str, Any], ids: I64) -> tuple[IdVersions, IdVersions]:
    """(versions of the stored ids, of the removed ids); snapshots from before versions: every id
    stored at version 0 (older than any versioned write), no tombstones."""
    if "versions_sha256" not in meta:
        return IdVersions.from_arrays(ids, np.zeros(ids.size, dtype=np.int64)), IdVersions()
    live, dead = (_load_pairs(directory, name, meta) for name in ("versions", "tombstones"))
    if not np.array_equal(np.sort(live[0]), np.sort(ids)):
        raise SnapshotCorrupt(
            f"{directory}/versions.npy does not list the ids of index.faiss: refusing to start. Restore the "
            "shard's data dir from a backup, or delete this replica's data dir so it catches up from its peers."
        )
    return IdVersions.from_arrays(live[0], live[1]), IdVersions.from_arrays(dead[0], dead[1])


def read_payloads(directory: Path, meta: dict[str, Any], stored: IdVersions) -> dict[int, tuple[PayloadDict, bytes]]:
    """The non-empty payloads by id, as (payload, its canonical bytes); every id must be `stored`."""
    out: dict[int, tuple[PayloadDict, bytes]] = {}
    if "payloads_sha256" in meta:
        for i, blob in _unpack_payloads(directory, meta):
            out[i] = (payload_from_blob(blob), blob)
        if not set(out) <= set(stored):
            raise SnapshotCorrupt(
                f"{directory}/payloads.npy lists ids that index.faiss does not hold: refusing to start"
            )
    return out


def read_vectors(directory: Path, meta: dict[str, Any], ids: I64, dim: int) -> tuple[I64, F32]:
    """(ids, their exact floats, memory-mapped) of a compressed kind, checked against the index's `ids`."""
    for name in ("vectors", "vector_ids"):
        if _sha256(directory / f"{name}.npy") != meta.get(f"{name}_sha256"):
            raise SnapshotCorrupt(
                f"{directory}/{name}.npy does not match the checksum in meta.json: refusing to "
                "start. Restore the shard's data dir from a backup or a replica."
            )
    vids = np.load(directory / "vector_ids.npy")
    vecs = np.load(directory / "vectors.npy", mmap_mode="r")
    if vecs.shape != (vids.size, dim) or not np.array_equal(np.sort(vids), np.sort(ids)):
        raise SnapshotCorrupt(f"{directory}/vectors.npy does not hold the vectors of index.faiss: refusing to start")
    return vids, vecs


def read_vectorless(directory: Path, meta: dict[str, Any]) -> I64:
    """The ids of the points stored without a vector (none in snapshots without vectorless.npy)."""
    if "vectorless_sha256" not in meta:
        return np.empty(0, dtype=np.int64)
    path = directory / "vectorless.npy"
    if not path.exists() or _sha256(path) != meta["vectorless_sha256"]:
        raise SnapshotCorrupt(f"{path} does not match the checksum in meta.json: refusing to start")
    ids = np.load(path, allow_pickle=False)
    if ids.dtype != np.int64 or ids.ndim != 1:
        raise SnapshotCorrupt(f"{path} holds a {ids.dtype} array of shape {ids.shape}, not n int64")
    out: I64 = ids
    return out


def _load_pairs(directory: Path, name: str, meta: dict[str, Any]) -> I64:
    path = directory / f"{name}.npy"
    if not path.exists() or _sha256(path) != meta.get(f"{name}_sha256"):
        raise SnapshotCorrupt(
            f"{path} does not match the checksum in meta.json: refusing to start. Restore the shard's data dir "
            "from a backup, or delete this replica's data dir so it catches up from its peers."
        )
    try:
        pairs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SnapshotCorrupt(f"{path} cannot be read ({err}): refusing to start") from None
    if pairs.dtype != np.int64 or pairs.ndim != 2 or pairs.shape[0] != 2:
        raise SnapshotCorrupt(f"{path} holds a {pairs.dtype} array of shape {pairs.shape}, not 2 x n int64")
    out: I64 = pairs
    return out


def _unpack_payloads(directory: Path, meta: dict[str, Any]) -> list[tuple[int, bytes]]:
    path = directory / "payloads.npy"
    if not path.exists() or _sha256(path) != meta.get("payloads_sha256"):
        raise SnapshotCorrupt(
            f"{path} does not match the checksum in meta.json: refusing to start. Restore the shard's data dir "
            "from a backup, or delete this replica's data dir so it catches up from its peers."
        )
    try:
        raw = np.load(path, allow_pickle=False).tobytes()
        n = int(np.frombuffer(raw[:8], dtype="<i8")[0])
        head = np.frombuffer(raw[8 : 8 + 16 * n], dtype="<i8").reshape(n, 2)
        out, at = [], 8 + 16 * n
        for i, size in head.tolist():
            out.append((i, raw[at : at + size]))
            at += size
        if at != len(raw):
            raise ValueError(f"{len(raw) - at} bytes left over")
    except (OSError, ValueError, IndexError) as err:
        raise SnapshotCorrupt(f"{path} cannot be read ({err}): refusing to start") from None
    return out


# -- checksums and the config ---------------------------------------------------------------------


def _meta_checksum(meta: dict[str, Any]) -> str:
    """SHA-256 of meta.json's content (without this field), so a damaged lsn or count is caught."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spec_to_json(spec: CollectionSpec) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    d["metric"], d["index_type"] = spec.metric.value, spec.index_type.value
    return d


def spec_from_json(d: dict[str, Any]) -> CollectionSpec:
    return CollectionSpec(**{**d, "metric": Metric(d["metric"]), "index_type": IndexType(d["index_type"])})
