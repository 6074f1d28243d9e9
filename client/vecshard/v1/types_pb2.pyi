from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
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
METRIC_UNSPECIFIED: Metric
METRIC_L2: Metric
METRIC_INNER_PRODUCT: Metric
METRIC_COSINE: Metric
METRIC_L1: Metric
INDEX_TYPE_UNSPECIFIED: IndexType
INDEX_TYPE_FLAT: IndexType
INDEX_TYPE_IVF_FLAT: IndexType

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
    __slots__ = ("name", "dim", "metric", "index_type", "nlist", "nprobe", "train_threshold")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    NLIST_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: Metric
    index_type: IndexType
    nlist: int
    nprobe: int
    train_threshold: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., index_type: _Optional[_Union[IndexType, str]] = ..., nlist: _Optional[int] = ..., nprobe: _Optional[int] = ..., train_threshold: _Optional[int] = ...) -> None: ...
