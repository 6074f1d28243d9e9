"""A collection's definition: validated from the public CollectionConfig, with defaults filled in."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from vecshard.errors import InvalidArgument, ResourceExhausted
from vecshard.types import IndexType, Metric
from vecshard.v1 import types_pb2
from vecshard_server.common.config import Settings

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")  # whole string: fullmatch (a $ would allow "name\n")


def check_name(name: str, field: str = "collection") -> str:
    """Refuse names that are not 1-64 characters of [A-Za-z0-9_-] starting with a letter."""
    if not NAME_RE.fullmatch(name):
        shown = repr(name) if len(name) <= 80 else f"{name[:40]!r}... ({len(name)} characters)"
        raise InvalidArgument(
            f"{field} name {shown} is invalid: use 1-64 characters, a letter first, then letters, digits, '_' or '-'"
        )
    return name


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

    @property
    def is_ivf(self) -> bool:
        return self.index_type is IndexType.IVF_FLAT

    @property
    def larger_is_better(self) -> bool:
        return self.metric.larger_is_better

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
        )

    @classmethod
    def validate(cls, cfg: types_pb2.CollectionConfig, settings: Settings) -> CollectionSpec:
        """Check a user's config and fill in defaults; raises InvalidArgument naming the field."""
        check_name(cfg.name)
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
        if cfg.index_type == types_pb2.INDEX_TYPE_FLAT:
            for field in ("nlist", "nprobe", "train_threshold"):
                if getattr(cfg, field):
                    raise InvalidArgument(f"{field} applies to IVF_FLAT collections only: leave it 0 for FLAT")
            return cls.from_proto(cfg)
        if cfg.index_type != types_pb2.INDEX_TYPE_IVF_FLAT:
            raise InvalidArgument(f"index_type must be FLAT or IVF_FLAT, got {cfg.index_type}")
        if not 1 <= cfg.nlist <= settings.max_nlist:
            raise InvalidArgument(f"IVF_FLAT needs nlist between 1 and {settings.max_nlist}, got {cfg.nlist}")
        if cfg.nprobe > cfg.nlist:
            raise InvalidArgument(f"nprobe ({cfg.nprobe}) cannot exceed nlist ({cfg.nlist})")
        if cfg.train_threshold and cfg.train_threshold < cfg.nlist:
            raise InvalidArgument(
                f"train_threshold ({cfg.train_threshold}) must be at least nlist ({cfg.nlist}): "
                "k-means needs one point per centroid"
            )
        spec = cls.from_proto(cfg)
        return dataclasses.replace(
            spec,
            nprobe=spec.nprobe or default_nprobe(spec.nlist),
            train_threshold=spec.train_threshold or settings.train_threshold_factor * spec.nlist,
        )


def check_collection_count(existing: int, settings: Settings) -> None:
    if existing >= settings.max_collections:
        raise ResourceExhausted(
            f"the cluster already holds max_collections={settings.max_collections} collections: drop one "
            "or raise VECSHARD_MAX_COLLECTIONS"
        )
