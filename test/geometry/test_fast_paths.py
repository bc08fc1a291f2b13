"""Fast paths of the scene core give the same bits as the literal code they replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llava3d_ros.geometry.depth import decode_depth
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import (
    _patch_members,
    _uniform_tiling,
    as_pose,
    lower_medians,
)
from llava3d_ros.geometry.voxels import pool_features, voxelize


def sorted_lower_medians(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The full-sort reference: sort each row (NaN last), take element (count − 1) // 2."""
    srt = np.sort(block, axis=1)
    count = np.count_nonzero(~np.isnan(srt), axis=1)
    return srt[np.arange(len(srt)), np.maximum(count - 1, 0) // 2], count


def _check_medians(block: np.ndarray) -> None:
    ref, ref_count = sorted_lower_medians(block)
    med, count = lower_medians(block.copy())
    np.testing.assert_array_equal(count, ref_count)
    assert med.dtype == np.float32
    assert med.tobytes() == ref.tobytes()  # same bits, NaN of all-NaN rows included


@pytest.mark.parametrize("n", [400, 399, 1, 2, 3, 7])
@pytest.mark.parametrize("nan_fraction", [0.0, 0.05, 0.5, 0.97])
def test_lower_medians_match_full_sort(n: int, nan_fraction: float) -> None:
    rng = np.random.default_rng(n * 100 + int(nan_fraction * 100))
    block = rng.uniform(0.3, 6.0, (300, n)).astype(np.float32)
    block[rng.random(block.shape) < nan_fraction] = np.nan
    block[0] = np.nan  # no valid value
    block[1] = np.nan
    block[1, n // 2] = 2.5  # exactly one valid value
    block[2, : max(n - 2, 0)] = np.nan  # two valid values at the end
    block[3] = np.round(block[3], 1)  # ties
    block[4] = 1.0  # all equal
    if n > 3:
        block[5, :3] = [np.inf, -np.inf, np.nan]  # infinities are values, not holes
        block[6, :2] = [np.inf, -np.inf]
    _check_medians(block)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    n=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
    nan_fraction=st.sampled_from([0.0, 0.1, 0.6, 1.0]),
    quantum=st.sampled_from([0.0, 0.5]),
)
def test_lower_medians_random(
    rows: int, n: int, seed: int, nan_fraction: float, quantum: float
) -> None:
    rng = np.random.default_rng(seed)
    block = rng.uniform(0.1, 5.0, (rows, n))
    if quantum:
        block = np.round(block / quantum) * quantum  # many ties
    block = block.astype(np.float32)
    block[rng.random(block.shape) < nan_fraction] = np.nan
    _check_medians(block)


def _contiguous_start(members: np.ndarray, n: int) -> int | None:
    """The check the tiling fast path replaced: members are ``start + arange``, unpadded."""
    start = int(members[0, 0])
    if start + members.size > n:
        return None
    expect = start + np.arange(members.size).reshape(members.shape)
    return start if np.array_equal(members, expect) else None


@pytest.mark.parametrize(
    ("n", "scale", "offset", "g"),
    [
        (640, 0.7, 56.0, 24),  # 640×480 → 336: 20-pixel runs from column 80
        (480, 0.7, 0.0, 24),
        (1296, 336 / 968, 61.0, 24),
        (500, 336 / 333, 0.0, 24),
        (64, 336 / 48, 20.0, 24),
        (100, 1.0, 0.0, 4),
        (10, 0.1, 0.0, 24),  # no source pixel in most patches
        (56, 1.0, 0.0, 4),  # exactly four 14-pixel runs
        (56, 1.0, 0.3, 4),
    ],
)
def test_uniform_tiling_matches_member_lists(n: int, scale: float, offset: float, g: int) -> None:
    members = _patch_members(n, scale, offset, 14, g)
    start = _contiguous_start(members, n)
    run = _uniform_tiling(n, scale, offset, 14, g)
    if start is None:
        assert run is None
    else:
        assert run == (start, members.shape[1])


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 700),
    scale=st.floats(0.05, 3.0),
    offset=st.floats(-50.0, 200.0),
    g=st.integers(1, 30),
)
def test_uniform_tiling_random(n: int, scale: float, offset: float, g: int) -> None:
    members = _patch_members(n, scale, offset, 14, g)
    start = _contiguous_start(members, n)
    run = _uniform_tiling(n, scale, offset, 14, g)
    assert run == (None if start is None else (start, members.shape[1]))


def test_decode_depth_same_bits_as_literal_code() -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 65536, (97, 131)).astype(np.uint16)
    raw[::7] = 0
    raw[::11, ::3] = 65535
    raw[0, :4] = [1, 65534, 0, 65535]
    for scale in (1000.0, 5000.0, 1.0, 0.001):
        ref = raw.astype(np.float32) / np.float32(scale)
        ref[(raw == 0) | (raw == 65535)] = np.nan
        if float(scale).is_integer():  # 65535: a NaN carrying the scale (for upstream mode)
            ref.view(np.uint32)[raw == 65535] = 0x7FC00000 | int(scale)
        assert decode_depth(raw, scale).tobytes() == ref.tobytes()


@pytest.mark.parametrize(
    ("i", "value"),
    [(0, 1e-9), (0, 1.0000001e-9), (1, -1e-9), (2, 2e-9), (3, 1 + 1.0001e-5), (3, 1 + 1e-5)]
    + [(3, 1 + 1.001e-5), (3, 1 - 1.0100001e-5), (3, 1 - 1.02e-5), (3, 1.1), (2, 1e-10)],
)
def test_as_pose_last_row_tolerance_is_allclose(i: int, value: float) -> None:
    """The written-out last-row check accepts exactly what np.allclose(atol=1e-9) accepts."""
    t = np.eye(4)
    t[:3, 3] = [1.0, 2.0, 3.0]
    t[3, i] = value
    expected = np.allclose(t[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9)
    if expected:
        np.testing.assert_array_equal(as_pose(t)[3], t[3])
    else:
        with pytest.raises(GeometryError, match="last row"):
            as_pose(t)


def test_pool_features_with_left_out_patches_same_bits_as_masking() -> None:
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(3000, 3, generator=g) * 4
    valid = torch.rand(3000, generator=g) > 0.2
    feats = torch.randn(3000, 96, generator=g)
    for a in (voxelize(xyz, valid), voxelize(xyz, valid, max_tokens=40)):
        idx = a.patch_to_voxel
        keep = idx >= 0
        assert not bool(keep.all())
        for f in (feats, feats.to(torch.bfloat16), feats.to(torch.float16)):
            acc = torch.float32 if f.dtype != torch.float32 else f.dtype
            sums = torch.zeros(a.num_voxels, 96, dtype=acc)
            sums.index_add_(0, idx[keep], f[keep].to(acc))
            counts = torch.bincount(idx[keep], minlength=a.num_voxels).to(acc).clamp_min_(1)
            ref = (sums / counts[:, None]).to(f.dtype)
            out = pool_features(f, a)
            assert out.dtype == f.dtype and out.shape == ref.shape
            assert torch.equal(out.view(-1).view(torch.uint8), ref.view(-1).view(torch.uint8))
