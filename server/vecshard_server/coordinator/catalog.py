"""The coordinator's catalog: which collections exist, their specs, and per-shard counts.

It keeps no state of its own: everything here is rebuilt from the shards' ListCollections at start
and whenever a request names a collection the catalog has not seen (created by another coordinator).

Refreshes, creates and drops hold `lock` from before they ask the shards until they have changed
the catalog, so they happen one after the other: a refresh that listed the shards before a create
(or drop) reached them can no longer finish after it and undo it (an acknowledged collection used
to be NOT_FOUND here for up to 0.5 s). A name this coordinator does not know triggers a refresh
unless one that started after the miss was noticed has finished since: concurrent misses share one
ListCollections fan-out, and a collection created through another coordinator is found at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vecshard.errors import FailedPrecondition, NotFound
from vecshard.v1 import payload_pb2 as ppb
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.placement import JUMP, Placement, parse_physical, physical_name
from vecshard_server.common.spec import CollectionSpec, check_name
from vecshard_server.coordinator.fanout import ShardSet, ShardView
from vecshard_server.coordinator.shard_api import DESCRIBE_COLLECTION, LIST_COLLECTIONS


@dataclass
class Collection:
    """What the coordinator remembers of a collection (all of it recoverable from the shards).

    `spec` is the partition's config at the current placement (its name is the partition's,
    `name@epoch` after a reshard: common/placement.py); `name` is the collection's public name.
    While a reshard runs, `next` is the placement being filled: writes go to both (`writers`)."""

    spec: CollectionSpec
    shard_counts: list[int]
    shard_trained: list[bool]
    training: bool = False
    train_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    auto_train: asyncio.Task[None] | None = None
    # Each shard's active and prepared training epoch (see Trainer.install).
    shard_epochs: list[int] = field(default_factory=list)
    shard_prepared: list[int] = field(default_factory=list)
    heal_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    epochs_stale: bool = False  # a shard refused the epoch we knew: ask them again before searching
    # Set when a shard holds the collection with another config than `spec` (see Catalog._agree).
    conflict: str = ""
    # Each shard's payload indexes, (field, PayloadIndexType), and its TEXT indexes as it described
    # them (analyzer, BM25 parameters and counts), by field.
    shard_indexes: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    shard_text: dict[int, dict[str, ppb.PayloadIndex]] = field(default_factory=dict)
    name: str = ""
    placement: Placement = field(default_factory=Placement)
    shards: ShardView | None = None
    # A reshard in progress: the placement being filled, its partition's spec and groups.
    next: Placement | None = None
    next_spec: CollectionSpec | None = None
    next_shards: ShardView | None = None
    # "": none; "preparing" (partitions being created), "copying", "aborting" (partitions of `next`
    # being dropped; `next` is None then, writes still carry its epoch).
    reshard_phase: str = ""
    # Partitions an interrupted cutover left behind: (name, group) of older placements, and of the
    # current one's markers on groups it does not use. Served by nothing; a reshard run drops them.
    leftovers: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.shard_counts)
        self.shard_epochs = self.shard_epochs or [0] * n
        self.shard_prepared = self.shard_prepared or [0] * n
        self.name = self.name or parse_physical(self.spec.name)[0]

    @property
    def view(self) -> ShardView:
        assert self.shards is not None
        return self.shards

    @property
    def writers(self) -> list[tuple[ShardView, Placement, CollectionSpec]]:
        """The placements every write goes to: the current one, then the one a reshard fills."""
        out = [(self.view, self.placement, self.spec)]
        if self.next is not None and self.next_shards is not None and self.next_spec is not None:
            out.append((self.next_shards, self.next, self.next_spec))
        return out

    @property
    def epoch(self) -> int | None:
        """The training epoch every shard searches with; None while they differ."""
        return self.shard_epochs[0] if not self.epochs_stale and len(set(self.shard_epochs)) == 1 else None

    def take(self, i: int, state: spb.ShardCollectionState) -> None:
        """Shard i's fresh state of this collection."""
        self.shard_counts[i] = state.count
        self.shard_trained[i] = state.trained
        self.shard_epochs[i] = state.train_epoch
        self.shard_prepared[i] = state.prepared_epoch
        self.shard_indexes[i] = sorted((x.field, int(x.type)) for x in state.payload_indexes)
        self.shard_text[i] = {x.field: x for x in state.payload_indexes if x.type == ppb.PAYLOAD_INDEX_TYPE_TEXT}

    @property
    def count(self) -> int:
        return sum(self.shard_counts)

    @property
    def trained(self) -> bool:
        return all(self.shard_trained)


@dataclass
class _Partitions:
    """What the shards' lists say of one collection: per placement epoch, the groups holding its
    partition (with their states) and the groups that dropped it after it was made."""

    present: dict[int, dict[int, spb.ShardCollectionState]] = field(default_factory=dict)
    dropped: dict[int, set[int]] = field(default_factory=dict)


class Catalog:
    """The collections known to this coordinator, refreshed from the shards."""

    def __init__(self, shards: ShardSet) -> None:
        self.shards = shards
        self.collections: dict[str, Collection] = {}
        # Held by refreshes, creates and drops across their shard calls and their change here.
        self.lock = asyncio.Lock()
        self._last_refresh_start = 0.0  # when the last completed refresh asked the shards

    def new(self, spec: CollectionSpec, legacy_shards: int = 0) -> Collection:
        """A collection at the placement its spec records (specs that record none: MOD over
        `legacy_shards` groups, by default every group). A placement over more groups than this
        coordinator knows cannot be served: the collection is refused (FAILED_PRECONDITION) until the
        coordinator is given every group."""
        shards = spec.placement_shards or legacy_shards or len(self.shards)
        known = min(shards, len(self.shards))
        placement = Placement(spec.placement_function, known, spec.placement_epoch)
        coll = Collection(spec, [0] * known, [False] * known, placement=placement)
        coll.shards = ShardView(self.shards, placement, coll.name, spec.name, placement.epoch)
        if shards > known:
            coll.conflict = (
                f"collection {coll.name!r} is placed on {shards} shard groups, and this coordinator knows only "
                f"{known}: give it every group (--shard, in placement order; Kubernetes: roll the coordinators onto "
                "the manifests listing them)"
            )
        return coll

    def creation_placement(self) -> Placement:
        """The placement of a new collection: every group, by jump consistent hash."""
        return Placement(JUMP, len(self.shards), 0)

    async def refresh(self, timeout: float) -> list[spb.ShardListResponse]:
        """Rebuild the catalog from every shard's list (a collection exists if any shard has it)."""
        async with self.lock:
            return await self.refresh_locked(timeout)

    async def refresh_locked(self, timeout: float) -> list[spb.ShardListResponse]:
        """`refresh`, for a caller that already holds `lock` (a create checking what exists)."""
        if not self.lock.locked():
            raise RuntimeError("Catalog.refresh_locked needs the catalog's lock held")
        started = time.monotonic()
        out = await self.shards.call(LIST_COLLECTIONS, self.shards.all(pb.ListCollectionsRequest()), timeout)
        lists = [out.results[i] for i in range(len(self.shards))]
        found: dict[str, _Partitions] = {}
        for i, resp in enumerate(lists):
            for state in resp.collections:
                base, epoch = parse_physical(state.config.name)
                found.setdefault(base, _Partitions()).present.setdefault(epoch, {})[i] = state
        for i, resp in enumerate(lists):
            for name, version in resp.dropped.items():
                base, epoch = parse_physical(name)
                parts = found.get(base)
                if parts is not None and epoch in parts.present and i not in parts.present[epoch]:
                    if version > max(st.incarnation for st in parts.present[epoch].values()):
                        parts.dropped.setdefault(epoch, set()).add(i)
        seen: dict[str, Collection] = {}
        for base, parts in found.items():
            coll = self._resolve(base, parts)
            if coll is not None:
                seen[base] = coll
        self.collections = seen
        self._last_refresh_start = started
        return lists

    def _resolve(self, base: str, parts: _Partitions) -> Collection | None:
        """The collection's current placement (and the reshard in progress) from its partitions."""
        epochs = sorted(parts.present)
        current = epochs[0]

        def dropped(epoch: int) -> bool:
            """Dropped on a group of its own placement (not only a shrink's marker beyond it)."""
            states = parts.present[epoch]
            shards = next(iter(states.values())).config.placement.shards or max(states) + 1
            return any(g < shards for g in parts.dropped.get(epoch, ()))

        # A cut over reshard drops the old partitions: the newer placement is current once any group
        # dropped the older one (the drop comes only after the copy completed).
        while len(epochs) > 1 and dropped(current):
            epochs.pop(0)
            current = epochs[0]
        states = parts.present[current]
        spec = CollectionSpec.from_proto(next(iter(states.values())).config)
        # (made before placements were recorded: MOD over the groups holding it)
        coll = self.new(spec, legacy_shards=max(states) + 1)
        existing = self.collections.get(base)
        if existing is not None and existing.spec == coll.spec and existing.placement == coll.placement:
            existing.shard_counts, existing.shard_trained = coll.shard_counts, coll.shard_trained
            existing.shard_epochs, existing.shard_prepared = coll.shard_epochs, coll.shard_prepared
            existing.conflict = coll.conflict
            existing.next = existing.next_spec = existing.next_shards = None
            existing.reshard_phase = ""
            existing.leftovers = []
            existing.shards = coll.shards
            coll = existing
        for i, state in states.items():
            if i < coll.placement.shards:
                self._agree(coll, i, state)
                coll.take(i, state)
        later = [e for e in epochs if e > current]
        coll.leftovers = [
            (physical_name(base, e), g) for e in sorted(parts.present) if e < current for g in sorted(parts.present[e])
        ]
        if not later:  # (while a reshard runs, markers beyond the current placement are its fence)
            coll.leftovers += [(spec.name, g) for g in sorted(states) if g >= coll.placement.shards]
        if later:
            newer = later[-1]
            nstates = parts.present[newer]
            nspec = CollectionSpec.from_proto(next(iter(nstates.values())).config)
            nplace = Placement(nspec.placement_function, nspec.placement_shards, newer)
            if dropped(newer):  # an abort in progress: writes must still pass its fence
                coll.reshard_phase = "aborting"
                coll.shards = ShardView(self.shards, coll.placement, base, spec.name, newer)
            else:
                expected = max(nplace.shards, coll.placement.shards)
                coll.reshard_phase = "copying" if len(nstates) >= expected else "preparing"
                coll.next, coll.next_spec = nplace, nspec
                coll.shards = ShardView(self.shards, coll.placement, base, spec.name, newer)
                coll.next_shards = ShardView(
                    self.shards, nplace, base, nspec.name, newer, frozenset(i for i in nstates if i < nplace.shards)
                )
        return coll

    async def get(
        self, name: str, timeout: Callable[[], float], if_missing: str = "", conflict_ok: bool = False
    ) -> Collection:
        """The named collection; on a miss, refreshes from the shards before answering NOT_FOUND.

        if_missing: what the NOT_FOUND message tells the caller (default: create it first).
        conflict_ok: also a collection whose shards disagree on its config (to drop it); others
        are FAILED_PRECONDITION.
        """
        check_name(name)
        coll = self.collections.get(name)
        if coll is None:
            missed_at = time.monotonic()
            async with self.lock:  # created by another coordinator, or by a create that held the lock?
                coll = self.collections.get(name)
                # Concurrent misses share one refresh: one that started after this miss saw everything.
                if coll is None and self._last_refresh_start <= missed_at:
                    await self.refresh_locked(timeout())
                    coll = self.collections.get(name)
        if coll is None:
            hint = if_missing or "create it first"
            raise NotFound(f"collection {name!r} does not exist: {hint} (ListCollections shows what exists)")
        if coll.conflict and not conflict_ok:
            raise FailedPrecondition(coll.conflict)
        return coll

    def _agree(self, coll: Collection, i: int, state: spb.ShardCollectionState) -> None:
        """Note when shard i holds the collection with another config than the catalog's. Only the
        internal API (a shard's own CreateCollection) makes that; requests then mixed rows of two
        dimensions (INTERNAL), so every request but a drop is refused until it is re-created."""
        theirs = CollectionSpec.from_proto(state.config)
        if theirs != coll.spec and not coll.conflict:
            coll.conflict = (
                f"collection {coll.spec.name!r} has another config on {self.shards.shards[i].name} ({_brief(theirs)}) "
                f"than on the other shards ({_brief(coll.spec)}): drop it (DropCollection reaches every shard) and "
                "create it again"
            )

    def info(self, coll: Collection, states: dict[int, spb.ShardCollectionState]) -> pb.CollectionInfo:
        """The public CollectionInfo, after taking in the shards' fresh states (if any)."""
        for i, st in states.items():
            self._agree(coll, i, st)
            coll.take(i, st)
        if len(states) == len(coll.view):
            coll.epochs_stale = False
        if not coll.spec.is_ivf:
            state = pb.TRAINING_STATE_NOT_APPLICABLE
        elif coll.training:
            state = pb.TRAINING_STATE_TRAINING
        elif coll.trained:
            state = pb.TRAINING_STATE_TRAINED
        else:
            state = pb.TRAINING_STATE_UNTRAINED
        info = pb.CollectionInfo(config=coll.spec.to_proto(), count=coll.count, training_state=state)
        info.config.name = coll.name
        info.config.placement.CopyFrom(coll.placement.to_proto())  # (also what a legacy collection has)
        for s in coll.view.shards:
            info.shards.add(name=s.name, count=coll.shard_counts[s.index], trained=coll.shard_trained[s.index])
        for f, t in sorted({x for indexes in coll.shard_indexes.values() for x in indexes}):
            index = info.payload_indexes.add(field=f, type=t)
            if t == ppb.PAYLOAD_INDEX_TYPE_TEXT:
                _text_index(coll, index)
        return info

    async def describe(self, coll: Collection, timeout: float, include_centroids: bool = False) -> pb.CollectionInfo:
        """Ask every shard for its state of the collection (and shard 0 for the centroids)."""
        requests = {
            s.index: pb.DescribeCollectionRequest(
                name=coll.spec.name, include_centroids=include_centroids and s.index == 0
            )
            for s in coll.view.shards
        }
        out = await coll.view.call(DESCRIBE_COLLECTION, requests, timeout)
        info = self.info(coll, out.results)
        if coll.conflict:
            raise FailedPrecondition(coll.conflict)
        if include_centroids and out.results[0].HasField("centroids"):
            info.centroids.CopyFrom(out.results[0].centroids)
            info.codec = out.results[0].codec
        return info


def _text_index(coll: Collection, index: ppb.PayloadIndex) -> None:
    """A TEXT index's analyzer and parameters (as the groups describe them), and its counts over the
    groups of the current placement: documents, tokens and skipped points summed, distinct terms the
    largest group's (a lower bound of the collection's: groups share terms)."""
    groups = [coll.shard_text.get(s.index, {}) for s in coll.view.shards]
    parts = [g[index.field] for g in groups if index.field in g]
    if not parts:
        return
    index.text.CopyFrom(parts[0].text)
    stats = index.text_stats
    for p in parts:
        stats.documents += p.text_stats.documents
        stats.tokens += p.text_stats.tokens
        stats.skipped += p.text_stats.skipped
        stats.terms = max(stats.terms, p.text_stats.terms)


def _brief(spec: CollectionSpec) -> str:
    ivf = f", nlist {spec.nlist}" if spec.is_ivf else ""
    return f"dim {spec.dim}, {spec.metric.value}, {spec.index_type.value}{ivf}"
