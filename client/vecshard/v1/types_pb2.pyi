from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_L2: _ClassVar[Metric]
    METRIC_INNER_PRODUCT: _ClassVar[Metric]
    METRIC_COSINE: _ClassVar[Metric]
    METRIC_L1: _ClassVar[Metric]

class IndexType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_TYPE_UNSPECIFIED: _ClassVar[IndexType]
    INDEX_TYPE_FLAT: _ClassVar[IndexType]
    INDEX_TYPE_IVF_FLAT: _ClassVar[IndexType]
    INDEX_TYPE_IVF_SQ8: _ClassVar[IndexType]
    INDEX_TYPE_IVF_SQFP16: _ClassVar[IndexType]
    INDEX_TYPE_IVF_PQ: _ClassVar[IndexType]

class IdType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ID_TYPE_UNSPECIFIED: _ClassVar[IdType]
    ID_TYPE_INT: _ClassVar[IdType]
    ID_TYPE_STRING: _ClassVar[IdType]

class PlacementFunction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLACEMENT_FUNCTION_UNSPECIFIED: _ClassVar[PlacementFunction]
    PLACEMENT_FUNCTION_MOD: _ClassVar[PlacementFunction]
    PLACEMENT_FUNCTION_JUMP: _ClassVar[PlacementFunction]

class CoarseQuantizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COARSE_QUANTIZER_UNSPECIFIED: _ClassVar[CoarseQuantizer]
    COARSE_QUANTIZER_FLAT: _ClassVar[CoarseQuantizer]
    COARSE_QUANTIZER_HNSW: _ClassVar[CoarseQuantizer]

class InputRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPUT_ROLE_UNSPECIFIED: _ClassVar[InputRole]
    INPUT_ROLE_QUERY: _ClassVar[InputRole]
    INPUT_ROLE_PASSAGE: _ClassVar[InputRole]
METRIC_UNSPECIFIED: Metric
METRIC_L2: Metric
METRIC_INNER_PRODUCT: Metric
METRIC_COSINE: Metric
METRIC_L1: Metric
INDEX_TYPE_UNSPECIFIED: IndexType
INDEX_TYPE_FLAT: IndexType
INDEX_TYPE_IVF_FLAT: IndexType
INDEX_TYPE_IVF_SQ8: IndexType
INDEX_TYPE_IVF_SQFP16: IndexType
INDEX_TYPE_IVF_PQ: IndexType
ID_TYPE_UNSPECIFIED: IdType
ID_TYPE_INT: IdType
ID_TYPE_STRING: IdType
PLACEMENT_FUNCTION_UNSPECIFIED: PlacementFunction
PLACEMENT_FUNCTION_MOD: PlacementFunction
PLACEMENT_FUNCTION_JUMP: PlacementFunction
COARSE_QUANTIZER_UNSPECIFIED: CoarseQuantizer
COARSE_QUANTIZER_FLAT: CoarseQuantizer
COARSE_QUANTIZER_HNSW: CoarseQuantizer
INPUT_ROLE_UNSPECIFIED: InputRole
INPUT_ROLE_QUERY: InputRole
INPUT_ROLE_PASSAGE: InputRole

class FloatMatrix(_message.Message):
    __slots__ = ("data", "rows", "cols")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    rows: int
    cols: int
    def __init__(self, data: _Optional[bytes] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class CollectionConfig(_message.Message):
    __slots__ = ("name", "dim", "metric", "index_type", "nlist", "nprobe", "train_threshold", "embedding_model", "model_fingerprint", "store_text", "pq_m", "pq_nbits", "refine_factor", "coarse_quantizer", "expected_size", "target_recall", "memory_budget", "placement", "id_type", "string_id_hash_bits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    NLIST_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STORE_TEXT_FIELD_NUMBER: _ClassVar[int]
    PQ_M_FIELD_NUMBER: _ClassVar[int]
    PQ_NBITS_FIELD_NUMBER: _ClassVar[int]
    REFINE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    COARSE_QUANTIZER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SIZE_FIELD_NUMBER: _ClassVar[int]
    TARGET_RECALL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    STRING_ID_HASH_BITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: Metric
    index_type: IndexType
    nlist: int
    nprobe: int
    train_threshold: int
    embedding_model: str
    model_fingerprint: str
    store_text: bool
    pq_m: int
    pq_nbits: int
    refine_factor: int
    coarse_quantizer: CoarseQuantizer
    expected_size: int
    target_recall: float
    memory_budget: int
    placement: Placement
    id_type: IdType
    string_id_hash_bits: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., index_type: _Optional[_Union[IndexType, str]] = ..., nlist: _Optional[int] = ..., nprobe: _Optional[int] = ..., train_threshold: _Optional[int] = ..., embedding_model: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., store_text: _Optional[bool] = ..., pq_m: _Optional[int] = ..., pq_nbits: _Optional[int] = ..., refine_factor: _Optional[int] = ..., coarse_quantizer: _Optional[_Union[CoarseQuantizer, str]] = ..., expected_size: _Optional[int] = ..., target_recall: _Optional[float] = ..., memory_budget: _Optional[int] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., id_type: _Optional[_Union[IdType, str]] = ..., string_id_hash_bits: _Optional[int] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("function", "shards", "epoch")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    function: PlacementFunction
    shards: int
    epoch: int
    def __init__(self, function: _Optional[_Union[PlacementFunction, str]] = ..., shards: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "kind", "dim", "normalized", "fingerprint", "modalities", "query_prefix", "passage_prefix", "device")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    QUERY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    dim: int
    normalized: bool
    fingerprint: str
    modalities: _containers.RepeatedScalarFieldContainer[str]
    query_prefix: str
    passage_prefix: str
    device: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., dim: _Optional[int] = ..., normalized: _Optional[bool] = ..., fingerprint: _Optional[str] = ..., modalities: _Optional[_Iterable[str]] = ..., query_prefix: _Optional[str] = ..., passage_prefix: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "texts", "images", "role")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    role: InputRole
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., role: _Optional[_Union[InputRole, str]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vectors", "model")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    vectors: FloatMatrix
    model: ModelInfo
    def __init__(self, vectors: _Optional[_Union[FloatMatrix, _Mapping]] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("load",)
    LOAD_FIELD_NUMBER: _ClassVar[int]
    load: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, load: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...
