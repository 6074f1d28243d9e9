"""The trainings of a partition's shared quantizer: the active one, and the one prepared beside it.

The coordinator trains once for all shards; each shard builds an IVF index over the new centroids
(and codec) beside the serving one (`prepare`), while adds and removes keep going to the serving
index: they are recorded and replayed on the new index, after it was built and again at activation,
so it misses nothing. Activation (`engine.ShardIndex.activate_quantizer`) swaps it in.

A part of `engine.ShardIndex` by composition: it owns the training epochs, the prepared index and
the writes to replay; the partition's lock and its export are handed to `prepare`, which takes the
lock around its short steps (the index is built with no lock held).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard.errors import FailedPrecondition, InvalidArgument
from vecshard_server.common.spec import CollectionSpec
from vecshard_server.shard.kinds import new_ivf, remove_from
from vecshard_server.shard.locks import RWLock
from vecshard_server.shard.storage import Storage

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclasses.dataclass
class Prepared:
    """A training's index, built and kept up to date beside the serving one until activation."""

    epoch: int
    train_id: int
    centroids: F32
    index: Any
    codec: bytes = b""


class Trainings:
    """The active training (epoch, id) of one partition, the prepared one, and the writes to replay."""

    def __init__(self, spec: CollectionSpec) -> None:
        self.spec = spec
        self.epoch = 0  # the active training of the shared quantizer (0: untrained)
        self.train_id = 0
        self.prepared: Prepared | None = None
        # While a quantizer is being installed: the writes to replay on the new index.
        self.pending: list[tuple[str, I64, F32 | None]] | None = None
        self._install_lock = threading.Lock()

    @property
    def prepared_epoch(self) -> int:
        return self.prepared.epoch if self.prepared is not None else 0

    def record(self, op: str, ids: I64, vectors: F32 | None) -> None:
        """A write ("add" with its vectors, or "remove") applied to the serving index; the caller
        holds the write lock."""
        if self.pending is not None:
            self.pending.append((op, ids, vectors))

    def replay(self, new: Any) -> None:
        """Apply the writes recorded since the export to `new`; the caller holds the write lock."""
        for op, op_ids, op_vecs in self.pending or []:
            remove_from(new, op_ids)
            if op == "add":
                new.add_with_ids(op_vecs, op_ids)
        self.pending = []

    def is_active(self, epoch: int, train_id: int) -> bool:
        return (epoch, train_id) == (self.epoch, self.train_id)

    def centroids(self, epoch: int, train_id: int, active: F32 | None) -> F32:
        """The centroids of the prepared training (epoch, train_id), or `active` when it is the active
        one; FailedPrecondition if neither."""
        p = self.prepared
        if p is None or (p.epoch, p.train_id) != (epoch, train_id):
            if self.is_active(epoch, train_id) and active is not None:
                return active
            raise FailedPrecondition(
                f"collection {self.spec.name!r} has no training prepared for epoch {epoch} here (it was "
                "superseded, or this shard restarted since): install it again"
            )
        return p.centroids

    def prepare(
        self,
        lock: RWLock,
        export: Callable[[], tuple[I64, F32]],
        centroids: F32,
        epoch: int,
        train_id: int,
        decide: bool,
        codec: bytes,
    ) -> None:
        """Build the index of training (epoch, train_id) from the partition's `export` (read under
        `lock`), replaying the writes made meanwhile; see ShardIndex.prepare_quantizer."""
        if not self.spec.is_ivf:
            raise FailedPrecondition(f"collection {self.spec.name!r} is FLAT: it has no quantizer to install")
        if centroids.shape != (self.spec.nlist, self.spec.dim):
            raise InvalidArgument(
                f"centroids must be nlist x dim = {self.spec.nlist} x {self.spec.dim}, got {centroids.shape}"
            )
        new_ivf(self.spec, centroids, codec)  # check the codec before anything changes
        if not self._install_lock.acquire(blocking=False):
            raise FailedPrecondition(f"a quantizer install is already running for {self.spec.name!r}: retry later")
        try:
            with lock.write():
                if not self._begin(epoch, train_id, decide):
                    return  # already active or prepared: a retried request
                ids, vecs = export()
                self.pending = []
                self.prepared = None
            try:
                new = new_ivf(self.spec, centroids, codec)
                if ids.size:
                    new.add_with_ids(vecs, ids)
                with lock.write():
                    self.replay(new)  # (and keep recording until activation)
                    self.prepared = Prepared(epoch, train_id, np.array(centroids, dtype=np.float32), new, codec)
            except BaseException:
                self.pending = None
                raise
        finally:
            self._install_lock.release()

    def _begin(self, epoch: int, train_id: int, decide: bool) -> bool:
        """Whether (epoch, train_id) is to be prepared: False when it is already active or prepared;
        FailedPrecondition when it is superseded (or, with decide, contested). Under the write lock."""
        p = self.prepared
        if self.is_active(epoch, train_id) or (p is not None and (p.epoch, p.train_id) == (epoch, train_id)):
            return False
        if epoch <= self.epoch:
            raise FailedPrecondition(
                f"collection {self.spec.name!r} is already trained at epoch {self.epoch}: the "
                f"training of epoch {epoch} was superseded"
            )
        if p is not None and (p.epoch > epoch or (decide and p.epoch == epoch)):
            raise FailedPrecondition(
                f"another training of collection {self.spec.name!r} (epoch {p.epoch}) is being installed"
            )
        return True

    def codec(self, epoch: int, train_id: int, active_centroids: F32 | None, active_codec: bytes) -> bytes:
        """The codec of the prepared training (epoch, train_id), or `active_codec` when it is the
        active one; FailedPrecondition if neither."""
        self.centroids(epoch, train_id, active_centroids)  # raises unless it is prepared or active
        p = self.prepared
        return p.codec if p is not None and (p.epoch, p.train_id) == (epoch, train_id) else active_codec

    def activate(self, epoch: int, train_id: int, storage: Storage, log: Callable[[], None]) -> None:
        """Serve the prepared index of (epoch, train_id) from `storage`, after `log` (the journal) and
        a replay of the writes made since it was prepared; a no-op if already active, FailedPrecondition
        unless prepared. The caller holds the write lock."""
        if self.is_active(epoch, train_id) and storage.centroids is not None:
            return
        self.centroids(epoch, train_id, storage.centroids)  # raises unless exactly this training is prepared
        p = self.prepared
        assert p is not None
        log()
        self.replay(p.index)
        storage.replace(p.index, p.centroids, p.codec)
        self.epoch, self.train_id = epoch, train_id
        self.pending = None
        self.prepared = None
