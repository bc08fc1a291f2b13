"""LLaVA-3D modules at exactly the released checkpoint's attribute paths, sized from the config."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from llava3d_ros.geometry.voxels import VoxelAssignment, pool_features, voxelize


class PositionMLP(nn.Module):
    """Learned 3D position embedding: Linear → LayerNorm → ReLU → Linear on metric xyz.

    ``fourier_freqs > 0`` (tiny models only; the release uses the plain MLP) first appends
    sin/cos of xyz at octave frequencies, the lowest one period per ``longest_wavelength``
    metres, so a small model can resolve fine positions. Points a multiple of that apart share
    their sin/cos; only the raw xyz tells them apart, so it should exceed the room.
    """

    def __init__(
        self, out_dim: int, fourier_freqs: int = 0, longest_wavelength: float = 2.0
    ) -> None:
        super().__init__()
        self.fourier_freqs = fourier_freqs
        self.longest_wavelength = longest_wavelength
        in_dim = 3 + 6 * fourier_freqs
        self.position_embedding_head = nn.Sequential(
            nn.Linear(in_dim, out_dim),
            nn.LayerNorm(out_dim),
            nn.ReLU(),
            nn.Linear(out_dim, out_dim),
        )

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """(..., 3) metres → (..., out_dim)."""
        if self.fourier_freqs:
            base = 2.0 * math.pi / self.longest_wavelength
            freqs = base * 2.0 ** torch.arange(self.fourier_freqs, device=xyz.device)
            ang = (xyz[..., None] * freqs.to(xyz.dtype)).flatten(-2)  # (..., 3F)
            xyz = torch.cat([xyz, ang.sin(), ang.cos()], dim=-1)
        return self.position_embedding_head(xyz)


class SpatialAwareModule(nn.Module):
    """Holds the patch position MLP (3 → mm_hidden); its output is added to CLIP patch features."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.positional_embedding = PositionMLP(config.mm_hidden_size, *_fourier(config))


class PromptEncoder(nn.Module):
    """Click encoder (3 → hidden): its output is already in LLM space and bypasses the projector."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.pos_emb3d = PositionMLP(config.hidden_size, *_fourier(config))


class VideoTower(nn.Module):
    """Container matching upstream's ``video_tower`` attribute layout."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.video_tower = SpatialAwareModule(config)
        self.prompt_encoder = PromptEncoder(config)


def _fourier(config: LlamaConfig) -> tuple[int, float]:
    """(frequencies, longest wavelength in metres) of the tiny models' Fourier features; (0, …) = none."""
    wavelength = float(getattr(config, "position_fourier_wavelength", 2.0))
    if getattr(config, "position_encoding", "mlp") == "fourier_mlp":
        return int(config.position_fourier_freqs), wavelength
    return 0, wavelength


class Llava3DForCausalLM(LlamaForCausalLM):
    """LLaMA plus ``model.mm_projector`` and ``model.video_tower``, so checkpoint keys load unmapped.

    The CLIP tower is not part of this module: the released shards do not carry it (it is
    loaded from ``mm_vision_tower``), so it lives next to this model in the bundle.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        h, mm = config.hidden_size, config.mm_hidden_size
        self.model.mm_projector = nn.Sequential(nn.Linear(mm, h), nn.GELU(), nn.Linear(h, h))
        self.model.video_tower = VideoTower(config)

    @property
    def patch_pos_mlp(self) -> PositionMLP:
        return self.model.video_tower.video_tower.positional_embedding

    @property
    def click_encoder(self) -> PositionMLP:
        return self.model.video_tower.prompt_encoder.pos_emb3d

    def scene_tokens(
        self,
        clip_feats: torch.Tensor,
        xyz: torch.Tensor,
        valid: torch.Tensor,
        *,
        voxel_size: float,
        max_tokens: int,
        seed: int,
        compat_bf16: bool = False,
    ) -> tuple[torch.Tensor, VoxelAssignment]:
        """CLIP patch features (N, mm) + MLP(xyz (N, 3)) → voxel means → projector → (M, hidden)."""
        feats = clip_feats + self.patch_pos_mlp(xyz.to(clip_feats.dtype))
        assignment = voxelize(
            xyz,
            valid,
            voxel_size=voxel_size,
            max_tokens=max_tokens,
            seed=seed,
            compat_bf16=compat_bf16,
        )
        pooled = pool_features(feats, assignment)
        return self.model.mm_projector(pooled), assignment

    def click_tokens(self, clicks: torch.Tensor) -> torch.Tensor:
        """(K, 3) world points → (K, hidden) embeddings that replace the ``<boxes>`` sentinels.

        With ``click_encoding="shared_position"`` (tiny models) the click also gets what a scene
        token at that point would get from the position path, projected like one; matching a click
        to the tokens around it then needs no second, separately learned 3D code.
        """
        dtype = self.model.embed_tokens.weight.dtype
        xyz = clicks.to(dtype)
        tokens = self.click_encoder(xyz)
        if getattr(self.config, "click_encoding", "mlp") == "shared_position":
            tokens = tokens + self.model.mm_projector(self.patch_pos_mlp(xyz))
        return tokens


def clip_patch_features(
    vision: CLIPVisionModel, pixel_values: torch.Tensor, select_layer: int
) -> torch.Tensor:
    """(V, 3, S, S) normalised pixels → (V, G·G, C) patch features of ``hidden_states[select_layer]``, CLS dropped."""
    out = vision(pixel_values=pixel_values, output_hidden_states=True)
    return out.hidden_states[select_layer][:, 1:]


def rebuild_rotary(model: Llava3DForCausalLM, device: torch.device | str) -> None:
    """Recreate the rotary embedding's non-persistent buffers (lost when a model leaves the meta device)."""
    rotary_cls = type(model.model.rotary_emb)
    with torch.device("cpu"):  # inv_freq is computed eagerly; keep it float32 like upstream
        rotary = rotary_cls(config=model.config)
    model.model.rotary_emb = rotary.to(device)
