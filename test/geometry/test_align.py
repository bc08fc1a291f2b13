"""Floor alignment helpers: camera up and tilt, grid normals, the normal-guided floor search."""

from __future__ import annotations

import numpy as np
import pytest

from llava3d_ros.geometry.align import (
    AlignmentError,
    alignment_tilt_deg,
    camera_tilt_deg,
    estimate_floor_alignment,
    grid_normals,
    mean_camera_up,
)


def _upright(yaw: float, height: float = 1.5) -> np.ndarray:
    """An upright camera (optical y down) looking horizontally, in a z-up world."""
    c, s = np.cos(yaw), np.sin(yaw)
    m = np.eye(4)
    m[:3, :3] = np.c_[[s, -c, 0.0], [0.0, 0.0, -1.0], [c, s, 0.0]]
    m[:3, 3] = [2.0, 2.0, height]
    return m


def _rot_x(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    m = np.eye(4)
    m[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return m


def test_camera_up_and_tilts():
    poses = np.stack([_upright(y) for y in (0.0, 1.0, 2.0)])
    np.testing.assert_allclose(mean_camera_up(poses), [0, 0, 1], atol=1e-12)
    assert camera_tilt_deg(poses) == pytest.approx(0.0)
    assert camera_tilt_deg(_rot_x(90) @ poses) == pytest.approx(90.0)  # 7-Scenes-like: y down
    assert camera_tilt_deg(_rot_x(15) @ poses) == pytest.approx(15.0)
    assert mean_camera_up(np.zeros((0, 4, 4))) is None
    flipped = poses[:2].copy()
    flipped[1, :3, 1] *= -1  # one camera upside down: the ups cancel out
    assert camera_tilt_deg(flipped) is None
    assert alignment_tilt_deg(np.eye(4)) == pytest.approx(0.0)
    assert alignment_tilt_deg(np.linalg.inv(_rot_x(90))) == pytest.approx(90.0)


def test_grid_normals_of_a_tilted_plane_and_holes():
    u, v = np.meshgrid(np.arange(6.0), np.arange(5.0))
    n = np.array([0.2, -0.3, 1.0]) / np.linalg.norm([0.2, -0.3, 1.0])
    xyz = np.stack([u, v, -(n[0] * u + n[1] * v) / n[2]], axis=-1)
    valid = np.ones((5, 6), bool)
    valid[2, 4] = False
    out = grid_normals(xyz, valid)
    assert np.isnan(out[0]).all() and np.isnan(out[:, -1]).all()  # the border has no normal
    assert np.isnan(out[2, 3]).all() and np.isnan(out[1, 4]).all()  # next to the hole
    ok = np.isfinite(out[..., 0])
    assert ok.sum() == 3 * 4 - 3  # the inner 3×4 but the hole's 3 inner neighbours
    np.testing.assert_allclose(np.abs(out[ok] @ n), 1.0, atol=1e-9)


def _cluttered_room(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A floor holding 2% of the points, lots of wall, and the true normal of every point."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.uniform(0, 4, (200, 2)), np.zeros(200)]
    walls = []
    for k in range(6):  # vertical panels at several angles (cabinet fronts, walls)
        t = rng.uniform(0, np.pi)
        d = np.array([np.cos(t), np.sin(t), 0.0])
        s, h = rng.uniform(0, 4, 1600), rng.uniform(0, 2.5, 1600)
        walls.append(np.c_[s * d[0] + k * 0.6, s * d[1], h])
        walls.append(np.tile([[-d[1], d[0], 0.0]], (1600, 1)))
    pts = np.concatenate([floor, *walls[0::2]]) + rng.normal(0, 0.005, (200 + 9600, 3))
    normals = np.concatenate([np.tile([[0.0, 0.0, 1.0]], (200, 1)), *walls[1::2]])
    normals += rng.normal(0, 0.05, normals.shape)  # a few degrees of noise, like patch normals
    poses = np.stack([_upright(y) for y in (0.0, 0.5, 1.5, 3.0)])
    return pts, normals, poses, floor


def test_normals_find_a_small_floor_among_walls_in_a_tilted_world():
    pts, normals, poses, _ = _cluttered_room()
    tilt = _rot_x(90) @ _rot_x(8)  # y down, and a little more
    world_pts, world_n = pts @ tilt[:3, :3].T, normals @ tilt[:3, :3].T
    with pytest.raises(AlignmentError, match="no visible floor"):
        estimate_floor_alignment(world_pts, tilt @ poses)  # 2% < 5% without normals
    a = estimate_floor_alignment(world_pts, tilt @ poses, normals=world_n)
    up = a[:3, :3] @ tilt[:3, :3] @ [0, 0, 1.0]
    assert np.degrees(np.arccos(np.clip(up[2], -1, 1))) < 1.5
    assert abs((a @ tilt @ poses[0])[2, 3] - 1.5) < 0.03, "the camera 1.5 m above the floor"
    # a random subset when there are many points: the same floor
    b = estimate_floor_alignment(world_pts, tilt @ poses, normals=world_n, max_points=5000)
    np.testing.assert_allclose(b[:3, :3] @ tilt[:3, :3] @ [0, 0, 1.0], [0, 0, 1], atol=0.03)
    with pytest.raises(AlignmentError, match="no visible floor"):  # only walls have normals
        no_floor = world_n.copy()
        no_floor[:200] = np.nan
        estimate_floor_alignment(world_pts, tilt @ poses, normals=no_floor)
