"""vecshard: Python SDK of the vecshard sharded vector search server.

from vecshard import Client
with Client("localhost:50051") as c:
    c.create_collection("docs", dim=64)
"""

from vecshard.aio import AsyncClient
from vecshard.client import Client
from vecshard.connection import TLS
from vecshard.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VecshardError,
)
from vecshard.types import (
    AddResult,
    BackupCollection,
    BackupFile,
    BackupInfo,
    BackupProgress,
    BackupVerification,
    CollectionInfo,
    Embeddings,
    FacetCount,
    FilterPlan,
    Group,
    Hit,
    IndexType,
    LegScore,
    Metric,
    ModelInfo,
    Point,
    ReshardProgress,
    Sample,
    SearchResult,
    ShardInfo,
    TextIndexInfo,
)

__version__ = "0.1.0"

__all__ = [
    "AddResult",
    "AlreadyExists",
    "AsyncClient",
    "BackupCollection",
    "BackupFile",
    "BackupInfo",
    "BackupProgress",
    "BackupVerification",
    "Client",
    "CollectionInfo",
    "DeadlineExceeded",
    "Embeddings",
    "FacetCount",
    "FilterPlan",
    "Group",
    "Hit",
    "FailedPrecondition",
    "IndexType",
    "Internal",
    "InvalidArgument",
    "LegScore",
    "Metric",
    "ModelInfo",
    "Point",
    "Sample",
    "NotFound",
    "PermissionDenied",
    "ReshardProgress",
    "ResourceExhausted",
    "SearchResult",
    "TLS",
    "ShardInfo",
    "TextIndexInfo",
    "Unauthenticated",
    "Unavailable",
    "VecshardError",
]
