"""Voxel pooling of 3D patch features exactly as LLaVA-3D does it, with a deterministic cap.

torch is imported inside the functions that compute, not at module level, so importing
``geometry`` (the node at start-up, the ``query`` CLI) does not pay for torch; only calling
them does (test/geometry/test_imports.py holds that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llava3d_ros.geometry.errors import GeometryError, NoValidDepthError

if TYPE_CHECKING:
    import torch


@dataclass
class VoxelAssignment:
    """Which voxel every patch fell into; kept so answers can be traced back to views/pixels.

    ``patch_to_voxel`` is (N,) int64 with the voxel index of each patch (−1 = left out: invalid
    depth or voxel dropped by the token cap). ``voxel_keys`` (M,) int64 are the raveled keys in
    ascending order (x-major, as upstream), ``voxel_centers`` (M, 3) float32 the mean xyz of the
    member patches in the world frame. ``dropped`` counts the occupied voxels the token cap left
    out.
    """

    patch_to_voxel: torch.Tensor
    voxel_keys: torch.Tensor
    voxel_centers: torch.Tensor
    num_voxels: int
    dropped: int = 0


def _check_xyz(xyz: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    import torch

    if not isinstance(xyz, torch.Tensor):
        raise GeometryError(f"xyz must be a torch.Tensor, got {type(xyz).__name__}")
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise GeometryError(f"xyz must have shape (N, 3), got {tuple(xyz.shape)}")
    if not xyz.is_floating_point():
        raise GeometryError(f"xyz must be floating point, got {xyz.dtype}")
    if valid is None:
        valid = torch.ones(xyz.shape[0], dtype=torch.bool, device=xyz.device)
    else:
        if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool:
            raise GeometryError("valid must be a bool torch.Tensor")
        if valid.shape != (xyz.shape[0],):
            raise GeometryError(
                f"valid must have shape ({xyz.shape[0]},), got {tuple(valid.shape)}"
            )
        valid = valid.to(xyz.device)
    finite = torch.isfinite(xyz).all(dim=1)
    if bool((valid & ~finite).any()):
        raise GeometryError("xyz holds non-finite values at patches marked valid")
    return valid


def voxelize(
    xyz: torch.Tensor,
    valid: torch.Tensor | None = None,
    voxel_size: float = 0.2,
    max_tokens: int = 2560,
    seed: int = 0,
    compat_bf16: bool = False,
) -> VoxelAssignment:
    """Assign each patch position (N, 3) to a voxel as upstream does, then cap the voxel count.

    Key = round-half-even(xyz / voxel_size) − per-scene minimum (over valid patches), raveled
    x-major with ``Ymax, Zmax = max + 1``; voxels are the sorted unique keys. Upstream drops
    voxels beyond ``max_tokens`` with an unseeded randperm; here the permutation comes from a
    ``torch.Generator`` seeded with ``seed`` and the kept voxels stay in sorted-key order, so the
    same scene always yields the same tokens. ``compat_bf16`` rounds in bfloat16 like the
    released inference script (membership can differ from fp32; fp32 is the more exact default).
    """
    import torch

    valid = _check_xyz(xyz, valid)
    if not voxel_size > 0:
        raise GeometryError(f"voxel_size must be > 0, got {voxel_size}")
    if max_tokens < 1:
        raise GeometryError(f"max_tokens must be >= 1, got {max_tokens}")
    if not bool(valid.any()):
        raise NoValidDepthError("no valid patch positions to voxelise (all depth invalid?)")
    device = xyz.device
    n = xyz.shape[0]
    pts = xyz[valid]
    scaled = pts.to(torch.bfloat16) / voxel_size if compat_bf16 else pts.float() / voxel_size
    grid = torch.round(scaled).to(torch.int64)
    grid = grid - grid.min(dim=0).values
    dims = grid.max(dim=0).values + 1
    keys = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
    voxel_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    m = voxel_keys.shape[0]
    dropped = max(m - max_tokens, 0)
    if m > max_tokens:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        kept = torch.randperm(m, generator=gen)[:max_tokens].sort().values.to(device)
        remap = torch.full((m,), -1, dtype=torch.int64, device=device)
        remap[kept] = torch.arange(max_tokens, device=device)
        inverse = remap[inverse]
        voxel_keys = voxel_keys[kept]
        m = max_tokens
    patch_to_voxel = torch.full((n,), -1, dtype=torch.int64, device=device)
    patch_to_voxel[valid] = inverse
    centers = _mean_by_index(xyz.float(), patch_to_voxel, m)
    return VoxelAssignment(patch_to_voxel, voxel_keys, centers, m, dropped)


def pool_features(features: torch.Tensor, assignment: VoxelAssignment) -> torch.Tensor:
    """Mean of the (N, C) patch features per voxel → (M, C), same dtype and device as features.

    Half-precision inputs are summed in float32 (then cast back) so the mean does not lose
    bits to accumulation; patches with ``patch_to_voxel == -1`` are ignored.
    """
    idx = assignment.patch_to_voxel
    if features.ndim != 2 or features.shape[0] != idx.shape[0]:
        raise GeometryError(
            f"features must have shape ({idx.shape[0]}, C), got {tuple(features.shape)}"
        )
    return _mean_by_index(features, idx.to(features.device), assignment.num_voxels)


def _mean_by_index(features: torch.Tensor, idx: torch.Tensor, m: int) -> torch.Tensor:
    import torch

    keep = idx >= 0
    half = features.dtype in (torch.float16, torch.bfloat16)
    acc_dtype = torch.float32 if half else features.dtype
    # Left-out rows (idx −1) are summed into a scratch row m that is dropped, rather than
    # masked out of ``features``: a boolean row mask copies the whole (N, C) tensor (~50 ms for
    # 20 views × 576 × 1024 fp32, 5× the index_add_ itself). Every voxel still adds its rows in
    # the same order starting from zero, so the sums are the same bits.
    sums = torch.zeros((m + 1, features.shape[1]), dtype=acc_dtype, device=features.device)
    sums.index_add_(0, torch.where(keep, idx, m), features.to(acc_dtype))
    counts = torch.bincount(idx[keep], minlength=m).to(acc_dtype).clamp_min_(1)
    return (sums[:m] / counts[:, None]).to(features.dtype)
