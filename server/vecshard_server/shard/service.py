"""The shard worker: serves `vecshard.v1.Shard` over one faiss partition of every collection.

Durability (with a data dir): every write is appended to the write-ahead log (wal.py) under its
collection's write lock and acknowledged after an fsync covering it. Checkpoints snapshot the
changed collections (engine.ShardIndex.save, each recording the last lsn it covers) and delete the
log segments they cover. On start: load the snapshots, replay the log records they do not cover,
and only then report SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from vecshard import wire
from vecshard.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from vecshard.types import Metric
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc, types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.observability import CHECKPOINT_SECONDS, register_collections
from vecshard_server.common.rpc import TRAIN_EPOCH_HEADER, Server, header_int, write_token_from
from vecshard_server.common.security import InternalAuth, shard_channel
from vecshard_server.common.spec import CollectionSpec, check_name
from vecshard_server.shard.accel import detect
from vecshard_server.shard.batching import SearchBatcher
from vecshard_server.shard.engine import Journal, ShardIndex, SnapshotCorrupt
from vecshard_server.shard.wal import Wal, payload_of, scan, segments

log = logging.getLogger(__name__)

SERVICE_NAME = spb.DESCRIPTOR.services_by_name["Shard"].full_name
T = TypeVar("T")
MAX_OWNED = 1_000_000  # ids per partition whose writing Add is remembered for RollbackAdd
MAX_ABORTED = 100_000  # rolled-back write tokens remembered per partition


def track_owners(part: ShardIndex, ids: np.ndarray, token: int) -> None:
    """Under the partition's write lock: `ids` were just written by the Add tagged `token` (0: by
    any other write, which ends the claim of an earlier Add on them)."""
    if token:
        part.owners.update(dict.fromkeys(ids.tolist(), token))
        part.owner_tokens[token] = ids
        while len(part.owners) > MAX_OWNED and part.owner_tokens:  # forget the oldest Adds first
            old, old_ids = part.owner_tokens.popitem(last=False)
            for i in old_ids.tolist():
                if part.owners.get(i) == old:
                    del part.owners[i]
    elif part.owners:
        for i in ids.tolist():
            part.owners.pop(i, None)


def check_add(spec: CollectionSpec, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Refuse what the coordinator refuses (it sends only valid batches; other callers of the
    internal API are told why): faiss failed on a wrong shape only once the write was logged, and a
    logged write that cannot be applied ends the process; an id twice in one batch leaves a stale
    copy in the index; NaN, Inf or overflowing values get no IVF list, so the id was counted but its
    vector not stored (every Get, Sample and training of the partition then failed); and a COSINE
    partition (an inner-product index) holding a vector that is not unit length ranks it above
    every exact match, with a "cosine similarity" above 1."""
    wire.check_ids(ids)
    if vectors.shape[0] != ids.size:
        raise InvalidArgument(f"got {ids.size} ids for {vectors.shape[0]} vectors: send one id per vector")
    wire.check_vectors(vectors, spec.dim)
    if spec.metric is Metric.COSINE:
        norms = np.linalg.norm(vectors, axis=1)
        off = np.flatnonzero(np.abs(norms - 1) > 1e-3)
        if off.size:
            raise InvalidArgument(
                f"vectors rows {off[:5].tolist()} have norms {np.round(norms[off[:5]], 4).tolist()}: collection "
                f"{spec.name!r} is COSINE, whose shards store L2-normalised vectors; normalise them (the coordinator "
                "does)"
            )


def check_search(settings: Settings, spec: CollectionSpec, queries: np.ndarray, k: int) -> None:
    """Refuse a search faiss cannot run (wrong dimension, k = 0: INTERNAL before) or whose results
    could not be held (a huge k or nq * k would allocate them all first), with the coordinator's limits."""
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(f"k must be between 1 and max_k={settings.max_k}, got {k}")
    if queries.shape[1] != spec.dim:
        raise InvalidArgument(
            f"queries have dimension {queries.shape[1]} but collection {spec.name!r} has dim {spec.dim}"
        )
    if queries.shape[0] * k > settings.max_results:
        raise ResourceExhausted(
            f"nq * k = {queries.shape[0] * k} results would exceed the message limit ({settings.max_results} "
            "results): send fewer queries per call or a smaller k"
        )


def check_centroids(spec: CollectionSpec, centroids: np.ndarray) -> None:
    """NaN, Inf or overflowing centroids give no vector an IVF list: the new index silently lost every
    vector, whose Get then failed (INTERNAL). The shape is the engine's to check."""
    if centroids.shape == (spec.nlist, spec.dim) and centroids.size:
        wire.check_vectors(centroids, spec.dim, "centroids")


def rows_that_fit(settings: Settings, row_bytes: int) -> int:
    """Rows of `row_bytes` (as encoded) that fit one reply, as the coordinator counts them."""
    return max(1, (settings.max_message_bytes - 64 * 1024) // row_bytes)


def check_reply_rows(settings: Settings, rows: int, row_bytes: int, dim: int, fix: str) -> None:
    """Refuse a reply over the message limit before building it: gRPC refused it only once it was
    built, with its own message ("Sent message larger than max") and an error logged here."""
    limit = rows_that_fit(settings, row_bytes)
    if rows > limit:
        raise ResourceExhausted(
            f"{rows} vectors of dim {dim} would exceed the message limit: {fix.format(limit=limit)}"
        )


MAX_EPOCH = 2**63  # epochs count 1, 2, ...: the shard's next of one near 2**64 overflowed (INTERNAL)


def deadline_of(context: grpc.aio.ServicerContext | None) -> float | None:
    """The caller's deadline on this process's monotonic clock (None: no deadline)."""
    remaining = context.time_remaining() if context is not None else None
    return None if remaining is None else time.monotonic() + remaining


_PEER = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253})|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]{1,5})")


def check_peer(peer: str) -> None:
    """A Resync peer must be a plain host:port (a name, IPv4 or [IPv6]): no scheme, path or options."""
    match = _PEER.fullmatch(peer)
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        shown = peer[:80] + ("..." if len(peer) > 80 else "")
        raise InvalidArgument(
            f"peer {shown!r} is not host:port: send the address of a replica of this group, e.g. 10.0.0.7:7001"
        )


class ShardService(shard_pb2_grpc.ShardServicer):
    """Holds this shard's partitions; faiss work runs in worker threads (faiss releases the GIL)."""

    def __init__(self, settings: Settings, data_dir: Path | None, peers: list[str] | None = None) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.peers = peers or []
        self.accelerator = detect(settings.device)
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

    def on_fatal(self, message: str) -> None:
        """The log can no longer promise what was acknowledged matches memory: end the process."""
        log.critical("%s: exiting so that recovery replays from the log", message)
        logging.shutdown()
        os._exit(70)

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # -- durability -----------------------------------------------------------------------------

    def _collection_dir(self, name: str) -> Path | None:
        return self.data_dir / "collections" / name if self.data_dir else None

    def recover(self) -> None:
        """Load snapshots, replay the log they do not cover, open the log for appends."""
        if self.data_dir is None:
            self.catch_up()
            self.ready = True
            return
        started = time.perf_counter()
        root = self.data_dir / "collections"
        for d in sorted(root.iterdir()) if root.exists() else []:
            if d.name.endswith(".tmp"):
                shutil.rmtree(d, ignore_errors=True)  # an interrupted snapshot; the previous one is intact
            elif d.name.endswith(".old"):
                if not d.with_name(d.name[:-4]).exists():  # crashed between the two renames of a save
                    d.rename(d.with_name(d.name[:-4]))
                else:
                    shutil.rmtree(d, ignore_errors=True)
        for d in sorted(root.iterdir()) if root.exists() else []:
            if d.is_dir() and (d / "meta.json").exists():
                part = ShardIndex.load(d, self.settings.max_vectors_per_shard, self.accelerator)
                self.collections[part.spec.name] = part
        wal_dir = self.data_dir / "wal"
        replayed = 0
        # Pass 1 checks the whole log (and finds records voided by an abort) before anything is applied.
        aborted = {r.abort for r in scan(wal_dir) if r.WhichOneof("op") == "abort"} if wal_dir.exists() else set()
        last_lsn = 0
        for record in scan(wal_dir) if wal_dir.exists() else []:
            last_lsn = max(last_lsn, record.lsn)
            if record.lsn not in aborted and record.WhichOneof("op") != "abort":
                replayed += self._replay(record)
        log_end = max([last_lsn, *(int(p.stem) - 1 for p in segments(wal_dir))] if wal_dir.exists() else [0])
        for name, part in self.collections.items():
            if part.snapshot_lsn > log_end:
                raise SnapshotCorrupt(
                    f"{self._collection_dir(name)}/meta.json says it covers lsn {part.snapshot_lsn} but the log in "
                    f"{wal_dir} ends at lsn {log_end}: the snapshot or the log is damaged. Refusing to start; restore "
                    "the data dir from a backup, or delete this replica's data dir so it catches up from its peers."
                )
        self.wal = Wal(wal_dir, log_end + 1, fsync=self.settings.wal_fsync, on_fatal=self.on_fatal)
        self.catch_up()
        self.ready = True
        log.info(
            "recovered %d collections (%d vectors), replayed %d log records in %.2fs",
            len(self.collections), sum(p.count for p in self.collections.values()), replayed,
            time.perf_counter() - started,
        )  # fmt: skip

    def catch_up(self, attempts: int = 5) -> None:
        """Make this replica equal to a peer replica of its group before it serves.

        Collections whose config, count, digest or training differ from the first reachable peer's
        are copied from it (its pages of (id, vector) pairs, over its centroids), or dropped when
        the peer has none; repeated until a comparison finds no difference.
        """
        for peer in self.peers:
            channel = shard_channel(peer, self.settings, self.settings.grpc_options(), aio=False)
            stub = shard_pb2_grpc.ShardStub(channel)
            try:
                for _ in range(attempts):
                    theirs = {
                        st.config.name: st
                        for st in stub.ListCollections(pb.ListCollectionsRequest(), timeout=30).collections
                    }
                    names = set(theirs) | set(self.collections)
                    stale = sorted(n for n in names if not self._same(self.collections.get(n), theirs.get(n)))
                    ahead = [n for n in stale if self._ahead(self.collections.get(n), theirs.get(n))]
                    if ahead:  # the peer missed writes this replica has: it is the one to repair, not this
                        log.warning("ahead of peer %s on %s (more writes applied): keeping this copy", peer, ahead)
                        stale = [n for n in stale if n not in ahead]
                    if not stale:
                        log.info("in sync with peer %s (%d collections)", peer, len(theirs))
                        return
                    for name in stale:
                        self._copy_from(stub, name, theirs.get(name))
                log.warning("still differs from peer %s after %d rounds (writes under way): serving", peer, attempts)
                return
            except grpc.RpcError as err:
                log.warning("cannot catch up from peer %s (%s): trying the next", peer, err.code().name)
            finally:
                channel.close()
        if self.peers:
            log.warning("no peer reachable (%s): serving the local state", ", ".join(self.peers))

    @staticmethod
    def _ahead(mine: ShardIndex | None, theirs: spb.ShardCollectionState | None) -> bool:
        """This replica applied more writes of the collection than the peer (same config)."""
        return (
            mine is not None
            and theirs is not None
            and mine.spec == CollectionSpec.from_proto(theirs.config)
            and mine.writes > theirs.writes
        )

    @staticmethod
    def _same(mine: ShardIndex | None, theirs: spb.ShardCollectionState | None) -> bool:
        if mine is None or theirs is None:
            return mine is None and theirs is None
        return (
            mine.spec == CollectionSpec.from_proto(theirs.config)
            and mine.count == theirs.count
            and mine.digest == theirs.digest
            and mine.trained == theirs.trained
            and (mine.train_epoch, mine.train_id) == (theirs.train_epoch, theirs.train_id)
        )

    def _copy_from(self, stub: shard_pb2_grpc.ShardStub, name: str, state: spb.ShardCollectionState | None) -> None:
        if state is None:
            self._drop(name)
            log.info("catch-up: dropped %s (the peer has no such collection)", name)
            return
        part = self._fetch(stub, name, state)
        with self._catalog_lock:
            if self.wal is not None:  # a create record orders the copy after every older record of the name
                part.applied_lsn = self.wal.append(spb.WalRecord(create=state.config))
                self.wal.sync(part.applied_lsn)
            self.collections[name] = part
            path = self._collection_dir(name)
            if path is not None:
                part.save(path)
        log.info("catch-up: copied %s (%d vectors, trained=%s)", name, part.count, part.trained)

    def _fetch(self, stub: shard_pb2_grpc.ShardStub, name: str, state: spb.ShardCollectionState) -> ShardIndex:
        """A new partition holding what the peer behind `stub` holds of collection `name`."""
        spec = CollectionSpec.from_proto(state.config)
        part = ShardIndex(spec, self.settings.max_vectors_per_shard, self.accelerator)
        desc = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name, include_centroids=True), timeout=60)
        if desc.trained:
            part.install_quantizer(wire.unpack_matrix(desc.centroids, "centroids"), None, desc.train_epoch,
                                   desc.train_id)  # fmt: skip
        limit = max(1, (self.settings.max_message_bytes - 64 * 1024) // (4 * spec.dim + 8))
        after = -1
        while True:
            page = stub.Export(spb.ExportRequest(collection=name, after_id=after, limit=limit), timeout=60)
            ids = wire.unpack_ids(page.ids)
            if not ids.size:
                break
            part.add(ids, wire.unpack_matrix(page.vectors), upsert=True)
            after = int(ids[-1])
        part.writes = state.writes  # as many writes as the copy's source has applied
        return part

    def resync(self, name: str, peer: str) -> spb.ShardCollectionState:
        """Make this replica's partition of `name` equal to `peer`'s while serving (see the Resync RPC).

        The copy is not a point-in-time image of the peer: writes reaching both replicas meanwhile
        are recorded here and replayed on the copy (idempotently); a write this replica misses again
        makes its coordinator resync it again.
        """
        channel = shard_channel(peer, self.settings, self.settings.grpc_options(), aio=False)
        try:
            stub = shard_pb2_grpc.ShardStub(channel)
            try:
                state = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=60)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise Unavailable(f"cannot reach peer {peer} to resync {name!r}: {err.code().name}") from None
                self._drop(name)  # the peer has none: it was dropped while this replica missed it
                raise NotFound(f"collection {name!r} no longer exists (peer {peer} has none): dropped here") from None
            part = self.collections.get(name)
            if part is None or part.spec != CollectionSpec.from_proto(state.config):
                try:
                    self._copy_from(stub, name, state)
                except grpc.RpcError as err:  # the peer dropped it, restarted, ... meanwhile
                    raise Unavailable(f"copying {name!r} from peer {peer} failed: {err.code().name}: retry") from None
                return self._state(self._get(name))
            if (part.count, part.digest, part.train_epoch) == (state.count, state.digest, state.train_epoch):
                return self._state(part)  # already equal (it caught up at its start, say): nothing to copy
            recorder = part.record_writes()
            part.resyncing = True
            try:
                copy = self._fetch(stub, name, state)

                def agrees(result: ShardIndex) -> bool:
                    # The peer may have lagged behind writes this replica applied before it started
                    # recording (a write the peer applies later): adopting then would undo them here.
                    # So only when the peer holds exactly the result now (writes here wait meanwhile).
                    now = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=2)
                    result.writes = now.writes
                    return (now.count, now.digest) == (result.count, result.digest)

                with self._catalog_lock:
                    # The snapshot makes the copy durable; a crash before it leaves the old state, and
                    # the next start catches up from a peer again.
                    if not part.adopt(copy, recorder, agrees):
                        raise Unavailable(f"peer {peer} changed while {name!r} was copied from it: retry")
                    part.resyncing = False
                    path = self._collection_dir(name)
                    if path is not None:
                        part.save(path)
            except grpc.RpcError as err:
                raise Unavailable(f"copying {name!r} from peer {peer} failed: {err.code().name}") from None
            finally:
                part.resyncing = False
                part.stop_recording(recorder)
            log.info("resync: %s copied from %s (%d vectors)", name, peer, part.count)
            return self._state(part)
        finally:
            channel.close()

    def _replay(self, record: spb.WalRecord) -> int:
        op = record.WhichOneof("op")
        name = record.create.name if op == "create" else record.drop if op == "drop" else getattr(record, op).collection
        part = self.collections.get(name)
        if part is not None and record.lsn <= part.applied_lsn:
            return 0  # already in the snapshot
        if op == "create":
            part = ShardIndex(
                CollectionSpec.from_proto(record.create), self.settings.max_vectors_per_shard, self.accelerator
            )
            part.applied_lsn = record.lsn
            self.collections[name] = part
            return 1
        if part is None:
            return 0  # the collection was dropped later on
        if op == "drop":
            del self.collections[name]
            path = self._collection_dir(name)
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
            return 1
        journal: Journal = lambda: record.lsn  # noqa: E731
        if op == "add":
            ids = wire.unpack_ids(record.add.ids)
            part.add(ids, wire.unpack_matrix(record.add.vectors), upsert=True, journal=journal)
            track_owners(part, ids, record.write_token)
        elif op == "remove":
            ids = wire.unpack_ids(record.remove.ids)
            part.remove(ids, journal=journal)
            track_owners(part, ids, 0)
        elif op == "install":
            install = record.install
            centroids = wire.unpack_matrix(install.centroids, "centroids")
            part.install_quantizer(centroids, journal, install.epoch, install.train_id)
        part.applied_lsn = record.lsn
        return 1

    def _logged(
        self,
        part: ShardIndex | None,
        record: Callable[[], spb.WalRecord],
        op: Callable[[Journal | None], T],
        deadline: float | None = None,
        committed: Callable[[], None] | None = None,
        record_at_commit: bool = False,
        token: int = 0,
    ) -> T:
        """Run a write with its log record appended under the collection lock, then wait for fsync.

        The record is serialised and checksummed first, outside every lock. `journal()` refuses a
        write into a partition dropped while the write waited for its lock (NotFound), so nothing is
        acknowledged into a dropped collection nor replayed into a re-created one. A write whose
        apply fails after it was logged gets an abort record (replay skips it), and the process
        ends: its memory may hold half of the write.

        deadline: a write whose caller's deadline has passed when its turn comes is refused
        (DEADLINE_EXCEEDED, nothing written), so a coordinator that gave up can rely on it.
        committed: runs right after the record is appended, under the same lock.
        record_at_commit: build the record there (when it depends on what the lock protects).
        token: the write token of a non-upsert Add: refused once RollbackAdd has seen it.
        """

        def check() -> None:
            if part is not None and part.dropped:
                raise NotFound(f"collection {part.spec.name!r} was dropped while this write waited: nothing written")
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

    def checkpoint(self, final: bool = False) -> None:
        """Snapshot every collection changed since its last snapshot; drop the log they cover."""
        if self.wal is None:
            return
        with self._checkpoint_lock:
            started = time.perf_counter()
            with self._catalog_lock:  # a create logs and registers its collection under this lock
                covered = self.wal.rotate()
                parts = list(self.collections.items())
            saved = 0
            for name, part in parts:
                if part.applied_lsn <= part.snapshot_lsn:
                    continue
                with self._catalog_lock:
                    path = self._collection_dir(name)
                    if self.collections.get(name) is part and path is not None:
                        part.save(path)
                        saved += 1
            removed = self.wal.delete_through(covered)
            self._last_checkpoint = time.monotonic()
            CHECKPOINT_SECONDS.observe(time.perf_counter() - started)
            if saved or final:
                log.info("checkpoint: %d collections saved, %d log segments removed in %.2fs", saved, removed,
                         time.perf_counter() - started)  # fmt: skip

    def checkpoint_due(self) -> bool:
        if self.wal is None:
            return False
        dirty = any(p.applied_lsn > p.snapshot_lsn for p in self.collections.values())
        return self.wal.bytes_since_rotation >= self.settings.checkpoint_wal_bytes or (
            dirty and time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s
        )

    def close(self) -> None:
        self._writes.shutdown(wait=True)
        self._reads.shutdown(wait=True)
        if self.wal is not None:
            self.checkpoint(final=True)
            self.wal.close()
            self.wal = None

    # -- helpers --------------------------------------------------------------------------------

    def _batcher(self, part: ShardIndex) -> SearchBatcher:
        batcher = self._batchers.get(part.spec.name)
        if batcher is None or batcher.owner is not part:  # new, or the name was dropped and re-created
            batcher = self._batchers[part.spec.name] = SearchBatcher(part.search, owner=part)
        return batcher

    def _get(self, name: str) -> ShardIndex:
        part = self.collections.get(name)
        if part is None:
            raise NotFound(f"collection {name!r} does not exist on this shard")
        return part

    @staticmethod
    def _state(part: ShardIndex, include_centroids: bool = False) -> spb.ShardCollectionState:
        state = spb.ShardCollectionState(
            config=part.spec.to_proto(), count=part.count, trained=part.trained, digest=part.digest,
            train_epoch=part.train_epoch, train_id=part.train_id, prepared_epoch=part.prepared_epoch,
            writes=part.writes,
        )  # fmt: skip
        centroids = part.centroids
        if include_centroids and centroids is not None:
            state.centroids.CopyFrom(wire.pack_matrix(centroids))
        return state

    def _create(self, config: types_pb2.CollectionConfig) -> spb.ShardCollectionState:
        # The coordinator's checks (metric, index type, dim, nlist within this process's limits): an
        # unknown metric was INTERNAL, and a dim of 2**32 - 1 a collection whose Get allocates 16 GB a row.
        CollectionSpec.validate(config, self.settings)
        spec = CollectionSpec.from_proto(config)  # as sent: the coordinator filled in the defaults
        with self._catalog_lock:
            existing = self.collections.get(spec.name)
            if existing is not None:
                if existing.spec != spec:
                    raise AlreadyExists(f"collection {spec.name!r} exists on this shard with another config")
                return self._state(existing)
            part = ShardIndex(spec, self.settings.max_vectors_per_shard, self.accelerator)

            def create(journal: Journal | None) -> None:
                if journal is not None:
                    part.applied_lsn = journal()

            self._logged(None, lambda: spb.WalRecord(create=config), create)
            self.collections[spec.name] = part
            return self._state(part)

    def _drop(self, name: str) -> None:
        with self._catalog_lock:
            part = self.collections.get(name)
            if part is None:
                return
            # Under the partition's write lock: writes in flight finish (and log) first; later ones
            # see `dropped` and are refused.
            self._logged(None, lambda: spb.WalRecord(drop=name), part.mark_dropped)
            del self.collections[name]
            path = self._collection_dir(name)
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)

    # -- RPCs -----------------------------------------------------------------------------------

    async def CreateCollection(
        self, request: types_pb2.CollectionConfig, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        return await self._run(self._writes, self._create, request)

    async def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropCollectionResponse:
        await self._run(self._writes, self._drop, request.name)
        return pb.DropCollectionResponse()

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardListResponse:
        return spb.ShardListResponse(collections=[self._state(p) for p in list(self.collections.values())])

    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        return self._state(self._get(request.name), request.include_centroids)

    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        part = self._get(request.collection)
        ids = wire.unpack_ids(request.ids)
        vectors = wire.unpack_matrix(request.vectors)
        check_add(part.spec, ids, vectors)
        token = write_token_from(context.invocation_metadata()) if context is not None else 0
        added, replaced = await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(add=request, write_token=token),
            lambda journal: part.add(ids, vectors, request.upsert, journal),
            deadline_of(context),
            lambda: track_owners(part, ids, token),
            False,
            token,
        )
        return pb.AddResponse(added=added, replaced=replaced, count=part.count)

    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        part = self._get(request.collection)
        ids = wire.unpack_ids(request.ids)
        removed = await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(remove=request),
            lambda journal: part.remove(ids, journal),
            None,
            lambda: track_owners(part, ids, 0),
        )
        return pb.RemoveResponse(removed=removed)

    async def RollbackAdd(
        self, request: spb.RollbackAddRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        if not request.write_token:
            raise InvalidArgument("write_token is 0: send the token the Add was tagged with")
        part = self._get(request.collection)
        ids = wire.unpack_ids(request.ids)
        chosen: list[np.ndarray] = [np.empty(0, np.int64)]

        def owned(present: np.ndarray) -> np.ndarray:  # under the write lock
            part.aborted[request.write_token] = None  # the Add, if it arrives after this, is refused
            while len(part.aborted) > MAX_ABORTED:
                part.aborted.popitem(last=False)
            mine = np.fromiter((part.owners.get(i) == request.write_token for i in present.tolist()), bool,
                               count=present.size)  # fmt: skip
            chosen.append(present[mine])
            return chosen[-1]

        removed = await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(remove=pb.RemoveRequest(collection=part.spec.name, ids=wire.pack_ids(chosen[-1]))),
            lambda journal: part.remove(ids, journal, only=owned),
            None,
            lambda: track_owners(part, chosen[-1], 0),
            True,
        )
        if removed:
            log.info("rolled back %d ids of a failed Add in %s", removed, part.spec.name)
        return pb.RemoveResponse(removed=removed)

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        part = self._get(request.collection)
        if part.resyncing:
            raise Unavailable(f"this replica is copying {part.spec.name!r} from a peer: read another replica")
        ids = wire.unpack_ids(request.ids)
        dim = part.spec.dim
        check_reply_rows(self.settings, ids.size, 4 * dim + 1, dim, "get at most {limit} ids per call")
        vectors, found = await self._run(self._reads, part.get, ids)
        return pb.GetResponse(vectors=wire.pack_matrix(vectors), found=found.astype(np.uint8).tobytes())

    async def Resync(self, request: spb.ResyncRequest, context: grpc.aio.ServicerContext) -> spb.ShardCollectionState:
        check_name(request.collection)
        check_peer(request.peer)
        return await self._run(self._writes, self.resync, request.collection, request.peer)

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        part = self._get(request.collection)
        if part.resyncing:
            raise Unavailable(f"this replica is copying {part.spec.name!r} from a peer: read another replica")
        expected = header_int(context.invocation_metadata(), TRAIN_EPOCH_HEADER) if context is not None else None
        if expected is not None and expected != part.train_epoch:
            raise Aborted(
                f"collection {part.spec.name!r} is at training epoch {part.train_epoch} on this shard, the coordinator "
                f"expected {expected}: a training is being switched; retry"
            )
        queries = wire.unpack_matrix(request.queries, "queries")
        check_search(self.settings, part.spec, queries, request.k)  # before batching: one bad query failed all
        if self.settings.search_batching:
            D, I = await self._batcher(part).search(queries, request.k, request.nprobe)
        else:
            D, I = await self._run(self._reads, part.search, queries, request.k, request.nprobe)
        return pb.SearchResponse(
            nq=queries.shape[0],
            k=request.k,
            distances=D.astype(wire.F32, copy=False).tobytes(),
            ids=I.astype(wire.I64, copy=False).tobytes(),
        )

    async def Sample(self, request: pb.SampleRequest, context: grpc.aio.ServicerContext) -> spb.ExportResponse:
        part = self._get(request.collection)
        dim = part.spec.dim
        check_reply_rows(self.settings, min(request.max_points, part.count), 4 * dim + 8, dim,
                         "ask for at most {limit} points per call")  # fmt: skip
        ids, x = await self._run(self._reads, part.sample, request.max_points, request.seed)
        return spb.ExportResponse(ids=wire.pack_ids(ids), vectors=wire.pack_matrix(x))

    async def Export(self, request: spb.ExportRequest, context: grpc.aio.ServicerContext) -> spb.ExportResponse:
        part = self._get(request.collection)
        fit = rows_that_fit(self.settings, 4 * part.spec.dim + 8)
        limit = max(1, min(request.limit, fit + 1))  # one more than fits tells a page that would not
        ids, vectors = await self._run(self._reads, part.export_page, request.after_id, limit)
        check_reply_rows(self.settings, ids.size, 4 * part.spec.dim + 8, part.spec.dim,
                         "send a limit of at most {limit} per page")  # fmt: skip
        return spb.ExportResponse(ids=wire.pack_ids(ids), vectors=wire.pack_matrix(vectors))

    async def InstallQuantizer(
        self, request: spb.InstallQuantizerRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        mode = request.mode
        if mode not in (spb.INSTALL_MODE_ONE_STEP, spb.INSTALL_MODE_PREPARE, spb.INSTALL_MODE_ACTIVATE):
            raise InvalidArgument(f"mode {mode} is not an InstallMode: send ONE_STEP (0), PREPARE (1) or ACTIVATE (2)")
        if request.epoch >= MAX_EPOCH:
            raise InvalidArgument(
                f"epoch {request.epoch} is out of range: a collection's trainings are epochs 1, 2, ... below 2**63 "
                "(0: the shard's next)"
            )
        if mode == spb.INSTALL_MODE_PREPARE:
            centroids = wire.unpack_matrix(request.centroids, "centroids")
            check_centroids(part.spec, centroids)
            await self._run(
                self._writes, part.prepare_quantizer, centroids, request.epoch, request.train_id, request.decide
            )
            return self._state(part)
        epoch = request.epoch or part.train_epoch + 1
        if mode == spb.INSTALL_MODE_ACTIVATE:

            def record() -> spb.WalRecord:  # under the write lock: the prepared centroids go to the log
                centroids = part.prepared_centroids(epoch, request.train_id)
                return spb.WalRecord(install=spb.InstallQuantizerRequest(
                    collection=part.spec.name, centroids=wire.pack_matrix(centroids), epoch=epoch,
                    train_id=request.train_id))  # fmt: skip

            await self._run(
                self._writes, self._logged, part, record,
                lambda journal: part.activate_quantizer(epoch, request.train_id, journal), None, None, True,
            )  # fmt: skip
        else:
            centroids = wire.unpack_matrix(request.centroids, "centroids")
            check_centroids(part.spec, centroids)
            logged = spb.InstallQuantizerRequest(collection=part.spec.name, centroids=request.centroids, epoch=epoch,
                                                 train_id=request.train_id)  # fmt: skip
            await self._run(
                self._writes, self._logged, part, lambda: spb.WalRecord(install=logged),
                lambda journal: part.install_quantizer(centroids, journal, epoch, request.train_id),
            )  # fmt: skip
        log.info("collection %s: installed training epoch %d (%d centroids), %d vectors re-indexed", part.spec.name,
                 part.train_epoch, part.spec.nlist, part.count)  # fmt: skip
        self._last_checkpoint = 0.0  # snapshot soon: replaying an install means re-indexing everything
        return self._state(part)


async def serve_shard(
    settings: Settings,
    host: str,
    port: int,
    data_dir: Path | None,
    name: str = "shard",
    port_file: Path | None = None,
    exit_with_parent: bool = False,
    peers: list[str] | None = None,
) -> None:
    service = ShardService(settings, data_dir, peers)
    register_collections(lambda: [(n, p.count, p.trained) for n, p in list(service.collections.items())])
    server = Server(settings, [SERVICE_NAME])
    token = settings.token
    server.add_service(service, SERVICE_NAME, lambda: service.ready, InternalAuth(token).check if token else None)
    bound = server.bind(host, port)
    checkpoints: asyncio.Task[None] | None = None

    async def checkpoint_loop() -> None:
        while True:
            await asyncio.sleep(1.0)
            if service.checkpoint_due():
                await asyncio.to_thread(service.checkpoint)

    async def ready() -> None:
        nonlocal checkpoints
        log.info("%s listening on %s:%d (data dir %s, trained IVF searches on %s); recovering", name, host, bound,
                 data_dir or "none: in memory", service.accelerator.name if service.accelerator else "cpu")  # fmt: skip
        await asyncio.to_thread(service.recover)
        checkpoints = asyncio.create_task(checkpoint_loop())

    async def on_stop() -> None:
        if checkpoints is not None:
            checkpoints.cancel()
        await asyncio.to_thread(service.close)

    await server.run(ready=ready, on_stop=on_stop, port_file=port_file, exit_with_parent=exit_with_parent)
