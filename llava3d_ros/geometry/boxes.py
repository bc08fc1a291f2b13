"""3D boxes (axis-aligned and oriented), axis-aligned IoU, and projection of points into views."""

from __future__ import annotations

import numpy as np

from llava3d_ros.geometry.cameras import as_intrinsics
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import as_pose

_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """Rotation from (yaw, pitch, roll) about z, y, x (R = Rz·Ry·Rx), as ``Box3D.euler`` means."""
    yaw, pitch, roll = np.asarray(euler, dtype=np.float64)
    cz, sz, cy, sy, cx, sx = (
        np.cos(yaw),
        np.sin(yaw),
        np.cos(pitch),
        np.sin(pitch),
        np.cos(roll),
        np.sin(roll),
    )
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


# The 12 edges between box_corners' corners (corner index bits: x, y, z signs).
BOX_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (2, 3), (4, 5), (6, 7),  # along x
    (0, 2), (1, 3), (4, 6), (5, 7),  # along y
    (0, 4), (1, 5), (2, 6), (3, 7),  # along z
)  # fmt: skip


def box_corners(
    center: np.ndarray, size: np.ndarray, euler: np.ndarray | None = None
) -> np.ndarray:
    """(8, 3) corners of a box with full extents ``size``; ``euler`` None/zeros = axis-aligned."""
    c = np.asarray(center, dtype=np.float64).reshape(3)
    s = np.asarray(size, dtype=np.float64).reshape(3)
    if not (np.isfinite(c).all() and np.isfinite(s).all()) or (s < 0).any():
        raise GeometryError(f"bad box: center={c.tolist()}, size={s.tolist()}")
    local = _SIGNS * (s / 2)
    if euler is not None:
        local = local @ euler_to_matrix(euler).T
    return local + c


def iou_aabb(
    a_center: np.ndarray, a_size: np.ndarray, b_center: np.ndarray, b_size: np.ndarray
) -> float:
    """3D IoU of two axis-aligned boxes given as centre + full extents (0 for empty boxes)."""
    a_c, a_s, b_c, b_s = (
        np.asarray(x, dtype=np.float64).reshape(3) for x in (a_center, a_size, b_center, b_size)
    )
    if (a_s < 0).any() or (b_s < 0).any():
        raise GeometryError("box sizes must be non-negative")
    lo = np.maximum(a_c - a_s / 2, b_c - b_s / 2)
    hi = np.minimum(a_c + a_s / 2, b_c + b_s / 2)
    inter = float(np.prod(np.clip(hi - lo, 0.0, None)))
    union = float(np.prod(a_s) + np.prod(b_s) - inter)
    return inter / union if union > 0 else 0.0


def project_points(
    points: np.ndarray, k: np.ndarray, cam_to_world: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) of world points (N, 3) in a view, and a mask of those in front and inside.

    Pixel coordinates follow the intrinsics' convention (integer = pixel centre), so a point is
    in view when −0.5 ≤ u < width − 0.5 (likewise v) and it lies in front of the camera.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise GeometryError(f"points must be (N, 3), got {p.shape}")
    k = as_intrinsics(k)
    t = as_pose(cam_to_world)
    cam = (p - t[:3, 3]) @ t[:3, :3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam[:, :2] / z[:, None]) * [k[0, 0], k[1, 1]] + [k[0, 2], k[1, 2]]
    inside = (z > 1e-6) & (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5)
    inside &= (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5)
    return uv, inside
