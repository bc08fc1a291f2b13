"""SLAM corrections: held keyframes re-posed from an optimised trajectory (no ROS types).

SLAM systems publish their whole optimised trajectory after a loop closure (RTAB-Map's
``mapPath``, slam_toolbox, ORB-SLAM3 wrappers). Each keyframe whose stamp the trajectory
covers takes the corrected pose; keyframes it does not cover keep theirs. Only the pose
changes: images, patch points and vision features stay (they live in the camera frame).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.sync import PoseHistory

# a correction smaller than this leaves the keyframe (and the model's caches) alone
MIN_SHIFT_M = 1e-4
MIN_TURN_RAD = 1e-4


@dataclass
class CorrectionReport:
    """What one trajectory did: keyframes re-posed, covered but unmoved, and not covered."""

    moved: list[int]
    unmoved: int
    uncovered: int
    max_shift_m: float


def trajectory(poses: Sequence[tuple[int, np.ndarray]]) -> PoseHistory:
    """A stamped trajectory (body → world 4×4 at each stamp) as a history to look up."""
    history = PoseHistory(capacity=max(len(poses), 2), time_jump_ns=None)
    for stamp, mat in poses:
        history.add(int(stamp), np.asarray(mat, dtype=np.float64))
    return history


def apply_corrections(
    buffer: FrameBuffer,
    body_poses: PoseHistory,
    tolerance_ns: int,
    body_to_camera: Callable[[str], np.ndarray | None] = lambda camera: np.eye(4),
) -> CorrectionReport:
    """Re-pose every keyframe the trajectory covers (within ``tolerance_ns``, interpolated).

    ``body_to_camera(camera_frame)`` is the fixed camera pose in the trajectory's body frame
    (identity when the trajectory is of the camera itself; None when it is unknown, and that
    camera's keyframes are left as they are). Call under the scene lock.
    """
    moved: list[int] = []
    unmoved = uncovered = 0
    max_shift = 0.0
    offsets: dict[str, np.ndarray | None] = {}
    for fid in buffer.frame_ids():
        frame = buffer.keyframe(fid).frame
        status, value = body_poses.at(frame.stamp_ns, tolerance_ns, final=True)
        if frame.camera_frame not in offsets:
            offsets[frame.camera_frame] = body_to_camera(frame.camera_frame)
        offset = offsets[frame.camera_frame]
        if status != "ok" or offset is None:
            uncovered += 1
            continue
        new = value[0] @ offset
        old = frame.cam_to_world
        shift = float(np.linalg.norm(new[:3, 3] - old[:3, 3]))
        turn = float(np.arccos(np.clip((np.trace(old[:3, :3].T @ new[:3, :3]) - 1) / 2, -1.0, 1.0)))
        if shift < MIN_SHIFT_M and turn < MIN_TURN_RAD:
            unmoved += 1
            continue
        buffer.update_pose(frame.stamp_ns, new, frame.camera_frame)
        moved.append(fid)
        max_shift = max(max_shift, shift)
    return CorrectionReport(moved, unmoved, uncovered, max_shift)
