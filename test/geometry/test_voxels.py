"""Voxel pooling: parity with a transcription of upstream, deterministic cap, invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llava3d_ros.geometry.errors import GeometryError, NoValidDepthError
from llava3d_ros.geometry.voxels import pool_features, voxelize


def upstream_voxel_pool(xyz: torch.Tensor, feats: torch.Tensor, voxel: float = 0.2):
    """Straight transcription of the reference §2 steps 9 (no cap): keys, inverse, mean."""
    p = torch.round(xyz / voxel).long()
    p = p - p.min(dim=0).values
    y_max = p[:, 1].max() + 1
    z_max = p[:, 2].max() + 1
    keys = (p[:, 0] * y_max + p[:, 1]) * z_max + p[:, 2]
    uniq, inv = torch.unique(keys, return_inverse=True)
    out = torch.zeros(len(uniq), feats.shape[1], dtype=feats.dtype)
    for i in range(len(uniq)):
        out[i] = feats[inv == i].mean(dim=0)
    return uniq, inv, out


def _scene(n: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([4.0, 3.0, 2.5]) - 1.0
    feats = torch.randn(n, 16, generator=g)
    return xyz, feats


def test_parity_with_upstream_transcription() -> None:
    xyz, feats = _scene()
    uniq, inv, ref = upstream_voxel_pool(xyz, feats)
    a = voxelize(xyz, max_tokens=10_000)
    assert torch.equal(a.voxel_keys, uniq)
    assert torch.equal(a.patch_to_voxel, inv)
    assert a.num_voxels == len(uniq)
    torch.testing.assert_close(pool_features(feats, a), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.voxel_centers, upstream_voxel_pool(xyz, xyz)[2])


def test_rounding_is_half_to_even_and_min_offset() -> None:
    # 0.1/0.2 = 0.5 → 0 (half-even), 0.3/0.2 = 1.5 → 2; x-major ravel after the min offset.
    xyz = torch.tensor([[0.1, 0.0, 0.0], [0.3, 0.0, 0.0], [0.3, 0.2, 0.0], [0.3, 0.2, 0.4]])
    a = voxelize(xyz)
    # grid x: round(0.5)=0, round(1.5)=2 → x ∈ {0, 2}; y ∈ {0, 1}; z ∈ {0, 2}: Ymax=2, Zmax=3
    assert a.voxel_keys.tolist() == [0, 12, 15, 17]
    assert a.patch_to_voxel.tolist() == [0, 1, 2, 3]


def test_invalid_patches_left_out() -> None:
    xyz, feats = _scene(500)
    valid = torch.ones(500, dtype=torch.bool)
    valid[::3] = False
    xyz[~valid] = float("nan")  # invalid positions may be garbage: they must not matter
    a = voxelize(xyz, valid)
    assert (a.patch_to_voxel[~valid] == -1).all()
    uniq, inv, ref = upstream_voxel_pool(xyz[valid], feats[valid])
    assert torch.equal(a.voxel_keys, uniq)
    torch.testing.assert_close(pool_features(feats, a), ref)


def test_cap_is_deterministic_and_keeps_sorted_order() -> None:
    xyz, feats = _scene(3000)
    full = voxelize(xyz, max_tokens=100_000)
    assert full.num_voxels > 200
    a = voxelize(xyz, max_tokens=200, seed=7)
    b = voxelize(xyz, max_tokens=200, seed=7)
    c = voxelize(xyz, max_tokens=200, seed=8)
    assert a.num_voxels == 200
    assert (a.dropped, full.dropped) == (full.num_voxels - 200, 0)
    assert torch.equal(a.voxel_keys, b.voxel_keys)
    assert torch.equal(a.patch_to_voxel, b.patch_to_voxel)
    assert not torch.equal(a.voxel_keys, c.voxel_keys)
    assert bool((a.voxel_keys[1:] > a.voxel_keys[:-1]).all())
    assert set(a.voxel_keys.tolist()) <= set(full.voxel_keys.tolist())
    # kept voxels pool exactly the same patches as without the cap
    pooled_full = pool_features(feats, full)
    pos = torch.searchsorted(full.voxel_keys, a.voxel_keys)
    torch.testing.assert_close(pool_features(feats, a), pooled_full[pos])
    kept = a.patch_to_voxel >= 0
    assert torch.equal(
        a.voxel_keys[a.patch_to_voxel[kept]], full.voxel_keys[full.patch_to_voxel[kept]]
    )


def test_bf16_compat_changes_only_rounding_path() -> None:
    xyz, _ = _scene(2000, seed=3)
    a = voxelize(xyz, compat_bf16=True)
    p = torch.round(xyz.to(torch.bfloat16) / 0.2).long()
    p = p - p.min(0).values
    d = p.max(0).values + 1
    uniq = torch.unique((p[:, 0] * d[1] + p[:, 1]) * d[2] + p[:, 2])
    assert torch.equal(a.voxel_keys, uniq)


def test_pool_dtype_and_half_accumulation() -> None:
    xyz, feats = _scene(1000)
    a = voxelize(xyz)
    out = pool_features(feats.to(torch.bfloat16), a)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), pool_features(feats, a), atol=0.02, rtol=0.02)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000), st.sampled_from([50, 10_000]))
def test_pooling_independent_of_view_order(views: int, seed: int, cap: int) -> None:
    g = torch.Generator().manual_seed(seed)
    per = 64
    xyz = torch.rand(views, per, 3, generator=g) * 3
    feats = torch.randn(views, per, 8, generator=g)
    valid = torch.rand(views, per, generator=g) > 0.1
    valid[0, 0] = True
    perm = torch.randperm(views, generator=g)
    a = voxelize(xyz.reshape(-1, 3), valid.reshape(-1), max_tokens=cap)
    b = voxelize(xyz[perm].reshape(-1, 3), valid[perm].reshape(-1), max_tokens=cap)
    assert torch.equal(a.voxel_keys, b.voxel_keys)
    torch.testing.assert_close(
        pool_features(feats.reshape(-1, 8), a), pool_features(feats[perm].reshape(-1, 8), b)
    )
    torch.testing.assert_close(a.voxel_centers, b.voxel_centers)


@pytest.mark.parametrize(
    ("xyz", "valid", "exc"),
    [
        (torch.zeros(5, 2), None, GeometryError),
        (torch.zeros(5, 3, dtype=torch.int64), None, GeometryError),
        (torch.tensor([[0.0, 0.0, float("inf")]]), None, GeometryError),
        (torch.zeros(4, 3), torch.zeros(4, dtype=torch.bool), NoValidDepthError),
        (torch.zeros(4, 3), torch.ones(3, dtype=torch.bool), GeometryError),
        (torch.zeros(4, 3), torch.ones(4), GeometryError),
    ],
)
def test_bad_input(xyz: torch.Tensor, valid: torch.Tensor | None, exc: type) -> None:
    with pytest.raises(exc):
        voxelize(xyz, valid)


def test_bad_features_shape() -> None:
    a = voxelize(torch.zeros(4, 3))
    with pytest.raises(GeometryError):
        pool_features(torch.zeros(5, 2), a)
    with pytest.raises(GeometryError):
        voxelize(torch.zeros(4, 3), voxel_size=0.0)
