"""Weight-only quantisation of the language model (torchao), and weight bytes from real tensors.

``quantize``: ``none`` | ``int8`` | ``int4``. What is quantised, and why:

- the decoder blocks' Linear layers (attention q/k/v/o and the MLP's gate/up/down: ~96% of the
  7B language model's weights): ``int8`` = symmetric per-output-channel int8 (torchao
  ``Int8WeightOnlyConfig``); ``int4`` = asymmetric int4 in groups of 128
  input channels, packed two to a byte for the tinygemm kernels: on the CPU torchao's
  ``PrototypeInt4WeightOnlyConfig`` (``Int4OpaqueTensor``, ATen's
  ``_weight_int4pack_mm_for_cpu``; torchao's stable ``Int4WeightOnlyConfig`` needs the CUDA
  ``mslk`` kernels for its plain format, and its CPU alternative ``IntxWeightOnlyConfig``
  keeps int4 values unpacked, one per byte), on CUDA ``Int4WeightOnlyConfig`` with the
  ``tile_packed_to_4d`` format (tinygemm, compute capability 8.0+: Ampere, so Jetson Orin,
  and newer; its weights are bf16, so an fp16 model's blocks are cast to bf16 first and
  their outputs cast back);
- the output head (``lm_head``): int8 in both modes (every token's logits come out of it, so
  it is commonly kept above int4; int8 still halves it); left alone when it is tied to the
  input embeddings;
- not quantised: the token embeddings (a lookup, not a Linear), norms, the LLaVA-3D adapters
  (``mm_projector``, 3D position and click encoders: 0.3% of the weights, on inputs that are
  not text) and the CLIP vision tower (~4% of the 7B bundle's weights in half precision; it
  runs once per keyframe, its features are cached, and its error would reach every scene
  token of every query).

Activations stay in the model's dtype (weight-only). ``weight_bytes`` counts the bytes of the
tensors a module actually holds (a quantised weight's packed data, scales and zero points), so
the saving is measured, not computed from bit widths.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from llava3d_ros.model.loader import ModelBundle

QUANTIZE_MODES = ("none", "int8", "int4")
# int4 groups along the input channels: 128 is the common choice for weight-only int4 (and
# keeps the 7B bundle under 5 GB: scales and zero points cost 4 bytes a group in half
# precision); layers whose widths do not allow it take 64 or 32 (the tinygemm kernels' sizes)
INT4_GROUP_SIZES = (128, 64, 32)


def check_mode(mode: Any) -> str:
    """``mode`` if it is one of ``QUANTIZE_MODES``; else a ValueError that lists them."""
    if not isinstance(mode, str) or mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}; got {mode!r}")
    return mode


@dataclass
class QuantizeSummary:
    """What ``quantize_language_model`` did: layer name → scheme (``int8``, ``int4-g128``...)."""

    mode: str
    layers: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.layers.values()))

    def __str__(self) -> str:
        if not self.layers:
            return f"quantize {self.mode}: no layer quantised"
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts().items()))
        return f"quantize {self.mode}: {len(self.layers)} Linear layers ({parts})"


def _torchao() -> Any:
    """torchao's quantization API (imported on first use; the package's ``__init__`` quiets
    its logger)."""
    import torchao.quantization

    return torchao.quantization


def is_quantized(t: torch.Tensor) -> bool:
    """A torchao (or other wrapper-subclass) tensor rather than a plain one."""
    return hasattr(t, "__tensor_flatten__")


def _int4_group(linear: torch.nn.Linear) -> int | None:
    """The largest tinygemm group size the layer's widths allow, else None (no int4)."""
    out_features, in_features = linear.weight.shape
    if out_features % 32:
        return None
    for g in INT4_GROUP_SIZES:
        if in_features % g == 0:
            return g
    return None


def _int4_config(linear: torch.nn.Linear, group: int) -> Any:
    q = _torchao()
    if linear.weight.device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(linear.weight.device)
        if major < 8:
            raise ValueError(
                f"quantize int4 on CUDA needs compute capability 8.0 or newer (tinygemm), this "
                f"GPU has {major}.{minor}: use quantize int8"
            )
        if linear.weight.dtype != torch.bfloat16:  # the packed format's weights are bf16
            linear.weight = torch.nn.Parameter(
                linear.weight.detach().to(torch.bfloat16), requires_grad=False
            )
        return q.Int4WeightOnlyConfig(
            group_size=group, int4_packing_format="tile_packed_to_4d", set_inductor_config=False
        )
    if linear.weight.device.type != "cpu":
        raise ValueError(f"quantize int4 runs on cpu or cuda, not {linear.weight.device.type}")
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=group, set_inductor_config=False)


def _int8_config() -> Any:
    q = _torchao()
    return q.Int8WeightOnlyConfig(granularity=q.PerRow(), set_inductor_config=False)


def targets(lm: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear, str]]:
    """(name, Linear, ``block`` or ``head``) for every layer the policy quantises."""
    blocks = lm.get_submodule("model.layers")
    for name, module in blocks.named_modules():
        if isinstance(module, torch.nn.Linear):
            yield f"model.layers.{name}", module, "block"
    head = getattr(lm, "lm_head", None)
    embed = lm.get_input_embeddings()
    if isinstance(head, torch.nn.Linear) and head.weight is not embed.weight:
        yield "lm_head", head, "head"


def quantize_linear(linear: torch.nn.Linear, scheme: str) -> str:
    """Quantise one Linear in place: ``int8``, or ``int4`` (int8 where its widths forbid int4).

    Returns the scheme applied (``int8`` or ``int4-g<group>``).
    """
    q = _torchao()
    if scheme == "int4":
        group = _int4_group(linear)
        if group is not None:
            q.quantize_(linear, _int4_config(linear, group))
            return f"int4-g{group}"
    elif scheme != "int8":
        raise ValueError(f"unknown scheme {scheme!r}")
    q.quantize_(linear, _int8_config())
    return "int8"


@torch.no_grad()
def quantize_language_model(lm: torch.nn.Module, mode: str) -> QuantizeSummary:
    """Quantise the language model's Linear layers in place (see the module doc for which).

    Layers whose weights are still on the meta device (not loaded yet) or already quantised
    are left as they are, so a loader may call this after every shard it reads and once more
    at the end.
    """
    check_mode(mode)
    summary = QuantizeSummary(mode)
    if mode == "none":
        return summary
    for name, linear, role in list(targets(lm)):
        if any(p.is_meta for p in linear.parameters()) or is_quantized(linear.weight):
            continue
        summary.layers[name] = quantize_linear(linear, mode if role == "block" else "int8")
    return summary


def quantize_bundle(bundle: ModelBundle, mode: str) -> QuantizeSummary:
    """Quantise a loaded bundle's language model in place (``none``: nothing) and label it."""
    check_mode(mode)
    if mode == bundle.quantize:
        return QuantizeSummary(mode)
    if bundle.quantize != "none":
        raise ValueError(f"the model is already quantised ({bundle.quantize}); load it again")
    summary = quantize_language_model(bundle.lm, mode)
    bundle.quantize = mode
    return summary


def _leaves(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """The plain tensors behind ``t`` (a quantised tensor's data, scales, zero points...)."""
    if is_quantized(t):
        names, _ = t.__tensor_flatten__()
        for n in names:
            inner = getattr(t, n)
            if inner is not None:
                yield from _leaves(inner)
    else:
        yield t


def weight_bytes(*modules: torch.nn.Module) -> int:
    """Bytes held by the modules' parameters and buffers, from the tensors themselves.

    Quantised weights count their packed data plus scales and zero points; a tensor shared
    by several modules (tied weights) counts once; meta tensors count what they would hold.
    """
    seen: set[Any] = set()
    total = 0
    for t in _tensors(modules):
        for leaf in _leaves(t):
            if leaf.is_meta:
                key: Any = ("meta", id(leaf))
                size = leaf.numel() * leaf.element_size()
            else:
                storage = leaf.untyped_storage()
                key = (leaf.device, storage.data_ptr())
                size = storage.nbytes()
            if key not in seen:
                seen.add(key)
                total += size
    return total


def _tensors(modules: Iterable[torch.nn.Module]) -> Iterator[torch.Tensor]:
    for m in modules:
        yield from m.parameters()
        yield from m.buffers()
