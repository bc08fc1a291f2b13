"""Pinhole intrinsics and the model's resize + centre-crop maths (upstream-exact for landscape)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llava3d_ros.geometry.errors import GeometryError


@dataclass(frozen=True)
class ResizeCrop:
    """Shortest side → ``size``, then a centre crop to ``size``×``size`` (upstream's depth path).

    ``new_w``/``new_h`` come from Python float arithmetic exactly as upstream
    (``s = size / min(w, h)``, ``int(w·s)``); ``left``/``top`` are the crop offsets Pillow uses
    (it rounds fractional boxes half-to-even).
    """

    orig_w: int
    orig_h: int
    new_w: int
    new_h: int
    left: int
    top: int
    size: int


def plan_resize_crop(width: int, height: int, size: int = 336) -> ResizeCrop:
    """The resize + crop upstream applies to an image of ``width``×``height``."""
    if width < 1 or height < 1 or size < 1:
        raise GeometryError(
            f"image and target sizes must be positive, got {width}x{height}->{size}"
        )
    s = size / min(width, height)
    new_w, new_h = int(width * s), int(height * s)
    left = round((new_w - size) / 2)
    top = round((new_h - size) / 2)
    return ResizeCrop(width, height, new_w, new_h, left, top, size)


def as_intrinsics(k: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """A validated 3×3 float64 K from a 3×3 or 4×4 matrix (the 4×4 form upstream stores)."""
    k = np.asarray(k, dtype=np.float64)
    if k.shape == (4, 4):
        k = k[:3, :3]
    if k.shape != (3, 3):
        raise GeometryError(f"intrinsics must be 3x3 or 4x4, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise GeometryError("intrinsics hold non-finite values")
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise GeometryError(f"focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}")
    if k[1, 0] != 0 or k[2, 0] != 0 or k[2, 1] != 0 or k[2, 2] != 1:
        raise GeometryError(f"intrinsics are not an upper-triangular pinhole K: {k.tolist()}")
    return k.copy()


def intrinsics_from_camera_info(k: Sequence[float], width: int, height: int) -> np.ndarray:
    """K from CameraInfo-like fields (``k``: 9 numbers row-major, image ``width``×``height``)."""
    flat = np.asarray(k, dtype=np.float64).reshape(-1)
    if flat.size != 9:
        raise GeometryError(f"CameraInfo k must have 9 entries, got {flat.size}")
    if width < 1 or height < 1:
        raise GeometryError(f"CameraInfo size must be positive, got {width}x{height}")
    return as_intrinsics(flat.reshape(3, 3))


def resize_crop_intrinsics(k: np.ndarray, plan: ResizeCrop) -> np.ndarray:
    """K of the ``size``×``size`` crop: upstream's arithmetic, plus the portrait analogue.

    Upstream divides row 0 by orig_w/new_w and row 1 by orig_h/new_h, then shifts cx by
    (new_w − new_h)/2 and never touches cy, which is wrong for portrait images; here a
    portrait image shifts cy by (new_h − new_w)/2 instead (landscape stays bit-identical).
    """
    k = as_intrinsics(k)
    k[0] /= plan.orig_w / plan.new_w
    k[1] /= plan.orig_h / plan.new_h
    if plan.new_w >= plan.new_h:
        k[0, 2] -= (plan.new_w - plan.new_h) / 2
    else:
        k[1, 2] -= (plan.new_h - plan.new_w) / 2
    return k
