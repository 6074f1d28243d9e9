"""The shard worker: serves `vecshard.v1.Shard` over one faiss partition of every collection.

Durability (with a data dir): every write is appended to the write-ahead log (wal.py) under its
collection's write lock and acknowledged after an fsync covering it. Checkpoints snapshot the
changed collections (engine.ShardIndex.save, each recording the last lsn it covers) and delete the
log segments they cover. On start: load the snapshots, replay the log records they do not cover,
and only then report SERVING.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from vecshard.payload import payload_from_proto
from vecshard.types import Metric
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc, types_pb2
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.config import Settings
from vecshard_server.common.memory import TRIM_EVERY_S, release_free_memory
from vecshard_server.common.observability import CHECKPOINT_SECONDS, register_collections
from vecshard_server.common.placement import Placement, parse_physical
from vecshard_server.common.results import pad_distance, scroll_next
from vecshard_server.common.rpc import PLACEMENT_EPOCH_HEADER, TRAIN_EPOCH_HEADER, Server, header_int, write_token_from
from vecshard_server.common.search_values import ShardHits, ShardQuery
from vecshard_server.common.security import InternalAuth, shard_channel
from vecshard_server.common.spec import CollectionSpec, check_partition_name
from vecshard_server.common.versions import MAX_VERSION, NODE_BITS, WriteClock
from vecshard_server.shard.accel import detect
from vecshard_server.shard.batching import SearchBatcher
from vecshard_server.shard.engine import Journal, ShardIndex, SnapshotCorrupt
from vecshard_server.shard.payloads import project
from vecshard_server.shard.wal import Wal, payload_of, scan, segments

log = logging.getLogger(__name__)

SERVICE_NAME = spb.DESCRIPTOR.services_by_name["Shard"].full_name
T = TypeVar("T")
MAX_ABORTED = 100_000  # rolled-back Add versions remembered per partition


def record_versions(record: spb.WalRecord, n: int) -> int | np.ndarray:
    """The version of each of a logged add's or remove's `n` ids (0: logged by an older version)."""
    if record.versions:
        versions = np.frombuffer(record.versions, dtype="<i8").astype(np.int64)
        if versions.size != n:
            raise ValueError(f"log record lsn {record.lsn} has {versions.size} versions for {n} ids")
        return versions
    return int(record.version)


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
        ShardIndex.filter_exact_ratio = settings.filter_exact_ratio
        # Compressed kinds' float vectors: unlinked memory-mapped files on the data dir's disk.
        ShardIndex.scratch_dir = data_dir / "scratch" if data_dir else None
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
        dropped = self.data_dir / "dropped.json"
        if dropped.exists():
            try:
                self.dropped = {str(k): int(v) for k, v in json.loads(dropped.read_text()).items()}
            except (ValueError, AttributeError) as err:
                raise SnapshotCorrupt(
                    f"{dropped} is damaged ({err}): refusing to start, since it decides which collections a peer "
                    "may bring back. Restore it from a backup, or delete this replica's data dir so it catches up "
                    "from its peers."
                ) from None
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
            len(self.collections),
            sum(p.count for p in self.collections.values()),
            replayed,
            time.perf_counter() - started,
        )

    def catch_up(self) -> None:
        """Before serving, merge what the first reachable peer replica of this group holds.

        Each collection of the peer is merged into this replica's (every entry newer there is
        applied here), or copied whole when missing here or configured otherwise; a collection the
        peer does not hold is dropped (it was dropped while this replica was down). The peer gets
        what only this replica has from its coordinators' anti-entropy.
        """
        for peer in self.peers:
            channel = shard_channel(peer, self.settings, self.settings.grpc_options(), aio=False)
            stub = shard_pb2_grpc.ShardStub(channel)
            try:
                answer = stub.ListCollections(pb.ListCollectionsRequest(), timeout=30)
                theirs = {st.config.name: st for st in answer.collections}
                for name in sorted(set(theirs) | set(self.collections)):
                    self._sync_from(
                        stub, peer, name, self.collections.get(name), theirs.get(name), answer.dropped, "catch-up"
                    )
                log.info("caught up with peer %s (%d collections)", peer, len(theirs))
                return
            except grpc.RpcError as err:
                log.warning("cannot catch up from peer %s (%s): trying the next", peer, err.code().name)
            finally:
                channel.close()
        if self.peers:
            log.warning("no peer reachable (%s): serving the local state", ", ".join(self.peers))

    def peer_sync(self) -> int:
        """One round of anti-entropy with the peer replicas, run by the replica itself (so it does
        not depend on a coordinator that saw a miss staying alive): a collection whose count, digest
        or training differs from a peer's, the same way as at the last round (neither side changed in
        between, so no write in flight explains it), is merged from that peer. Each replica pulls,
        so two replicas that each missed writes both end up with every write. Returns the merges run."""
        merged = 0
        seen: dict[tuple[str, str], tuple[Any, Any]] = {}
        for peer in self.peers:
            channel = shard_channel(peer, self.settings, self.settings.grpc_options(), aio=False)
            try:
                stub = shard_pb2_grpc.ShardStub(channel)
                try:
                    answer = stub.ListCollections(pb.ListCollectionsRequest(), timeout=10)
                except grpc.RpcError:
                    continue  # down: nothing to compare now
                theirs = {st.config.name: st for st in answer.collections}
                for name in sorted(set(theirs) | set(self.collections)):
                    part, state = self.collections.get(name), theirs.get(name)
                    key = (name, peer)
                    if part is None or state is None or state.incarnation != part.incarnation:
                        # One replica missed a create or a drop (incarnations and drop versions decide
                        # which): once the difference has lasted a round, so no call in flight explains it.
                        look = ("catalog", state.incarnation if state else None, part.incarnation if part else None)
                        seen[key] = (look, None)
                        if self._sync_seen.get(key) == (look, None):
                            self._sync_from(stub, peer, name, part, state, answer.dropped, "peer sync")
                            merged += 1
                        continue
                    if part.spec != CollectionSpec.from_proto(state.config):
                        continue  # one incarnation, two configs: never made by vecshard; left to an operator
                    theirs_now = (state.count, state.digest, state.train_epoch)
                    mine = (part.count, part.digest, part.train_epoch)
                    if theirs_now == mine:
                        continue
                    seen[key] = (mine, theirs_now)
                    if self._sync_seen.get(key) != (mine, theirs_now):
                        continue  # new, or still changing: look again next round
                    applied = self._merge_from(stub, part, state)
                    merged += 1
                    log.warning(
                        "peer sync: %s differed from peer %s (count, digest, epoch: %s here, %s there); "
                        "merged %d entries newer there",
                        name,
                        peer,
                        mine,
                        theirs_now,
                        applied,
                    )
            except grpc.RpcError as err:
                log.warning("peer sync with %s failed: %s", peer, err.code().name)
            finally:
                channel.close()
        self._sync_seen = seen
        return merged

    def _sync_from(
        self,
        stub: shard_pb2_grpc.ShardStub,
        peer: str,
        name: str,
        mine: ShardIndex | None,
        state: spb.ShardCollectionState | None,
        peer_dropped: Mapping[str, int],
        why: str,
    ) -> None:
        """Bring this replica's `name` up to the peer's. Both hold one incarnation: merge. The peer's is
        newer, or this replica has none and did not drop it after the peer's was made: copy the peer's
        (this replica missed a drop and a create, or a create). The peer has none and dropped it after
        this one was made: drop it (this replica missed the drop). Otherwise keep it: the peer is the
        one that missed something, and its own sync repairs it."""
        if state is None:
            if mine is not None and name in peer_dropped and peer_dropped[name] >= mine.incarnation:
                self._drop(name, peer_dropped[name])
                log.info("%s: dropped %s (peer %s dropped it after this one was made)", why, name, peer)
            elif mine is not None:
                log.warning(
                    "%s: peer %s has no %s and did not drop it since this one was made: keeping it", why, peer, name
                )
            return
        if mine is None:
            if name in self.dropped and self.dropped[name] >= state.incarnation:
                log.warning("%s: %s was dropped here after peer %s's was made: not copying it", why, name, peer)
                return
        elif state.incarnation < mine.incarnation:
            log.warning(
                "%s: %s here is a newer incarnation (%d) than on peer %s (%d): keeping it",
                why,
                name,
                mine.incarnation,
                peer,
                state.incarnation,
            )
            return
        elif state.incarnation == mine.incarnation and mine.spec == CollectionSpec.from_proto(state.config):
            applied = self._merge_from(stub, mine, state)
            log.info("%s: %s merged from %s (%d entries newer there)", why, name, peer, applied)
            return
        self._copy_from(stub, name, state)

    def _copy_from(self, stub: shard_pb2_grpc.ShardStub, name: str, state: spb.ShardCollectionState) -> None:
        part = self._fetch(stub, name, state)
        part.incarnation = state.incarnation
        with self._catalog_lock:
            old = self.collections.get(name)
            if old is not None:  # writes still on their way to it are refused (NOT_FOUND), not lost
                old.mark_dropped()
            if self.wal is not None:  # a create record orders the copy after every older record of the name
                part.applied_lsn = self.wal.append(spb.WalRecord(create=state.config, version=state.incarnation))
                self.wal.sync(part.applied_lsn)
            self.collections[name] = part
            path = self._collection_dir(name)
            if path is not None:
                part.save(path, self._purge_before())
        log.info("catch-up: copied %s (%d vectors, trained=%s)", name, part.count, part.trained)

    def _pages(self, stub: shard_pb2_grpc.ShardStub, spec: CollectionSpec) -> Iterator[spb.ExportResponse]:
        """The peer's export of collection `spec.name`, page by page."""
        limit = max(1, (self.settings.max_message_bytes - 64 * 1024) // (4 * spec.dim + 16))
        after = -1
        while True:
            request = spb.ExportRequest(collection=spec.name, after_id=after, limit=limit, include_tombstones=True)
            page = stub.Export(request, timeout=60)
            ids, dead = wire.unpack_ids(page.ids), wire.unpack_ids(page.tombstone_ids)
            if not ids.size and not dead.size:
                return
            yield page
            after = int(max(ids[-1] if ids.size else -1, dead[-1] if dead.size else -1))

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

    def _fetch(self, stub: shard_pb2_grpc.ShardStub, name: str, state: spb.ShardCollectionState) -> ShardIndex:
        """A new partition holding what the peer behind `stub` holds of collection `name`."""
        spec = CollectionSpec.from_proto(state.config)
        part = ShardIndex(spec, self.settings.max_vectors_per_shard, self.accelerator)
        desc = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name, include_centroids=True), timeout=60)
        if desc.trained:
            part.install_quantizer(
                wire.unpack_matrix(desc.centroids, "centroids"), None, desc.train_epoch, desc.train_id, desc.codec
            )
        for page in self._pages(stub, spec):
            ids, vectors, versions, dead, dead_versions = self._entries(page)
            if ids.size:
                part.add(ids, vectors, True, None, versions, page.payloads or None)
            if dead.size:
                part.remove(dead, None, dead_versions)
        part.writes = state.writes  # as many writes as the copy's source has applied
        self._adopt_indexes(part, state, logged=False)
        return part

    def _merge_from(self, stub: shard_pb2_grpc.ShardStub, part: ShardIndex, state: spb.ShardCollectionState) -> int:
        """Apply every entry of the peer's partition newer than this one's (logged like any write),
        after adopting the peer's training if it is newer. Returns how many entries were applied."""
        name = part.spec.name
        if state.trained and state.train_epoch > part.train_epoch:
            desc = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name, include_centroids=True), timeout=60)
            if desc.trained and desc.train_epoch > part.train_epoch:
                install = spb.InstallQuantizerRequest(
                    collection=name,
                    centroids=desc.centroids,
                    epoch=desc.train_epoch,
                    train_id=desc.train_id,
                    codec=desc.codec,
                )
                centroids = wire.unpack_matrix(desc.centroids, "centroids")
                self._logged(
                    part,
                    lambda: spb.WalRecord(install=install),
                    lambda journal: part.install_quantizer(
                        centroids, journal, desc.train_epoch, desc.train_id, desc.codec
                    ),
                )
        self._adopt_indexes(part, state, logged=True)
        before = part.writes
        for page in self._pages(stub, part.spec):
            self._apply_page(part, page)
        return part.writes - before

    def _adopt_indexes(self, part: ShardIndex, state: spb.ShardCollectionState, logged: bool) -> None:
        """Create the peer's payload indexes missing here (indexes only speed filters up)."""
        have = dict(part.payload_indexes)
        for index in state.payload_indexes:
            if index.field in have:
                continue
            request = pb.CreatePayloadIndexRequest(collection=part.spec.name, field=index.field, type=index.type)
            if logged:
                self._logged(
                    part,
                    lambda r=request: spb.WalRecord(create_index=r),  # type: ignore[misc]
                    lambda journal, r=request: part.create_payload_index(r.field, r.type, journal),  # type: ignore[misc]
                )
            else:
                part.create_payload_index(index.field, index.type)

    def _apply_page(self, part: ShardIndex, page: spb.ExportResponse) -> None:
        """Apply the entries of a peer's export page newer than this partition's, logged."""
        ids, vectors, versions, dead, dead_versions = self._entries(page)
        name = part.spec.name
        if ids.size:
            add = pb.AddRequest(
                collection=name, ids=page.ids, vectors=page.vectors, upsert=True, payloads=page.payloads
            )
            self._logged(
                part,
                lambda: spb.WalRecord(add=add, versions=page.versions),
                lambda journal: part.add(ids, vectors, True, journal, versions, page.payloads or None),
            )
        if dead.size:
            remove = pb.RemoveRequest(collection=name, ids=page.tombstone_ids)
            self._logged(
                part,
                lambda: spb.WalRecord(remove=remove, versions=page.tombstone_versions),
                lambda journal: part.remove(dead, journal, dead_versions),
            )

    def resync(self, name: str, peer: str) -> spb.ShardCollectionState:
        """Merge the peer replica's partition of `name` into this one while serving (see the Resync RPC)."""
        channel = shard_channel(peer, self.settings, self.settings.grpc_options(), aio=False)
        try:
            stub = shard_pb2_grpc.ShardStub(channel)
            try:
                state = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=60)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise Unavailable(f"cannot reach peer {peer} to resync {name!r}: {err.code().name}") from None
                state = None
            try:
                dropped = stub.ListCollections(pb.ListCollectionsRequest(), timeout=60).dropped
                self._sync_from(stub, peer, name, self.collections.get(name), state, dropped, "resync")
            except grpc.RpcError as err:  # the peer dropped it, restarted, ... meanwhile
                raise Unavailable(f"merging {name!r} from peer {peer} failed: {err.code().name}: retry") from None
            return self._state(self._get(name))
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
            part.incarnation = record.version
            self.collections[name] = part
            return 1
        if part is None:
            return 0  # the collection was dropped later on
        if op == "drop":
            self.dropped[name] = max(self.dropped.get(name, 0), record.version)
            del self.collections[name]
            path = self._collection_dir(name)
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
            return 1
        journal: Journal = lambda: record.lsn  # noqa: E731
        if op == "add":
            ids = wire.unpack_ids(record.add.ids)
            part.add(
                ids,
                wire.unpack_matrix(record.add.vectors),
                True,
                journal,
                record_versions(record, ids.size),
                record.add.payloads or None,
            )
        elif op == "remove":
            ids = wire.unpack_ids(record.remove.ids)
            part.remove(ids, journal, record_versions(record, ids.size), record.rollback)
        elif op == "set_payload":
            sp = record.set_payload
            ids = wire.unpack_ids(sp.ids)
            patch = payload_from_proto(sp.payload)
            part.set_payload(ids, None, sp.mode, patch, list(sp.keys), journal, record.version, [])
        elif op == "create_index":
            part.create_payload_index(record.create_index.field, record.create_index.type, journal)
        elif op == "drop_index":
            if record.drop_index.field in dict(part.payload_indexes):
                part.drop_payload_index(record.drop_index.field, journal)
        elif op == "install":
            install = record.install
            centroids = wire.unpack_matrix(install.centroids, "centroids")
            part.install_quantizer(centroids, journal, install.epoch, install.train_id, install.codec)
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
        fence: int | None = None,
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
        fence: the newest placement epoch the writer knows (a routed write): refused when this shard
            holds a newer placement's partition of the collection (see `_fenced`).
        """

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

    @staticmethod
    def _known_epoch(context: grpc.aio.ServicerContext | None) -> int:
        """The placement epoch a writer declares (-1: none declared, e.g. not a coordinator)."""
        known = header_int(context.invocation_metadata(), PLACEMENT_EPOCH_HEADER) if context is not None else None
        return -1 if known is None else known

    def _purge_before(self) -> int:
        """Versions of tombstones old enough to forget (settings.tombstone_ttl_s)."""
        return int((time.time() - self.settings.tombstone_ttl_s) * 1e6) << NODE_BITS

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
                        part.save(path, self._purge_before())
                        saved += 1
            removed = self.wal.delete_through(covered)
            self._last_checkpoint = time.monotonic()
            CHECKPOINT_SECONDS.observe(time.perf_counter() - started)
            if saved or final:
                log.info(
                    "checkpoint: %d collections saved, %d log segments removed in %.2fs",
                    saved,
                    removed,
                    time.perf_counter() - started,
                )

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
            payload_indexes=[ppb.PayloadIndex(field=f, type=t) for f, t in part.payload_indexes],  # type: ignore[arg-type]
        )
        centroids = part.centroids
        if include_centroids and centroids is not None:
            state.centroids.CopyFrom(wire.pack_matrix(centroids))
            state.codec = part.codec
        return state

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
            part = ShardIndex(spec, self.settings.max_vectors_per_shard, self.accelerator)
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

    # -- RPCs -----------------------------------------------------------------------------------

    async def CreateCollection(
        self, request: types_pb2.CollectionConfig, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        return await self._run(self._writes, self._create, request, self._version(context))

    async def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropCollectionResponse:
        await self._run(self._writes, self._drop, request.name, self._version(context))
        return pb.DropCollectionResponse()

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardListResponse:
        return spb.ShardListResponse(
            collections=[self._state(p) for p in list(self.collections.values())], dropped=dict(self.dropped)
        )

    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        return self._state(self._get(request.name), request.include_centroids)

    async def Add(self, request: pb.AddRequest, context: grpc.aio.ServicerContext) -> pb.AddResponse:
        part = self._get(request.collection)
        ids = wire.unpack_ids(request.ids)
        vectors = wire.unpack_matrix(request.vectors)
        check_add(part.spec, ids, vectors)
        version = self._version(context)
        if version in part.aborted:
            raise DeadlineExceeded("this Add was rolled back by its coordinator before it arrived: nothing written")
        added, replaced = await self._run(
            self._writes,
            functools.partial(self._logged, fence=self._known_epoch(context)),
            part,
            lambda: spb.WalRecord(add=request, version=version),
            lambda journal: part.add(ids, vectors, request.upsert, journal, version, request.payloads or None),
            deadline_of(context),
            None,
            False,
            version,
        )
        return pb.AddResponse(added=added, replaced=replaced, count=part.count)

    async def Remove(self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext) -> pb.RemoveResponse:
        part = self._get(request.collection)
        version = self._version(context)
        if request.HasField("filter"):
            resolved: list[np.ndarray] = []
            removed = await self._run(
                self._writes,
                functools.partial(self._logged, fence=self._known_epoch(context)),
                part,
                lambda: spb.WalRecord(
                    remove=pb.RemoveRequest(collection=part.spec.name, ids=wire.pack_ids(resolved[-1])), version=version
                ),
                lambda journal: part.remove_matching(request.filter, journal, version, resolved),
                None,
                None,
                True,
            )
            return pb.RemoveResponse(removed=removed)
        ids = wire.unpack_ids(request.ids)
        removed = await self._run(
            self._writes,
            functools.partial(self._logged, fence=self._known_epoch(context)),
            part,
            lambda: spb.WalRecord(remove=request, version=version),
            lambda journal: part.remove(ids, journal, version),
        )
        return pb.RemoveResponse(removed=removed)

    def _version(self, context: grpc.aio.ServicerContext | None) -> int:
        """The version of a write: its coordinator's, or one of this shard's clock."""
        version = write_token_from(context.invocation_metadata()) if context is not None else 0
        if not version or version > MAX_VERSION:
            return self.clock.next()
        self.clock.observe(version)
        return version

    async def RollbackAdd(
        self, request: spb.RollbackAddRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        if not request.write_token:
            raise InvalidArgument("write_token is 0: send the token the Add was tagged with")
        part = self._get(request.collection)
        if request.write_token > MAX_VERSION:
            raise InvalidArgument(f"write_token {request.write_token} is above 2**63 - 1: no Add has such a version")
        ids = wire.unpack_ids(request.ids)
        token = request.write_token
        part.forget_add(token, MAX_ABORTED)  # the Add, if it arrives after this, is refused
        removed = await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(
                remove=pb.RemoveRequest(collection=part.spec.name, ids=request.ids), version=token, rollback=True
            ),
            lambda journal: part.remove(ids, journal, token, rollback=True),
        )
        if removed:
            log.info("rolled back %d ids of a failed Add in %s", removed, part.spec.name)
        return pb.RemoveResponse(removed=removed)

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        part = self._get(request.collection)
        ids = wire.unpack_ids(request.ids)
        dim = part.spec.dim
        check_reply_rows(self.settings, ids.size, 4 * dim + 1, dim, "get at most {limit} ids per call")
        with_payload = request.with_payload.enable
        vectors, found, payloads = await self._run(self._reads, part.get, ids, with_payload)
        return pb.GetResponse(
            vectors=wire.pack_matrix(vectors),
            found=found.astype(np.uint8).tobytes(),
            payloads=[project(p, request.with_payload.fields) for p in payloads],
        )

    async def Resync(self, request: spb.ResyncRequest, context: grpc.aio.ServicerContext) -> spb.ShardCollectionState:
        check_partition_name(request.collection)
        check_peer(request.peer)
        return await self._run(self._writes, self.resync, request.collection, request.peer)

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        expected = header_int(context.invocation_metadata(), TRAIN_EPOCH_HEADER) if context is not None else None
        return (await self.search(ShardQuery.from_proto(request), expected)).to_proto()

    async def search(self, query: ShardQuery, train_epoch: int | None = None) -> ShardHits:
        """This shard's best k (k * refine with refine) for each query, as numpy arrays.

        train_epoch: the training the caller expects (None: any); a shard at another one refuses
        (ABORTED), so one search never merges results of two quantizers.
        """
        part = self._get(query.collection)
        if train_epoch is not None and train_epoch != part.train_epoch:
            raise Aborted(
                f"collection {part.spec.name!r} is at training epoch {part.train_epoch} on this shard, the coordinator "
                f"expected {train_epoch}: a training is being switched; retry"
            )
        queries, refine = query.queries, query.refine
        if refine > 1 and not part.spec.quantized:
            raise InvalidArgument(
                f"refine_factor applies to compressed IVF kinds; {part.spec.name!r} is "
                f"{part.spec.index_type.name}: leave it 0"
            )
        k = query.k * refine  # refine: the candidates, each with its exact distance too
        check_search(self.settings, part.spec, queries, k)  # before batching: one bad query failed all
        if query.filter is not None or query.payloads_wanted:
            return await self._run(self._reads, self._search_filtered, part, query, k)
        D, I = await self._search_plain(part, queries, k, query.nprobe)
        exact = None
        if refine > 1:
            exact = part.refined(queries, I, wait=False) if I.size <= INLINE_REFINE else None  # small: here
            if exact is None:
                exact = await self._run(self._reads, part.refined, queries, I)
            assert exact is not None  # (waiting for the lock, refined always answers)
            I = _without_removed(I, exact, part)
        return ShardHits(D.astype(wire.F32, copy=False), I.astype(wire.I64, copy=False), exact)

    async def _search_plain(
        self, part: ShardIndex, queries: np.ndarray, k: int, nprobe: int
    ) -> tuple[np.ndarray, np.ndarray]:
        batcher = self._batcher(part) if self.settings.search_batching else None
        if (batcher is None or not batcher.busy) and (
            part.search_work(queries.shape[0], nprobe) <= self.settings.inline_search_work
        ):  # tiny, and no other search running: here, not via a thread
            now = part.search_now(queries, k, nprobe)
            if now is not None:
                return now
        if batcher is not None:
            return await batcher.search(queries, k, nprobe)
        return await self._run(self._reads, part.search, queries, k, nprobe)

    @staticmethod
    def _search_filtered(part: ShardIndex, query: ShardQuery, k: int) -> ShardHits:
        queries = query.queries
        plans = []
        if query.filter is not None:
            D, I, plan, payloads = part.search_filtered(queries, k, query.nprobe, query.filter, query.payloads_wanted)
            plans.append(plan)
        else:
            D, I, payloads = part.search_with_payloads(queries, k, query.nprobe)
        selector = query.with_payload
        wanted = [project(p, selector.fields) for p in payloads] if selector is not None and selector.enable else []
        exact = None
        if k > query.k:
            exact = part.refined(queries, I)
            assert exact is not None
            I = _without_removed(I, exact, part)
        return ShardHits(D.astype(wire.F32, copy=False), I.astype(wire.I64, copy=False), exact, wanted, plans)

    def _fitting(self, payloads: list[ppb.Payload], row_bytes: int) -> int:
        """How many leading rows (each row_bytes plus its payload) fit in one reply: all of them
        without payloads (the rows were already checked), else at least 1."""
        sizes = np.fromiter((p.ByteSize() for p in payloads), dtype=np.int64, count=len(payloads))
        if not sizes.any():
            return len(payloads)
        budget = rows_that_fit(self.settings, row_bytes) * row_bytes
        return max(1, int(np.searchsorted(np.cumsum(sizes + row_bytes + 8), budget, side="right")))

    async def Count(self, request: pb.CountRequest, context: grpc.aio.ServicerContext) -> pb.CountResponse:
        part = self._get(request.collection)
        f = request.filter if request.HasField("filter") else None
        count, unindexed = await self._run(self._reads, part.count_matching, f)
        plans = [ppb.FilterPlan(plan="count", matches=count, unindexed_fields=unindexed)] if f is not None else []
        return pb.CountResponse(count=count, plans=plans)

    async def Scroll(self, request: pb.ScrollRequest, context: grpc.aio.ServicerContext) -> pb.ScrollResponse:
        part = self._get(request.collection)
        f = request.filter if request.HasField("filter") else None
        limit = request.limit or 100
        dim = part.spec.dim
        row = 16 + (4 * dim if request.with_vectors else 0)
        check_reply_rows(self.settings, limit, row, dim, "scroll with a limit of at most {limit}")
        ids, payloads, vectors, more = await self._run(
            self._reads, part.scroll, f, request.start_id, limit, request.with_payload.enable, request.with_vectors
        )
        encoded = [project(p, request.with_payload.fields) for p in payloads]
        keep = self._fitting(encoded, row)
        if encoded and keep < ids.size:
            ids, encoded, more = ids[:keep], encoded[:keep], True
            vectors = vectors[:keep] if vectors is not None else None
        start, done = scroll_next(ids, request.start_id, more)
        out = pb.ScrollResponse(ids=wire.pack_ids(ids), payloads=encoded, next_start_id=start, done=done)
        if vectors is not None:
            out.vectors.CopyFrom(wire.pack_matrix(vectors))
        return out

    async def SetPayload(
        self, request: pb.SetPayloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPayloadResponse:
        part = self._get(request.collection)
        version = self._version(context)
        ids = wire.unpack_ids(request.ids) if not request.HasField("filter") else None
        f = request.filter if request.HasField("filter") else None
        patch = payload_from_proto(request.payload)
        keys = list(request.keys)
        resolved: list[np.ndarray] = []

        def record() -> spb.WalRecord:
            logged = pb.SetPayloadRequest(
                collection=part.spec.name,
                ids=wire.pack_ids(resolved[-1]),
                payload=request.payload,
                mode=request.mode,
                keys=keys,
            )
            return spb.WalRecord(set_payload=logged, version=version)

        updated = await self._run(
            self._writes,
            functools.partial(self._logged, fence=self._known_epoch(context)),
            part,
            record,
            lambda journal: part.set_payload(ids, f, request.mode, patch, keys, journal, version, resolved),
            None,
            None,
            True,
        )
        return pb.SetPayloadResponse(updated=updated)

    async def CreatePayloadIndex(
        self, request: pb.CreatePayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(create_index=request),
            lambda journal: part.create_payload_index(request.field, request.type, journal),
        )
        return self._state(part)

    async def DropPayloadIndex(
        self, request: pb.DropPayloadIndexRequest, context: grpc.aio.ServicerContext
    ) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        await self._run(
            self._writes,
            self._logged,
            part,
            lambda: spb.WalRecord(drop_index=request),
            lambda journal: part.drop_payload_index(request.field, journal),
        )
        return self._state(part)

    async def Sample(self, request: pb.SampleRequest, context: grpc.aio.ServicerContext) -> spb.ExportResponse:
        part = self._get(request.collection)
        dim = part.spec.dim
        check_reply_rows(
            self.settings,
            min(request.max_points, part.count),
            4 * dim + 8,
            dim,
            "ask for at most {limit} points per call",
        )
        ids, x = await self._run(self._reads, part.sample, request.max_points, request.seed)
        return spb.ExportResponse(ids=wire.pack_ids(ids), vectors=wire.pack_matrix(x))

    async def Export(self, request: spb.ExportRequest, context: grpc.aio.ServicerContext) -> spb.ExportResponse:
        part = self._get(request.collection)
        fit = rows_that_fit(self.settings, 4 * part.spec.dim + 16)
        limit = max(1, min(request.limit, fit + 1))  # one more than fits tells a page that would not
        keep = None
        scanned: list[tuple[int, bool]] = []
        if request.HasField("owned_by"):
            placement = Placement.from_proto(request.owned_by, 1)
            if request.owner >= placement.shards:
                raise InvalidArgument(f"owner {request.owner} is not a group of a placement over {placement.shards}")
            owner = int(request.owner)

            def keep(ids: np.ndarray) -> np.ndarray:
                mine: np.ndarray = placement.owner(ids) == owner
                return mine

        if request.ids:  # exactly these ids' entries (a reshard re-copying points a write changed)
            wanted = wire.unpack_ids(request.ids)
            check_reply_rows(
                self.settings, wanted.size, 4 * part.spec.dim + 16, part.spec.dim, "export at most {limit} ids per call"
            )
            ids, vectors, versions, dead, dead_versions, payloads = await self._run(
                self._reads, part.export_ids, wanted
            )
        else:
            ids, vectors, versions, dead, dead_versions, payloads = await self._run(
                self._reads, part.export_page, request.after_id, limit, request.include_tombstones, keep, scanned
            )
        check_reply_rows(
            self.settings,
            ids.size + dead.size,
            4 * part.spec.dim + 16,
            part.spec.dim,
            "send a limit of at most {limit} per page",
        )
        encoded = [project(p, ()) for p in payloads]
        keep_n = self._fitting(encoded, 4 * part.spec.dim + 16)
        keep_all = keep_n == ids.size
        if not keep_all:  # the page ends before the first payload that does not fit
            last = ids[keep_n - 1]
            ids, vectors, versions, encoded = ids[:keep_n], vectors[:keep_n], versions[:keep_n], encoded[:keep_n]
            dead_keep = dead <= last
            dead, dead_versions = dead[dead_keep], dead_versions[dead_keep]
        return spb.ExportResponse(
            ids=wire.pack_ids(ids),
            vectors=wire.pack_matrix(vectors),
            versions=wire.pack_ids(versions),
            tombstone_ids=wire.pack_ids(dead),
            tombstone_versions=wire.pack_ids(dead_versions),
            payloads=encoded,
            scanned_to=scanned[0][0]
            if scanned and keep_all
            else int(max(ids[-1] if ids.size else -1, dead[-1] if dead.size else -1)),
            complete=bool(scanned and scanned[0][1] and keep_all),
        )

    async def Import(self, request: spb.ImportRequest, context: grpc.aio.ServicerContext) -> spb.ShardCollectionState:
        part = self._get(request.collection)
        try:
            ids, vectors, versions, dead, dead_versions = self._entries(request.page)
        except Unavailable:
            raise InvalidArgument(
                "the page is malformed: ids, vectors, versions, payloads and tombstones must line up, as an "
                "Export page's do"
            ) from None
        if ids.size:
            check_add(part.spec, ids, vectors)
        if dead.size:
            wire.check_ids(dead)
        for v in (versions, dead_versions):
            if v.size and (v.min() <= 0 or v.max() > MAX_VERSION):
                raise InvalidArgument(f"versions must be between 1 and {MAX_VERSION}: send an Export page's")
        await self._run(self._writes, self._apply_page, part, request.page)
        return self._state(part)

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
                self._writes,
                part.prepare_quantizer,
                centroids,
                request.epoch,
                request.train_id,
                request.decide,
                request.codec,
            )
            return self._state(part)
        epoch = request.epoch or part.train_epoch + 1
        if mode == spb.INSTALL_MODE_ACTIVATE:

            def record() -> spb.WalRecord:  # under the write lock: the prepared centroids go to the log
                centroids = part.prepared_centroids(epoch, request.train_id)
                return spb.WalRecord(
                    install=spb.InstallQuantizerRequest(
                        collection=part.spec.name,
                        centroids=wire.pack_matrix(centroids),
                        epoch=epoch,
                        train_id=request.train_id,
                        codec=part.prepared_codec(epoch, request.train_id),
                    )
                )

            await self._run(
                self._writes,
                self._logged,
                part,
                record,
                lambda journal: part.activate_quantizer(epoch, request.train_id, journal),
                None,
                None,
                True,
            )
        else:
            centroids = wire.unpack_matrix(request.centroids, "centroids")
            check_centroids(part.spec, centroids)
            logged = spb.InstallQuantizerRequest(
                collection=part.spec.name,
                centroids=request.centroids,
                epoch=epoch,
                train_id=request.train_id,
                codec=request.codec,
            )
            await self._run(
                self._writes,
                self._logged,
                part,
                lambda: spb.WalRecord(install=logged),
                lambda journal: part.install_quantizer(centroids, journal, epoch, request.train_id, request.codec),
            )
        log.info(
            "collection %s: installed training epoch %d (%d centroids), %d vectors re-indexed",
            part.spec.name,
            part.train_epoch,
            part.spec.nlist,
            part.count,
        )
        self._last_checkpoint = 0.0  # snapshot soon: replaying an install means re-indexing everything
        return self._state(part)


INLINE_REFINE = 4096  # refine candidates re-scored on the event loop (a thread hand-off costs more)


def _without_removed(I: np.ndarray, exact: np.ndarray, part: ShardIndex) -> np.ndarray:
    """The candidates with those removed between the search and their re-scoring (the two take the
    read lock apart: refined gives them the padding distance) dropped, as -1."""
    return np.where(exact == pad_distance(part.spec.larger_is_better), -1, I)


async def maintain(services: Sequence[ShardService]) -> None:
    """Forever: snapshot each shard service whose checkpoint is due (checked every second), and give
    freed heap pages back every TRIM_EVERY_S seconds. One loop for a shard process, or for all the
    local shards of a coordinator."""
    ticks = 0
    while True:
        await asyncio.sleep(1.0)
        for service in services:
            if service.checkpoint_due():
                await asyncio.to_thread(service.checkpoint)
        ticks += 1
        if ticks % TRIM_EVERY_S == 0:
            await asyncio.to_thread(release_free_memory)


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
    loops: list[asyncio.Task[None]] = []

    async def peer_sync_loop() -> None:
        while True:
            await asyncio.sleep(settings.peer_sync_s)
            try:
                await asyncio.to_thread(service.peer_sync)
            except Exception:  # a peer down, a collection dropped meanwhile: the next round retries
                log.warning("peer sync round failed", exc_info=True)

    async def ready() -> None:
        log.info(
            "%s listening on %s:%d (data dir %s, trained IVF searches on %s); recovering",
            name,
            host,
            bound,
            data_dir or "none: in memory",
            service.accelerator.name if service.accelerator else "cpu",
        )
        await asyncio.to_thread(service.recover)
        loops.append(asyncio.create_task(maintain([service])))
        if service.peers and settings.peer_sync_s > 0:
            loops.append(asyncio.create_task(peer_sync_loop()))

    async def on_stop() -> None:
        for loop in loops:
            loop.cancel()
        await asyncio.to_thread(service.close)

    await server.run(ready=ready, on_stop=on_stop, port_file=port_file, exit_with_parent=exit_with_parent)
