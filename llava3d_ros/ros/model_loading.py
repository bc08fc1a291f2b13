"""Which model the node runs: a checkpoint directory, the embedded default, or random weights."""

from __future__ import annotations

from pathlib import Path

from llava3d_ros.model.engine import Engine
from llava3d_ros.model.loader import load_bundle, resolve_device
from llava3d_ros.model.quantize import check_mode, quantize_bundle
from llava3d_ros.ros.params import Settings

# Where the embedded default model (tiny, trained on synthetic scenes) is shipped.
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny_model"


def resolve_dtype_name(dtype: str, device: str) -> str:
    """``auto`` → fp16 on a GPU (half the memory of fp32), fp32 on the CPU (fp16 is slow there)."""
    if dtype != "auto":
        return dtype
    return "fp16" if resolve_device(device).type == "cuda" else "fp32"


def load_engine(s: Settings) -> Engine:
    """The Engine for the node's settings; raises (ConfigError, OSError, ...) when loading fails."""
    dtype = resolve_dtype_name(s.dtype, s.device)
    check_mode(s.quantize)
    model_dir = Path(s.model_path) if s.model_path else EMBEDDED_MODEL_DIR
    if s.model_path or (not s.random_weights and (EMBEDDED_MODEL_DIR / "config.json").is_file()):
        vision = Path(s.vision_tower_path) if s.vision_tower_path else model_dir / "vision_tower"
        bundle = load_bundle(model_dir, vision, dtype=dtype, device=s.device, quantize=s.quantize)
    else:
        # Asked for (random_weights), or no trained default shipped in this build: a tiny
        # random-weight model, labelled random-weights wherever its answers surface.
        import torch

        from llava3d_ros.model.tiny import random_bundle

        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        bundle = random_bundle(dtype=torch_dtype, device=resolve_device(s.device))
        quantize_bundle(bundle, s.quantize)
    return Engine(
        bundle,
        max_scene_tokens=s.max_scene_tokens,
        voxel_size=s.voxel_size_m,
        max_new_tokens=s.max_new_tokens,
        temperature=s.temperature,
        constrain_boxes=s.constrain_boxes,
        decode_path=s.decode_path,
        feature_cache_size=max(64, 2 * s.num_views),
    )
