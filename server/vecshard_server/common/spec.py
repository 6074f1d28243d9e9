"""A collection's definition: validated from the public CollectionConfig, with defaults filled in."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from vecshard.errors import InvalidArgument, ResourceExhausted
from vecshard.types import IndexType, Metric
from vecshard.v1 import types_pb2
from vecshard_server.common.config import Settings
from vecshard_server.common.placement import MAX_GROUPS, Placement

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")  # whole string: fullmatch (a $ would allow "name\n")


def check_name(name: str, field: str = "collection") -> str:
    """Refuse names that are not 1-64 characters of [A-Za-z0-9_-] starting with a letter."""
    if not NAME_RE.fullmatch(name):
        shown = repr(name) if len(name) <= 80 else f"{name[:40]!r}... ({len(name)} characters)"
        raise InvalidArgument(
            f"{field} name {shown} is invalid: use 1-64 characters, a letter first, then letters, digits, '_' or '-'"
        )
    return name


def check_partition_name(name: str) -> str:
    """A shard partition's name: a collection name, optionally `@epoch` (common/placement.py)."""
    base, sep, epoch = name.partition("@")
    check_name(base)
    if sep and not (epoch.isdigit() and epoch[0] != "0" and len(epoch) <= 9):
        raise InvalidArgument(f"partition name {name!r} is invalid: a collection name, then optionally @ and an epoch")
    return name


MAX_REFINE = 64
FLAT_UP_TO = 50_000  # sizing: below this many vectors brute force is fast and exact
HNSW_FROM_NLIST = 16_384  # sizing: from this nlist the coarse quantizer is an HNSW graph
# Bytes a shard holds per vector, measured at 10M x 128 (docs/capacity.md): faiss's codes and ids with
# the spare capacity of its growing lists (x1.3), plus vecshard's own structures (ids, versions, slots;
# IVF_FLAT also faiss's hashtable direct map).
LIST_SLACK = 1.3
OWN_BYTES, OWN_BYTES_IVF_FLAT = 150, 250


def bytes_per_vector(code_bytes: int, ivf_flat: bool = False) -> float:
    """The RAM a stored vector takes on the shards, for codes of `code_bytes`."""
    return LIST_SLACK * (code_bytes + 8) + (OWN_BYTES_IVF_FLAT if ivf_flat else OWN_BYTES)


def sizing_nprobe(nlist: int, recall: float) -> int:
    """Lists to probe for a recall@10 target: a starting point from the scale benchmark's curves
    (docs/capacity.md), to be checked on the user's own data."""
    r = recall - 1e-6  # (float32 on the wire: 0.99 arrives as 0.99000001)
    share = 1 / 64 if r <= 0.9 else 1 / 32 if r <= 0.95 else 1 / 8 if r <= 0.99 else 1 / 2
    return max(1, min(nlist, max(8, round(nlist * share))))


def sized(cfg: types_pb2.CollectionConfig, settings: Settings) -> types_pb2.CollectionConfig:
    """The config the sizing guide picks for cfg.expected_size vectors at cfg.target_recall within
    cfg.memory_budget (docs/capacity.md): FLAT up to 50k vectors; else IVF with nlist the power of two
    nearest 4 * sqrt(n) (64 to max_nlist), an HNSW coarse quantizer from nlist 16384, and the
    first kind whose index fits the budget: IVF_FLAT (4 * dim bytes a vector), IVF_SQ8 (dim), IVF_PQ
    (dim / 8, re-ranked by refine 8 from the float vectors on disk)."""
    if cfg.nlist or cfg.nprobe or cfg.pq_m or cfg.coarse_quantizer:
        raise InvalidArgument(
            "expected_size, target_recall and memory_budget ask the server to choose the index: leave nlist, nprobe, "
            "pq_m and coarse_quantizer unset, or set index_type and them yourself"
        )
    if not cfg.expected_size:
        raise InvalidArgument("target_recall and memory_budget need expected_size (the vectors you plan to store)")
    recall = cfg.target_recall or 0.95
    if not 0 < recall < 1:
        raise InvalidArgument(f"target_recall must be between 0 and 1 (exclusive), got {cfg.target_recall}")
    out = types_pb2.CollectionConfig()
    out.CopyFrom(cfg)
    out.target_recall = recall
    n, dim = cfg.expected_size, cfg.dim
    if n <= FLAT_UP_TO:
        out.index_type = types_pb2.INDEX_TYPE_FLAT
        return out
    nlist = 1 << max(6, round(math.log2(4 * math.sqrt(n))))
    nlist = min(nlist, settings.max_nlist)
    out.nlist = nlist
    out.nprobe = sizing_nprobe(nlist, recall)
    out.coarse_quantizer = (
        types_pb2.COARSE_QUANTIZER_HNSW if nlist >= HNSW_FROM_NLIST else types_pb2.COARSE_QUANTIZER_FLAT
    )
    budget = cfg.memory_budget or float("inf")
    l1 = cfg.metric == types_pb2.METRIC_L1
    if l1 or n * bytes_per_vector(4 * dim, ivf_flat=True) <= budget:
        out.index_type = types_pb2.INDEX_TYPE_IVF_FLAT
    elif n * bytes_per_vector(dim) <= budget:
        out.index_type = types_pb2.INDEX_TYPE_IVF_SQ8
    else:
        out.index_type = types_pb2.INDEX_TYPE_IVF_PQ
        out.pq_m = default_pq_m(dim)
        out.refine_factor = 8
    return out


def default_pq_m(dim: int) -> int:
    """The largest divisor of dim not above dim / 8 (16 bytes a vector for dim 128)."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def default_nprobe(nlist: int) -> int:
    """min(nlist, max(8, nlist // 16)): 8 lists for small nlist, 1/16 of the lists for large ones."""
    return min(nlist, max(8, nlist // 16))


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    dim: int
    metric: Metric
    index_type: IndexType
    nlist: int = 0
    nprobe: int = 0
    train_threshold: int = 0
    embedding_model: str = ""
    model_fingerprint: str = ""
    store_text: bool = False
    pq_m: int = 0
    pq_nbits: int = 0
    refine_factor: int = 0
    hnsw_quantizer: bool = False  # the coarse quantizer is an HNSW graph over the centroids
    expected_size: int = 0  # as given at creation (sizing), for information
    target_recall: float = 0.0
    memory_budget: int = 0
    # Which shard group holds each id (common/placement.py); 0 shards: recorded by no coordinator
    # (collections made before placements were recorded: MOD over every group).
    placement_function: str = "mod"
    placement_shards: int = 0
    placement_epoch: int = 0
    # String ids (IdType STRING): each stored under its hash of this many bits (common/string_ids.py);
    # 0 for int ids.
    string_id_bits: int = 0

    @property
    def string_ids(self) -> bool:
        return self.string_id_bits > 0

    @property
    def trained_codec(self) -> bool:
        """The trained state is a serialized faiss index (compressed kinds, HNSW quantizer), not
        just the centroids."""
        return self.quantized or self.hnsw_quantizer

    @property
    def is_ivf(self) -> bool:
        return bool(self.index_type.is_ivf)

    @property
    def quantized(self) -> bool:
        """The index holds compressed codes; the float vectors live in a memory-mapped file."""
        return bool(self.index_type.quantized)

    @property
    def larger_is_better(self) -> bool:
        return bool(self.metric.larger_is_better)

    def to_proto(self) -> types_pb2.CollectionConfig:
        return types_pb2.CollectionConfig(
            name=self.name,
            dim=self.dim,
            metric=self.metric.to_proto(),
            index_type=self.index_type.to_proto(),
            nlist=self.nlist,
            nprobe=self.nprobe,
            train_threshold=self.train_threshold,
            embedding_model=self.embedding_model,
            model_fingerprint=self.model_fingerprint,
            store_text=self.store_text,
            pq_m=self.pq_m,
            pq_nbits=self.pq_nbits,
            refine_factor=self.refine_factor,
            coarse_quantizer=types_pb2.COARSE_QUANTIZER_HNSW
            if self.hnsw_quantizer
            else types_pb2.COARSE_QUANTIZER_FLAT
            if self.is_ivf
            else types_pb2.COARSE_QUANTIZER_UNSPECIFIED,
            expected_size=self.expected_size,
            target_recall=self.target_recall,
            memory_budget=self.memory_budget,
            placement=Placement(self.placement_function, self.placement_shards, self.placement_epoch).to_proto(),
            id_type=types_pb2.ID_TYPE_STRING if self.string_ids else types_pb2.ID_TYPE_INT,
            string_id_hash_bits=self.string_id_bits,
        )

    @classmethod
    def from_proto(cls, cfg: types_pb2.CollectionConfig) -> CollectionSpec:
        """Trusting conversion (for configs a coordinator already validated)."""
        return cls(
            name=cfg.name,
            dim=cfg.dim,
            metric=Metric.from_proto(cfg.metric),
            index_type=IndexType.from_proto(cfg.index_type),
            nlist=cfg.nlist,
            nprobe=cfg.nprobe,
            train_threshold=cfg.train_threshold,
            embedding_model=cfg.embedding_model,
            model_fingerprint=cfg.model_fingerprint,
            store_text=cfg.store_text,
            pq_m=cfg.pq_m,
            pq_nbits=cfg.pq_nbits,
            refine_factor=cfg.refine_factor,
            hnsw_quantizer=cfg.coarse_quantizer == types_pb2.COARSE_QUANTIZER_HNSW,
            expected_size=cfg.expected_size,
            target_recall=cfg.target_recall,
            memory_budget=cfg.memory_budget,
            placement_function=Placement.from_proto(cfg.placement).function,
            placement_shards=cfg.placement.shards,
            placement_epoch=cfg.placement.epoch,
            string_id_bits=cfg.string_id_hash_bits if cfg.id_type == types_pb2.ID_TYPE_STRING else 0,
        )

    @classmethod
    def validate(cls, cfg: types_pb2.CollectionConfig, settings: Settings, partition: bool = False) -> CollectionSpec:
        """Check a user's config and fill in defaults; raises InvalidArgument naming the field.

        partition: a shard's partition, whose name may carry a placement epoch (`name@3`)."""
        check_partition_name(cfg.name) if partition else check_name(cfg.name)
        if partition and not Placement.valid(cfg.placement):
            raise InvalidArgument(f"placement must be MOD or JUMP over at most {MAX_GROUPS} groups")
        if cfg.index_type == types_pb2.INDEX_TYPE_UNSPECIFIED and (
            cfg.expected_size or cfg.target_recall or cfg.memory_budget
        ):
            cfg = sized(cfg, settings)
        cfg = _with_id_type(cfg, settings, partition)
        _check_common_fields(cfg, settings)
        if cfg.index_type == types_pb2.INDEX_TYPE_FLAT:
            _check_flat_fields(cfg)
            return cls.from_proto(cfg)
        pq_m, pq_nbits = _check_ivf_fields(cfg, settings)
        spec = cls.from_proto(cfg)
        return dataclasses.replace(
            spec,
            pq_m=pq_m,
            pq_nbits=pq_nbits,
            nprobe=spec.nprobe or default_nprobe(spec.nlist),
            train_threshold=spec.train_threshold or settings.train_threshold_factor * spec.nlist,
        )


_IVF_KINDS = frozenset(
    {
        types_pb2.INDEX_TYPE_IVF_FLAT,
        types_pb2.INDEX_TYPE_IVF_SQ8,
        types_pb2.INDEX_TYPE_IVF_SQFP16,
        types_pb2.INDEX_TYPE_IVF_PQ,
    }
)
# The fields a FLAT collection must leave 0 (they configure IVF indexes).
_IVF_ONLY_FIELDS = ("nlist", "nprobe", "train_threshold", "pq_m", "pq_nbits", "refine_factor", "coarse_quantizer")


def _check_common_fields(cfg: types_pb2.CollectionConfig, settings: Settings) -> None:
    """The checks every index kind shares: store_text, dim and metric."""
    if cfg.store_text and not cfg.embedding_model:
        raise InvalidArgument("store_text keeps the texts a model embeds: set embedding_model too")
    if not 1 <= cfg.dim <= settings.max_dim:
        raise InvalidArgument(f"dim must be between 1 and {settings.max_dim}, got {cfg.dim}")
    if cfg.metric not in (
        types_pb2.METRIC_L2,
        types_pb2.METRIC_INNER_PRODUCT,
        types_pb2.METRIC_COSINE,
        types_pb2.METRIC_L1,
    ):
        raise InvalidArgument(f"metric must be one of L2, INNER_PRODUCT, COSINE, L1, got {cfg.metric}")


def _with_id_type(cfg: types_pb2.CollectionConfig, settings: Settings, partition: bool) -> types_pb2.CollectionConfig:
    """cfg with its id type checked and, for string ids, the hash width set (a user's create takes the
    server's string_id_hash_bits; a partition keeps the coordinator's)."""
    if cfg.id_type not in (types_pb2.ID_TYPE_UNSPECIFIED, types_pb2.ID_TYPE_INT, types_pb2.ID_TYPE_STRING):
        raise InvalidArgument(f"id_type must be INT or STRING, got {cfg.id_type}")
    out = types_pb2.CollectionConfig()
    out.CopyFrom(cfg)
    if cfg.id_type != types_pb2.ID_TYPE_STRING:
        out.id_type, out.string_id_hash_bits = types_pb2.ID_TYPE_INT, 0
    elif not partition or not cfg.string_id_hash_bits:
        out.string_id_hash_bits = settings.string_id_hash_bits
    elif not 8 <= cfg.string_id_hash_bits <= 63:
        raise InvalidArgument(f"string_id_hash_bits must be 8 to 63, got {cfg.string_id_hash_bits}")
    return out


def _check_flat_fields(cfg: types_pb2.CollectionConfig) -> None:
    """A FLAT collection sets none of the IVF fields."""
    for field in _IVF_ONLY_FIELDS:
        if getattr(cfg, field):
            raise InvalidArgument(f"{field} applies to IVF collections only: leave it 0 for FLAT")


def _check_ivf_fields(cfg: types_pb2.CollectionConfig, settings: Settings) -> tuple[int, int]:
    """Check an IVF collection's index fields; returns its (pq_m, pq_nbits), IVF_PQ's defaults filled in."""
    if cfg.index_type not in _IVF_KINDS:
        raise InvalidArgument(f"index_type must be FLAT, IVF_FLAT, IVF_SQ8, IVF_SQFP16 or IVF_PQ, got {cfg.index_type}")
    kind = IndexType.from_proto(cfg.index_type)
    name = kind.name
    if not 1 <= cfg.nlist <= settings.max_nlist:
        raise InvalidArgument(f"{name} needs nlist between 1 and {settings.max_nlist}, got {cfg.nlist}")
    if kind.quantized and cfg.metric == types_pb2.METRIC_L1:
        raise InvalidArgument(
            f"{name} supports L2, INNER_PRODUCT and COSINE (faiss has no L1 quantized IVF): use IVF_FLAT for L1"
        )
    if not kind.quantized and cfg.refine_factor > 1:
        raise InvalidArgument(
            f"refine_factor applies to IVF_SQ8, IVF_SQFP16 and IVF_PQ ({name} is exact per vector already): leave it 0"
        )
    if cfg.refine_factor > MAX_REFINE:
        raise InvalidArgument(f"refine_factor must be at most {MAX_REFINE}, got {cfg.refine_factor}")
    pq = _pq_params(cfg, kind)
    if cfg.coarse_quantizer not in (
        types_pb2.COARSE_QUANTIZER_UNSPECIFIED,
        types_pb2.COARSE_QUANTIZER_FLAT,
        types_pb2.COARSE_QUANTIZER_HNSW,
    ):
        raise InvalidArgument(f"coarse_quantizer must be FLAT or HNSW, got {cfg.coarse_quantizer}")
    if cfg.nprobe > cfg.nlist:
        raise InvalidArgument(f"nprobe ({cfg.nprobe}) cannot exceed nlist ({cfg.nlist})")
    if cfg.train_threshold and cfg.train_threshold < cfg.nlist:
        raise InvalidArgument(
            f"train_threshold ({cfg.train_threshold}) must be at least nlist ({cfg.nlist}): "
            "k-means needs one point per centroid"
        )
    return pq


def _pq_params(cfg: types_pb2.CollectionConfig, kind: IndexType) -> tuple[int, int]:
    """(pq_m, pq_nbits): IVF_PQ's, checked, defaults filled in; other kinds must leave them 0."""
    pq_m, pq_nbits = cfg.pq_m, cfg.pq_nbits
    if kind is IndexType.IVF_PQ:
        pq_m = pq_m or default_pq_m(cfg.dim)
        pq_nbits = pq_nbits or 8
        if cfg.dim % pq_m:
            raise InvalidArgument(f"pq_m ({pq_m}) must divide dim ({cfg.dim})")
        if not 1 <= pq_nbits <= 16:
            raise InvalidArgument(f"pq_nbits must be between 1 and 16, got {pq_nbits}")
    elif pq_m or pq_nbits:
        raise InvalidArgument(f"pq_m and pq_nbits apply to IVF_PQ only: leave them 0 for {kind.name}")
    return pq_m, pq_nbits


def check_collection_count(existing: int, settings: Settings) -> None:
    if existing >= settings.max_collections:
        raise ResourceExhausted(
            f"the cluster already holds max_collections={settings.max_collections} collections: drop one "
            "or raise VECSHARD_MAX_COLLECTIONS"
        )
