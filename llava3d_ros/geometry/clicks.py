"""A clicked pixel → world point, robust to depth holes."""

from __future__ import annotations

import numpy as np

from llava3d_ros.geometry.cameras import as_intrinsics
from llava3d_ros.geometry.errors import GeometryError, NoValidDepthError
from llava3d_ros.geometry.unproject import unproject_pixels


class NoDepthAtClickError(NoValidDepthError):
    """No valid depth in the window around a clicked pixel."""


def click_to_world(
    u: float,
    v: float,
    depth_m: np.ndarray,
    k_depth: np.ndarray,
    k_rgb: np.ndarray,
    cam_to_world: np.ndarray,
    rgb_size: tuple[int, int],
    window: int = 7,
) -> np.ndarray:
    """World point (3,) of colour pixel (u, v): median valid depth in a ``window``² neighbourhood.

    (u, v) are in the full-resolution colour image of size ``rgb_size`` = (width, height).
    Colour and depth are assumed registered (same optical centre), so the colour pixel maps to
    the depth image through K_depth · K_rgb⁻¹; the depth pixel's ray is then unprojected at the
    median depth. Raises ``NoDepthAtClickError`` when the window holds no valid depth.
    """
    w, h = rgb_size
    # the image covers the continuous range [0, w) x [0, h): 639.9 is in a 640-wide image
    if not (np.isfinite(u) and np.isfinite(v)) or not (0.0 <= u < w and 0.0 <= v < h):
        raise GeometryError(
            f"click ({u}, {v}) is outside the {w}x{h} colour image (u in [0, {w}), v in [0, {h}))"
        )
    if window < 1:
        raise GeometryError(f"window must be >= 1, got {window}")
    kd, kc = as_intrinsics(k_depth), as_intrinsics(k_rgb)
    ud, vd, _ = kd @ np.linalg.solve(kc, [u, v, 1.0])
    dh, dw = depth_m.shape
    # nearest depth pixel; a click within the image's last half pixel rounds onto the edge
    ci = min(int(round(vd)), dh - 1) if 0.0 <= vd < dh else int(round(vd))
    cj = min(int(round(ud)), dw - 1) if 0.0 <= ud < dw else int(round(ud))
    r = window // 2
    patch = depth_m[max(ci - r, 0) : min(ci + r + 1, dh), max(cj - r, 0) : min(cj + r + 1, dw)]
    good = patch[np.isfinite(patch)]
    if good.size == 0:
        raise NoDepthAtClickError(
            f"no valid depth within {window}x{window} px of click ({u:.1f}, {v:.1f})"
        )
    d = float(np.median(good))
    return unproject_pixels(np.array([ud]), np.array([vd]), np.array([d]), kd, cam_to_world)[0]
