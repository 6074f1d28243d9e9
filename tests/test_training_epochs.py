"""Training is one decision per collection: shards never search with two different quantizers.

Two coordinators training at once once left shards with different centroids while all reported
trained; a coordinator dying between installs left them mixed for good. Now every training has an
epoch decided by shard group 0, searches name the epoch they expect, and a mix is waited out or
completed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import faiss
import grpc
import numpy as np
import pytest

from vecshard import Client, FailedPrecondition, wire
from vecshard.v1 import shard_pb2 as spb
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.cluster.local import LocalCluster, Process

from .conftest import clustered
from .support import start_role

DIM, NLIST = 16, 8


@pytest.fixture()
def two_coordinators(tmp_path: Path) -> Iterator[tuple[LocalCluster, Process]]:
    with LocalCluster(shards=2, log_level="ERROR") as cluster:
        args = ["coordinator", "--log-level", "ERROR"]
        for address in cluster.shard_addresses:
            args += ["--shard", address]
        second = start_role(args, tmp_path / "c2.port")
        try:
            yield cluster, second
        finally:
            second.terminate()
            second.wait(30)


def _states(cluster: LocalCluster, name: str) -> list[spb.ShardCollectionState]:
    out = []
    for proc in cluster.shards:
        with grpc.insecure_channel(proc.address) as ch:
            req = pb.DescribeCollectionRequest(name=name, include_centroids=True)
            out.append(shard_pb2_grpc.ShardStub(ch).DescribeCollection(req, timeout=30))
    return out


def _faiss_ivf(centroids: np.ndarray, data: np.ndarray, nprobe: int) -> faiss.Index:
    quantizer = faiss.IndexFlatL2(DIM)
    quantizer.add(centroids)
    ivf = faiss.IndexIVFFlat(quantizer, DIM, NLIST)
    ivf.add(data)
    ivf.nprobe = nprobe
    return ivf


def test_two_coordinators_training_at_once_agree(two_coordinators: tuple[LocalCluster, Process], name: str) -> None:
    cluster, second = two_coordinators
    data = clustered(2000, DIM, seed=5)
    with Client(cluster.address, timeout=60) as a, Client(second.address, timeout=60) as b:
        a.create_collection(name, DIM, index="ivf_flat", nlist=NLIST, nprobe=2, train_threshold=10**6)
        a.add(name, np.arange(2000), data)
        outcomes: list[object] = []

        def train(c: Client, seed: int) -> None:
            try:
                outcomes.append(c.train(name, seed=seed).trained)
            except FailedPrecondition as err:
                outcomes.append(err)

        threads = [threading.Thread(target=train, args=(c, s)) for c, s in ((a, 1), (b, 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert any(o is True for o in outcomes), outcomes  # at least one training won; a loser is told so
        states = _states(cluster, name)
        assert len({(s.train_epoch, s.train_id) for s in states}) == 1, [(s.train_epoch, s.train_id) for s in states]
        centroids = [wire.unpack_matrix(s.centroids) for s in states]
        np.testing.assert_array_equal(centroids[0], centroids[1])
        queries = clustered(50, DIM, seed=6)
        for c in (a, b):  # both coordinators answer as one faiss index over those centroids
            D, I = c.search(name, queries, k=5)
            ref_d, ref_i = _faiss_ivf(centroids[0], data, 2).search(queries, 5)
            np.testing.assert_array_equal(I, ref_i)
            np.testing.assert_allclose(D, ref_d, rtol=1e-4)


def test_a_training_left_half_activated_is_completed_before_searching(
    two_coordinators: tuple[LocalCluster, Process], name: str
) -> None:
    """A coordinator that died after activating group 0 only: searches must not merge two quantizers."""
    cluster, second = two_coordinators
    data = clustered(2000, DIM, seed=7)
    with Client(cluster.address, timeout=60) as c:
        c.create_collection(name, DIM, index="ivf_flat", nlist=NLIST, nprobe=NLIST, train_threshold=10**6)
        c.add(name, np.arange(2000), data)
        c.train(name)
        state = _states(cluster, name)[0]
        newer = clustered(NLIST, DIM, seed=99)  # another training's centroids
        install = {"collection": name, "epoch": state.train_epoch + 1, "train_id": 4242}
        with grpc.insecure_channel(cluster.shards[0].address) as ch:  # what the dying coordinator got done
            stub = shard_pb2_grpc.ShardStub(ch)
            stub.InstallQuantizer(
                spb.InstallQuantizerRequest(
                    **install, centroids=wire.pack_matrix(newer), mode=spb.INSTALL_MODE_PREPARE, decide=True
                )
            )
            stub.InstallQuantizer(spb.InstallQuantizerRequest(**install, mode=spb.INSTALL_MODE_ACTIVATE))
        mixed = _states(cluster, name)
        assert mixed[0].train_epoch == state.train_epoch + 1 and mixed[1].train_epoch == state.train_epoch
        queries = clustered(40, DIM, seed=8)
        D, I = c.search(name, queries, k=5)
        healed = _states(cluster, name)
        assert {(s.train_epoch, s.train_id) for s in healed} == {(state.train_epoch + 1, 4242)}
        ref_d, ref_i = _faiss_ivf(newer, data, NLIST).search(queries, 5)
        np.testing.assert_array_equal(I, ref_i)
        np.testing.assert_allclose(D, ref_d, rtol=1e-4)
    with Client(second.address, timeout=60) as other:  # a coordinator with a stale view answers the same
        np.testing.assert_array_equal(other.search(name, queries, k=5).ids, ref_i)


def test_a_superseded_or_competing_install_is_refused(
    two_coordinators: tuple[LocalCluster, Process], name: str
) -> None:
    cluster, _ = two_coordinators
    with Client(cluster.address, timeout=60) as c:
        c.create_collection(name, DIM, index="ivf_flat", nlist=NLIST, train_threshold=10**6)
        c.add(name, np.arange(500), clustered(500, DIM, seed=3))
        c.train(name)
        epoch = _states(cluster, name)[0].train_epoch
    cents = wire.pack_matrix(clustered(NLIST, DIM, seed=4))
    with grpc.insecure_channel(cluster.shards[0].address) as ch:
        stub = shard_pb2_grpc.ShardStub(ch)
        old = spb.InstallQuantizerRequest(
            collection=name, centroids=cents, epoch=epoch, train_id=1, mode=spb.INSTALL_MODE_PREPARE, decide=True
        )
        with pytest.raises(grpc.RpcError, match="superseded") as info:
            stub.InstallQuantizer(old)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        first = spb.InstallQuantizerRequest(
            collection=name, centroids=cents, epoch=epoch + 1, train_id=1, mode=spb.INSTALL_MODE_PREPARE, decide=True
        )
        stub.InstallQuantizer(first)
        stub.InstallQuantizer(first)  # a retry of the same training is fine
        rival = spb.InstallQuantizerRequest(
            collection=name, centroids=cents, epoch=epoch + 1, train_id=2, mode=spb.INSTALL_MODE_PREPARE, decide=True
        )
        with pytest.raises(grpc.RpcError, match="another training") as info:
            stub.InstallQuantizer(rival)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError, match="no training prepared"):
            stub.InstallQuantizer(
                spb.InstallQuantizerRequest(
                    collection=name, epoch=epoch + 1, train_id=2, mode=spb.INSTALL_MODE_ACTIVATE
                )
            )
