"""vecshard: Python SDK of the vecshard sharded vector search server.

from vecshard import Client
with Client("localhost:50051") as c:
    c.create_collection("docs", dim=64)
"""

from vecshard.client import Client
from vecshard.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    VecshardError,
)
from vecshard.types import (
    AddResult,
    CollectionInfo,
    Embeddings,
    IndexType,
    Metric,
    ModelInfo,
    SearchResult,
    ShardInfo,
)

__version__ = "0.1.0"

__all__ = [
    "AddResult",
    "AlreadyExists",
    "Client",
    "CollectionInfo",
    "DeadlineExceeded",
    "Embeddings",
    "FailedPrecondition",
    "IndexType",
    "Internal",
    "InvalidArgument",
    "Metric",
    "ModelInfo",
    "NotFound",
    "ResourceExhausted",
    "SearchResult",
    "ShardInfo",
    "Unavailable",
    "VecshardError",
]
