"""The embedding model kinds. Each loads lazily from its local directory, once, on the GPU when
torch sees one (else the CPU), and embeds in batches of `batch_size` under torch.inference_mode.

- sentence-transformers: `SentenceTransformer(path).encode`, with the query/passage prefix.
- clip: transformers `CLIPModel`; texts through `get_text_features`, images through
  `get_image_features` (the projected, shared space).
- dino: transformers `AutoModel` (DINOv2 or ViT); "cls" pooling takes the final hidden state of the
  [CLS] token, "mean" the mean of the patch tokens (register tokens excluded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vecshard.v1 import types_pb2
from vecshard_server.embedding.registry import ModelConfig

log = logging.getLogger(__name__)

# Never reach for a model hub: every model is a local directory. Quiet the libraries' progress bars.
for _var, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ("TRANSFORMERS_VERBOSITY", "error"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_var, _value)

F32 = npt.NDArray[np.float32]
QUERY, PASSAGE = types_pb2.INPUT_ROLE_QUERY, types_pb2.INPUT_ROLE_PASSAGE


def resolve_device(preference: str) -> str:
    import torch

    if preference == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return preference


def content_hash(path: Path, entry: dict[str, Any]) -> str:
    """sha256 over the registry entry and every (non-hidden) file of the model directory."""
    h = hashlib.sha256(json.dumps(entry, sort_keys=True).encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(str(rel).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


class EmbeddingModel:
    """Base class: lazy loading, the fingerprint, and the per-model lock (one forward at a time)."""

    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name = name
        self.config = config
        self.device = ""
        self.dim = 0
        self.fingerprint = ""
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            started = time.perf_counter()
            self.device = resolve_device(self.config.device)
            self._load()
            entry = self.config.model_dump(mode="json", exclude={"path", "batch_size", "device"})
            digest = content_hash(self.config.path, entry)
            self.fingerprint = f"{self.name}:{digest}:{self.dim}:{'norm' if self.config.normalize else 'raw'}"
            self._loaded = True
            log.info(
                "loaded model %s (%s, dim %d) on %s in %.1fs",
                self.name,
                self.config.kind,
                self.dim,
                self.device,
                time.perf_counter() - started,
            )

    def info(self) -> types_pb2.ModelInfo:
        return types_pb2.ModelInfo(
            name=self.name,
            kind=self.config.kind,
            dim=self.dim,
            normalized=self.config.normalize,
            fingerprint=self.fingerprint,
            modalities=list(self.config.modalities),
            query_prefix=self.config.query_prefix,
            passage_prefix=self.config.passage_prefix,
            device=self.device,
        )

    def prefixed(self, texts: list[str], role: int) -> list[str]:
        prefix = self.config.query_prefix if role == QUERY else self.config.passage_prefix if role == PASSAGE else ""
        return [prefix + t for t in texts] if prefix else texts

    def embed_texts(self, texts: list[str], role: int) -> F32:
        self.ensure_loaded()
        with self._lock:
            return self._embed_texts(self.prefixed(texts, role))

    def embed_images(self, images: list[Any]) -> F32:
        self.ensure_loaded()
        with self._lock:
            return self._embed_images(images)

    def _load(self) -> None:
        raise NotImplementedError

    def _embed_texts(self, texts: list[str]) -> F32:
        raise NotImplementedError

    def _embed_images(self, images: list[Any]) -> F32:
        raise NotImplementedError

    def _batches(self, items: list[Any]) -> list[list[Any]]:
        size = self.config.batch_size
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _finish(self, parts: list[Any]) -> F32:
        import torch

        x = torch.cat(parts)
        if self.config.normalize:
            x = torch.nn.functional.normalize(x, dim=-1)
        return np.ascontiguousarray(x.float().cpu().numpy(), dtype=np.float32)


class SentenceTransformerModel(EmbeddingModel):
    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(self.config.path), device=self.device, local_files_only=True)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def _embed_texts(self, texts: list[str]) -> F32:
        x = self._model.encode(
            texts,
            batch_size=self.config.batch_size,
            normalize_embeddings=self.config.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(x, dtype=np.float32)


def _pooled(out: Any) -> Any:
    """transformers 4 returns the features tensor, 5 an output whose pooler_output holds them."""
    return out if hasattr(out, "shape") else out.pooler_output


class ClipModel(EmbeddingModel):
    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        path = str(self.config.path)
        self._model = CLIPModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self._max_len = int(self._model.config.text_config.max_position_embeddings)
        self.dim = int(self._model.config.projection_dim)

    def _embed_texts(self, texts: list[str]) -> F32:
        import torch

        parts = []
        with torch.inference_mode():
            for batch in self._batches(texts):
                tok = self._tokenizer(
                    batch, padding=True, truncation=True, max_length=self._max_len, return_tensors="pt"
                )
                parts.append(_pooled(self._model.get_text_features(**tok.to(self.device))))
        return self._finish(parts)

    def _embed_images(self, images: list[Any]) -> F32:
        import torch

        parts = []
        with torch.inference_mode():
            for batch in self._batches(images):
                pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                parts.append(_pooled(self._model.get_image_features(pixel_values=pixels)))
        return self._finish(parts)


class DinoModel(EmbeddingModel):
    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModel

        path = str(self.config.path)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self._processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self._first_patch = 1 + int(getattr(self._model.config, "num_register_tokens", 0) or 0)
        self.dim = int(self._model.config.hidden_size)

    def _embed_images(self, images: list[Any]) -> F32:
        import torch

        parts = []
        with torch.inference_mode():
            for batch in self._batches(images):
                pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
                hidden = self._model(pixel_values=pixels).last_hidden_state
                if self.config.pooling == "cls":
                    parts.append(hidden[:, 0])
                else:
                    parts.append(hidden[:, self._first_patch :].mean(dim=1))
        return self._finish(parts)


KINDS: dict[str, type[EmbeddingModel]] = {
    "sentence-transformers": SentenceTransformerModel,
    "clip": ClipModel,
    "dino": DinoModel,
}
