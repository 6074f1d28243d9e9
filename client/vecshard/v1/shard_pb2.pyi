from vecshard.v1 import payload_pb2 as _payload_pb2
from vecshard.v1 import types_pb2 as _types_pb2
from vecshard.v1 import vector_search_pb2 as _vector_search_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstallMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTALL_MODE_ONE_STEP: _ClassVar[InstallMode]
    INSTALL_MODE_PREPARE: _ClassVar[InstallMode]
    INSTALL_MODE_ACTIVATE: _ClassVar[InstallMode]
INSTALL_MODE_ONE_STEP: InstallMode
INSTALL_MODE_PREPARE: InstallMode
INSTALL_MODE_ACTIVATE: InstallMode

class KeywordStatsRequest(_message.Message):
    __slots__ = ("collection", "field", "texts")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    field: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., field: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryTerms(_message.Message):
    __slots__ = ("terms", "df")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    DF_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedScalarFieldContainer[str]
    df: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, terms: _Optional[_Iterable[str]] = ..., df: _Optional[_Iterable[int]] = ...) -> None: ...

class KeywordStatsResponse(_message.Message):
    __slots__ = ("field", "documents", "tokens", "queries")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    field: str
    documents: int
    tokens: int
    queries: _containers.RepeatedCompositeFieldContainer[QueryTerms]
    def __init__(self, field: _Optional[str] = ..., documents: _Optional[int] = ..., tokens: _Optional[int] = ..., queries: _Optional[_Iterable[_Union[QueryTerms, _Mapping]]] = ...) -> None: ...

class KeywordSearchRequest(_message.Message):
    __slots__ = ("collection", "field", "queries", "documents", "tokens", "k", "filter", "with_payload", "with_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    field: str
    queries: _containers.RepeatedCompositeFieldContainer[QueryTerms]
    documents: int
    tokens: int
    k: int
    filter: _payload_pb2.Filter
    with_payload: _payload_pb2.PayloadSelector
    with_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., field: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[QueryTerms, _Mapping]]] = ..., documents: _Optional[int] = ..., tokens: _Optional[int] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_payload_pb2.Filter, _Mapping]] = ..., with_payload: _Optional[_Union[_payload_pb2.PayloadSelector, _Mapping]] = ..., with_vectors: _Optional[bool] = ...) -> None: ...

class ImportRequest(_message.Message):
    __slots__ = ("collection", "page")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page: ExportResponse
    def __init__(self, collection: _Optional[str] = ..., page: _Optional[_Union[ExportResponse, _Mapping]] = ...) -> None: ...

class ResyncRequest(_message.Message):
    __slots__ = ("collection", "peer")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    peer: str
    def __init__(self, collection: _Optional[str] = ..., peer: _Optional[str] = ...) -> None: ...

class RollbackAddRequest(_message.Message):
    __slots__ = ("collection", "write_token", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    WRITE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    write_token: int
    ids: bytes
    def __init__(self, collection: _Optional[str] = ..., write_token: _Optional[int] = ..., ids: _Optional[bytes] = ...) -> None: ...

class ShardCollectionState(_message.Message):
    __slots__ = ("config", "count", "trained", "centroids", "digest", "train_epoch", "train_id", "prepared_epoch", "writes", "max_version", "tombstones", "incarnation", "payload_indexes", "codec")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TRAIN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ID_FIELD_NUMBER: _ClassVar[int]
    PREPARED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_INDEXES_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    config: _types_pb2.CollectionConfig
    count: int
    trained: bool
    centroids: _types_pb2.FloatMatrix
    digest: int
    train_epoch: int
    train_id: int
    prepared_epoch: int
    writes: int
    max_version: int
    tombstones: int
    incarnation: int
    payload_indexes: _containers.RepeatedCompositeFieldContainer[_payload_pb2.PayloadIndex]
    codec: bytes
    def __init__(self, config: _Optional[_Union[_types_pb2.CollectionConfig, _Mapping]] = ..., count: _Optional[int] = ..., trained: _Optional[bool] = ..., centroids: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., digest: _Optional[int] = ..., train_epoch: _Optional[int] = ..., train_id: _Optional[int] = ..., prepared_epoch: _Optional[int] = ..., writes: _Optional[int] = ..., max_version: _Optional[int] = ..., tombstones: _Optional[int] = ..., incarnation: _Optional[int] = ..., payload_indexes: _Optional[_Iterable[_Union[_payload_pb2.PayloadIndex, _Mapping]]] = ..., codec: _Optional[bytes] = ...) -> None: ...

class ShardListResponse(_message.Message):
    __slots__ = ("collections", "dropped", "rss_bytes", "uptime_s")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[ShardCollectionState]
    dropped: _containers.ScalarMap[str, int]
    rss_bytes: int
    uptime_s: float
    def __init__(self, collections: _Optional[_Iterable[_Union[ShardCollectionState, _Mapping]]] = ..., dropped: _Optional[_Mapping[str, int]] = ..., rss_bytes: _Optional[int] = ..., uptime_s: _Optional[float] = ...) -> None: ...

class InstallQuantizerRequest(_message.Message):
    __slots__ = ("collection", "centroids", "epoch", "train_id", "mode", "decide", "codec")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DECIDE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    collection: str
    centroids: _types_pb2.FloatMatrix
    epoch: int
    train_id: int
    mode: InstallMode
    decide: bool
    codec: bytes
    def __init__(self, collection: _Optional[str] = ..., centroids: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., epoch: _Optional[int] = ..., train_id: _Optional[int] = ..., mode: _Optional[_Union[InstallMode, str]] = ..., decide: _Optional[bool] = ..., codec: _Optional[bytes] = ...) -> None: ...

class WalRecord(_message.Message):
    __slots__ = ("lsn", "create", "drop", "add", "remove", "install", "abort", "set_payload", "create_index", "drop_index", "update_vectors", "write_token", "version", "versions", "rollback")
    LSN_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    DROP_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    INSTALL_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    SET_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CREATE_INDEX_FIELD_NUMBER: _ClassVar[int]
    DROP_INDEX_FIELD_NUMBER: _ClassVar[int]
    UPDATE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WRITE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    create: _types_pb2.CollectionConfig
    drop: str
    add: _vector_search_pb2.AddRequest
    remove: _vector_search_pb2.RemoveRequest
    install: InstallQuantizerRequest
    abort: int
    set_payload: _vector_search_pb2.SetPayloadRequest
    create_index: _vector_search_pb2.CreatePayloadIndexRequest
    drop_index: _vector_search_pb2.DropPayloadIndexRequest
    update_vectors: _vector_search_pb2.UpdateVectorsRequest
    write_token: int
    version: int
    versions: bytes
    rollback: bool
    def __init__(self, lsn: _Optional[int] = ..., create: _Optional[_Union[_types_pb2.CollectionConfig, _Mapping]] = ..., drop: _Optional[str] = ..., add: _Optional[_Union[_vector_search_pb2.AddRequest, _Mapping]] = ..., remove: _Optional[_Union[_vector_search_pb2.RemoveRequest, _Mapping]] = ..., install: _Optional[_Union[InstallQuantizerRequest, _Mapping]] = ..., abort: _Optional[int] = ..., set_payload: _Optional[_Union[_vector_search_pb2.SetPayloadRequest, _Mapping]] = ..., create_index: _Optional[_Union[_vector_search_pb2.CreatePayloadIndexRequest, _Mapping]] = ..., drop_index: _Optional[_Union[_vector_search_pb2.DropPayloadIndexRequest, _Mapping]] = ..., update_vectors: _Optional[_Union[_vector_search_pb2.UpdateVectorsRequest, _Mapping]] = ..., write_token: _Optional[int] = ..., version: _Optional[int] = ..., versions: _Optional[bytes] = ..., rollback: _Optional[bool] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("collection", "after_id", "limit", "include_tombstones", "owned_by", "owner", "ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TOMBSTONES_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    after_id: int
    limit: int
    include_tombstones: bool
    owned_by: _types_pb2.Placement
    owner: int
    ids: bytes
    def __init__(self, collection: _Optional[str] = ..., after_id: _Optional[int] = ..., limit: _Optional[int] = ..., include_tombstones: _Optional[bool] = ..., owned_by: _Optional[_Union[_types_pb2.Placement, _Mapping]] = ..., owner: _Optional[int] = ..., ids: _Optional[bytes] = ...) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ("ids", "vectors", "versions", "tombstone_ids", "tombstone_versions", "payloads", "scanned_to", "complete", "vectorless")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_IDS_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    SCANNED_TO_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    VECTORLESS_FIELD_NUMBER: _ClassVar[int]
    ids: bytes
    vectors: _types_pb2.FloatMatrix
    versions: bytes
    tombstone_ids: bytes
    tombstone_versions: bytes
    payloads: _containers.RepeatedCompositeFieldContainer[_payload_pb2.Payload]
    scanned_to: int
    complete: bool
    vectorless: bytes
    def __init__(self, ids: _Optional[bytes] = ..., vectors: _Optional[_Union[_types_pb2.FloatMatrix, _Mapping]] = ..., versions: _Optional[bytes] = ..., tombstone_ids: _Optional[bytes] = ..., tombstone_versions: _Optional[bytes] = ..., payloads: _Optional[_Iterable[_Union[_payload_pb2.Payload, _Mapping]]] = ..., scanned_to: _Optional[int] = ..., complete: _Optional[bool] = ..., vectorless: _Optional[bytes] = ...) -> None: ...

class BackupPartitionRequest(_message.Message):
    __slots__ = ("collection", "backup_id", "location", "path", "wait", "abort")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    backup_id: str
    location: _vector_search_pb2.BackupLocation
    path: str
    wait: bool
    abort: bool
    def __init__(self, collection: _Optional[str] = ..., backup_id: _Optional[str] = ..., location: _Optional[_Union[_vector_search_pb2.BackupLocation, _Mapping]] = ..., path: _Optional[str] = ..., wait: _Optional[bool] = ..., abort: _Optional[bool] = ...) -> None: ...

class BackupPartitionResponse(_message.Message):
    __slots__ = ("lsn", "count", "files")
    LSN_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    count: int
    files: _containers.RepeatedCompositeFieldContainer[_vector_search_pb2.BackupFile]
    def __init__(self, lsn: _Optional[int] = ..., count: _Optional[int] = ..., files: _Optional[_Iterable[_Union[_vector_search_pb2.BackupFile, _Mapping]]] = ...) -> None: ...
