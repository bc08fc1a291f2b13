"""Exact synthetic geometry: a plane, a box face, portrait crops, boxes and floor alignment."""

from __future__ import annotations

import numpy as np
import pytest

from llava3d_ros.geometry.align import AlignmentError, estimate_floor_alignment
from llava3d_ros.geometry.boxes import box_corners, euler_to_matrix, iou_aabb, project_points
from llava3d_ros.geometry.cameras import plan_resize_crop, resize_crop_intrinsics
from llava3d_ros.geometry.depth import resize_crop_nearest
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import (
    patch_points_robust,
    patch_points_upstream,
    patches_to_world,
)

# 640×480, f = 500, centred principal point: plan → 448×336, crop left 56, K336 f = 350,
# cx = cy = 319.5·0.7 − 56 = 239.5·0.7 = 167.65.
K = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])


def test_plan_and_intrinsics_numbers() -> None:
    plan = plan_resize_crop(640, 480, 336)
    assert (plan.new_w, plan.new_h, plan.left, plan.top) == (448, 336, 56, 0)
    k = resize_crop_intrinsics(K, plan)
    np.testing.assert_allclose(k, [[350, 0, 167.65], [0, 350, 167.65], [0, 0, 1]], atol=1e-12)


@pytest.mark.parametrize("mode", ["robust", "upstream"])
def test_plane_at_known_depth(mode: str) -> None:
    depth = np.full((480, 640), 2.0, dtype=np.float32)
    plan = plan_resize_crop(640, 480, 336)
    fn = patch_points_robust if mode == "robust" else patch_points_upstream
    pts = fn(depth, K, plan)
    assert pts.cam_xyz.shape == (24, 24, 3) and pts.valid.all()
    # robust: the patch centre (14 j + 6.5); upstream: the patch's top-left pixel (14 j)
    u = np.arange(24) * 14 + (6.5 if mode == "robust" else 0.0)
    expect_x = (u - 167.65) * 2.0 / 350.0
    np.testing.assert_allclose(pts.cam_xyz[..., 2], 2.0, rtol=0, atol=0)
    np.testing.assert_allclose(pts.cam_xyz[0, :, 0], expect_x, atol=1e-6)
    np.testing.assert_allclose(pts.cam_xyz[:, 0, 1], expect_x, atol=1e-6)  # cx = cy here
    # a camera 1 m up the world x axis, looking along world +y (optical z → world y)
    pose = np.eye(4)
    pose[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]
    pose[:3, 3] = [1.0, 0.0, 0.0]
    world = patches_to_world(pts.cam_xyz, pose)
    np.testing.assert_allclose(world[..., 1], 2.0, atol=1e-6)  # the plane is y = 2 in the world
    np.testing.assert_allclose(world[0, :, 0], 1.0 + expect_x, atol=1e-6)
    np.testing.assert_allclose(world[:, 0, 2], -expect_x, atol=1e-6)


def test_box_face_in_front_of_wall_robust() -> None:
    """A wall at 3 m with a box face at 2 m over a pixel rectangle: each patch takes one of the
    two measured depths (never a mix), patches wholly on the box read 2 m, off it 3 m."""
    depth = np.full((480, 640), 3.0, dtype=np.float32)
    depth[100:300, 200:400] = 2.0
    depth[:, :100] = np.nan  # a hole band covering exactly patch column 0 (source 80..99)
    plan = plan_resize_crop(640, 480, 336)
    pts = patch_points_robust(depth, K, plan)
    z = pts.cam_xyz[..., 2][pts.valid]
    assert set(np.unique(z).tolist()) == {2.0, 3.0}
    # patch column j covers source columns with 0.7 c − 56 ∈ [14 j − 0.5, 14 j + 13.5)
    col = lambda j: np.arange(640)[np.floor((np.arange(640) * 0.7 - 56 + 0.5) / 14) == j]  # noqa: E731
    row = lambda i: np.arange(480)[np.floor((np.arange(480) * 0.7 + 0.5) / 14) == i]  # noqa: E731
    for i in range(24):
        for j in range(24):
            r, c = row(i), col(j)
            block = depth[r[0] : r[-1] + 1, c[0] : c[-1] + 1]
            good = block[np.isfinite(block)]
            assert pts.valid[i, j] == (good.size > 0)
            if good.size:
                assert pts.cam_xyz[i, j, 2] == np.sort(good)[(good.size - 1) // 2]
    assert not pts.valid[:, 0].any() and pts.valid[:, 1].all()


def test_portrait_crop_shifts_cy_not_cx() -> None:
    kp = np.array([[500.0, 0.0, 239.5], [0.0, 500.0, 319.5], [0.0, 0.0, 1.0]])
    plan = plan_resize_crop(480, 640, 336)
    assert (plan.new_w, plan.new_h, plan.left, plan.top) == (336, 448, 0, 56)
    k = resize_crop_intrinsics(kp, plan)
    np.testing.assert_allclose(k, [[350, 0, 167.65], [0, 350, 167.65], [0, 0, 1]], atol=1e-12)
    # a portrait plane: rows use the cropped cy (upstream's unshifted cy would be 223.65)
    depth = np.full((640, 480), 2.0, dtype=np.float32)
    pts = patch_points_robust(depth, kp, plan)
    expect = (np.arange(24) * 14 + 6.5 - 167.65) * 2.0 / 350.0
    np.testing.assert_allclose(pts.cam_xyz[:, 0, 1], expect, atol=1e-6)
    np.testing.assert_allclose(pts.cam_xyz[0, :, 0], expect, atol=1e-6)
    # the crop K predicts where image content lands: a depth step at source row 400
    step = np.full((640, 480), 1.0, dtype=np.float32)
    step[400:] = 5.0
    crop = resize_crop_nearest(step, plan)
    first = int(np.argmax(crop[:, 0] == 5.0))
    ray = np.linalg.solve(kp, [0.0, 399.5, 1.0])  # the boundary between source rows 399/400
    v = (k @ ray)[1]
    assert abs(first - 0.5 - v) <= 1.0


def test_iou_known_cases() -> None:
    c, one = np.zeros(3), np.ones(3)
    assert iou_aabb(c, one, c, one) == 1.0
    assert iou_aabb(c, one, [0.5, 0, 0], one) == pytest.approx(0.5 / 1.5)
    assert iou_aabb(c, one, c, 2 * one) == pytest.approx(1 / 8)
    assert iou_aabb(c, one, [1.0, 0, 0], one) == 0.0  # touching faces
    assert iou_aabb(c, one, [5.0, 5, 5], one) == 0.0
    assert iou_aabb(c, np.zeros(3), c, np.zeros(3)) == 0.0
    assert iou_aabb([0, 0, 0], [2, 2, 2], [1, 1, 1], [2, 2, 2]) == pytest.approx(1 / 15)
    with pytest.raises(GeometryError):
        iou_aabb(c, -one, c, one)


def test_box_corners_and_rotation() -> None:
    corners = box_corners([1, 2, 3], [2, 4, 6])
    np.testing.assert_array_equal(corners.min(axis=0), [0, 0, 0])
    np.testing.assert_array_equal(corners.max(axis=0), [2, 4, 6])
    assert len({tuple(p) for p in corners}) == 8
    np.testing.assert_allclose(
        euler_to_matrix([np.pi / 2, 0, 0]) @ [1, 0, 0], [0, 1, 0], atol=1e-12
    )
    turned = box_corners([0, 0, 0], [2, 1, 1], [np.pi / 2, 0, 0])
    np.testing.assert_allclose(turned.max(axis=0), [0.5, 1.0, 0.5], atol=1e-12)  # x/y swapped
    r = euler_to_matrix([0.3, -0.2, 0.7])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0)
    with pytest.raises(GeometryError):
        box_corners([0, 0, np.nan], [1, 1, 1])
    with pytest.raises(GeometryError):
        box_corners([0, 0, 0], [1, -1, 1])


def test_project_points_known_pixels() -> None:
    pose = np.eye(4)
    pose[:3, 3] = [0.0, 0.0, -1.0]
    pts = np.array(
        [
            [0.0, 0.0, 1.0],  # on the optical axis 2 m ahead → principal point
            [0.2, -0.1, 1.0],  # → (319.5 + 50, 239.5 − 25)
            [0.0, 0.0, -3.0],  # behind the camera
            [(640 - 0.5 - 319.5) * 2 / 500, 0.0, 1.0],  # exactly on the right edge: outside
            [(-0.5 - 319.5) * 2 / 500, 0.0, 1.0],  # exactly on the left edge: inside
        ]
    )
    uv, inside = project_points(pts, K, pose, 640, 480)
    np.testing.assert_allclose(uv[:2], [[319.5, 239.5], [369.5, 214.5]], atol=1e-9)
    np.testing.assert_allclose(uv[3:, 0], [639.5, -0.5], atol=1e-9)
    assert inside.tolist() == [True, True, False, False, True]
    with pytest.raises(GeometryError):
        project_points(np.zeros((3, 2)), K, pose, 640, 480)


def _room(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points of a 4×4 m room (floor z = 0, two walls, a table top at 0.7 m) and 4 upright
    cameras at 1.5 m looking horizontally, in an aligned z-up frame."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.uniform(0, 4, (3000, 2)), np.zeros(3000)]
    wall_x = np.c_[np.zeros(1500), rng.uniform(0, 4, 1500), rng.uniform(0, 2.5, 1500)]
    wall_y = np.c_[rng.uniform(0, 4, 1500), np.full(1500, 4.0), rng.uniform(0, 2.5, 1500)]
    table = np.c_[rng.uniform(1, 2, (800, 2)), np.full(800, 0.7)]
    pts = np.concatenate([floor, wall_x, wall_y, table]) + rng.normal(0, 0.005, (6800, 3))
    poses = []
    for yaw in (0.0, 0.5, 1.5, 3.0):
        c, s = np.cos(yaw), np.sin(yaw)
        forward, right = np.array([c, s, 0.0]), np.array([s, -c, 0.0])
        m = np.eye(4)
        m[:3, :3] = np.c_[right, [0, 0, -1.0], forward]  # optical x right, y down, z forward
        m[:3, 3] = [2, 2, 1.5]
        poses.append(m)
    return pts, np.stack(poses)


def test_estimated_alignment_recovers_z_up() -> None:
    pts, poses = _room()
    tilt = np.eye(4)
    tilt[:3, :3] = euler_to_matrix([0.4, np.deg2rad(12), np.deg2rad(-8)])
    tilt[:3, 3] = [0.3, -1.0, 2.0]
    world_pts = pts @ tilt[:3, :3].T + tilt[:3, 3]
    a = estimate_floor_alignment(world_pts, tilt @ poses)
    up = a[:3, :3] @ tilt[:3, :3] @ [0, 0, 1.0]
    assert np.degrees(np.arccos(np.clip(up[2], -1, 1))) < 1.0
    aligned = world_pts @ a[:3, :3].T + a[:3, 3]
    assert abs(np.median(aligned[:3000, 2])) < 0.01  # the floor at z = 0
    assert abs(np.median(aligned[-800:, 2]) - 0.7) < 0.02  # the table stays 0.7 m up


def test_alignment_failures() -> None:
    pts, poses = _room()
    walls_only = pts[3000:6000]
    with pytest.raises(AlignmentError, match="no visible floor"):
        estimate_floor_alignment(walls_only, poses)
    with pytest.raises(AlignmentError, match="too few"):
        estimate_floor_alignment(pts[:10], poses)
    with pytest.raises(GeometryError):
        estimate_floor_alignment(pts[:, :2], poses)
