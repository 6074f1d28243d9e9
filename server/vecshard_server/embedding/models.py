"""The embedding model kinds. Each loads lazily from its local directory, once, on the GPU when
torch sees one (else the CPU), and embeds in batches of `batch_size` under torch.inference_mode.

- sentence-transformers: `SentenceTransformer(path).encode`, with the query/passage prefix. With
  `backend = "onnx"` or `"onnx-int8"` the transformer runs in ONNX Runtime on the CPU instead of torch
  (tokenisation, pooling and normalisation stay sentence-transformers'): see `ensure_onnx`.
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
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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
            entry = self.config.model_dump(mode="json", exclude={"path", "batch_size", "device", "backend"})
            if self.config.backend != "torch":  # torch's entry (and so its fingerprint) is what it always was
                entry.update(backend=self.config.backend, onnx_recipe=ONNX_RECIPE)
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
    onnx_file: Path | None = None  # the cached ONNX graph that runs the transformer (onnx backends)

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        if self.config.backend != "torch":
            self.device = "cpu"  # ONNX Runtime's CPU provider
        self._model = SentenceTransformer(str(self.config.path), device=self.device, local_files_only=True)
        if self.config.backend != "torch":
            self.onnx_file = ensure_onnx(self._model, self.config.path, self.config.backend)
            use_onnx(self._model, self.onnx_file)
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


# --- The ONNX backends -------------------------------------------------------------------------------------------

ONNX_RECIPE = 1
"""Version of the export / optimise / quantise steps below: bump it when they change, so the cached files
(and the onnx backends' fingerprints, whose vectors they change) are made anew."""
ONNX_FILE = "model.onnx"
_ONNX_IO = ("input_ids", "attention_mask", "token_type_ids")
# Model types whose exported graph ONNX Runtime's transformer optimiser fuses (attention, layer norms, GELU).
_ORT_FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert"}
_PROBE = ["vecshard onnx probe", "a longer probe sentence, so that the first one of the batch gets padded: 1 2 3"]


class OnnxError(RuntimeError):
    """The model cannot run on the ONNX backends (or its export does not match torch)."""


def onnx_cache_root() -> Path:
    """VECSHARD_ONNX_CACHE, else ~/.cache/vecshard/onnx: one <model content hash>/<backend>/ folder per export."""
    return Path(os.environ.get("VECSHARD_ONNX_CACHE") or Path.home() / ".cache" / "vecshard" / "onnx").expanduser()


def ensure_onnx(st: Any, path: Path, backend: str) -> Path:
    """The ONNX file of this sentence-transformers model for `backend` ("onnx" or "onnx-int8"), exported from the
    loaded torch model `st` into the cache on the first call (an int8 file is quantised from the fp32 one), then
    reused: <cache>/<content hash of the model directory>/<backend>/model.onnx."""
    if backend not in ("onnx", "onnx-int8"):
        raise OnnxError(f"unknown ONNX backend {backend!r}: use 'onnx' or 'onnx-int8'")
    root = onnx_cache_root() / content_hash(path, {"onnx_recipe": ONNX_RECIPE})
    fp32 = _cached(root / "onnx", lambda tmp: _export(st, tmp / ONNX_FILE))
    if backend == "onnx":
        return fp32
    return _cached(root / "onnx-int8", lambda tmp: _quantize(fp32, tmp / ONNX_FILE))


def _cached(folder: Path, build: Any) -> Path:
    """folder/model.onnx, built once: into a temporary folder beside it, then renamed into place (atomic: a reader
    sees the whole folder or none; of two processes exporting at once, the first rename wins, the other's is
    dropped)."""
    target = folder / ONNX_FILE
    if target.is_file():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        started = time.perf_counter()
        notes = build(tmp)
        (tmp / "export.json").write_text(json.dumps({"recipe": ONNX_RECIPE, **_versions(), **(notes or {})}, indent=1))
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not target.is_file():
                raise
        log.info("exported %s in %.1fs", target, time.perf_counter() - started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"torch": str(torch.__version__), "onnxruntime": str(onnxruntime.__version__)}


def _transformer(st: Any) -> Any:
    """The first module of `st`, checked to be a text transformer whose forward gives last_hidden_state."""
    first = st[0] if len(st) else None
    text = (getattr(first, "modality_config", None) or {}).get("text", {"method": "forward"})
    output = text.get("method_output_name", "last_hidden_state")
    if (
        getattr(first, "tokenizer", None) is None
        or getattr(first, "model", None) is None
        or text.get("method") != "forward"
        or output not in ("last_hidden_state", ["last_hidden_state"], ("last_hidden_state",))
    ):
        raise OnnxError(
            "the ONNX backends need sentence-transformers >= 6 and a model whose first module is a text transformer "
            f"(its model's forward giving last_hidden_state); this one's is {type(first).__name__}: use backend 'torch'"
        )
    return first


def _export(st: Any, out: Path) -> dict[str, Any]:
    """torch -> ONNX (the TorchScript exporter, eager attention, dynamic batch and sequence axes), then ONNX
    Runtime's transformer fusions where the architecture has them; each graph is checked against torch on a
    padded batch, and a fused graph that does not match is dropped for the plain one."""
    import torch

    module = _transformer(st)
    model = module.model.eval()
    enc = module.tokenizer(_PROBE, padding=True, truncation=True, return_tensors="pt")
    names = [k for k in _ONNX_IO if k in enc]
    feeds = {k: enc[k].to(model.device) for k in names}

    class Wrapped(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True)), return_dict=True).last_hidden_state

    attn = getattr(model.config, "_attn_implementation", None)
    _set_attention(model, "eager")  # traces to the plain MatMul/Softmax pattern that ORT's fusions recognise
    try:
        with torch.no_grad(), _quiet():
            want = Wrapped()(*feeds.values()).float().cpu().numpy()
            raw = out.with_name("raw.onnx")
            torch.onnx.export(
                Wrapped(),
                tuple(feeds.values()),
                str(raw),
                dynamo=False,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={k: {0: "batch", 1: "sequence"} for k in [*names, "last_hidden_state"]},
                opset_version=17,
            )
    finally:
        if attn is not None:
            _set_attention(model, attn)
    mask = enc["attention_mask"].numpy().astype(bool)
    notes: dict[str, Any] = {"inputs": names, "fused": False}
    if _check(raw, enc, want, mask, fatal=True) and model.config.model_type in _ORT_FUSABLE:
        fused = out.with_name("fused.onnx")
        try:
            from onnxruntime.transformers.optimizer import optimize_model

            cfg = model.config
            with _quiet():
                kind = _ORT_FUSABLE[cfg.model_type]
                heads, hidden = cfg.num_attention_heads, cfg.hidden_size
                opt = optimize_model(str(raw), model_type=kind, num_heads=heads, hidden_size=hidden, opt_level=0)
                opt.save_model_to_file(str(fused))
            if _check(fused, enc, want, mask, fatal=False):
                fused.replace(out)
                notes.update(fused=True, fusions={k: v for k, v in opt.get_fused_operator_statistics().items() if v})
        except Exception as err:  # noqa: BLE001 - the fusions are an optimisation; the plain graph is correct
            log.warning("ONNX Runtime's transformer optimiser failed (%s): using the unfused graph", err)
    if not out.exists():
        raw.replace(out)
    for extra in ("raw.onnx", "fused.onnx"):
        out.with_name(extra).unlink(missing_ok=True)
    return notes


class _DropChatter(logging.Filter):
    """Drops the exporters' info and advice logged straight to the root logger (onnxruntime.quantization does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnx" not in record.pathname


@contextmanager
def _quiet() -> Iterator[None]:
    """The tracer's and quantiser's warnings are about graphs that `_check` verifies: keep them out of the logs."""
    chatter = _DropChatter()
    logging.getLogger().addFilter(chatter)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger().removeFilter(chatter)


def _set_attention(model: Any, impl: str) -> None:
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter(impl)
    else:
        model.config._attn_implementation = impl


def _check(file: Path, enc: Any, want: Any, mask: Any, fatal: bool) -> bool:
    """Whether the ONNX graph's last_hidden_state equals torch's on the probe's real tokens (cosine > 0.9999)."""
    session = _session(file)
    inputs = {i.name for i in session.get_inputs()}
    got = session.run(["last_hidden_state"], {k: enc[k].numpy().astype(np.int64) for k in _ONNX_IO if k in inputs})[0]
    a, b = got[mask], want[mask]
    cos = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
    if cos > 0.9999:
        return True
    if fatal:
        raise OnnxError(f"the ONNX export of this model does not match torch (token cosine {cos:.4f}): use 'torch'")
    log.warning("the fused ONNX graph does not match torch (token cosine %.4f): using the unfused graph", cos)
    return False


def _quantize(src: Path, out: Path) -> dict[str, Any]:
    """int8 dynamic quantisation of the fp32 graph's MatMuls: weights int8 per output channel, activations uint8
    with a scale per run. The fused attentions (their Q/K/V projections included) stay fp32: quantising them too
    was 20-30% faster but further from torch (cosine min 0.987 / mean 0.994 against 0.989 / 0.995 on docstrings)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            src,
            out,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return {"quantized": ["MatMul"], "weights": "int8 per channel", "activations": "uint8, dynamic per run"}


def _session(file: Path) -> Any:
    """An ONNX Runtime CPU session with as many threads as torch uses (OMP_NUM_THREADS / torch.set_num_threads)."""
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


ONNX_TOKEN_BUDGET = 256
"""Tokens (rows x padded length) per ONNX Runtime run: a batch is cut into runs of rows of like length, each
padded only to its own longest row (a 256-token text runs alone, 16-token ones 16 at a time). Padding is work
thrown away (a batch of docstrings pads texts of ~100 tokens to 256), and ONNX Runtime pays little per run, so
small runs are faster (measured: 256 beat 512-4096 on long and short texts alike). With onnx-int8 a run's
activations share one quantisation scale, so a text's vector moves slightly with the texts that share its run
(cosine >= 0.98 between a text alone and in a batch); fp32 moves by rounding only."""


def use_onnx(st: Any, file: Path) -> None:
    """Put an ONNX Runtime session of `file` in place of the torch transformer of `st`: tokenisation, truncation,
    pooling and normalisation stay those of sentence-transformers."""
    import torch

    module = _transformer(st)
    session = _session(file)
    inputs = [i.name for i in session.get_inputs()]
    right_padded = getattr(module.tokenizer, "padding_side", "right") == "right"

    class OnnxTransformer(torch.nn.Module):  # type: ignore[misc]
        """Stands in for the transformers model: forward(**features) -> {"last_hidden_state": tensor}."""

        def __init__(self, config: Any) -> None:
            super().__init__()
            self.config = config
            self.device = torch.device("cpu")

        def forward(self, **features: Any) -> dict[str, Any]:
            feeds = {k: features[k].cpu().numpy().astype(np.int64, copy=False) for k in inputs}
            mask = feeds.get("attention_mask")
            if mask is None or not right_padded or not len(mask):
                return {"last_hidden_state": torch.from_numpy(session.run(["last_hidden_state"], feeds)[0])}
            lengths = mask.sum(1)
            order = np.argsort(-lengths, kind="stable")
            out: F32 | None = None
            start = 0
            while start < len(order):
                longest = max(int(lengths[order[start]]), 1)
                rows = order[start : start + max(1, ONNX_TOKEN_BUDGET // longest)]
                part = session.run(["last_hidden_state"], {k: v[rows, :longest] for k, v in feeds.items()})[0]
                if out is None:
                    out = np.zeros((len(order), mask.shape[1], part.shape[2]), dtype=part.dtype)
                out[rows, :longest] = part
                start += len(rows)
            return {"last_hidden_state": torch.from_numpy(out)}

    module.model = OnnxTransformer(module.model.config)


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
