"""A shard's state and the one way it changes: the partitions (collections) by name, the dropped
names, the write-ahead log, the worker pools, and `_logged`, which appends a write's record under
its collection's lock, applies it and waits for the fsync. Every other part of the shard (recovery,
peer sync, the RPC handlers) is a mixin over this state: they all read and write the same
partitions under the same locks, so they share it rather than pass it around."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from vecshard import wire
from vecshard.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    NotFound,
    Unavailable,
)
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.placement import parse_physical
from vecshard_server.common.rpc import PLACEMENT_EPOCH_HEADER, header_int, write_token_from
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.common.versions import MAX_VERSION, NODE_BITS, WriteClock
from vecshard_server.shard.accel import detect
from vecshard_server.shard.batching import SearchBatcher
from vecshard_server.shard.engine import IndexSettings, Journal, ShardIndex
from vecshard_server.shard.wal import Wal, payload_of

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class WriteConditions:
    """When a logged write may still commit, and what runs with it (see ShardCore._logged).

    deadline: a write whose caller's deadline has passed when its turn comes is refused
        (DEADLINE_EXCEEDED, nothing written), so a coordinator that gave up can rely on it.
    committed: runs right after the record is appended, under the same lock.
    record_at_commit: build the record there (when it depends on what the lock protects).
    token: the write token of a non-upsert Add: refused once RollbackAdd has seen it.
    fence: the newest placement epoch the writer knows (a routed write): refused when this shard
        holds a newer placement's partition of the collection (see `_fenced`).
    """

    deadline: float | None = None
    committed: Callable[[], None] | None = None
    record_at_commit: bool = False
    token: int = 0
    fence: int | None = None


UNCONDITIONAL = WriteConditions()


class ShardCore:
    def __init__(self, settings: Settings, data_dir: Path | None, peers: list[str] | None = None) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.peers = peers or []
        self.accelerator = detect(settings.device)
        self.index_settings = IndexSettings(
            filter_exact_ratio=settings.filter_exact_ratio,
            # Compressed kinds' float vectors: unlinked memory-mapped files on the data dir's disk.
            scratch_dir=data_dir / "scratch" if data_dir else None,
        )
        self.clock = WriteClock()  # versions writes that come without one (callers other than coordinators)
        self._sync_seen: dict[tuple[str, str], tuple[Any, Any]] = {}  # differences seen by the last peer_sync
        self.dropped: dict[str, int] = {}  # collection name -> version of its last drop here (dropped.json)
        self.collections: dict[str, ShardIndex] = {}
        self.wal: Wal | None = None
        self.ready = False
        self._batchers: dict[str, SearchBatcher] = {}
        self._catalog_lock = threading.Lock()  # create/drop vs. each other and checkpoints
        self._checkpoint_lock = threading.Lock()
        self._last_checkpoint = time.monotonic()
        # Reads and writes get their own threads: writers waiting on one collection's lock must not
        # take every thread from searches of other collections.
        self._reads = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="read")
        self._writes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="write")

    def catch_up(self) -> None:
        """Bring the partitions up to date from this shard's peers before serving: the recovery's
        last step (peering.PeerSync does it; a shard without peers has nothing to catch up)."""

    def on_fatal(self, message: str) -> None:
        """The log can no longer promise what was acknowledged matches memory: end the process."""
        log.critical("%s: exiting so that recovery replays from the log", message)
        logging.shutdown()
        os._exit(70)

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _collection_dir(self, name: str) -> Path | None:
        return self.data_dir / "collections" / name if self.data_dir else None

    def _get(self, name: str) -> ShardIndex:
        part = self.collections.get(name)
        if part is None:
            raise NotFound(f"collection {name!r} does not exist on this shard")
        return part

    @staticmethod
    def _state(part: ShardIndex, include_centroids: bool = False) -> spb.ShardCollectionState:
        state = spb.ShardCollectionState(
            config=part.spec.to_proto(),
            count=part.count,
            trained=part.trained,
            digest=part.digest,
            train_epoch=part.train_epoch,
            train_id=part.train_id,
            prepared_epoch=part.prepared_epoch,
            writes=part.writes,
            max_version=part.max_version,
            tombstones=part.tombstones,
            incarnation=part.incarnation,
            payload_indexes=part.payload_index_protos(),
        )
        centroids = part.centroids
        if include_centroids and centroids is not None:
            state.centroids.CopyFrom(wire.pack_matrix(centroids))
            state.codec = part.codec
        return state

    def _batcher(self, part: ShardIndex) -> SearchBatcher:
        batcher = self._batchers.get(part.spec.name)
        if batcher is None or batcher.owner is not part:  # new, or the name was dropped and re-created
            batcher = self._batchers[part.spec.name] = SearchBatcher(part.search, owner=part)
        return batcher

    def _version(self, context: grpc.aio.ServicerContext | None) -> int:
        """The version of a write: its coordinator's, or one of this shard's clock."""
        version = write_token_from(context.invocation_metadata()) if context is not None else 0
        if not version or version > MAX_VERSION:
            return self.clock.next()
        self.clock.observe(version)
        return version

    @staticmethod
    def _known_epoch(context: grpc.aio.ServicerContext | None) -> int:
        """The placement epoch a writer declares (-1: none declared, e.g. not a coordinator)."""
        known = header_int(context.invocation_metadata(), PLACEMENT_EPOCH_HEADER) if context is not None else None
        return -1 if known is None else known

    def _fenced(self, part: ShardIndex, known: int) -> None:
        """Refuse a write to `part` from a writer that knows placement epochs up to `known` only, when
        this shard holds the collection at a newer epoch: a reshard has begun, and the writer would
        miss the new placement (its copy may already have passed the id). Checked under the partition's
        write lock, so a write either lands before the newer partition exists (and the reshard's copy,
        which starts after, sees it) or is refused (the coordinator refreshes and writes both)."""
        base, epoch = parse_physical(part.spec.name)
        newer = max((e for b, e in map(parse_physical, list(self.collections)) if b == base), default=epoch)
        if newer > max(known, epoch):
            raise Aborted(
                f"collection {base!r} is being resharded (placement epoch {newer} exists on this shard): "
                "refresh the collection's placement and retry the write"
            )

    def _purge_before(self) -> int:
        """Versions of tombstones old enough to forget (settings.tombstone_ttl_s)."""
        return int((time.time() - self.settings.tombstone_ttl_s) * 1e6) << NODE_BITS

    def _logged(
        self,
        part: ShardIndex | None,
        record: Callable[[], spb.WalRecord],
        op: Callable[[Journal | None], T],
        when: WriteConditions = UNCONDITIONAL,
    ) -> T:
        """Run a write with its log record appended under the collection lock, then wait for fsync.

        The record is serialised and checksummed first, outside every lock. `journal()` refuses a
        write into a partition dropped while the write waited for its lock (NotFound), so nothing is
        acknowledged into a dropped collection nor replayed into a re-created one. A write whose
        apply fails after it was logged gets an abort record (replay skips it), and the process
        ends: its memory may hold half of the write.

        when: the conditions under which the write may still commit (WriteConditions).
        """
        deadline, committed, record_at_commit = when.deadline, when.committed, when.record_at_commit
        token, fence = when.token, when.fence

        def check() -> None:
            if part is not None and part.dropped:
                raise NotFound(f"collection {part.spec.name!r} was dropped while this write waited: nothing written")
            if part is not None and fence is not None:
                self._fenced(part, fence)
            if part is not None and token and token in part.aborted:
                raise DeadlineExceeded("this Add was rolled back by its coordinator before it arrived: nothing written")
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded("the caller's deadline passed before the write was committed: nothing written")

        if self.wal is None:

            def unlogged() -> int:
                check()
                if committed is not None:
                    committed()
                return 0

            return op(unlogged)
        wal = self.wal
        payload, crc = payload_of(record()) if not record_at_commit else (b"", 0)
        lsns: list[int] = []

        def journal() -> int:
            check()
            lsns.append(wal.append(record()) if record_at_commit else wal.append_payload(payload, crc))
            if committed is not None:
                committed()
            return lsns[-1]

        try:
            result = op(journal)
        except Exception as err:
            if lsns:
                wal.sync(wal.append(spb.WalRecord(abort=lsns[-1])))
                self.on_fatal(f"applying logged write lsn {lsns[-1]} failed ({type(err).__name__}: {err})")
            raise
        if lsns:
            wal.sync(lsns[-1])
        return result

    def _create(self, config: types_pb2.CollectionConfig, incarnation: int = 0) -> spb.ShardCollectionState:
        # The coordinator's checks (metric, index type, dim, nlist within this process's limits): an
        # unknown metric was INTERNAL, and a dim of 2**32 - 1 a collection whose Get allocates 16 GB a row.
        CollectionSpec.validate(config, self.settings, partition=True)
        spec = CollectionSpec.from_proto(config)  # as sent: the coordinator filled in the defaults
        with self._catalog_lock:
            existing = self.collections.get(spec.name)
            if existing is not None:
                if existing.spec != spec:
                    raise AlreadyExists(f"collection {spec.name!r} exists on this shard with another config")
                return self._state(existing)
            part = ShardIndex(spec, self.settings.max_vectors_per_shard, self.accelerator, self.index_settings)
            part.incarnation = incarnation or self.clock.next()

            def create(journal: Journal | None) -> None:
                if journal is not None:
                    part.applied_lsn = journal()

            self._logged(None, lambda: spb.WalRecord(create=config, version=part.incarnation), create)
            self.collections[spec.name] = part
            return self._state(part)

    def _drop(self, name: str, version: int = 0) -> None:
        version = version or self.clock.next()
        with self._catalog_lock:
            if version > self.dropped.get(name, 0):  # remembered (and kept on disk) even if absent here
                self.dropped[name] = version
                self._save_dropped()
            part = self.collections.get(name)
            if part is None:
                return
            # Under the partition's write lock: writes in flight finish (and log) first; later ones
            # see `dropped` and are refused.
            self._logged(None, lambda: spb.WalRecord(drop=name, version=version), part.mark_dropped)
            del self.collections[name]
            path = self._collection_dir(name)
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)

    def _save_dropped(self) -> None:
        """data_dir/dropped.json: the collections dropped here and the versions of their drops."""
        if self.data_dir is None:
            return
        path = self.data_dir / "dropped.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(self.dropped, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    @staticmethod
    def _entries(page: spb.ExportResponse) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ids, dead = wire.unpack_ids(page.ids), wire.unpack_ids(page.tombstone_ids)
        vectors = wire.unpack_matrix(page.vectors) if ids.size else np.empty((0, 0), np.float32)
        versions = wire.unpack_ids(page.versions) if page.versions else np.zeros(ids.size, np.int64)
        dead_versions = wire.unpack_ids(page.tombstone_versions)
        if (
            versions.size != ids.size
            or dead_versions.size != dead.size
            or vectors.shape[0] != ids.size
            or len(page.payloads) not in (0, ids.size)
        ):
            raise Unavailable("the peer sent a malformed export page: retry")
        return ids, vectors, versions, dead, dead_versions

    def _copy_add(
        self,
        part: ShardIndex,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32] | None,
        versions: npt.NDArray[np.int64],
        payloads: list[ppb.Payload],
    ) -> None:
        """Apply (logged) entries copied from a peer: upserts at their own versions."""
        add = pb.AddRequest(
            collection=part.spec.name,
            ids=wire.pack_ids(ids),
            vectors=wire.pack_matrix(vectors) if vectors is not None else None,
            upsert=True,
            payloads=payloads,
        )
        self._logged(
            part,
            lambda: spb.WalRecord(add=add, versions=wire.pack_ids(versions)),
            lambda journal: part.add(ids, vectors, True, journal, versions, payloads or None),
        )

    def _apply_page(self, part: ShardIndex, page: spb.ExportResponse) -> None:
        """Apply the entries of a peer's export page newer than this partition's, logged."""
        ids, vectors, versions, dead, dead_versions = self._entries(page)
        name = part.spec.name
        for add_ids, add_vectors, add_versions, payloads in page_adds(page, ids, vectors, versions):
            self._copy_add(part, add_ids, add_vectors, add_versions, payloads)
        if dead.size:
            remove = pb.RemoveRequest(collection=name, ids=page.tombstone_ids)
            self._logged(
                part,
                lambda: spb.WalRecord(remove=remove, versions=page.tombstone_versions),
                lambda journal: part.remove(dead, journal, dead_versions),
            )

    def _adopt_indexes(self, part: ShardIndex, state: spb.ShardCollectionState, logged: bool) -> None:
        """Create the peer's payload indexes missing here (indexes only speed filters up)."""
        have = dict(part.payload_indexes)
        for index in state.payload_indexes:
            if index.field in have:
                continue
            request = pb.CreatePayloadIndexRequest(collection=part.spec.name, field=index.field, type=index.type)
            text = index.text if index.HasField("text") else None
            if text is not None:
                request.text.CopyFrom(text)
            if logged:
                self._logged(
                    part,
                    lambda r=request: spb.WalRecord(create_index=r),  # type: ignore[misc]
                    lambda journal, r=request, t=text: part.create_payload_index(r.field, r.type, journal, t),  # type: ignore[misc]
                )
            else:
                part.create_payload_index(index.field, index.type, None, text)


def vectorless_of(page: spb.ExportResponse, n: int) -> npt.NDArray[np.bool_]:
    """Which of the page's n entries are points without a vector (ExportResponse.vectorless)."""
    if not page.vectorless:
        return np.zeros(n, dtype=bool)
    mask = np.frombuffer(page.vectorless, dtype=np.uint8)
    if mask.size != n:
        raise Unavailable("the peer sent a malformed export page (vectorless): retry")
    return mask.astype(bool)


CopiedAdd = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32] | None, npt.NDArray[np.int64], list[ppb.Payload]]


def page_adds(
    page: spb.ExportResponse,
    ids: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.float32],
    versions: npt.NDArray[np.int64],
) -> list[CopiedAdd]:
    """The page's stored entries as Adds: (ids, vectors, versions, payloads) of those with a vector,
    then (ids, None, versions, one payload each) of those without one."""
    if not ids.size:
        return []
    less = vectorless_of(page, ids.size)
    payloads = list(page.payloads)
    if not less.any():
        return [(ids, vectors, versions, payloads)]
    out: list[CopiedAdd] = []
    if not less.all():
        keep = np.flatnonzero(~less)
        out.append((ids[keep], vectors[keep], versions[keep], [payloads[i] for i in keep] if payloads else []))
    rows = np.flatnonzero(less)
    out.append((ids[rows], None, versions[rows], [payloads[i] if payloads else ppb.Payload() for i in rows]))
    return out
