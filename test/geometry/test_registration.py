"""Depth registration: a ray-cast plane + box seen by a depth and a colour camera 2.5 cm apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.registration import register_depth

K_DEPTH = np.array([[500.0, 0.0, 318.2], [0.0, 500.0, 241.7], [0.0, 0.0, 1.0]])
K_COLOR = np.array([[500.0, 0.0, 321.4], [0.0, 500.0, 238.9], [0.0, 0.0, 1.0]])
SIZE = (640, 480)
BOX = (np.array([-0.25, -0.2, 1.0]), np.array([0.15, 0.1, 1.4]))  # axis-aligned, metres


def render(k: np.ndarray, size: tuple[int, int], world_T_cam: np.ndarray) -> np.ndarray:
    """Ray-cast z-depth (metres) of a slanted plane z = 2 + 0.2·x behind a box."""
    w, h = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_cam = np.linalg.solve(k, np.stack([u.ravel(), v.ravel(), np.ones(u.size)]))  # z = 1
    r, c = world_T_cam[:3, :3], world_T_cam[:3, 3]
    d = r @ rays_cam  # world direction per pixel, scaled so the camera-frame z is 1: t = depth
    t_plane = (2.0 + 0.2 * c[0] - c[2]) / (d[2] - 0.2 * d[0])
    lo, hi = BOX
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo[:, None] - c[:, None]) / d
        t2 = (hi[:, None] - c[:, None]) / d
    t_near = np.nanmax(np.minimum(t1, t2), axis=0)
    t_far = np.nanmin(np.maximum(t1, t2), axis=0)
    hit = (t_near <= t_far) & (t_near > 0)
    t = np.where(hit, np.minimum(t_near, t_plane), t_plane)
    t[t <= 0] = np.nan
    return t.reshape(h, w)


def _pose(rotvec_deg: tuple[float, float, float] = (0, 0, 0), t=(0.0, 0.0, 0.0)) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec(rotvec_deg, degrees=True).as_matrix()
    pose[:3, 3] = t
    return pose


def _agreement(registered: np.ndarray, reference: np.ndarray, tol: float = 0.005) -> float:
    """Fraction of the reference's valid pixels the registered image matches within ``tol``."""
    ref_ok = np.isfinite(reference)
    close = np.abs(registered - reference) <= tol  # NaN compares false: holes count as misses
    return float((close & ref_ok).sum() / ref_ok.sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_registered_depth_matches_the_colour_camera_render(dtype) -> None:
    world_T_depth = _pose()
    world_T_color = _pose(t=(0.025, 0.0, 0.0))  # colour camera 2.5 cm to the right
    depth = render(K_DEPTH, SIZE, world_T_depth)
    reference = render(K_COLOR, SIZE, world_T_color)
    color_T_depth = np.linalg.inv(world_T_color) @ world_T_depth
    if dtype == np.uint16:
        src = np.round(depth * 1000).astype(np.uint16)
        out = register_depth(src, K_DEPTH, SIZE, K_COLOR, color_T_depth)
        assert out.dtype == np.uint16
        registered = np.where(out > 0, out / 1000.0, np.nan)
    else:
        out = register_depth(depth.astype(dtype), K_DEPTH, SIZE, K_COLOR, color_T_depth)
        assert out.dtype == dtype
        registered = out.astype(np.float64)
    assert out.shape == (SIZE[1], SIZE[0])
    assert _agreement(registered, reference) >= 0.95
    seen = np.isfinite(registered)
    err = np.abs(registered - reference)[seen]
    raw_err = np.abs(depth - reference)
    assert (err <= 0.001 + (dtype == np.uint16) * 0.0005).mean() > 0.99  # the plane's slope too
    assert (raw_err <= 0.001).mean() < 0.5  # unregistered, it is not
    # around the box's silhouette the unregistered depth is grossly wrong; registered, hardly
    assert (raw_err > 0.05).sum() > 2000
    assert (err > 0.05).sum() < 0.1 * (raw_err > 0.05).sum()
    # occlusion: where the colour camera sees the box, the registered depth is the box's
    box_px = reference < 1.45
    ok = np.isfinite(registered) & box_px
    assert ok.sum() > 0.9 * box_px.sum()
    assert (registered[ok] < 1.45).mean() > 0.99


def test_rotated_extrinsic_and_other_resolution() -> None:
    world_T_depth = _pose()
    world_T_color = _pose((1.5, -2.0, 0.5), (0.025, 0.004, -0.01))
    depth = render(K_DEPTH, SIZE, world_T_depth)
    k_color = np.array([[440.0, 0.0, 255.5], [0.0, 440.0, 191.5], [0.0, 0.0, 1.0]])  # narrower FOV
    reference = render(k_color, (512, 384), world_T_color)
    color_T_depth = np.linalg.inv(world_T_color) @ world_T_depth
    registered = register_depth(depth, K_DEPTH, (512, 384), k_color, color_T_depth)
    assert registered.shape == (384, 512)
    assert _agreement(registered, reference) >= 0.95


def test_lower_resolution_depth_is_sparse_but_exact() -> None:
    # a 320×240 depth camera splats one colour pixel per depth pixel: holes, never wrong depths
    k_small = K_DEPTH.copy()
    k_small[:2] /= 2
    world_T_color = _pose(t=(0.025, 0.0, 0.0))
    depth = render(k_small, (320, 240), _pose())
    reference = render(K_COLOR, SIZE, world_T_color)
    registered = register_depth(depth, k_small, SIZE, K_COLOR, np.linalg.inv(world_T_color))
    seen = np.isfinite(registered)
    assert 0.2 < seen.mean() < 0.3
    assert (np.abs(registered - reference)[seen] <= 0.005).mean() > 0.97


@pytest.mark.parametrize("baseline", [0.1, -0.1])
def test_z_buffer_keeps_the_nearest_whatever_the_order(baseline: float) -> None:
    # fx = 100, colour camera at x = baseline: a point at z shifts by −100·baseline/z pixels,
    # so a near pixel (z = 1) and a far one (z = 2) five columns apart land on one colour pixel
    k = np.array([[100.0, 0.0, 10.0], [0.0, 100.0, 0.0], [0.0, 0.0, 1.0]])
    depth = np.full((1, 21), np.nan, np.float32)
    near, far = (15, 10) if baseline > 0 else (5, 10)
    depth[0, near], depth[0, far] = 1.0, 2.0
    target = far - round(100 * baseline / 2.0)
    assert near - round(100 * baseline / 1.0) == target
    out = register_depth(depth, k, (21, 1), k, _pose(t=(-baseline, 0.0, 0.0)))
    assert out[0, target] == 1.0
    assert np.isfinite(out).sum() == 1
    mm = register_depth(
        np.nan_to_num(depth * 1000).astype(np.uint16), k, (21, 1), k, _pose(t=(-baseline, 0.0, 0.0))
    )
    assert mm[0, target] == 1000 and (mm > 0).sum() == 1


def test_invalid_depth_is_ignored_and_unseen_pixels_are_invalid() -> None:
    k = np.array([[50.0, 0.0, 15.5], [0.0, 50.0, 11.5], [0.0, 0.0, 1.0]])
    mm = np.full((24, 32), 1500, np.uint16)
    mm[:, :16] = 0
    mm[:4] = 65535
    out = register_depth(mm, k, (32, 24), k, np.eye(4))
    np.testing.assert_array_equal(
        out, np.where((np.arange(32) >= 16) & (np.arange(24)[:, None] >= 4), 1500, 0)
    )
    metres = np.where(mm == 1500, 1.5, np.nan).astype(np.float32)
    metres[5, 20] = -1.0
    metres[6, 20] = np.inf
    metres[7, 20] = 0.0
    out_m = register_depth(metres, k, (32, 24), k, np.eye(4))
    assert np.isnan(out_m[5:8, 20]).all() and np.isnan(out_m[:, :16]).all()
    assert (out_m[8:, 16:] == np.float32(1.5)).all()
    # everything behind the colour camera: nothing is seen
    behind = register_depth(metres, k, (32, 24), k, _pose(t=(0.0, 0.0, -5.0)))
    assert np.isnan(behind).all()
    # too far to store in uint16 after the move: invalid, not wrapped
    far = register_depth(np.full((2, 2), 65000, np.uint16), k, (32, 24), k, _pose(t=(0, 0, 1.0)))
    assert (far == 0).all()


def test_bad_inputs_raise_geometry_error() -> None:
    depth = np.ones((4, 4), np.float32)
    k = np.array([[10.0, 0.0, 2.0], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]])
    cases = [
        (np.ones((4, 4, 2), np.float32), k, (4, 4), k, np.eye(4)),
        (np.ones((0, 4), np.float32), k, (4, 4), k, np.eye(4)),
        (np.ones((4, 4), np.int32), k, (4, 4), k, np.eye(4)),
        (depth, np.zeros((3, 3)), (4, 4), k, np.eye(4)),
        (depth, k, (0, 4), k, np.eye(4)),
        (depth, k, (4.5, 4), k, np.eye(4)),
        (depth, k, "4x4", k, np.eye(4)),
        (depth, k, (4, 4), k, np.diag([1.0, 1.0, -1.0, 1.0])),
        (depth, k, (4, 4), k, np.full((4, 4), np.nan)),
    ]
    for args in cases:
        with pytest.raises(GeometryError):
            register_depth(*args)
    with pytest.raises(GeometryError, match="scale"):
        register_depth(np.ones((4, 4), np.uint16), k, (4, 4), k, np.eye(4), scale=0.0)
