"""Load a LLaVA-3D checkpoint + CLIP tower from local directories (safetensors only, no hub)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import CLIPVisionModel

from llava3d_ros.model.config import (
    RANDOM_WEIGHTS_KEY,
    ConfigError,
    image_norm,
    llava_config,
    read_json,
    vision_config,
)
from llava3d_ros.model.llava3d import Llava3DForCausalLM, rebuild_rotary
from llava3d_ros.model.quantize import check_mode, quantize_language_model
from llava3d_ros.model.tokenizer import SpTokenizer

# Nothing in this package may reach a hub; transformers reads these at call time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Upstream may save a CLIP copy inside the LLaVA shards; it never used it (the tower is loaded
# from ``mm_vision_tower``), and neither do we.
LLAVA_IGNORED_PREFIXES = ("model.vision_tower.",)
# A full CLIPModel checkpoint carries the text side too; the vision tower needs only this part.
# transformers 5's CLIPVisionModel dropped the ``vision_model.`` level that CLIP files still carry.
CLIP_FILE_PREFIX = "vision_model."
CLIP_IGNORED_PREFIXES = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


class CheckpointError(ConfigError):
    """Weights that are missing, pickled, corrupt, truncated or do not match the model."""


@dataclass
class ModelBundle:
    """Everything a query needs: LLM with LLaVA-3D heads, CLIP tower, tokenizer, provenance."""

    lm: Llava3DForCausalLM
    vision: CLIPVisionModel
    tokenizer: SpTokenizer
    image_mean: list[float]
    image_std: list[float]
    name: str
    random_weights: bool = False
    partial: bool = False
    quantize: str = "none"  # weight-only quantisation of the language model (model/quantize.py)

    @property
    def device(self) -> torch.device:
        return self.lm.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.model.embed_tokens.weight.dtype

    @property
    def model_id(self) -> str:
        dt = {v: k for k, v in DTYPES.items()}.get(self.dtype, str(self.dtype))
        tags = [dt, self.device.type]
        if self.quantize != "none":
            tags.append(f"{self.quantize} weights")
        if self.partial:
            tags.append("partial-load")
        if self.random_weights:
            tags.append("random-weights")
        return f"{self.name} ({', '.join(tags)})"


def resolve_device(device: str) -> torch.device:
    """auto → cuda when available, else cpu; an explicit cuda request without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def weight_files(directory: Path) -> list[Path]:
    """The safetensors shards of a directory (index first, else one file); pickles are refused."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no weight_map")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(f"{index} names shard files that do not exist: {absent}")
        return files
    if (directory / SINGLE_FILE).is_file():
        return [directory / SINGLE_FILE]
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{directory} holds only pickled weights {pickles}; pickles can run code and are refused. "
            "Convert them once, in a trusted environment, to safetensors, e.g. "
            '`python -c "import torch, safetensors.torch as st; '
            "st.save_file(torch.load('pytorch_model.bin', weights_only=True), 'model.safetensors')\"` "
            "(shard big models and write model.safetensors.index.json, as save_pretrained does)."
        )
    raise CheckpointError(f"no {INDEX_FILE} or {SINGLE_FILE} in {directory}")


def read_shapes(files: Iterable[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Tensor name → (shape, file) from safetensors headers, without reading the data."""
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if key in found:
                        raise CheckpointError(
                            f"tensor {key} appears in both {found[key][1].name} and {path.name}"
                        )
                    found[key] = (tuple(f.get_slice(key).get_shape()), path)
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors raises its own error types for bad files
            raise CheckpointError(f"corrupt or truncated safetensors file {path}: {exc}") from exc
    return found


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}): {', '.join(items[:limit])}{more}"


def _materialize(
    module: torch.nn.Module,
    files: list[Path],
    what: str,
    ignored: tuple[str, ...],
    allow_partial: bool,
    device: torch.device,
    dtype: torch.dtype,
    strip: str = "",
    after_file: Callable[[], object] | None = None,
) -> bool:
    """Check names/shapes against ``module`` (built on meta), then assign the tensors. True = partial.

    ``strip`` is a prefix the files carry but the module's keys do not (CLIP's ``vision_model.``).
    ``after_file`` runs after each file's tensors are assigned (quantising as shards arrive).
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    tied = getattr(getattr(module, "config", None), "tie_word_embeddings", False)
    found = {k.removeprefix(strip): v for k, v in read_shapes(files).items()}
    missing = sorted(k for k in expected if k not in found and not (tied and k == "lm_head.weight"))
    unexpected = sorted(k for k in found if k not in expected and not k.startswith(ignored))
    misshaped = sorted(
        f"{k} {found[k][0]} in {found[k][1].name}, model wants {expected[k]}"
        for k in expected
        if k in found and found[k][0] != expected[k]
    )
    problems = [
        _listing(t, v)
        for t, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if v
    ]
    if problems and not allow_partial:
        raise CheckpointError(
            f"{what} does not match the model built from its config: "
            + "; ".join(problems)
            + " (pass allow_partial=True to run anyway with zero-filled missing weights)"
        )
    bad = {m.split(" ")[0] for m in misshaped}
    for path in files:
        state: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for file_key in f.keys():  # noqa: SIM118
                    key = file_key.removeprefix(strip)
                    if key in expected and key not in bad:
                        state[key] = f.get_tensor(file_key).to(device=device, dtype=dtype)
        except Exception as exc:
            raise CheckpointError(f"cannot read tensors from {path}: {exc}") from exc
        module.load_state_dict(state, strict=False, assign=True)
        del state
        if after_file is not None:
            after_file()
    for name, param in list(module.named_parameters()):
        if param.is_meta:  # only reachable with allow_partial (or tied heads, fixed by tie_weights)
            parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
            setattr(
                parent,
                name.rpartition(".")[2],
                torch.nn.Parameter(
                    torch.zeros(param.shape, device=device, dtype=dtype), requires_grad=False
                ),
            )
    return bool(problems)


def fix_vision_buffers(vision: CLIPVisionModel, device: torch.device) -> None:
    """CLIP's ``position_ids`` is a non-persistent buffer: rebuild it after leaving the meta device."""
    emb = vision.embeddings
    emb.register_buffer(
        "position_ids",
        torch.arange(emb.num_positions, device=device).expand((1, -1)),
        persistent=False,
    )


def load_bundle(
    model_dir: str | Path,
    vision_tower_dir: str | Path | None = None,
    *,
    dtype: str = "bf16",
    device: str = "auto",
    allow_partial: bool = False,
    quantize: str = "none",
) -> ModelBundle:
    """Load config, weights, tokenizer and the CLIP tower from local directories only.

    ``quantize`` (``none``, ``int8``, ``int4``; model/quantize.py): the language model's Linear
    layers are quantised as each shard is read, so the unquantised model is never whole in memory.
    """
    check_mode(quantize)
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {model_dir}")
    raw = read_json(model_dir / "config.json")
    cfg = llava_config(raw)
    if vision_tower_dir is None:
        raise ConfigError(
            f"config.json names the vision tower {raw.get('mm_vision_tower')!r} (a hub id); "
            "pass vision_tower_dir= a local directory holding it (nothing is downloaded)"
        )
    vision_dir = Path(vision_tower_dir)
    if not vision_dir.is_dir():
        raise ConfigError(f"vision tower directory not found: {vision_dir}")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    tokenizer = SpTokenizer.from_dir(model_dir)
    files = weight_files(model_dir)
    vfiles = weight_files(vision_dir)
    vcfg = vision_config(vision_dir)
    with torch.device("meta"):
        lm = Llava3DForCausalLM(cfg)
        vision = CLIPVisionModel(vcfg)
    partial = _materialize(
        lm,
        files,
        f"checkpoint {model_dir}",
        LLAVA_IGNORED_PREFIXES,
        allow_partial,
        dev,
        dt,
        after_file=lambda: quantize_language_model(lm, quantize),
    )
    if cfg.tie_word_embeddings:
        lm.tie_weights()
    quantize_language_model(lm, quantize)  # the layers zero-filled (allow_partial) or tied
    rebuild_rotary(lm, dev)
    partial |= _materialize(
        vision,
        vfiles,
        f"vision tower {vision_dir}",
        CLIP_IGNORED_PREFIXES,
        allow_partial,
        dev,
        dt,
        strip=CLIP_FILE_PREFIX,
    )
    fix_vision_buffers(vision, dev)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} pieces but the model only {cfg.vocab_size}"
        )
    mean, std = image_norm(vision_dir)
    name = "LLaVA-3D-7B" if cfg.hidden_size == 4096 and cfg.num_hidden_layers == 32 else "LLaVA-3D"
    return ModelBundle(
        lm=lm.eval(),
        vision=vision.eval(),
        tokenizer=tokenizer,
        image_mean=mean,
        image_std=std,
        name=str(raw.get("llava3d_ros_name", f"{name} [{model_dir.name}]")),
        random_weights=bool(raw.get(RANDOM_WEIGHTS_KEY, False)),
        partial=partial,
        quantize=quantize,
    )
