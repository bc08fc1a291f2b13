"""Depth seen by a camera that took no keyframe: held keyframes' depth splatted into it.

A PIXEL click on an image that never became a keyframe (the ingest gate and the keyframe
test keep few frames) is resolved by rendering what the keyframes saw into that camera, at
its pose, and reading the surface under the pixel. A z-buffer of splatted points (not a
mesh) is enough for that: the click reads a small window and takes its nearest surface.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from llava3d_ros.geometry.cameras import as_intrinsics
from llava3d_ros.geometry.clicks import NoDepthAtClickError
from llava3d_ros.geometry.errors import GeometryError

# A surface point's depth may lie this far (fraction of depth, at least SURFACE_MIN_M)
# behind the nearest point in the click window and still count as that surface.
SURFACE_FRACTION = 0.03
SURFACE_MIN_M = 0.03


def depth_points(
    depth_m: np.ndarray, k_depth: np.ndarray, cam_to_world: np.ndarray, stride: int = 2
) -> np.ndarray:
    """World points (N, 3) of every ``stride``-th valid depth pixel (pixel centres at integers)."""
    k = as_intrinsics(k_depth)
    v, u = np.mgrid[0 : depth_m.shape[0] : stride, 0 : depth_m.shape[1] : stride]
    d = depth_m[::stride, ::stride].astype(np.float64)
    ok = np.isfinite(d) & (d > 0)
    u, v, d = u[ok], v[ok], d[ok]
    cam = np.stack([(u - k[0, 2]) * d / k[0, 0], (v - k[1, 2]) * d / k[1, 1], d], axis=-1)
    pose = np.asarray(cam_to_world, dtype=np.float64)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def render_depth(
    points_world: Iterable[np.ndarray],
    k: np.ndarray,
    cam_to_world: np.ndarray,
    size_wh: tuple[int, int],
) -> np.ndarray:
    """(h, w) float32 depth of the nearest point per pixel (NaN where no point falls)."""
    k = as_intrinsics(k)
    w, h = size_wh
    if w < 1 or h < 1:
        raise GeometryError(f"render size must be positive, got {w}x{h}")
    world_to_cam = np.linalg.inv(np.asarray(cam_to_world, dtype=np.float64))
    zbuf = np.full(h * w, np.inf)
    for pts in points_world:
        cam = pts @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        cam = cam[cam[:, 2] > 1e-6]
        if not len(cam):
            continue
        u = np.floor(k[0, 0] * cam[:, 0] / cam[:, 2] + k[0, 2] + 0.5).astype(np.int64)
        v = np.floor(k[1, 1] * cam[:, 1] / cam[:, 2] + k[1, 2] + 0.5).astype(np.int64)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        np.minimum.at(zbuf, v[inside] * w + u[inside], cam[inside, 2])
    zbuf[~np.isfinite(zbuf)] = np.nan
    return zbuf.reshape(h, w).astype(np.float32)


def surface_depth(depth_m: np.ndarray, u: float, v: float, window: int = 9) -> float:
    """Depth of the nearest surface in a ``window``² neighbourhood of pixel (u, v).

    Splatted points leave holes through which farther surfaces show; the median of the
    depths close to the window's nearest one reads the front surface only.
    """
    h, w = depth_m.shape
    ci, cj = min(int(round(v)), h - 1), min(int(round(u)), w - 1)
    r = window // 2
    patch = depth_m[max(ci - r, 0) : ci + r + 1, max(cj - r, 0) : cj + r + 1]
    good = patch[np.isfinite(patch)]
    if good.size == 0:
        raise NoDepthAtClickError(
            f"no keyframe saw the surface within {window}x{window} px of ({u:.1f}, {v:.1f})"
        )
    near = good.min()
    front = good[good <= near + max(SURFACE_MIN_M, SURFACE_FRACTION * near)]
    return float(np.median(front))
