from vecshard.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_STATE_UNSPECIFIED: _ClassVar[TrainingState]
    TRAINING_STATE_NOT_APPLICABLE: _ClassVar[TrainingState]
    TRAINING_STATE_UNTRAINED: _ClassVar[TrainingState]
    TRAINING_STATE_TRAINING: _ClassVar[TrainingState]
    TRAINING_STATE_TRAINED: _ClassVar[TrainingState]
TRAINING_STATE_UNSPECIFIED: TrainingState
TRAINING_STATE_NOT_APPLICABLE: TrainingState
TRAINING_STATE_UNTRAINED: TrainingState
TRAINING_STATE_TRAINING: TrainingState
TRAINING_STATE_TRAINED: TrainingState

class CreateCollectionRequest(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: _types_pb2.CollectionConfig
    def __init__(self, config: _Optional[_Union[_types_pb2.CollectionConfig, _Mapping]] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("name", "include_centroids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    include_centroids: bool
    def __init__(self, name: _Optional[str] = ..., include_centroids: _Optional[bool] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("name", "count", "trained")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    trained: bool
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ..., trained: _Optional[bool] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("config", "count", "training_state", "shards", "centroids")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINING_STATE_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    config: _types_pb2.CollectionConfig
    count: int
    training_state: TrainingState
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    centroids: _types_pb2.FloatMatrix
    def __init__(self, config: _Optional[_Union[_types_pb2.CollectionConfig, _Mapping]] = ..., count: _Optional[int] = ..., training_state: _Optional[_Union[TrainingState, str]] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., centroids: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ...) -> None: ...

class AddRequest(_message.Message):
    __slots__ = ("collection", "ids", "vectors", "upsert", "texts", "images", "model_fingerprint")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: bytes
    vectors: _types_pb2.FloatMatrix
    upsert: bool
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    model_fingerprint: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[bytes] = ..., vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., upsert: _Optional[bool] = ..., texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class AddResponse(_message.Message):
    __slots__ = ("added", "replaced", "count")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    added: int
    replaced: int
    count: int
    def __init__(self, added: _Optional[int] = ..., replaced: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("collection", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: bytes
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[bytes] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "allow_missing")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: bytes
    allow_missing: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[bytes] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("vectors", "found")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    vectors: _types_pb2.FloatMatrix
    found: bytes
    def __init__(self, vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., found: _Optional[bytes] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "queries", "k", "nprobe", "allow_partial", "texts", "images", "model_fingerprint")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _types_pb2.FloatMatrix
    k: int
    nprobe: int
    allow_partial: bool
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    model_fingerprint: str
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., k: _Optional[int] = ..., nprobe: _Optional[int] = ..., allow_partial: _Optional[bool] = ..., texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("nq", "k", "distances", "ids", "shards_total", "shards_ok", "failed_shards")
    NQ_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_OK_FIELD_NUMBER: _ClassVar[int]
    FAILED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    nq: int
    k: int
    distances: bytes
    ids: bytes
    shards_total: int
    shards_ok: int
    failed_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, nq: _Optional[int] = ..., k: _Optional[int] = ..., distances: _Optional[bytes] = ..., ids: _Optional[bytes] = ..., shards_total: _Optional[int] = ..., shards_ok: _Optional[int] = ..., failed_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("collection", "max_training_points", "seed")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_TRAINING_POINTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    collection: str
    max_training_points: int
    seed: int
    def __init__(self, collection: _Optional[str] = ..., max_training_points: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("collection", "max_points", "seed")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    collection: str
    max_points: int
    seed: int
    def __init__(self, collection: _Optional[str] = ..., max_points: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("ids", "vectors", "shards", "lists")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    LISTS_FIELD_NUMBER: _ClassVar[int]
    ids: bytes
    vectors: _types_pb2.FloatMatrix
    shards: bytes
    lists: bytes
    def __init__(self, ids: _Optional[bytes] = ..., vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., shards: _Optional[bytes] = ..., lists: _Optional[bytes] = ...) -> None: ...
