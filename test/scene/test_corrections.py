"""SLAM corrections re-pose held keyframes; per-camera keyframes in one buffer."""

from __future__ import annotations

import numpy as np
import pytest

from llava3d_ros.scene.buffer import FrameBuffer, FrameOrderError
from llava3d_ros.scene.corrections import apply_corrections, trajectory
from llava3d_ros.scene.frame import Frame

K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])


def _frame(stamp: int, x: float, camera: str = "") -> Frame:
    pose = np.eye(4)
    pose[0, 3] = x
    depth = np.full((48, 64), 2.0, dtype=np.float32)
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    return Frame(rgb, depth, K, K, pose, stamp, camera_frame=camera)


def _buffer(n: int = 6) -> FrameBuffer:
    buf = FrameBuffer(image_size=56, patch=14, min_translation=0.05)
    for i in range(n):
        assert buf.add(_frame((i + 1) * 100, 0.2 * i)) is not None
    return buf


def test_loop_closure_shifts_half_the_keyframes_and_their_scene_moves_with_them() -> None:
    buf = _buffer()
    before = {v.frame_id: v.patch_xyz.copy() for v in buf.views(6).views}
    click_before = buf.click(buf.frame_ids()[0], 30.0, 20.0)
    path = []
    for i, fid in enumerate(buf.frame_ids()):
        pose = buf.keyframe(fid).frame.cam_to_world.copy()
        if i < 3:  # the old half of the trajectory is corrected by 0.3 m along y
            pose[1, 3] += 0.3
        path.append((buf.keyframe(fid).frame.stamp_ns, pose))
    report = apply_corrections(buf, trajectory(path), tolerance_ns=10)
    assert report.moved == buf.frame_ids()[:3]
    assert report.unmoved == 3 and report.uncovered == 0
    assert report.max_shift_m == pytest.approx(0.3)
    after = {v.frame_id: v.patch_xyz for v in buf.views(6).views}
    for i, fid in enumerate(buf.frame_ids()):
        shift = after[fid] - before[fid]
        np.testing.assert_allclose(shift[..., 1], 0.3 if i < 3 else 0.0, atol=1e-5)
        np.testing.assert_allclose(shift[..., [0, 2]], 0.0, atol=1e-5)
    click_after = buf.click(buf.frame_ids()[0], 30.0, 20.0)
    np.testing.assert_allclose(click_after - click_before, [0.0, 0.3, 0.0], atol=1e-9)


def test_keyframes_the_trajectory_does_not_cover_keep_their_poses() -> None:
    buf = _buffer()
    path = [(100, np.eye(4) + np.diag([0, 0, 0, 0]))]  # covers only the first keyframe
    path[0][1][2, 3] = 1.0
    report = apply_corrections(buf, trajectory(path), tolerance_ns=10)
    assert len(report.moved) == 1 and report.uncovered == 5
    # an offset that cannot be known leaves that camera's keyframes alone
    report = apply_corrections(buf, trajectory(path), 10, body_to_camera=lambda cam: None)
    assert report.moved == [] and report.uncovered == 6


def test_interpolated_between_trajectory_poses_within_tolerance() -> None:
    buf = FrameBuffer(image_size=56, patch=14)
    buf.add(_frame(150, 0.0))
    a, b = np.eye(4), np.eye(4)
    b[0, 3] = 1.0
    apply_corrections(buf, trajectory([(100, a), (200, b)]), tolerance_ns=60)
    assert buf.keyframe(buf.frame_ids()[0]).frame.cam_to_world[0, 3] == pytest.approx(0.5)


def test_cameras_are_judged_and_ordered_each_on_their_own() -> None:
    buf = FrameBuffer(image_size=56, patch=14, min_translation=0.5, max_interval_s=100.0)
    assert buf.add(_frame(100, 0.0, "front")) is not None
    assert buf.add(_frame(100, 0.0, "rear")) is not None  # same stamp, other camera
    assert buf.add(_frame(90, 0.0, "side")) is not None  # older than front's: its own order
    with pytest.raises(FrameOrderError, match="camera 'front'"):
        buf.add(_frame(100, 0.0, "front"))
    assert buf.add(_frame(200, 0.1, "front")) is None  # not novel against front's keyframe
    assert buf.keyframe_at(100, "rear") == 1 and buf.keyframe_at(100) is None  # ambiguous
    assert buf.keyframe_at(90) == 2
    assert buf.newest_keyframe("front") == 0 and buf.newest_keyframe() == 2
    frames = [v.camera_frame for v in buf.views(8).views]
    assert sorted(frames) == ["front", "rear", "side"]
    assert buf.update_pose(100, np.eye(4), "rear") and not buf.update_pose(100, np.eye(4), "x")
