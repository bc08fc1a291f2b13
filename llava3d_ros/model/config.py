"""Model configuration: the checkpoint's config.json plus the vision tower's config, nothing hard-coded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import CLIPVisionConfig, LlamaConfig

# Keys the released LLaVA-3D-7B config.json carries besides the plain LLaMA ones.
LLAVA3D_KEYS = (
    "mm_vision_tower",
    "mm_video_tower",
    "mm_projector_type",
    "mm_hidden_size",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_patch_merge_type",
    "mm_use_im_start_end",
    "mm_use_im_patch_token",
    "image_aspect_ratio",
    "num_frames",
    "num_sample_tokens",
    "tokenizer_model_max_length",
)
POSITION_ENCODINGS = ("mlp", "fourier_mlp")
# How a click becomes a token: "mlp" = its own encoder (the release); "shared_position" (tiny
# models only) adds the scene tokens' own position path, so click and scene share one 3D code.
CLICK_ENCODINGS = ("mlp", "shared_position")
# Marks checkpoints written by ``tiny.write_checkpoint`` from untrained weights.
RANDOM_WEIGHTS_KEY = "llava3d_ros_random_weights"


class ConfigError(ValueError):
    """A config.json that is missing, unreadable or describes a model this code cannot build."""


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from ``path`` with errors that name the file."""
    if not path.is_file():
        raise ConfigError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def llava_config(raw: dict[str, Any]) -> LlamaConfig:
    """Build the LLM config from a checkpoint config dict; the LLaVA-3D keys ride along as attributes."""
    missing = [
        k
        for k in ("hidden_size", "num_hidden_layers", "vocab_size", "mm_hidden_size")
        if k not in raw
    ]
    if missing:
        raise ConfigError(f"config.json lacks required keys: {missing}")
    if raw.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ConfigError(
            f"unsupported mm_projector_type {raw['mm_projector_type']!r} (need mlp2x_gelu)"
        )
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise ConfigError("only mm_vision_select_feature='patch' is supported")
    if raw.get("mm_use_im_start_end", False):
        raise ConfigError("mm_use_im_start_end=true is not supported (the release uses false)")
    enc = raw.get("position_encoding", "mlp")
    if enc not in POSITION_ENCODINGS:
        raise ConfigError(f"position_encoding must be one of {POSITION_ENCODINGS}, got {enc!r}")
    if enc == "fourier_mlp" and int(raw.get("position_fourier_freqs", 0)) < 1:
        raise ConfigError("position_encoding='fourier_mlp' needs position_fourier_freqs >= 1")
    # 2 m: the lowest frequency the first tiny models were trained with (π rad/m)
    wavelength = float(raw.get("position_fourier_wavelength", 2.0))
    if not (0.01 <= wavelength <= 1000.0):
        raise ConfigError(f"position_fourier_wavelength must be 0.01..1000 m, got {wavelength}")
    click = raw.get("click_encoding", "mlp")
    if click not in CLICK_ENCODINGS:
        raise ConfigError(f"click_encoding must be one of {CLICK_ENCODINGS}, got {click!r}")
    kwargs = {
        k: v
        for k, v in raw.items()
        if k not in ("architectures", "model_type", "transformers_version")
    }
    cfg = LlamaConfig(**kwargs)
    cfg.architectures = ["LlavaLlamaForCausalLM"]
    cfg.position_encoding = enc
    cfg.position_fourier_freqs = int(raw.get("position_fourier_freqs", 0))
    cfg.click_encoding = click
    cfg.position_fourier_wavelength = wavelength
    cfg.mm_vision_select_layer = int(raw.get("mm_vision_select_layer", -2))
    cfg.tokenizer_model_max_length = int(
        raw.get("tokenizer_model_max_length", raw.get("max_position_embeddings", 4096))
    )
    return cfg


def vision_config(vision_dir: Path) -> CLIPVisionConfig:
    """Read the CLIP vision config from a local tower dir (a full CLIPConfig or a vision-only one)."""
    return clip_config(read_json(vision_dir / "config.json"))


def clip_config(raw: dict[str, Any]) -> CLIPVisionConfig:
    """CLIPVisionConfig from a config dict (a full CLIPConfig's ``vision_config`` or a vision-only one)."""
    sub = raw.get("vision_config", raw)
    keep = {
        k: v
        for k, v in sub.items()
        if k not in ("architectures", "model_type", "transformers_version")
    }
    return CLIPVisionConfig(**keep)


def image_norm(vision_dir: Path) -> tuple[list[float], list[float]]:
    """CLIP normalisation (mean, std) from preprocessor_config.json, else the CLIP defaults."""
    path = vision_dir / "preprocessor_config.json"
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    if path.is_file():
        pre = read_json(path)
        mean, std = list(pre.get("image_mean", mean)), list(pre.get("image_std", std))
    return mean, std


def released_7b_config() -> dict[str, Any]:
    """config.json of the released LLaVA-3D-7B as the reference describes it (for shape checks/benches)."""
    return {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "vocab_size": 32000,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "bfloat16",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_video_tower": "SpatialAwareModule",
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 1024,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "flat",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "square",
        "num_frames": 20,
        "num_sample_tokens": 1152,
        "tokenizer_model_max_length": 4096,
    }


def clip_l14_336_config() -> dict[str, Any]:
    """Vision config of openai/clip-vit-large-patch14-336."""
    return {
        "model_type": "clip_vision_model",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }
