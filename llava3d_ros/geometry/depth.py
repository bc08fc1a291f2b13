"""Depth decoding (millimetre/TUM uint16 or metric float) and upstream's nearest resize + crop."""

from __future__ import annotations

import numpy as np
from PIL import Image

from llava3d_ros.geometry.cameras import ResizeCrop
from llava3d_ros.geometry.errors import GeometryError, NoValidDepthError

MM_SCALE = 1000.0  # Kinect/RealSense/7-Scenes/ScanNet PNGs: millimetres
TUM_SCALE = 5000.0  # TUM RGB-D PNGs: 1/5000 m


def decode_depth(depth: np.ndarray, scale: float = MM_SCALE) -> np.ndarray:
    """Depth in metres (H, W) float32 with NaN where invalid.

    uint16 is divided by ``scale`` (0 and 65535 are invalid); float32/float64 are metres already
    (0, negatives, NaN and ±inf are invalid). The float32 division matches upstream's torch path.
    """
    if not isinstance(depth, np.ndarray):
        raise GeometryError(f"depth must be a numpy array, got {type(depth).__name__}")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2 or depth.shape[0] < 1 or depth.shape[1] < 1:
        raise GeometryError(f"depth must be a 2-D image, got shape {depth.shape}")
    if depth.dtype == np.uint16:
        if not (np.isfinite(scale) and scale > 0):
            raise GeometryError(f"depth scale must be a positive number, got {scale}")
        metres = depth.astype(np.float32) / np.float32(scale)
        metres[(depth == 0) | (depth == 65535)] = np.nan
        return metres
    if depth.dtype in (np.float32, np.float64):
        metres = depth.astype(np.float32)
        with np.errstate(invalid="ignore"):
            metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
        return metres
    raise GeometryError(
        f"depth must be uint16 (scaled) or float32/float64 metres, got {depth.dtype}"
    )


def require_valid(metres: np.ndarray) -> None:
    """Raise ``NoValidDepthError`` if a decoded depth image has no valid pixel."""
    if not np.isfinite(metres).any():
        raise NoValidDepthError("depth image has no valid pixel (all 0, 65535, NaN or inf)")


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index per output index of Pillow's NEAREST resize, bit-exact.

    Nominally floor((i + 0.5) · in/out), but Pillow accumulates the sample position by repeated
    float64 addition of in/out, which lands just below integers that the closed form hits
    exactly (640→448 picks column 24, not 25, for output 17); a sequential cumsum reproduces it.
    """
    step = n_in / n_out
    steps = np.full(n_out, step)
    steps[0] = step * 0.5
    return np.cumsum(steps).astype(np.int64)


def resize_crop_nearest(image: np.ndarray, plan: ResizeCrop) -> np.ndarray:
    """Upstream's depth resize (Pillow NEAREST) + centre crop, as pure indexing (bit-exact)."""
    if image.shape[:2] != (plan.orig_h, plan.orig_w):
        raise GeometryError(
            f"image is {image.shape[1]}x{image.shape[0]}, plan expects {plan.orig_w}x{plan.orig_h}"
        )
    rows = nearest_indices(plan.orig_h, plan.new_h)[plan.top : plan.top + plan.size]
    cols = nearest_indices(plan.orig_w, plan.new_w)[plan.left : plan.left + plan.size]
    return image[rows[:, None], cols[None, :]]


def resize_crop_rgb(rgb: np.ndarray, plan: ResizeCrop) -> np.ndarray:
    """Colour as CLIP's processor sees it: bicubic shortest-side resize, centre crop (floor)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise GeometryError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if rgb.shape[:2] != (plan.orig_h, plan.orig_w):
        raise GeometryError(
            f"rgb is {rgb.shape[1]}x{rgb.shape[0]}, plan expects {plan.orig_w}x{plan.orig_h}"
        )
    # HF's CLIPImageProcessor: long side int(size·long/short), crop offset floor((new−size)/2).
    short, long = sorted((plan.orig_w, plan.orig_h))
    new_long = int(plan.size * long / short)
    new_w, new_h = (new_long, plan.size) if plan.orig_w >= plan.orig_h else (plan.size, new_long)
    img = Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - plan.size) // 2, (new_h - plan.size) // 2
    return np.asarray(img.crop((left, top, left + plan.size, top + plan.size)))
