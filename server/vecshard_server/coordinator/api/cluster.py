"""DescribeCluster: shard groups, replicas, placements and jobs, as this coordinator sees them."""

from __future__ import annotations

from vecshard.v1 import vector_search_pb2 as pb
from vecshard_server.coordinator.api.base import Core
from vecshard_server.coordinator.jobs import Jobs
from vecshard_server.coordinator.local import LocalShards
from vecshard_server.coordinator.reshard import Resharder


class Cluster:
    def __init__(self, core: Core, resharder: Resharder, jobs: Jobs, local: LocalShards | None) -> None:
        self.core, self.resharder, self.jobs, self.local = core, resharder, jobs, local

    async def describe(self, timeout: float) -> pb.ClusterInfo:
        raise NotImplementedError("DescribeCluster: being built (#30)")
