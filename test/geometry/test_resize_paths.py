"""Colour resize modes and the two robust-median gather paths against literal references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from llava3d_ros.geometry.cameras import plan_resize_crop, resize_crop_intrinsics
from llava3d_ros.geometry.depth import resize_crop_rgb
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import patch_points_robust

SIZES = [(640, 480), (480, 640), (1296, 968), (64, 48), (500, 333), (333, 500), (1280, 720)]


def clip_reference(rgb: np.ndarray, size: int = 336) -> np.ndarray:
    """HF CLIPImageProcessor's resize + centre crop, written out with Pillow."""
    h, w = rgb.shape[:2]
    short, long = sorted((w, h))
    nl = int(size * long / short)
    nw, nh = (nl, size) if w >= h else (size, nl)
    img = Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_resize_modes(w: int, h: int) -> None:
    rgb = np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    plan = plan_resize_crop(w, h, 336)
    np.testing.assert_array_equal(resize_crop_rgb(rgb, plan, "pillow"), clip_reference(rgb))
    fast = resize_crop_rgb(rgb, plan, "opencv")
    assert fast.shape == (336, 336, 3) and fast.dtype == np.uint8 and fast.flags.c_contiguous
    short, long = sorted((w, h))
    nl = int(336 * long / short)
    nw, nh = (nl, 336) if w >= h else (336, nl)
    full = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    left, top = (nw - 336) // 2, (nh - 336) // 2
    np.testing.assert_array_equal(fast, full[top : top + 336, left : left + 336])
    with pytest.raises(GeometryError, match="resample"):
        resize_crop_rgb(rgb, plan, "lanczos")


def _brute_force_medians(depth: np.ndarray, k: np.ndarray, size: int = 336, patch: int = 14):
    h, w = depth.shape
    plan = plan_resize_crop(w, h, size)
    k336 = resize_crop_intrinsics(k, plan)
    sx, sy = k336[0, 0] / k[0, 0], k336[1, 1] / k[1, 1]
    ox, oy = k[0, 2] * sx - k336[0, 2], k[1, 2] * sy - k336[1, 2]
    pc = np.floor((np.arange(w) * sx - ox + 0.5) / patch)
    pr = np.floor((np.arange(h) * sy - oy + 0.5) / patch)
    g = size // patch
    out = np.full((g, g), np.nan, dtype=np.float32)
    for i in range(g):
        for j in range(g):
            vals = depth[np.ix_(pr == i, pc == j)]
            vals = np.sort(vals[np.isfinite(vals)])
            if vals.size:
                out[i, j] = vals[(vals.size - 1) // 2]
    return plan, out


@pytest.mark.parametrize(("w", "h"), [(640, 480), (1296, 968), (500, 333), (480, 640)])
def test_robust_median_matches_brute_force(w: int, h: int) -> None:
    """640×480 takes the reshaped-block path, the other sizes the general gather."""
    rng = np.random.default_rng(w + h)
    depth = rng.uniform(0.5, 4.0, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.3] = np.nan
    depth[: h // 5, : w // 5] = np.nan  # whole patches without depth
    k = np.array([[0.9 * w, 0, (w - 1) / 2], [0, 0.9 * w, (h - 1) / 2], [0, 0, 1]])
    plan, ref = _brute_force_medians(depth, k)
    pts = patch_points_robust(depth, k, plan)
    np.testing.assert_array_equal(pts.valid, np.isfinite(ref))
    np.testing.assert_array_equal(pts.cam_xyz[..., 2][pts.valid], ref[pts.valid])
    assert not pts.valid.all()
