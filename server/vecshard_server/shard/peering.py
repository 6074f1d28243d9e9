"""Replicas of one shard group bringing each other up to date: catching up from peers at start,
periodic peer sync, and Resync (merge a peer's entries, newest version per id wins)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import grpc

from vecshard import wire
from vecshard.errors import (
    Unavailable,
)
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.common.security import shard_channel
from vecshard_server.common.spec import CollectionSpec, check_partition_name
from vecshard_server.shard.checks import (
    check_peer,
)
from vecshard_server.shard.core import ShardCore, page_adds
from vecshard_server.shard.engine import ShardIndex

log = logging.getLogger(__name__)
T = TypeVar("T")


class PeerSync(ShardCore):
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

    def _fetch(self, stub: shard_pb2_grpc.ShardStub, name: str, state: spb.ShardCollectionState) -> ShardIndex:
        """A new partition holding what the peer behind `stub` holds of collection `name`."""
        spec = CollectionSpec.from_proto(state.config)
        part = ShardIndex(spec, self.settings.max_vectors_per_shard, self.accelerator, self.index_settings)
        desc = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name, include_centroids=True), timeout=60)
        if desc.trained:
            part.install_quantizer(
                wire.unpack_matrix(desc.centroids, "centroids"), None, desc.train_epoch, desc.train_id, desc.codec
            )
        for page in self._pages(stub, spec):
            ids, vectors, versions, dead, dead_versions = self._entries(page)
            for add_ids, add_vectors, add_versions, payloads in page_adds(page, ids, vectors, versions):
                part.add(add_ids, add_vectors, True, None, add_versions, payloads or None)
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

    async def Resync(self, request: spb.ResyncRequest, context: grpc.aio.ServicerContext) -> spb.ShardCollectionState:
        check_partition_name(request.collection)
        check_peer(request.peer)
        return await self._run(self._writes, self.resync, request.collection, request.peer)
