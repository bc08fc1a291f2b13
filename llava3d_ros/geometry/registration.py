"""Registering an unregistered depth image into the colour camera (ROS-free).

When depth comes with its own camera_info and frame, every valid depth pixel is unprojected
with the depth intrinsics, moved into the colour camera with the depth→colour extrinsic,
projected with the colour intrinsics onto the nearest colour pixel, and a z-buffer keeps the
nearest surface where several land on one pixel (a foreground object hides the background
the depth camera saw beside it). Colour pixels that no depth pixel reaches stay invalid;
no holes are filled (the patch positions downstream take medians of the valid pixels).

Both images must be undistorted already (see :mod:`llava3d_ros.geometry.distortion`).
Pixel centres are at integer coordinates, as everywhere in this package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llava3d_ros.geometry.cameras import as_intrinsics
from llava3d_ros.geometry.depth import MM_SCALE
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import as_pose

_MIN_Z = 1e-6  # metres: points at or behind the colour camera's centre are not seen


def register_depth(
    depth: np.ndarray,
    k_depth: np.ndarray | Sequence[Sequence[float]],
    color_size: tuple[int, int],
    k_color: np.ndarray | Sequence[Sequence[float]],
    color_T_depth: np.ndarray,
    scale: float = MM_SCALE,
) -> np.ndarray:
    """The depth image as the colour camera sees it, (h, w) for ``color_size = (w, h)``.

    ``depth`` is uint16 in units of 1/``scale`` m (0 and 65535 invalid, as in
    :func:`~llava3d_ros.geometry.depth.decode_depth`) or float metres (non-finite or ≤ 0
    invalid). The result has the same dtype and convention: uint16 with 0 where unobserved
    (and where the registered depth does not fit in uint16), float with NaN.
    ``color_T_depth`` maps points of the depth camera's optical frame to the colour one's.
    """
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or 0 in depth.shape:
        raise GeometryError(f"depth must be a non-empty 2-D numpy array, got {_describe(depth)}")
    try:
        cw, ch = (int(s) for s in color_size)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"color_size must be (width, height), got {color_size!r}") from exc
    if cw < 1 or ch < 1 or tuple(color_size) != (cw, ch):
        raise GeometryError(f"color_size must be positive integers, got {color_size!r}")
    kd, kc = as_intrinsics(k_depth), as_intrinsics(k_color)
    pose = as_pose(color_T_depth)

    if depth.dtype == np.uint16:
        if not (np.isfinite(scale) and scale > 0):
            raise GeometryError(f"depth scale must be a positive number, got {scale}")
        valid = (depth - np.uint16(1)) < np.uint16(65534)  # 0 and 65535 in one comparison
        rows, cols = np.nonzero(valid)
        z = depth[rows, cols].astype(np.float64) / scale
    elif depth.dtype in (np.float32, np.float64):
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth > 0)
        rows, cols = np.nonzero(valid)
        z = depth[rows, cols].astype(np.float64)
    else:
        raise GeometryError(
            f"depth must be uint16 (scaled) or float32/float64 metres, got {depth.dtype}"
        )

    # unproject with K_depth (upper-triangular, skew allowed)
    yn = (rows - kd[1, 2]) / kd[1, 1]
    xn = (cols - kd[0, 2] - kd[0, 1] * yn) / kd[0, 0]
    r, t = pose[:3, :3], pose[:3, 3]
    px = r[0, 0] * xn + r[0, 1] * yn + r[0, 2]
    py = r[1, 0] * xn + r[1, 1] * yn + r[1, 2]
    pz = r[2, 0] * xn + r[2, 1] * yn + r[2, 2]
    px, py, pz = px * z + t[0], py * z + t[1], pz * z + t[2]

    front = pz > _MIN_Z
    px, py, pz = px[front], py[front], pz[front]
    xc, yc = px / pz, py / pz
    u = np.floor(kc[0, 0] * xc + kc[0, 1] * yc + kc[0, 2] + 0.5)
    v = np.floor(kc[1, 1] * yc + kc[1, 2] + 0.5)
    inside = (u >= 0) & (u < cw) & (v >= 0) & (v < ch)
    flat = v[inside].astype(np.intp) * cw + u[inside].astype(np.intp)

    zbuf = np.full(cw * ch, np.inf)
    np.minimum.at(zbuf, flat, pz[inside])  # the z-buffer: nearest surface wins
    zbuf = zbuf.reshape(ch, cw)
    seen = np.isfinite(zbuf)

    if depth.dtype == np.uint16:
        out = np.zeros((ch, cw), dtype=np.uint16)
        units = np.floor(zbuf[seen] * scale + 0.5)
        out[seen] = np.where(units < 65535, units, 0).astype(np.uint16)  # 0: too far to store
        return out
    out = np.full((ch, cw), np.nan, dtype=depth.dtype)
    out[seen] = zbuf[seen]
    return out


def _describe(a: object) -> str:
    return f"{a.shape} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
