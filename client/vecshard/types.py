"""Typed results of the SDK and the names it accepts for metrics and index types."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecshard import wire
from vecshard.errors import InvalidArgument
from vecshard.v1 import payload_pb2, types_pb2, vector_search_pb2


class Metric(enum.StrEnum):
    """Distance metric of a collection (see types.proto for the exact formulas)."""

    L2 = "l2"
    INNER_PRODUCT = "inner_product"
    COSINE = "cosine"
    L1 = "l1"

    @property
    def larger_is_better(self) -> bool:
        """True for similarities (inner product, cosine), False for distances (L2, L1)."""
        return self in (Metric.INNER_PRODUCT, Metric.COSINE)

    def to_proto(self) -> types_pb2.Metric:
        return _METRIC_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> Metric:
        return _METRIC_FROM_PROTO[value]

    @classmethod
    def parse(cls, value: str | Metric) -> Metric:
        """Accept a Metric or its name in any case ("l2", "IP", "inner_product", "cosine", "L1")."""
        if isinstance(value, Metric):
            return value
        key = str(value).strip().lower()
        key = {"ip": "inner_product", "dot": "inner_product", "euclidean": "l2", "manhattan": "l1"}.get(key, key)
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise InvalidArgument(f"unknown metric {value!r}: use one of {names}") from None


class IndexType(enum.StrEnum):
    """Index structure of a collection."""

    FLAT = "flat"
    IVF_FLAT = "ivf_flat"
    IVF_SQ8 = "ivf_sq8"
    IVF_SQFP16 = "ivf_sqfp16"
    IVF_PQ = "ivf_pq"

    @property
    def is_ivf(self) -> bool:
        """Every kind but FLAT: an inverted file over one trained coarse quantizer."""
        return self is not IndexType.FLAT

    @property
    def quantized(self) -> bool:
        """Vectors are stored compressed in the index (floats kept on disk for Get and refine)."""
        return self in (IndexType.IVF_SQ8, IndexType.IVF_SQFP16, IndexType.IVF_PQ)

    def to_proto(self) -> types_pb2.IndexType:
        return _INDEX_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> IndexType:
        return _INDEX_FROM_PROTO[value]

    @classmethod
    def parse(cls, value: str | IndexType) -> IndexType:
        """Accept an IndexType or its name in any case ("flat", "ivf_flat", "IVF", "ivf_pq", "IVF_SQ8")."""
        if isinstance(value, IndexType):
            return value
        key = str(value).strip().lower()
        key = {
            "ivf": "ivf_flat",
            "ivfflat": "ivf_flat",
            "ivfpq": "ivf_pq",
            "ivfsq8": "ivf_sq8",
            "ivf_fp16": "ivf_sqfp16",
            "ivfsqfp16": "ivf_sqfp16",
        }.get(key, key)
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(i.value for i in cls)
            raise InvalidArgument(f"unknown index type {value!r}: use one of {names}") from None


_METRIC_TO_PROTO: dict[Metric, types_pb2.Metric] = {
    Metric.L2: types_pb2.METRIC_L2,
    Metric.INNER_PRODUCT: types_pb2.METRIC_INNER_PRODUCT,
    Metric.COSINE: types_pb2.METRIC_COSINE,
    Metric.L1: types_pb2.METRIC_L1,
}
_METRIC_FROM_PROTO: dict[int, Metric] = {v: k for k, v in _METRIC_TO_PROTO.items()}
_INDEX_TO_PROTO: dict[IndexType, types_pb2.IndexType] = {
    IndexType.FLAT: types_pb2.INDEX_TYPE_FLAT,
    IndexType.IVF_FLAT: types_pb2.INDEX_TYPE_IVF_FLAT,
    IndexType.IVF_SQ8: types_pb2.INDEX_TYPE_IVF_SQ8,
    IndexType.IVF_SQFP16: types_pb2.INDEX_TYPE_IVF_SQFP16,
    IndexType.IVF_PQ: types_pb2.INDEX_TYPE_IVF_PQ,
}
_INDEX_FROM_PROTO: dict[int, IndexType] = {v: k for k, v in _INDEX_TO_PROTO.items()}

_TRAINING_STATES = {
    vector_search_pb2.TRAINING_STATE_NOT_APPLICABLE: "not_applicable",
    vector_search_pb2.TRAINING_STATE_UNTRAINED: "untrained",
    vector_search_pb2.TRAINING_STATE_TRAINING: "training",
    vector_search_pb2.TRAINING_STATE_TRAINED: "trained",
}

INDEX_TYPE_NAMES = ("keyword", "integer", "float", "bool", "datetime", "text")
# PayloadIndexType values; DATETIME and TEXT only once payload.proto has them (getattr keeps older stubs importing).
PAYLOAD_INDEX_TYPES: dict[str, int | None] = {
    name: getattr(payload_pb2, f"PAYLOAD_INDEX_TYPE_{name.upper()}", None) for name in INDEX_TYPE_NAMES
}
_INDEX_TYPES = {v: k for k, v in PAYLOAD_INDEX_TYPES.items() if v is not None}
ID_TYPES = {"int": types_pb2.ID_TYPE_INT, "string": types_pb2.ID_TYPE_STRING}


@dataclass(frozen=True)
class ShardInfo:
    """One shard's part of a collection."""

    name: str
    count: int
    trained: bool


@dataclass(frozen=True)
class TextIndexInfo:
    """A TEXT payload index (keyword search): its analyzer, BM25 parameters and counts over the
    collection. stemmer / stopwords: a language, or "" for none. documents: points whose field is
    a string; skipped: points whose field is something else (not indexed); tokens: their analysed
    tokens (average length = tokens / documents); terms: distinct terms (on several shards, the
    largest shard's count)."""

    stemmer: str
    stopwords: str
    k1: float
    b: float
    documents: int = 0
    terms: int = 0
    skipped: int = 0
    tokens: int = 0

    @classmethod
    def from_proto(cls, index: Any) -> TextIndexInfo:
        p, s = index.text, index.text_stats
        k1 = round(p.k1, 6) if p.HasField("k1") else 1.2
        b = round(p.b, 6) if p.HasField("b") else 0.75
        return cls(p.stemmer, p.stopwords, k1, b, s.documents, s.terms, s.skipped, s.tokens)


@dataclass(frozen=True)
class CollectionInfo:
    """A collection's config and state, as DescribeCollection returns it."""

    name: str
    dim: int
    metric: Metric
    index_type: IndexType
    nlist: int
    nprobe: int
    train_threshold: int
    count: int
    training_state: str
    embedding_model: str
    model_fingerprint: str
    shards: tuple[ShardInfo, ...]
    centroids: np.ndarray | None = field(default=None, compare=False, repr=False)
    # Payload indexes: field -> "keyword", "integer", "float", "bool", "datetime" or "text".
    payload_indexes: dict[str, str] = field(default_factory=dict, compare=False)
    # The "text" indexes' analyzers, BM25 parameters and counts, by field.
    text_indexes: dict[str, TextIndexInfo] = field(default_factory=dict, compare=False)
    store_text: bool = False
    pq_m: int = 0
    pq_nbits: int = 0
    refine_factor: int = 0
    coarse_quantizer: str = ""  # IVF kinds: "flat" or "hnsw"
    expected_size: int = 0  # sizing inputs, as given at creation
    target_recall: float = 0.0
    # With include_centroids, quantized kinds: the trained empty faiss index (faiss.deserialize_index).
    codec: bytes = field(default=b"", compare=False, repr=False)
    # "int" (int64 ids) or "string" (str ids, stored under a string_id_hash_bits wide hash).
    id_type: str = "int"
    string_id_hash_bits: int = 0

    @property
    def string_ids(self) -> bool:
        """True for a collection created with id_type="string": its ids are str."""
        return self.id_type == "string"

    @property
    def trained(self) -> bool:
        """True when every shard searches through the shared IVF quantizer."""
        return self.training_state == "trained"

    @classmethod
    def from_proto(cls, info: vector_search_pb2.CollectionInfo) -> CollectionInfo:
        cfg = info.config
        centroids = None
        if info.HasField("centroids") and info.centroids.rows:
            centroids = wire.unpack_matrix(info.centroids, "centroids").copy()
        return cls(
            name=cfg.name,
            dim=cfg.dim,
            metric=Metric.from_proto(cfg.metric),
            index_type=IndexType.from_proto(cfg.index_type),
            nlist=cfg.nlist,
            nprobe=cfg.nprobe,
            train_threshold=cfg.train_threshold,
            count=info.count,
            embedding_model=cfg.embedding_model,
            model_fingerprint=cfg.model_fingerprint,
            training_state=_TRAINING_STATES.get(info.training_state, "unspecified"),
            shards=tuple(ShardInfo(s.name, s.count, s.trained) for s in info.shards),
            centroids=centroids,
            payload_indexes={x.field: _INDEX_TYPES.get(x.type, "unspecified") for x in info.payload_indexes},
            text_indexes={
                x.field: TextIndexInfo.from_proto(x) for x in info.payload_indexes if _INDEX_TYPES.get(x.type) == "text"
            },
            store_text=cfg.store_text,
            pq_m=cfg.pq_m,
            pq_nbits=cfg.pq_nbits,
            refine_factor=cfg.refine_factor,
            coarse_quantizer={types_pb2.COARSE_QUANTIZER_FLAT: "flat", types_pb2.COARSE_QUANTIZER_HNSW: "hnsw"}.get(
                cfg.coarse_quantizer, ""
            ),
            expected_size=cfg.expected_size,
            target_recall=round(cfg.target_recall, 6),
            codec=info.codec,
            id_type="string" if cfg.id_type == types_pb2.ID_TYPE_STRING else "int",
            string_id_hash_bits=cfg.string_id_hash_bits,
        )


Id = int | str  # a point id: int64 >= 0, or a str in a string-id collection


@dataclass(frozen=True)
class AddResult:
    """What an add did: new ids, replaced ids (upsert / on_conflict="replace"), ids left as they
    were (on_conflict="skip") and the collection size afterwards."""

    added: int
    replaced: int
    count: int
    skipped: int = 0


@dataclass(frozen=True)
class LegScore:
    """A hit's place in one leg of a hybrid search: its score there (the dense leg's distance or
    similarity, the keyword leg's BM25 score) and its rank among the leg's candidates (from 1)."""

    score: float
    rank: int


@dataclass(frozen=True)
class Hit:
    """One search result: a stored id (str in a string-id collection), its distance (or
    similarity; a keyword search's BM25 score; a hybrid search's fused score) to the query, its
    payload (with with_payload; else None) and its vector (with with_vectors; else None). A hybrid
    search's hits also carry `dense` and `keyword`: the hit's score and rank in each leg, None
    where the leg did not find it."""

    id: Id
    distance: float
    payload: dict[str, Any] | None = None
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    dense: LegScore | None = None
    keyword: LegScore | None = None


@dataclass(frozen=True)
class Group:
    """The hits of one search sharing a value of the group_by field (`value`), best first."""

    value: Any
    hits: list[Hit]


@dataclass(frozen=True)
class FacetCount:
    """How many points (`count`) hold `value` in the faceted field."""

    value: Any
    count: int


@dataclass(frozen=True)
class Point:
    """A stored point as `scroll` and `retrieve` return it: id (str in a string-id collection),
    payload (None when not asked for) and vector (None when not asked for, or for a point stored
    without a vector)."""

    id: Id
    payload: dict[str, Any] | None = None
    vector: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class FilterPlan:
    """How one shard ran a filtered request (see payload.proto's FilterPlan)."""

    shard: str
    plan: str
    matches: int
    nprobe: int
    unindexed_fields: tuple[str, ...]


@dataclass(frozen=True)
class SearchResult:
    """Search results shaped like faiss's: `distances` and `ids` are (nq, k) arrays.

    Unpacks as a pair, so `D, I = client.search(...)` works as with faiss. Rows with fewer than k
    results are padded with id -1. In a string-id collection `ids` is an object array of str,
    padded with None. A grouped search (group_by) fills `groups` instead, and `distances` and
    `ids` are (nq, 0).
    """

    distances: np.ndarray
    ids: np.ndarray
    shards_total: int = 0
    shards_ok: int = 0
    failed_shards: tuple[str, ...] = ()
    # With with_payload: per query, the k payloads aligned with `ids` (None for padding).
    payloads: list[list[dict[str, Any] | None]] | None = field(default=None, repr=False)
    # With a filter: how each shard ran it.
    plans: tuple[FilterPlan, ...] = ()
    # With with_vectors: (nq, k, dim) float32, aligned with `ids` (zeros for padding).
    vectors: np.ndarray | None = field(default=None, repr=False)
    # With group_by: per query, its groups best first.
    groups: list[list[Group]] | None = field(default=None, repr=False)
    # True when `distances` are scores, higher first: keyword and hybrid searches, and the
    # similarities of inner_product and cosine collections.
    higher_is_better: bool = False
    # Hybrid searches: (nq, k) aligned with `ids`, each hit's score (NaN where absent) and rank (from
    # 1; 0 where absent) in the dense and the keyword leg.
    dense_scores: np.ndarray | None = field(default=None, repr=False)
    dense_ranks: np.ndarray | None = field(default=None, repr=False)
    keyword_scores: np.ndarray | None = field(default=None, repr=False)
    keyword_ranks: np.ndarray | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.distances, self.ids))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> np.ndarray:
        """result[0] is distances and result[1] ids, as in faiss's (D, I) tuple."""
        return (self.distances, self.ids)[index]

    def hits(self) -> Iterator[list[Hit]]:
        """Per query, its hits (id, distance, payload, vector; a hybrid search's also their `dense`
        and `keyword` LegScore) best first, padding left out. For a grouped search: each query's
        hits group after group.

        Example:
            >>> for q, hits in enumerate(result.hits()):
            ...     print(q, [(h.id, round(h.distance, 3)) for h in hits])
        """
        if self.groups is not None:
            for groups in self.groups:
                yield [h for g in groups for h in g.hits]
            return
        nq, k = self.ids.shape
        rows = self.payloads or [[None] * k] * nq
        for q, (D, I, P) in enumerate(zip(self.distances, self.ids, rows, strict=True)):
            yield [
                Hit(
                    _id(i),
                    float(d),
                    p,
                    self.vectors[q, j] if self.vectors is not None else None,
                    _leg(self.dense_scores, self.dense_ranks, q, j),
                    _leg(self.keyword_scores, self.keyword_ranks, q, j),
                )
                for j, (d, i, p) in enumerate(zip(D, I, P, strict=True))
                if not is_padding(i)
            ]

    @property
    def partial(self) -> bool:
        """True when some shards did not answer (only possible with allow_partial=True)."""
        return bool(self.failed_shards)


def _leg(scores: np.ndarray | None, ranks: np.ndarray | None, q: int, j: int) -> LegScore | None:
    """A hit's place in a hybrid search's leg (None: not in that leg, or not a hybrid search)."""
    if scores is None or ranks is None or ranks[q, j] <= 0:
        return None
    return LegScore(float(scores[q, j]), int(ranks[q, j]))


def is_padding(i: Any) -> bool:
    """Whether an entry of `SearchResult.ids` pads a short row (-1, or None for string ids)."""
    return i is None or (not isinstance(i, str) and i < 0)


def _id(i: Any) -> Id:
    return i if isinstance(i, str) else int(i)


@dataclass(frozen=True)
class ModelInfo:
    """An embedding model offered by the server. dim and fingerprint are 0/"" until it is first used."""

    name: str
    kind: str
    dim: int
    normalized: bool
    fingerprint: str
    modalities: tuple[str, ...]
    query_prefix: str = ""
    passage_prefix: str = ""
    device: str = ""

    @classmethod
    def from_proto(cls, m: types_pb2.ModelInfo) -> ModelInfo:
        return cls(
            name=m.name,
            kind=m.kind,
            dim=m.dim,
            normalized=m.normalized,
            fingerprint=m.fingerprint,
            modalities=tuple(m.modalities),
            query_prefix=m.query_prefix,
            passage_prefix=m.passage_prefix,
            device=m.device,
        )


@dataclass(frozen=True)
class Embeddings:
    """Vectors from `Client.embed`: one row per input, and the model (with its fingerprint) that made them.

    Works as an array: `np.asarray(result)` is `result.vectors`.
    """

    vectors: np.ndarray
    model: ModelInfo

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.vectors if dtype is None else self.vectors.astype(dtype)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint


@dataclass(frozen=True)
class Sample:
    """A random sample of a collection: `vectors` (n, dim) with their `ids`, the shard group holding
    each (`shards`) and its IVF list (`lists`, -1 while untrained)."""

    ids: np.ndarray
    vectors: np.ndarray
    shards: np.ndarray
    lists: np.ndarray


@dataclass(frozen=True)
class ReshardProgress:
    """One collection's reshard (Client.reshard): from_shards -> to_shards groups, its phase
    (PREPARING, COPYING, CUTTING_OVER, DONE, ABORTED, UNCHANGED, IDLE, FAILED), points scanned and
    copied to the new placement, how many of them changed group, and the collection's size when
    the copy began."""

    collection: str
    from_shards: int
    to_shards: int
    from_epoch: int
    phase: str
    copied: int
    moved: int
    total: int
    error: str

    @classmethod
    def from_proto(cls, p: Any) -> ReshardProgress:
        return cls(p.collection, p.from_shards, p.to_shards, p.from_epoch, p.phase, p.copied, p.moved, p.total, p.error)


@dataclass(frozen=True)
class BackupProgress:
    """A backup or restore job on the coordinator (Client.create_backup, restore_backup,
    backup_status): its `job` id (a backup's is its backup id), `kind` ("backup" or "restore"), the
    `backup_id`, `phase` (FENCING, WRITING, VERIFYING, RESTORING, DONE, FAILED, CANCELLED), `done` of
    `total` (backup: partitions written; restore: points restored), and `error` when FAILED."""

    job: str
    kind: str
    backup_id: str
    phase: str
    done: int
    total: int
    error: str
    collections: list[str]

    @classmethod
    def from_proto(cls, p: Any) -> BackupProgress:
        return cls(p.job, p.kind, p.backup_id, p.phase, p.done, p.total, p.error, list(p.collections))


@dataclass(frozen=True)
class BackupFile:
    """A file of a backup: its path in the backup's folder, size and hex SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BackupCollection:
    """A collection in a backup: its config and points at the cut (`info`), shard groups, training
    and files."""

    info: CollectionInfo
    shards: int
    trained: bool
    train_epoch: int
    files: list[BackupFile]

    @property
    def name(self) -> str:
        return self.info.name


@dataclass(frozen=True)
class BackupInfo:
    """A backup's manifest (Client.list_backups without files, describe_backup with them): its id,
    when its cut was taken (`created`, RFC 3339), the cut's version, how long writes paused for it
    (`fence_ms`), its collections, files and bytes."""

    id: str
    created: str
    cut_version: int
    fence_ms: float
    collections: list[BackupCollection]
    files: int
    bytes: int

    @classmethod
    def from_proto(cls, b: Any) -> BackupInfo:
        colls = []
        for c in b.collections:
            info = vector_search_pb2.CollectionInfo(config=c.config, count=c.count, payload_indexes=c.payload_indexes)
            files = [BackupFile(f.path, f.size, f.sha256) for f in c.files]
            colls.append(BackupCollection(CollectionInfo.from_proto(info), c.shards, c.trained, c.train_epoch, files))
        return cls(b.id, b.created, b.cut_version, b.fence_ms, colls, b.files, b.bytes)


@dataclass(frozen=True)
class BackupVerification:
    """What Client.verify_backup found: files and bytes read, and one line per problem (a missing
    file, a size or SHA-256 mismatch); `ok` when there is none."""

    id: str
    files_checked: int
    bytes_checked: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems
