"""World alignment: the z-up, floor-at-z=0 frame LLaVA-3D expects (given, identity, or estimated).

Estimation (``estimate_floor_alignment``):
1. The rough "up" comes from the cameras: optical y points down in the image, and handheld or
   robot cameras are held roughly upright, so up ≈ −mean(camera y axes in the world).
2. RANSAC on the fused points looks for planes whose normal lies within ``max_tilt_deg`` of
   that prior (walls and tilted surfaces are rejected); among planes with at least
   ``min_inlier_fraction`` of the points, the one the cameras are highest above is the floor
   (measured along each plane's normal). Given
   per-point surface normals, only points whose normal agrees with the plane's count (a
   tilted plane slicing through vertical cabinet fronts is no floor: on 7-Scenes redkitchen
   it was picked without this check, 30° off the true up).
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


# a world whose cameras' mean up is within this of +z is taken to be z-up (axis_align auto)
Z_UP_TOLERANCE_DEG = 20.0
# floor candidates whose camera clearances differ by less are cuts of the same surface
SAME_SURFACE_M = 0.1


def mean_camera_up(cam_to_worlds: np.ndarray) -> np.ndarray | None:
    """Unit mean "up" of cameras (V, 4, 4) in the world, −mean(optical y axes); None if none.

    OpenCV optical frames point y down in the image, and cameras are held roughly upright, so
    this is a rough world up. None without poses or when the directions cancel out.
    """
    poses = np.asarray(cam_to_worlds, dtype=np.float64).reshape(-1, 4, 4)
    if not len(poses):
        return None
    up = -poses[:, :3, 1].mean(axis=0)
    norm = float(np.linalg.norm(up))
    if not np.isfinite(norm) or norm < 1e-6:
        return None
    return up / norm


def angle_from_z_deg(direction: np.ndarray) -> float:
    """Angle in degrees between a direction and +z."""
    d = np.asarray(direction, dtype=np.float64)
    return float(np.degrees(np.arccos(np.clip(d[2] / np.linalg.norm(d), -1.0, 1.0))))


def camera_tilt_deg(cam_to_worlds: np.ndarray) -> float | None:
    """Angle between the cameras' mean up and world +z (None: no consistent up).

    Within ``Z_UP_TOLERANCE_DEG`` the world is taken to be z-up (a REP-103 ``map``/``odom``);
    beyond it (7-Scenes' y points down, a SLAM world anchored at the first camera) it is not.
    """
    up = mean_camera_up(cam_to_worlds)
    return None if up is None else angle_from_z_deg(up)


def alignment_tilt_deg(alignment: np.ndarray) -> float:
    """Angle between world +z and the aligned world's up (both in the world frame)."""
    r = np.asarray(alignment, dtype=np.float64).reshape(4, 4)[:3, :3]
    return angle_from_z_deg(r.T @ np.array([0.0, 0.0, 1.0]))


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


def grid_normals(xyz: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Unit surface normals (G, G, 3) of a grid of points (G, G, 3); NaN where unknown.

    From central differences between the grid neighbours (all four valid); the sign is
    arbitrary. Used by ``estimate_floor_alignment`` to tell a floor from a plane that merely
    slices through walls.
    """
    p = np.asarray(xyz, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    if p.shape[0] < 3 or p.shape[1] < 3:
        return out
    ok = valid[1:-1, :-2] & valid[1:-1, 2:] & valid[:-2, 1:-1] & valid[2:, 1:-1]
    n = np.cross(p[1:-1, 2:] - p[1:-1, :-2], p[2:, 1:-1] - p[:-2, 1:-1])
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    ok &= norm[..., 0] > 1e-12
    out[1:-1, 1:-1] = np.where(ok[..., None], n / np.where(norm > 0, norm, 1.0), np.nan)
    return out


def estimate_floor_alignment(
    points: np.ndarray,
    cam_to_worlds: np.ndarray,
    inlier_dist: float = 0.03,
    max_tilt_deg: float = 30.0,
    min_inlier_fraction: float | None = None,
    iterations: int = 300,
    seed: int = 0,
    normals: np.ndarray | None = None,
    max_normal_deg: float = 25.0,
    max_points: int = 20000,
) -> np.ndarray:
    """4×4 alignment (world → aligned) from fused points (N, 3) and the camera poses (V, 4, 4).

    See the module docstring for the method and how it fails. Hand-written RANSAC because the
    library ones (Open3D's ``segment_plane``) return only the largest plane and cannot be
    constrained to normals near the up prior, which is what separates floors from walls.

    With ``normals`` (N, 3; NaN = unknown, e.g. from ``grid_normals``) a hypothesis is one point
    whose normal is within ``max_tilt_deg`` of the prior (its plane: that point and normal,
    refitted on its inliers), and a point is an inlier only if its own normal is within
    ``max_normal_deg`` of the plane's: a tilted plane slicing through cabinet fronts and walls
    is not taken for the floor, and a floor holding few of the points is still sampled.
    ``min_inlier_fraction`` defaults to 0.05 without normals, 0.01 with them (on 7-Scenes
    redkitchen the floor holds 1.6% of the patch points of 15 views). Beyond ``max_points``
    points a random subset is used (~0.15 s with normals at 20000).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise GeometryError(f"points must be (N, 3), got {pts.shape}")
    finite = np.isfinite(pts).all(axis=1)
    nrm = None
    if normals is not None:
        nrm = np.asarray(normals, dtype=np.float64)
        if nrm.shape != pts.shape:
            raise GeometryError(f"normals must be {pts.shape} like the points, got {nrm.shape}")
        nrm = nrm[finite]
    pts = pts[finite]
    rng = np.random.default_rng(seed)
    if len(pts) > max_points:  # a random subset (the ingest thread holds the scene lock)
        keep = np.sort(rng.choice(len(pts), max_points, replace=False))
        pts = pts[keep]
        nrm = None if nrm is None else nrm[keep]
    if len(pts) < 50:
        raise AlignmentError(f"too few valid points ({len(pts)}) to find a floor")
    up = mean_camera_up(cam_to_worlds)
    if up is None:
        raise AlignmentError("camera orientations give no consistent up direction")
    centres = np.asarray(cam_to_worlds, dtype=np.float64).reshape(-1, 4, 4)[:, :3, 3]
    if min_inlier_fraction is None:
        min_inlier_fraction = 0.05 if nrm is None else 0.01
    cos_tilt = np.cos(np.deg2rad(max_tilt_deg))
    cos_normal = np.cos(np.deg2rad(max_normal_deg))
    need = max(int(min_inlier_fraction * len(pts)), 3)

    def inliers(a: np.ndarray, n: np.ndarray) -> np.ndarray:
        inl = np.abs((pts - a) @ n) < inlier_dist
        if nrm is not None:
            inl &= np.abs(nrm @ n) > cos_normal  # NaN (unknown) compares False
        return inl

    def refit(inl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Least-squares plane (centroid, normal towards up) of the inliers."""
        c = pts[inl].mean(axis=0)
        n = np.linalg.svd(pts[inl] - c, full_matrices=False)[2][2]
        return c, (-n if np.dot(n, up) < 0 else n)

    seeds = None
    if nrm is not None:
        with np.errstate(invalid="ignore"):
            seeds = np.flatnonzero(np.abs(nrm @ up) > cos_tilt)
        if not len(seeds):
            seeds = None
            iterations = 0
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    for _ in range(iterations):
        if seeds is not None:
            i = seeds[rng.integers(len(seeds))]
            a, n = pts[i], nrm[i] * np.sign(np.dot(nrm[i], up))
            inl = inliers(a, n)
            if inl.sum() < 3:
                continue
            a, n = refit(inl)  # one point's normal is noisy: refit on what it found
        else:
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
        inl = inliers(a, n)
        if inl.sum() < need:
            continue
        # the floor is the plane the cameras are highest above (measured along the plane's own
        # normal: along the prior, a floor far ahead of cameras looking down reads as high);
        # within SAME_SURFACE_M of each other, slightly tilted cuts of one surface: the
        # one with the most inliers
        clearance = float(np.mean((centres - pts[inl].mean(axis=0)) @ n))
        count = int(inl.sum())
        if (
            best is None
            or clearance > best[0] + SAME_SURFACE_M
            or (clearance >= best[0] - SAME_SURFACE_M and count > best[1])
        ):
            best = (clearance, count, n, inl)
    if best is None:
        raise AlignmentError(
            f"no plane within {max_tilt_deg}° of the cameras' up direction holds "
            f"{min_inlier_fraction:.0%} of the points (no visible floor?)"
        )
    inl = best[3]
    # refit the normal on all inliers (least squares) for a less noisy floor
    centroid, n = refit(inl)
    r = _rotation_between(n, np.array([0.0, 0.0, 1.0]))
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = -(r @ centroid)
    return out
