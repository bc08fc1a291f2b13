"""World alignment: the z-up, floor-at-z=0 frame LLaVA-3D expects (given, identity, or estimated).

Estimation (``estimate_floor_alignment``):
1. The rough "up" comes from the cameras: optical y points down in the image, and handheld or
   robot cameras are held roughly upright, so up ≈ −mean(camera y axes in the world).
2. RANSAC on the fused points looks for planes whose normal lies within ``max_tilt_deg`` of
   that prior (walls and tilted surfaces are rejected); among planes with at least
   ``min_inlier_fraction`` of the points, the lowest one along the prior is the floor.
3. The rotation takes the floor normal to +z by the smallest rotation (yaw is kept), the floor
   goes to z = 0 and the horizontal origin to the centroid of the floor inliers (upstream's
   ScanNet axis-alignment puts the origin near the floor centre as well).

Failure modes: no visible floor (a camera looking at a desk or a wall) → ``AlignmentError``, or,
if a large table top is the lowest plane seen, the "floor" ends up at table height; cameras
rolled by more than ``max_tilt_deg`` (or mounted upside down) break the prior; very few points
(a handful of views) make the plane noisy. For robots, prefer a REP-103 ``map``/``odom`` frame
(already z-up: identity) or a given 4×4; estimate only for hand-held recordings.
"""

from __future__ import annotations

import numpy as np

from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import as_pose


class AlignmentError(GeometryError):
    """No floor plane could be found to align the world with."""


def given_alignment(matrix: np.ndarray) -> np.ndarray:
    """A user-supplied 4×4 alignment (e.g. ScanNet's axis_align_matrix), validated."""
    return as_pose(matrix)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vector a to unit vector b (Rodrigues)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if np.linalg.norm(v) < 1e-12:
        if c > 0:
            return np.eye(3)
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def estimate_floor_alignment(
    points: np.ndarray,
    cam_to_worlds: np.ndarray,
    inlier_dist: float = 0.03,
    max_tilt_deg: float = 30.0,
    min_inlier_fraction: float = 0.05,
    iterations: int = 300,
    seed: int = 0,
) -> np.ndarray:
    """4×4 alignment (world → aligned) from fused points (N, 3) and the camera poses (V, 4, 4).

    See the module docstring for the method and how it fails. Hand-written RANSAC because the
    library ones (Open3D's ``segment_plane``) return only the largest plane and cannot be
    constrained to normals near the up prior, which is what separates floors from walls.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise GeometryError(f"points must be (N, 3), got {pts.shape}")
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < 50:
        raise AlignmentError(f"too few valid points ({len(pts)}) to find a floor")
    poses = np.asarray(cam_to_worlds, dtype=np.float64).reshape(-1, 4, 4)
    up = -poses[:, :3, 1].mean(axis=0)
    if np.linalg.norm(up) < 1e-6:
        raise AlignmentError("camera orientations give no consistent up direction")
    up /= np.linalg.norm(up)
    rng = np.random.default_rng(seed)
    cos_tilt = np.cos(np.deg2rad(max_tilt_deg))
    need = max(int(min_inlier_fraction * len(pts)), 3)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(iterations):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-9:
            continue
        n /= norm
        if np.dot(n, up) < 0:
            n = -n
        if np.dot(n, up) < cos_tilt:
            continue
        inl = np.abs((pts - a) @ n) < inlier_dist
        if inl.sum() < need:
            continue
        height = float(np.dot(pts[inl].mean(axis=0), up))
        if best is None or height < best[0] - inlier_dist:
            best = (height, n, inl)
    if best is None:
        raise AlignmentError(
            f"no plane within {max_tilt_deg}° of the cameras' up direction holds "
            f"{min_inlier_fraction:.0%} of the points (no visible floor?)"
        )
    _, n, inl = best
    # refit the normal on all inliers (least squares) for a less noisy floor
    floor = pts[inl]
    centroid = floor.mean(axis=0)
    n = np.linalg.svd(floor - centroid, full_matrices=False)[2][2]
    if np.dot(n, up) < 0:
        n = -n
    r = _rotation_between(n, np.array([0.0, 0.0, 1.0]))
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = -(r @ centroid)
    return out
