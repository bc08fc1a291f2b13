"""Random-weight models (tiny or 7B-shaped), an offline sentencepiece tokenizer, and a checkpoint writer."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionModel

from llava3d_ros.model.config import (
    RANDOM_WEIGHTS_KEY,
    clip_config,
    llava_config,
    released_7b_config,
)
from llava3d_ros.model.llava3d import Llava3DForCausalLM, rebuild_rotary
from llava3d_ros.model.loader import CLIP_FILE_PREFIX, INDEX_FILE, ModelBundle, fix_vision_buffers
from llava3d_ros.model.prompts import SYSTEM
from llava3d_ros.model.tokenizer import SpTokenizer, train_sentencepiece

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_WORDS = [
    "chair",
    "table",
    "sofa",
    "bed",
    "lamp",
    "door",
    "window",
    "shelf",
    "cabinet",
    "desk",
    "monitor",
    "keyboard",
    "plant",
    "box",
    "bag",
    "cup",
    "bottle",
    "sink",
    "toilet",
    "mirror",
    "picture",
    "pillow",
    "counter",
    "stove",
    "fridge",
    "trash",
    "can",
    "towel",
    "book",
    "red",
    "green",
    "blue",
    "white",
    "black",
    "brown",
    "grey",
    "wooden",
    "metal",
    "small",
    "large",
    "tall",
    "left",
    "right",
    "near",
    "next",
    "to",
    "under",
    "above",
    "behind",
    "front",
    "corner",
    "wall",
    "floor",
    "room",
    "kitchen",
    "office",
    "bedroom",
    "bathroom",
]


def _corpus() -> list[str]:
    """A small English corpus in the prompts' register, so the tokenizer learns real merges."""
    lines = [SYSTEM, "The related object is located at . Describe the object in detail."]
    lines.append("Which object best matches the given description? Please provide its coordinates.")
    for i, w in enumerate(_WORDS):
        a, b = _WORDS[(i * 7) % len(_WORDS)], _WORDS[(i * 13 + 5) % len(_WORDS)]
        lines.append(f"USER: What is the {a} {w} next to the {b}? ASSISTANT: It is a {w}.")
        lines.append(
            f"The {w} is localized at [{i * 0.37:.2f}, {-i * 0.21:.2f}, {i % 3 * 0.5:.2f}, 0.5, 0.4, 1.0]."
        )
        lines.append(f"How many {w}s are in the {b}? There are {i % 5} of them.\n")
    return lines


@functools.lru_cache(maxsize=4)
def train_tokenizer(vocab_size: int = 600) -> bytes:
    """Train a LLaMA-style sentencepiece BPE model in-process (byte fallback, ids 0/1/2 = unk/bos/eos)."""
    return train_sentencepiece(_corpus(), vocab_size, allow_whitespace_only_pieces=True)


def tiny_config(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    """config.json of a tiny model: the released keys with small sizes (override any of them)."""
    cfg = released_7b_config()
    cfg.update(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        mm_hidden_size=32,
        vocab_size=vocab_size,
        mm_vision_tower="local/tiny-clip-random",
        torch_dtype="float32",
    )
    cfg.update(overrides)
    return cfg


def tiny_vision_config(**overrides: Any) -> dict[str, Any]:
    """A 2-layer CLIP at the released 336 px / 14 px patch geometry (so 24×24 patches per view)."""
    cfg = {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 336,
        "patch_size": 14,
        "hidden_act": "quick_gelu",
    }
    cfg.update(overrides)
    return cfg


def init_random_(module: torch.nn.Module, std: float, seed: int) -> None:
    """Normal(0, std) matrices, zero biases, unit norm gains: a deterministic init on any device."""
    for name, p in module.named_parameters():
        gen = torch.Generator(device=p.device).manual_seed(seed + hash_name(name))
        with torch.no_grad():
            if p.ndim >= 2:
                p.normal_(0.0, std, generator=gen)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)


def hash_name(name: str) -> int:
    """A stable (not per-process salted) small integer for a parameter name."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 1_000_003


def random_bundle(
    config: dict[str, Any] | None = None,
    vision: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    name: str = "tiny-llava3d",
    std: float = 0.02,
) -> ModelBundle:
    """A model with random weights (labelled ``random-weights``) built straight on ``device``."""
    tok = SpTokenizer(train_tokenizer())
    config = config or tiny_config(tok.vocab_size)
    if tok.vocab_size > config["vocab_size"]:
        raise ValueError(
            f"tokenizer has {tok.vocab_size} pieces, config vocab_size {config['vocab_size']}"
        )
    device = torch.device(device)
    with torch.device("meta"):
        lm = Llava3DForCausalLM(llava_config(config))
        clip = CLIPVisionModel(clip_config(vision or tiny_vision_config()))
    lm.to_empty(device=device).to(dtype)
    clip.to_empty(device=device).to(dtype)
    init_random_(lm, std, seed)
    init_random_(clip, std, seed + 1)
    rebuild_rotary(lm, device)
    fix_vision_buffers(clip, device)
    return ModelBundle(
        lm=lm.eval(),
        vision=clip.eval(),
        tokenizer=tok,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        name=name,
        random_weights=True,
    )


def _write_shards(state: dict[str, torch.Tensor], out_dir: Path, num_shards: int) -> None:
    keys = list(state)
    per = -(-len(keys) // num_shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i in range(num_shards):
        part = keys[i * per : (i + 1) * per]
        fname = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file(
            {k: state[k].detach().contiguous().cpu() for k in part},
            str(out_dir / fname),
            metadata={"format": "pt"},
        )
        weight_map.update(dict.fromkeys(part, fname))
        total += sum(state[k].numel() * state[k].element_size() for k in part)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2))


def write_checkpoint(
    bundle: ModelBundle,
    out_dir: str | Path,
    vision_dir: str | Path | None = None,
    *,
    num_shards: int = 3,
    random_weights: bool | None = None,
) -> tuple[Path, Path]:
    """Write the released on-disk format: config.json, sharded safetensors + index, tokenizer files,
    and a separate CLIP tower dir (default ``out_dir/vision_tower``). Returns (model dir, vision dir)."""
    out_dir = Path(out_dir)
    vision_dir = Path(vision_dir) if vision_dir is not None else out_dir / "vision_tower"
    out_dir.mkdir(parents=True, exist_ok=True)
    vision_dir.mkdir(parents=True, exist_ok=True)
    lm_cfg = bundle.lm.config.to_dict()
    cfg = {k: lm_cfg[k] for k in released_7b_config() if k in lm_cfg}
    cfg.update(
        architectures=["LlavaLlamaForCausalLM"],
        model_type="llava_llama",
        position_encoding=lm_cfg.get("position_encoding", "mlp"),
        position_fourier_freqs=lm_cfg.get("position_fourier_freqs", 0),
        click_encoding=lm_cfg.get("click_encoding", "mlp"),
        position_fourier_wavelength=lm_cfg.get("position_fourier_wavelength", 2.0),
        # transformers 5 keeps rope_theta under rope_parameters; the checkpoint spells it flat
        rope_theta=float((lm_cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)),
        torch_dtype=str(bundle.dtype).removeprefix("torch."),
        llava3d_ros_name=bundle.name,
    )
    cfg[RANDOM_WEIGHTS_KEY] = bundle.random_weights if random_weights is None else random_weights
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    _write_shards(bundle.lm.state_dict(), out_dir, num_shards)
    (out_dir / "tokenizer.model").write_bytes(bundle.tokenizer.model_proto)
    tok_cfg = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "legacy": False,
        "model_max_length": cfg.get("tokenizer_model_max_length", 4096),
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    vcfg = bundle.vision.config.to_dict()
    vcfg.update(model_type="clip_vision_model", architectures=["CLIPVisionModel"])
    (vision_dir / "config.json").write_text(json.dumps(vcfg, indent=2))
    vstate = {
        CLIP_FILE_PREFIX + k: v.detach().contiguous().cpu()
        for k, v in bundle.vision.state_dict().items()
    }
    save_file(vstate, str(vision_dir / "model.safetensors"), metadata={"format": "pt"})
    size = bundle.vision.config.image_size
    pre = {
        "image_mean": bundle.image_mean,
        "image_std": bundle.image_std,
        "crop_size": size,
        "size": size,
    }
    (vision_dir / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return out_dir, vision_dir


def random_views(n: int, seed: int = 0, first_id: int = 0, size: int = 336, grid: int = 24) -> list:
    """``n`` synthetic ModelViews: noise images and patch positions on a tilted plane in a 6 m room."""
    import numpy as np

    from llava3d_ros.scene.view import ModelView

    rng = np.random.default_rng(seed)
    views = []
    for i in range(n):
        u, v = np.meshgrid(np.linspace(0, 1, grid), np.linspace(0, 1, grid))
        origin = rng.uniform(-3, 3, size=3)
        xyz = np.stack([origin[0] + 2 * u, origin[1] + 2 * v, origin[2] + u * v], axis=-1)
        valid = rng.random((grid, grid)) > 0.05
        views.append(
            ModelView(
                frame_id=first_id + i,
                stamp_ns=1_000_000_000 * (first_id + i),
                image=rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8),
                patch_xyz=xyz.astype(np.float32),
                patch_valid=valid,
                intrinsics=np.eye(3),
                cam_to_world=np.eye(4),
            )
        )
    return views
