from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadIndexType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_INDEX_TYPE_UNSPECIFIED: _ClassVar[PayloadIndexType]
    PAYLOAD_INDEX_TYPE_KEYWORD: _ClassVar[PayloadIndexType]
    PAYLOAD_INDEX_TYPE_INTEGER: _ClassVar[PayloadIndexType]
    PAYLOAD_INDEX_TYPE_FLOAT: _ClassVar[PayloadIndexType]
    PAYLOAD_INDEX_TYPE_BOOL: _ClassVar[PayloadIndexType]
    PAYLOAD_INDEX_TYPE_DATETIME: _ClassVar[PayloadIndexType]
    PAYLOAD_INDEX_TYPE_TEXT: _ClassVar[PayloadIndexType]
PAYLOAD_INDEX_TYPE_UNSPECIFIED: PayloadIndexType
PAYLOAD_INDEX_TYPE_KEYWORD: PayloadIndexType
PAYLOAD_INDEX_TYPE_INTEGER: PayloadIndexType
PAYLOAD_INDEX_TYPE_FLOAT: PayloadIndexType
PAYLOAD_INDEX_TYPE_BOOL: PayloadIndexType
PAYLOAD_INDEX_TYPE_DATETIME: PayloadIndexType
PAYLOAD_INDEX_TYPE_TEXT: PayloadIndexType

class Value(_message.Message):
    __slots__ = ("null_value", "bool_value", "int_value", "double_value", "string_value", "list_value", "struct_value")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRUCT_VALUE_FIELD_NUMBER: _ClassVar[int]
    null_value: bool
    bool_value: bool
    int_value: int
    double_value: float
    string_value: str
    list_value: ListValue
    struct_value: Payload
    def __init__(self, null_value: _Optional[bool] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ..., list_value: _Optional[_Union[ListValue, _Mapping]] = ..., struct_value: _Optional[_Union[Payload, _Mapping]] = ...) -> None: ...

class ListValue(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.MessageMap[str, Value]
    def __init__(self, fields: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("must", "should", "must_not")
    MUST_FIELD_NUMBER: _ClassVar[int]
    SHOULD_FIELD_NUMBER: _ClassVar[int]
    MUST_NOT_FIELD_NUMBER: _ClassVar[int]
    must: _containers.RepeatedCompositeFieldContainer[Condition]
    should: _containers.RepeatedCompositeFieldContainer[Condition]
    must_not: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, must: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., should: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., must_not: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("field", "filter", "has_id")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    HAS_ID_FIELD_NUMBER: _ClassVar[int]
    field: FieldCondition
    filter: Filter
    has_id: bytes
    def __init__(self, field: _Optional[_Union[FieldCondition, _Mapping]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., has_id: _Optional[bytes] = ...) -> None: ...

class FieldCondition(_message.Message):
    __slots__ = ("key", "match", "match_any", "range", "is_null", "is_empty", "exists", "match_except", "datetime_range", "text")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    MATCH_ANY_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    IS_NULL_FIELD_NUMBER: _ClassVar[int]
    IS_EMPTY_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    MATCH_EXCEPT_FIELD_NUMBER: _ClassVar[int]
    DATETIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    key: str
    match: Value
    match_any: ListValue
    range: Range
    is_null: bool
    is_empty: bool
    exists: bool
    match_except: ListValue
    datetime_range: DatetimeRange
    text: str
    def __init__(self, key: _Optional[str] = ..., match: _Optional[_Union[Value, _Mapping]] = ..., match_any: _Optional[_Union[ListValue, _Mapping]] = ..., range: _Optional[_Union[Range, _Mapping]] = ..., is_null: _Optional[bool] = ..., is_empty: _Optional[bool] = ..., exists: _Optional[bool] = ..., match_except: _Optional[_Union[ListValue, _Mapping]] = ..., datetime_range: _Optional[_Union[DatetimeRange, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("gt", "gte", "lt", "lte")
    GT_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    gt: Value
    gte: Value
    lt: Value
    lte: Value
    def __init__(self, gt: _Optional[_Union[Value, _Mapping]] = ..., gte: _Optional[_Union[Value, _Mapping]] = ..., lt: _Optional[_Union[Value, _Mapping]] = ..., lte: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class DatetimeRange(_message.Message):
    __slots__ = ("gt", "gte", "lt", "lte")
    GT_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    gt: str
    gte: str
    lt: str
    lte: str
    def __init__(self, gt: _Optional[str] = ..., gte: _Optional[str] = ..., lt: _Optional[str] = ..., lte: _Optional[str] = ...) -> None: ...

class PayloadSelector(_message.Message):
    __slots__ = ("enable", "fields")
    ENABLE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    enable: bool
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, enable: _Optional[bool] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class PayloadIndex(_message.Message):
    __slots__ = ("field", "type", "text", "text_stats")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_STATS_FIELD_NUMBER: _ClassVar[int]
    field: str
    type: PayloadIndexType
    text: TextIndexParams
    text_stats: TextIndexStats
    def __init__(self, field: _Optional[str] = ..., type: _Optional[_Union[PayloadIndexType, str]] = ..., text: _Optional[_Union[TextIndexParams, _Mapping]] = ..., text_stats: _Optional[_Union[TextIndexStats, _Mapping]] = ...) -> None: ...

class TextIndexParams(_message.Message):
    __slots__ = ("stemmer", "stopwords", "k1", "b")
    STEMMER_FIELD_NUMBER: _ClassVar[int]
    STOPWORDS_FIELD_NUMBER: _ClassVar[int]
    K1_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    stemmer: str
    stopwords: str
    k1: float
    b: float
    def __init__(self, stemmer: _Optional[str] = ..., stopwords: _Optional[str] = ..., k1: _Optional[float] = ..., b: _Optional[float] = ...) -> None: ...

class TextIndexStats(_message.Message):
    __slots__ = ("documents", "terms", "skipped", "tokens")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    documents: int
    terms: int
    skipped: int
    tokens: int
    def __init__(self, documents: _Optional[int] = ..., terms: _Optional[int] = ..., skipped: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class FilterPlan(_message.Message):
    __slots__ = ("shard", "plan", "matches", "nprobe", "unindexed_fields")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    UNINDEXED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    shard: str
    plan: str
    matches: int
    nprobe: int
    unindexed_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, shard: _Optional[str] = ..., plan: _Optional[str] = ..., matches: _Optional[int] = ..., nprobe: _Optional[int] = ..., unindexed_fields: _Optional[_Iterable[str]] = ...) -> None: ...
