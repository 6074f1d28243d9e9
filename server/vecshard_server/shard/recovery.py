"""Durability over time: recovering a data dir at start (snapshots, then the log records they do not
cover), checkpoints (snapshot the changed partitions, drop the log segments they cover), and the
final snapshot at stop."""

from __future__ import annotations

import json
import logging
import shutil
import time
from typing import TypeVar

from vecshard import wire
from vecshard.payload import payload_from_proto
from vecshard.v1 import shard_pb2 as spb
from vecshard_server.common.observability import CHECKPOINT_SECONDS
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.add_inputs import add_inputs
from vecshard_server.shard.checks import (
    record_versions,
)
from vecshard_server.shard.core import ShardCore
from vecshard_server.shard.engine import Journal, ShardIndex, SnapshotCorrupt
from vecshard_server.shard.wal import Wal, scan, segments

log = logging.getLogger(__name__)
T = TypeVar("T")


class Recovery(ShardCore):
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
                part = ShardIndex.load(d, self.settings.max_vectors_per_shard, self.accelerator, self.index_settings)
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

    def _replay(self, record: spb.WalRecord) -> int:
        op = record.WhichOneof("op")
        name = record.create.name if op == "create" else record.drop if op == "drop" else getattr(record, op).collection
        part = self.collections.get(name)
        if part is not None and record.lsn <= part.applied_lsn:
            return 0  # already in the snapshot
        if op == "create":
            spec = CollectionSpec.from_proto(record.create)
            part = ShardIndex(spec, self.settings.max_vectors_per_shard, self.accelerator, self.index_settings)
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
            ids, vectors, payloads, rules = add_inputs(part.spec, record.add, live=False)
            part.add(ids, vectors, True, journal, record_versions(record, ids.size), payloads, rules)
        elif op == "remove":
            ids = wire.unpack_ids(record.remove.ids)
            keys = list(record.remove.string_ids) or None
            part.remove(ids, journal, record_versions(record, ids.size), record.rollback, keys=keys)
        elif op == "update_vectors":
            uv = record.update_vectors
            ids = wire.unpack_ids(uv.ids)
            keys = list(uv.string_ids) or None
            part.update_vectors(ids, wire.unpack_matrix(uv.vectors), keys, journal, record.version)
        elif op == "set_payload":
            sp = record.set_payload
            ids = wire.unpack_ids(sp.ids)
            patch = payload_from_proto(sp.payload)
            part.set_payload(ids, None, sp.mode, patch, list(sp.keys), journal, record.version, [])
        elif op == "create_index":
            ci = record.create_index
            part.create_payload_index(ci.field, ci.type, journal, ci.text if ci.HasField("text") else None)
        elif op == "drop_index":
            if record.drop_index.field in dict(part.payload_indexes):
                part.drop_payload_index(record.drop_index.field, journal)
        elif op == "install":
            install = record.install
            centroids = wire.unpack_matrix(install.centroids, "centroids")
            part.install_quantizer(centroids, journal, install.epoch, install.train_id, install.codec)
        part.applied_lsn = record.lsn
        return 1

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
