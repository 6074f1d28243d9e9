from vecshard.v1 import payload_pb2 as _payload_pb2
from vecshard.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OnConflict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_CONFLICT_UNSPECIFIED: _ClassVar[OnConflict]
    ON_CONFLICT_FAIL: _ClassVar[OnConflict]
    ON_CONFLICT_SKIP: _ClassVar[OnConflict]
    ON_CONFLICT_REPLACE: _ClassVar[OnConflict]

class TrainingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_STATE_UNSPECIFIED: _ClassVar[TrainingState]
    TRAINING_STATE_NOT_APPLICABLE: _ClassVar[TrainingState]
    TRAINING_STATE_UNTRAINED: _ClassVar[TrainingState]
    TRAINING_STATE_TRAINING: _ClassVar[TrainingState]
    TRAINING_STATE_TRAINED: _ClassVar[TrainingState]

class Fusion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUSION_UNSPECIFIED: _ClassVar[Fusion]
    FUSION_RRF: _ClassVar[Fusion]
    FUSION_LINEAR: _ClassVar[Fusion]

class SetPayloadMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SET_PAYLOAD_MODE_UNSPECIFIED: _ClassVar[SetPayloadMode]
    SET_PAYLOAD_MODE_MERGE: _ClassVar[SetPayloadMode]
    SET_PAYLOAD_MODE_OVERWRITE: _ClassVar[SetPayloadMode]
    SET_PAYLOAD_MODE_DELETE_KEYS: _ClassVar[SetPayloadMode]
ON_CONFLICT_UNSPECIFIED: OnConflict
ON_CONFLICT_FAIL: OnConflict
ON_CONFLICT_SKIP: OnConflict
ON_CONFLICT_REPLACE: OnConflict
TRAINING_STATE_UNSPECIFIED: TrainingState
TRAINING_STATE_NOT_APPLICABLE: TrainingState
TRAINING_STATE_UNTRAINED: TrainingState
TRAINING_STATE_TRAINING: TrainingState
TRAINING_STATE_TRAINED: TrainingState
FUSION_UNSPECIFIED: Fusion
FUSION_RRF: Fusion
FUSION_LINEAR: Fusion
SET_PAYLOAD_MODE_UNSPECIFIED: SetPayloadMode
SET_PAYLOAD_MODE_MERGE: SetPayloadMode
SET_PAYLOAD_MODE_OVERWRITE: SetPayloadMode
SET_PAYLOAD_MODE_DELETE_KEYS: SetPayloadMode

class DescribeClusterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("shard_mode", "version", "uptime_s", "rss_bytes", "groups", "collections", "jobs")
    SHARD_MODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    shard_mode: str
    version: str
    uptime_s: float
    rss_bytes: int
    groups: _containers.RepeatedCompositeFieldContainer[ShardGroupInfo]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionPlacement]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, shard_mode: _Optional[str] = ..., version: _Optional[str] = ..., uptime_s: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[ShardGroupInfo, _Mapping]]] = ..., collections: _Optional[_Iterable[_Union[CollectionPlacement, _Mapping]]] = ..., jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class ShardGroupInfo(_message.Message):
    __slots__ = ("index", "replicas")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    index: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaInfo]
    def __init__(self, index: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaInfo, _Mapping]]] = ...) -> None: ...

class ReplicaInfo(_message.Message):
    __slots__ = ("address", "healthy", "error", "rss_bytes", "points", "collections")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    address: str
    healthy: bool
    error: str
    rss_bytes: int
    points: int
    collections: int
    def __init__(self, address: _Optional[str] = ..., healthy: _Optional[bool] = ..., error: _Optional[str] = ..., rss_bytes: _Optional[int] = ..., points: _Optional[int] = ..., collections: _Optional[int] = ...) -> None: ...

class CollectionPlacement(_message.Message):
    __slots__ = ("collection", "shards", "epoch", "count", "shard_counts")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shards: int
    epoch: int
    count: int
    shard_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, collection: _Optional[str] = ..., shards: _Optional[int] = ..., epoch: _Optional[int] = ..., count: _Optional[int] = ..., shard_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("kind", "collection", "phase", "done", "total", "started_unix", "id", "error")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    kind: str
    collection: str
    phase: str
    done: int
    total: int
    started_unix: float
    id: str
    error: str
    def __init__(self, kind: _Optional[str] = ..., collection: _Optional[str] = ..., phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., started_unix: _Optional[float] = ..., id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ReshardRequest(_message.Message):
    __slots__ = ("collections", "shards", "abort", "max_points_per_s", "page_size", "status_only", "wait")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    STATUS_ONLY_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedScalarFieldContainer[str]
    shards: int
    abort: bool
    max_points_per_s: int
    page_size: int
    status_only: bool
    wait: bool
    def __init__(self, collections: _Optional[_Iterable[str]] = ..., shards: _Optional[int] = ..., abort: _Optional[bool] = ..., max_points_per_s: _Optional[int] = ..., page_size: _Optional[int] = ..., status_only: _Optional[bool] = ..., wait: _Optional[bool] = ...) -> None: ...

class ReshardResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[ReshardProgress]
    def __init__(self, collections: _Optional[_Iterable[_Union[ReshardProgress, _Mapping]]] = ...) -> None: ...

class ReshardProgress(_message.Message):
    __slots__ = ("collection", "from_shards", "to_shards", "from_epoch", "phase", "copied", "moved", "total", "error")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    TO_SHARDS_FIELD_NUMBER: _ClassVar[int]
    FROM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    COPIED_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    collection: str
    from_shards: int
    to_shards: int
    from_epoch: int
    phase: str
    copied: int
    moved: int
    total: int
    error: str
    def __init__(self, collection: _Optional[str] = ..., from_shards: _Optional[int] = ..., to_shards: _Optional[int] = ..., from_epoch: _Optional[int] = ..., phase: _Optional[str] = ..., copied: _Optional[int] = ..., moved: _Optional[int] = ..., total: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("config", "count", "training_state", "shards", "centroids", "payload_indexes", "codec")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINING_STATE_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_INDEXES_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    config: _types_pb2.CollectionConfig
    count: int
    training_state: TrainingState
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    centroids: _types_pb2.FloatMatrix
    payload_indexes: _containers.RepeatedCompositeFieldContainer[_payload_pb2.PayloadIndex]
    codec: bytes
    def __init__(self, config: _Optional[_Union[_types_pb2.CollectionConfig, _Mapping]] = ..., count: _Optional[int] = ..., training_state: _Optional[_Union[TrainingState, str]] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., centroids: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., payload_indexes: _Optional[_Iterable[_Union[_payload_pb2.PayloadIndex, _Mapping]]] = ..., codec: _Optional[bytes] = ...) -> None: ...

class AddRequest(_message.Message):
    __slots__ = ("collection", "ids", "vectors", "upsert", "texts", "images", "model_fingerprint", "payloads", "string_ids", "on_conflict")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    ON_CONFLICT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: bytes
    vectors: _types_pb2.FloatMatrix
    upsert: bool
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    model_fingerprint: str
    payloads: _containers.RepeatedCompositeFieldContainer[_payload_pb2.Payload]
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    on_conflict: OnConflict
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[bytes] = ..., vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., upsert: _Optional[bool] = ..., texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., model_fingerprint: _Optional[str] = ..., payloads: _Optional[_Iterable[_Union[_payload_pb2.Payload, _Mapping]]] = ..., string_ids: _Optional[_Iterable[str]] = ..., on_conflict: _Optional[_Union[OnConflict, str]] = ...) -> None: ...

class AddResponse(_message.Message):
    __slots__ = ("added", "replaced", "count", "skipped")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    added: int
    replaced: int
    count: int
    skipped: int
    def __init__(self, added: _Optional[int] = ..., replaced: _Optional[int] = ..., count: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class UpdateVectorsRequest(_message.Message):
    __slots__ = ("collection", "ids", "string_ids", "vectors", "texts", "images", "model_fingerprint")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: bytes
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: _types_pb2.FloatMatrix
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    model_fingerprint: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[bytes] = ..., string_ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...

class UpdateVectorsResponse(_message.Message):
    __slots__ = ("updated",)
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    updated: int
    def __init__(self, updated: _Optional[int] = ...) -> None: ...

class FacetRequest(_message.Message):
    __slots__ = ("collection", "key", "filter", "limit")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    key: str
    filter: _payload_pb2.Filter
    limit: int
    def __init__(self, collection: _Optional[str] = ..., key: _Optional[str] = ..., filter: _Optional[_Union[_payload_pb2.Filter, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class FacetCount(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: _payload_pb2.Value
    count: int
    def __init__(self, value: _Optional[_Union[_payload_pb2.Value, _Mapping]] = ..., count: _Optional[int] = ...) -> None: ...

class FacetResponse(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[FacetCount]
    def __init__(self, counts: _Optional[_Iterable[_Union[FacetCount, _Mapping]]] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter", "string_ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: bytes
    filter: _payload_pb2.Filter
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[bytes] = ..., filter: _Optional[_Union[_payload_pb2.Filter, _Mapping]] = ..., string_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "allow_missing", "with_payload", "string_ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: bytes
    allow_missing: bool
    with_payload: _payload_pb2.PayloadSelector
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[bytes] = ..., allow_missing: _Optional[bool] = ..., with_payload: _Optional[_Union[_payload_pb2.PayloadSelector, _Mapping]] = ..., string_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("vectors", "found", "payloads", "has_vector")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    HAS_VECTOR_FIELD_NUMBER: _ClassVar[int]
    vectors: _types_pb2.FloatMatrix
    found: bytes
    payloads: _containers.RepeatedCompositeFieldContainer[_payload_pb2.Payload]
    has_vector: bytes
    def __init__(self, vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., found: _Optional[bytes] = ..., payloads: _Optional[_Iterable[_Union[_payload_pb2.Payload, _Mapping]]] = ..., has_vector: _Optional[bytes] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "queries", "k", "nprobe", "allow_partial", "texts", "images", "model_fingerprint", "filter", "with_payload", "refine_factor", "offset", "score_threshold", "with_vectors", "query_ids", "query_string_ids", "recommend", "group_by", "group_size", "keywords", "keyword_field", "fusion", "rrf_k", "weights", "candidates")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REFINE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    QUERY_IDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    RECOMMEND_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _types_pb2.FloatMatrix
    k: int
    nprobe: int
    allow_partial: bool
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    model_fingerprint: str
    filter: _payload_pb2.Filter
    with_payload: _payload_pb2.PayloadSelector
    refine_factor: int
    offset: int
    score_threshold: float
    with_vectors: bool
    query_ids: bytes
    query_string_ids: _containers.RepeatedScalarFieldContainer[str]
    recommend: RecommendQuery
    group_by: str
    group_size: int
    keywords: _containers.RepeatedScalarFieldContainer[str]
    keyword_field: str
    fusion: Fusion
    rrf_k: int
    weights: _containers.RepeatedScalarFieldContainer[float]
    candidates: int
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., k: _Optional[int] = ..., nprobe: _Optional[int] = ..., allow_partial: _Optional[bool] = ..., texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., model_fingerprint: _Optional[str] = ..., filter: _Optional[_Union[_payload_pb2.Filter, _Mapping]] = ..., with_payload: _Optional[_Union[_payload_pb2.PayloadSelector, _Mapping]] = ..., refine_factor: _Optional[int] = ..., offset: _Optional[int] = ..., score_threshold: _Optional[float] = ..., with_vectors: _Optional[bool] = ..., query_ids: _Optional[bytes] = ..., query_string_ids: _Optional[_Iterable[str]] = ..., recommend: _Optional[_Union[RecommendQuery, _Mapping]] = ..., group_by: _Optional[str] = ..., group_size: _Optional[int] = ..., keywords: _Optional[_Iterable[str]] = ..., keyword_field: _Optional[str] = ..., fusion: _Optional[_Union[Fusion, str]] = ..., rrf_k: _Optional[int] = ..., weights: _Optional[_Iterable[float]] = ..., candidates: _Optional[int] = ...) -> None: ...

class RecommendQuery(_message.Message):
    __slots__ = ("positive", "negative", "positive_string_ids", "negative_string_ids")
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    positive: bytes
    negative: bytes
    positive_string_ids: _containers.RepeatedScalarFieldContainer[str]
    negative_string_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, positive: _Optional[bytes] = ..., negative: _Optional[bytes] = ..., positive_string_ids: _Optional[_Iterable[str]] = ..., negative_string_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GroupedHits(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[HitGroup]
    def __init__(self, groups: _Optional[_Iterable[_Union[HitGroup, _Mapping]]] = ...) -> None: ...

class HitGroup(_message.Message):
    __slots__ = ("value", "ids", "string_ids", "distances", "payloads", "vectors")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    value: _payload_pb2.Value
    ids: bytes
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    distances: bytes
    payloads: _containers.RepeatedCompositeFieldContainer[_payload_pb2.Payload]
    vectors: _types_pb2.FloatMatrix
    def __init__(self, value: _Optional[_Union[_payload_pb2.Value, _Mapping]] = ..., ids: _Optional[bytes] = ..., string_ids: _Optional[_Iterable[str]] = ..., distances: _Optional[bytes] = ..., payloads: _Optional[_Iterable[_Union[_payload_pb2.Payload, _Mapping]]] = ..., vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("nq", "k", "distances", "ids", "shards_total", "shards_ok", "failed_shards", "payloads", "plans", "refined_distances", "string_ids", "vectors", "groups", "higher_is_better", "dense_scores", "dense_ranks", "keyword_scores", "keyword_ranks")
    NQ_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_OK_FIELD_NUMBER: _ClassVar[int]
    FAILED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    REFINED_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    DENSE_SCORES_FIELD_NUMBER: _ClassVar[int]
    DENSE_RANKS_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_SCORES_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_RANKS_FIELD_NUMBER: _ClassVar[int]
    nq: int
    k: int
    distances: bytes
    ids: bytes
    shards_total: int
    shards_ok: int
    failed_shards: _containers.RepeatedScalarFieldContainer[str]
    payloads: _containers.RepeatedCompositeFieldContainer[_payload_pb2.Payload]
    plans: _containers.RepeatedCompositeFieldContainer[_payload_pb2.FilterPlan]
    refined_distances: bytes
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: _types_pb2.FloatMatrix
    groups: _containers.RepeatedCompositeFieldContainer[GroupedHits]
    higher_is_better: bool
    dense_scores: bytes
    dense_ranks: bytes
    keyword_scores: bytes
    keyword_ranks: bytes
    def __init__(self, nq: _Optional[int] = ..., k: _Optional[int] = ..., distances: _Optional[bytes] = ..., ids: _Optional[bytes] = ..., shards_total: _Optional[int] = ..., shards_ok: _Optional[int] = ..., failed_shards: _Optional[_Iterable[str]] = ..., payloads: _Optional[_Iterable[_Union[_payload_pb2.Payload, _Mapping]]] = ..., plans: _Optional[_Iterable[_Union[_payload_pb2.FilterPlan, _Mapping]]] = ..., refined_distances: _Optional[bytes] = ..., string_ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., groups: _Optional[_Iterable[_Union[GroupedHits, _Mapping]]] = ..., higher_is_better: _Optional[bool] = ..., dense_scores: _Optional[bytes] = ..., dense_ranks: _Optional[bytes] = ..., keyword_scores: _Optional[bytes] = ..., keyword_ranks: _Optional[bytes] = ...) -> None: ...

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

class CountRequest(_message.Message):
    __slots__ = ("collection", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: _payload_pb2.Filter
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[_payload_pb2.Filter, _Mapping]] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count", "plans")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    count: int
    plans: _containers.RepeatedCompositeFieldContainer[_payload_pb2.FilterPlan]
    def __init__(self, count: _Optional[int] = ..., plans: _Optional[_Iterable[_Union[_payload_pb2.FilterPlan, _Mapping]]] = ...) -> None: ...

class ScrollRequest(_message.Message):
    __slots__ = ("collection", "filter", "start_id", "limit", "with_payload", "with_vectors", "order_by", "cursor")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    START_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: _payload_pb2.Filter
    start_id: int
    limit: int
    with_payload: _payload_pb2.PayloadSelector
    with_vectors: bool
    order_by: OrderBy
    cursor: bytes
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[_payload_pb2.Filter, _Mapping]] = ..., start_id: _Optional[int] = ..., limit: _Optional[int] = ..., with_payload: _Optional[_Union[_payload_pb2.PayloadSelector, _Mapping]] = ..., with_vectors: _Optional[bool] = ..., order_by: _Optional[_Union[OrderBy, _Mapping]] = ..., cursor: _Optional[bytes] = ...) -> None: ...

class OrderBy(_message.Message):
    __slots__ = ("key", "descending")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    key: str
    descending: bool
    def __init__(self, key: _Optional[str] = ..., descending: _Optional[bool] = ...) -> None: ...

class ScrollResponse(_message.Message):
    __slots__ = ("ids", "payloads", "vectors", "next_start_id", "done", "string_ids", "next_cursor", "has_vector")
    IDS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_START_ID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    HAS_VECTOR_FIELD_NUMBER: _ClassVar[int]
    ids: bytes
    payloads: _containers.RepeatedCompositeFieldContainer[_payload_pb2.Payload]
    vectors: _types_pb2.FloatMatrix
    next_start_id: int
    done: bool
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    next_cursor: bytes
    has_vector: bytes
    def __init__(self, ids: _Optional[bytes] = ..., payloads: _Optional[_Iterable[_Union[_payload_pb2.Payload, _Mapping]]] = ..., vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., next_start_id: _Optional[int] = ..., done: _Optional[bool] = ..., string_ids: _Optional[_Iterable[str]] = ..., next_cursor: _Optional[bytes] = ..., has_vector: _Optional[bytes] = ...) -> None: ...

class SetPayloadRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter", "payload", "mode", "keys", "string_ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    STRING_IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: bytes
    filter: _payload_pb2.Filter
    payload: _payload_pb2.Payload
    mode: SetPayloadMode
    keys: _containers.RepeatedScalarFieldContainer[str]
    string_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[bytes] = ..., filter: _Optional[_Union[_payload_pb2.Filter, _Mapping]] = ..., payload: _Optional[_Union[_payload_pb2.Payload, _Mapping]] = ..., mode: _Optional[_Union[SetPayloadMode, str]] = ..., keys: _Optional[_Iterable[str]] = ..., string_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SetPayloadResponse(_message.Message):
    __slots__ = ("updated",)
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    updated: int
    def __init__(self, updated: _Optional[int] = ...) -> None: ...

class CreatePayloadIndexRequest(_message.Message):
    __slots__ = ("collection", "field", "type", "text")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    field: str
    type: _payload_pb2.PayloadIndexType
    text: _payload_pb2.TextIndexParams
    def __init__(self, collection: _Optional[str] = ..., field: _Optional[str] = ..., type: _Optional[_Union[_payload_pb2.PayloadIndexType, str]] = ..., text: _Optional[_Union[_payload_pb2.TextIndexParams, _Mapping]] = ...) -> None: ...

class DropPayloadIndexRequest(_message.Message):
    __slots__ = ("collection", "field")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    collection: str
    field: str
    def __init__(self, collection: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class BackupLocation(_message.Message):
    __slots__ = ("uri", "s3_endpoint")
    URI_FIELD_NUMBER: _ClassVar[int]
    S3_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    uri: str
    s3_endpoint: str
    def __init__(self, uri: _Optional[str] = ..., s3_endpoint: _Optional[str] = ...) -> None: ...

class CreateBackupRequest(_message.Message):
    __slots__ = ("collections", "location", "wait")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedScalarFieldContainer[str]
    location: BackupLocation
    wait: bool
    def __init__(self, collections: _Optional[_Iterable[str]] = ..., location: _Optional[_Union[BackupLocation, _Mapping]] = ..., wait: _Optional[bool] = ...) -> None: ...

class RestoreBackupRequest(_message.Message):
    __slots__ = ("id", "location", "collection", "as_name", "shards", "replicas", "wait")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    AS_NAME_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    location: BackupLocation
    collection: str
    as_name: str
    shards: int
    replicas: int
    wait: bool
    def __init__(self, id: _Optional[str] = ..., location: _Optional[_Union[BackupLocation, _Mapping]] = ..., collection: _Optional[str] = ..., as_name: _Optional[str] = ..., shards: _Optional[int] = ..., replicas: _Optional[int] = ..., wait: _Optional[bool] = ...) -> None: ...

class BackupStatusRequest(_message.Message):
    __slots__ = ("job", "cancel")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    job: str
    cancel: bool
    def __init__(self, job: _Optional[str] = ..., cancel: _Optional[bool] = ...) -> None: ...

class BackupProgress(_message.Message):
    __slots__ = ("job", "kind", "backup_id", "phase", "done", "total", "error", "collections")
    JOB_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    job: str
    kind: str
    backup_id: str
    phase: str
    done: int
    total: int
    error: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job: _Optional[str] = ..., kind: _Optional[str] = ..., backup_id: _Optional[str] = ..., phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., error: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ...) -> None: ...

class BackupFile(_message.Message):
    __slots__ = ("path", "size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class BackupCollection(_message.Message):
    __slots__ = ("config", "count", "shards", "trained", "train_epoch", "payload_indexes", "files", "replicas", "lsns")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    TRAIN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_INDEXES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    LSNS_FIELD_NUMBER: _ClassVar[int]
    config: _types_pb2.CollectionConfig
    count: int
    shards: int
    trained: bool
    train_epoch: int
    payload_indexes: _containers.RepeatedCompositeFieldContainer[_payload_pb2.PayloadIndex]
    files: _containers.RepeatedCompositeFieldContainer[BackupFile]
    replicas: _containers.RepeatedScalarFieldContainer[str]
    lsns: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, config: _Optional[_Union[_types_pb2.CollectionConfig, _Mapping]] = ..., count: _Optional[int] = ..., shards: _Optional[int] = ..., trained: _Optional[bool] = ..., train_epoch: _Optional[int] = ..., payload_indexes: _Optional[_Iterable[_Union[_payload_pb2.PayloadIndex, _Mapping]]] = ..., files: _Optional[_Iterable[_Union[BackupFile, _Mapping]]] = ..., replicas: _Optional[_Iterable[str]] = ..., lsns: _Optional[_Iterable[int]] = ...) -> None: ...

class BackupInfo(_message.Message):
    __slots__ = ("id", "created", "cut_version", "fence_ms", "collections", "files", "bytes", "format")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    FENCE_MS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    created: str
    cut_version: int
    fence_ms: float
    collections: _containers.RepeatedCompositeFieldContainer[BackupCollection]
    files: int
    bytes: int
    format: str
    def __init__(self, id: _Optional[str] = ..., created: _Optional[str] = ..., cut_version: _Optional[int] = ..., fence_ms: _Optional[float] = ..., collections: _Optional[_Iterable[_Union[BackupCollection, _Mapping]]] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ..., format: _Optional[str] = ...) -> None: ...

class ListBackupsRequest(_message.Message):
    __slots__ = ("location",)
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    location: BackupLocation
    def __init__(self, location: _Optional[_Union[BackupLocation, _Mapping]] = ...) -> None: ...

class ListBackupsResponse(_message.Message):
    __slots__ = ("backups",)
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    backups: _containers.RepeatedCompositeFieldContainer[BackupInfo]
    def __init__(self, backups: _Optional[_Iterable[_Union[BackupInfo, _Mapping]]] = ...) -> None: ...

class DescribeBackupRequest(_message.Message):
    __slots__ = ("id", "location")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    location: BackupLocation
    def __init__(self, id: _Optional[str] = ..., location: _Optional[_Union[BackupLocation, _Mapping]] = ...) -> None: ...

class VerifyBackupRequest(_message.Message):
    __slots__ = ("id", "location")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    location: BackupLocation
    def __init__(self, id: _Optional[str] = ..., location: _Optional[_Union[BackupLocation, _Mapping]] = ...) -> None: ...

class VerifyBackupResponse(_message.Message):
    __slots__ = ("id", "files_checked", "bytes_checked", "problems")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    BYTES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    files_checked: int
    bytes_checked: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., files_checked: _Optional[int] = ..., bytes_checked: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteBackupRequest(_message.Message):
    __slots__ = ("id", "location")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    location: BackupLocation
    def __init__(self, id: _Optional[str] = ..., location: _Optional[_Union[BackupLocation, _Mapping]] = ...) -> None: ...

class DeleteBackupResponse(_message.Message):
    __slots__ = ("files_deleted",)
    FILES_DELETED_FIELD_NUMBER: _ClassVar[int]
    files_deleted: int
    def __init__(self, files_deleted: _Optional[int] = ...) -> None: ...
