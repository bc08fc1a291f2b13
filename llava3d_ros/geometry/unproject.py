"""Poses (OpenCV optical camera-to-world), pixel unprojection and per-patch 3D positions.

torch is imported only inside the two paths that reproduce upstream's torch arithmetic
(``patch_points_upstream``, ``patches_to_world`` with ``compat_bf16``), so importing this
module does not pay for torch (test/geometry/test_imports.py holds that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llava3d_ros.geometry.cameras import ResizeCrop, as_intrinsics, resize_crop_intrinsics
from llava3d_ros.geometry.depth import resize_crop_nearest, upstream_depth
from llava3d_ros.geometry.errors import GeometryError

# Rotation taking ROS body-frame axes (x forward, y left, z up) to the optical frame
# (x right, y down, z forward): columns are the optical axes expressed in the body frame.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_EYE3 = np.eye(3)
_EYE3.flags.writeable = False


def orthonormalize(r: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (SVD), for poses whose rotation drifted off orthonormal."""
    u, _, vt = np.linalg.svd(r)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def as_pose(pose: np.ndarray, tol: float = 1e-2, reorthonormalize: bool = True) -> np.ndarray:
    """A validated 4×4 float64 rigid transform; the rotation is re-orthonormalised by SVD.

    With ``reorthonormalize=False`` the matrix comes back exactly as given (float64), only
    validated: ``upstream`` mode uses poses that way, as the released pipeline does.

    Raises ``GeometryError`` for a wrong shape, non-finite entries, a last row other than
    [0, 0, 0, 1], a reflection, or a rotation further than ``tol`` (max |RRᵀ − I|) from
    orthonormal — that is a broken pose, not rounding noise.
    """
    t = np.asarray(pose, dtype=np.float64)
    if t.shape != (4, 4):
        raise GeometryError(f"pose must be 4x4, got shape {t.shape}")
    if not np.isfinite(t).all():
        raise GeometryError("pose holds non-finite values")
    # np.allclose(t[3], [0, 0, 0, 1], atol=1e-9) written out on Python floats (same float64
    # arithmetic, rtol=1e-5 included): allclose's array machinery costs more than the rest here
    a, b, c, d = t[3].tolist()
    if not (abs(a) <= 1e-9 and abs(b) <= 1e-9 and abs(c) <= 1e-9 and abs(d - 1.0) <= 1e-9 + 1e-5):
        raise GeometryError(f"pose last row must be [0, 0, 0, 1], got {t[3].tolist()}")
    r = t[:3, :3]
    err = np.abs(r @ r.T - _EYE3).max()
    if err > tol or np.linalg.det(r) <= 0:
        raise GeometryError(
            f"pose rotation is not a rotation (|RRᵀ−I|={err:.3g}, det={np.linalg.det(r):.3g})"
        )
    out = t.copy()
    if reorthonormalize and err > 1e-12:  # else orthonormal to rounding: the SVD changes nothing
        out[:3, :3] = orthonormalize(r)
    return out


def pose_from_tum(
    tx: float, ty: float, tz: float, qx: float, qy: float, qz: float, qw: float
) -> np.ndarray:
    """4×4 camera-to-world from a TUM ground-truth line ``tx ty tz qx qy qz qw``."""
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    t = np.array([tx, ty, tz], dtype=np.float64)
    n = np.linalg.norm(q)
    if not (np.isfinite(q).all() and np.isfinite(t).all()) or n < 1e-9:
        raise GeometryError(f"bad TUM pose: t={t.tolist()}, q(xyzw)={[qx, qy, qz, qw]}")
    w, x, y, z = q / n
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    out = np.eye(4)
    out[:3, :3] = r
    out[:3, 3] = t
    return out


def optical_from_body_pose(world_from_body: np.ndarray) -> np.ndarray:
    """Camera-to-world in the optical convention from a ROS body-frame (x forward) pose."""
    body = as_pose(world_from_body)
    fix = np.eye(4)
    fix[:3, :3] = BODY_FROM_OPTICAL
    return body @ fix


def unproject_pixels(
    u: np.ndarray, v: np.ndarray, depth: np.ndarray, k: np.ndarray, cam_to_world: np.ndarray
) -> np.ndarray:
    """World points (N, 3) float64 of pixels (u, v) (pixel-centre = integer) at metric depth."""
    k = as_intrinsics(k)
    x = (np.asarray(u, dtype=np.float64) - k[0, 2]) * depth / k[0, 0]
    y = (np.asarray(v, dtype=np.float64) - k[1, 2]) * depth / k[1, 1]
    cam = np.stack([x, y, np.asarray(depth, dtype=np.float64)], axis=-1)
    t = as_pose(cam_to_world)
    return cam @ t[:3, :3].T + t[:3, 3]


@dataclass(frozen=True)
class PatchPoints:
    """Camera-frame (optical) position per G×G patch, whether it had usable depth, and whether
    it is pooled into scene tokens.

    ``valid`` is "placed at a measured depth" (point clouds and floor alignment use only these);
    ``pooled`` is what goes into voxel pooling: ``valid`` in robust mode, every patch in upstream
    mode (upstream pools depth holes too: 0 at the camera centre, 65535 at 65535 / scale).
    """

    cam_xyz: np.ndarray  # (G, G, 3) float32
    valid: np.ndarray  # (G, G) bool
    intrinsics: np.ndarray  # (3, 3) float64: depth intrinsics at the model's S×S input
    pooled: np.ndarray  # (G, G) bool


def _grid(plan: ResizeCrop, patch: int) -> int:
    if plan.size % patch:
        raise GeometryError(f"image size {plan.size} is not a multiple of the patch size {patch}")
    return plan.size // patch


def patch_points_upstream(
    depth_m: np.ndarray,
    k_depth: np.ndarray,
    plan: ResizeCrop,
    patch: int = 14,
    compat_bf16: bool = False,
) -> PatchPoints:
    """Upstream's per-patch positions: the top-left pixel of each patch of the S×S depth map.

    The S×S map comes from Pillow-NEAREST resize + crop; unprojection is fp32 (or bf16 with
    ``compat_bf16``, as the released script) with pixel index = coordinate. Nothing is masked,
    as upstream: every patch is ``pooled``. The sampled depth is taken as upstream holds it
    (:func:`~llava3d_ros.geometry.depth.upstream_depth`): a raw 0 unprojects to the camera
    centre, a raw uint16 65535 at 65535 / scale (65.535 m at scale 1000) along its ray, and any
    other NaN/±inf (which upstream's uint16 input cannot hold) like 0. Such patches are pooled
    but not ``valid`` (no measured depth).
    """
    import torch

    g = _grid(plan, patch)
    k336 = resize_crop_intrinsics(k_depth, plan)
    d = resize_crop_nearest(depth_m, plan)[::patch, ::patch][:g, :g]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0)
    dtype = torch.bfloat16 if compat_bf16 else torch.float32
    z = torch.from_numpy(upstream_depth(d)).to(dtype)
    kt = torch.from_numpy(k336).to(dtype)
    idx = torch.arange(0, plan.size, patch)
    v, u = torch.meshgrid(idx, idx, indexing="ij")
    x = (u - kt[0, 2]) * z / kt[0, 0]
    y = (v - kt[1, 2]) * z / kt[1, 1]
    cam = torch.stack([x, y, z], dim=-1).float().numpy()
    return PatchPoints(cam, valid, k336, np.ones((g, g), dtype=bool))


def patch_points_robust(
    depth_m: np.ndarray, k_depth: np.ndarray, plan: ResizeCrop, patch: int = 14, min_valid: int = 1
) -> PatchPoints:
    """Per-patch positions from the median of each patch's valid full-resolution depth pixels.

    Every full-resolution pixel is assigned to the patch whose S×S footprint holds its image
    position (the same scale + offset as the adjusted intrinsics); the patch centre is
    unprojected at the median (lower median: a depth that was actually measured, so edges do
    not produce points floating between foreground and background). Patches with fewer than
    ``min_valid`` valid pixels are marked invalid.
    """
    g = _grid(plan, patch)
    h, w = depth_m.shape
    if (h, w) != (plan.orig_h, plan.orig_w):
        raise GeometryError(f"depth is {w}x{h}, plan expects {plan.orig_w}x{plan.orig_h}")
    k336 = resize_crop_intrinsics(k_depth, plan)
    k = as_intrinsics(k_depth)
    sx, sy = k336[0, 0] / k[0, 0], k336[1, 1] / k[1, 1]
    ox, oy = k[0, 2] * sx - k336[0, 2], k[1, 2] * sy - k336[1, 2]
    col_run = _uniform_tiling(w, sx, ox, patch, g)
    row_run = _uniform_tiling(h, sy, oy, patch, g)
    if col_run is not None and row_run is not None:
        # every patch owns the same whole block of source pixels (640×480 → 336: 20×20), so
        # a reshaped view gathers them without fancy indexing: same members, ~6× faster
        (r0, mr), (c0, mc) = row_run, col_run
        window = depth_m[r0 : r0 + g * mr, c0 : c0 + g * mc].reshape(g, mr, g, mc)
        block = np.empty((g * g, mr * mc), dtype=np.float32)
        block.reshape(g, g, mr, mc)[...] = window.transpose(0, 2, 1, 3)
    else:
        cols = _patch_members(w, sx, ox, patch, g)
        rows = _patch_members(h, sy, oy, patch, g)
        padded = np.full((h + 1, w + 1), np.nan, dtype=np.float32)
        padded[:h, :w] = depth_m
        block = padded[rows[:, None, :, None], cols[None, :, None, :]].reshape(g * g, -1)
    med, count = lower_medians(block)
    valid = (count >= max(min_valid, 1)).reshape(g, g)
    med = np.where(valid, med.reshape(g, g), 0.0)
    centre = np.arange(g) * patch + (patch - 1) / 2
    x = (centre[None, :] - k336[0, 2]) * med / k336[0, 0]
    y = (centre[:, None] - k336[1, 2]) * med / k336[1, 1]
    cam = np.stack([x, y, med], axis=-1).astype(np.float32)
    return PatchPoints(cam, valid, k336, valid)


def lower_medians(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a float32 (R, n) array: lower median of its non-NaN values, and their count.

    The median of row r is element ``(count − 1) // 2`` of the row's sorted non-NaN values
    (element 0 of the sorted row — NaN — when the row has none). ``block`` is reordered in
    place. Rows without NaN (most of them: the patches inside the depth sensor's valid area)
    are reduced with one ``partition`` at the fixed index (n − 1) // 2, which selects the same
    element as a full sort at a fraction of the cost; only rows with NaN are sorted (NaN sorts
    last) to find their own index. Same values as ``np.sort`` + index for every row (a zero
    median could come out as −0.0 instead of 0.0 or back, equal anyway; decoded depth has none).
    """
    rows, n = block.shape
    mid = (n - 1) // 2
    has_nan = np.isnan(block.max(axis=1))  # max propagates NaN
    if not has_nan.any():
        block.partition(mid, axis=1)
        return block[:, mid].copy(), np.full(rows, n, dtype=np.int64)
    med = np.empty(rows, dtype=np.float32)
    count = np.full(rows, n, dtype=np.int64)
    full = np.flatnonzero(~has_nan)
    if full.size:
        sub = block[full]
        sub.partition(mid, axis=1)
        med[full] = sub[:, mid]
    holed = np.flatnonzero(has_nan)
    sub = block[holed]
    sub.sort(axis=1)
    c = n - np.count_nonzero(np.isnan(sub), axis=1)
    med[holed] = sub[np.arange(holed.size), np.maximum(c - 1, 0) // 2]
    count[holed] = c
    return med, count


def _uniform_tiling(
    n: int, scale: float, offset: float, patch: int, g: int
) -> tuple[int, int] | None:
    """(first source index, width) if the g patches own equal consecutive runs along one axis.

    The patch id of source index i, floor((i·scale − offset + 0.5) / patch), never decreases
    with i (scale > 0), so patch p owns one run [edges[p], edges[p + 1]); equal non-empty runs
    are exactly the case where :func:`_patch_members` would list ``start + arange`` unpadded.
    """
    pos = np.arange(n) * scale - offset
    pid = np.floor((pos + 0.5) / patch).astype(np.int64)
    edges = np.searchsorted(pid, np.arange(g + 1))
    width = int(edges[1] - edges[0])
    if width < 1 or not (np.diff(edges) == width).all():
        return None
    return int(edges[0]), width


def _patch_members(n: int, scale: float, offset: float, patch: int, g: int) -> np.ndarray:
    """(g, width) source indices per patch along one axis, padded with ``n`` (a NaN slot)."""
    pos = np.arange(n) * scale - offset
    pid = np.floor((pos + 0.5) / patch).astype(np.int64)
    inside = (pid >= 0) & (pid < g)
    counts = np.bincount(pid[inside], minlength=g)
    out = np.full((g, max(int(counts.max()), 1)), n, dtype=np.int64)
    src = np.nonzero(inside)[0]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(src.size) - starts[pid[src]]
    out[pid[src], slot] = src
    return out


def patches_to_world(
    cam_xyz: np.ndarray, cam_to_world: np.ndarray, compat_bf16: bool = False
) -> np.ndarray:
    """World positions (..., 3) float32 of camera-frame points, with upstream's arithmetic.

    ``pose @ [x, y, z, 1]`` then division by the 4th coordinate, in fp32 (bf16 with
    ``compat_bf16``), so ``upstream`` mode stays bit-identical to the reference pipeline; the
    pose is validated but used exactly as given (a robust-mode FrameBuffer re-orthonormalises
    poses when frames come in; upstream mode never does).
    """
    pose = as_pose(cam_to_world, reorthonormalize=False)
    if not compat_bf16:
        # numpy, not torch: torch hands even a 576-point product to its thread pool (~10 ms per
        # view with 2 threads, against ~0.05 ms here), and this runs per view on every query.
        # Same fp32 sgemm and division, so the result is the same bits (see the parity tests).
        flat = np.ascontiguousarray(cam_xyz, dtype=np.float32).reshape(-1, 3)
        homog = np.concatenate([flat, np.ones_like(flat[:, :1])], axis=1)
        world = pose.astype(np.float32) @ homog.T
        return np.ascontiguousarray((world[:3] / world[3:]).T).reshape(np.shape(cam_xyz))
    import torch

    dtype = torch.bfloat16
    pts = torch.from_numpy(np.ascontiguousarray(cam_xyz, dtype=np.float32)).to(dtype)
    flat = pts.reshape(-1, 3)
    homog = torch.cat([flat, torch.ones_like(flat[:, :1])], dim=1)
    world = torch.from_numpy(pose).to(torch.float32).to(dtype) @ homog.T
    world = (world[:3] / world[3:]).T
    return world.float().reshape(cam_xyz.shape).numpy()
