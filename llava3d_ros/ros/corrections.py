"""``keyframe_corrections`` (nav_msgs/Path): a SLAM system's optimised trajectory re-poses keyframes.

With poses from TF or a pose topic alone, stored keyframe poses stand: a later correction
of ``map → odom`` moves only images that come after it. This input is how held keyframes
follow a loop closure (``scene/corrections.py`` does the work).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from nav_msgs.msg import Path

from llava3d_ros.guard import Guard
from llava3d_ros.ros.convert import pose_to_matrix, stamp_to_ns
from llava3d_ros.ros.diagnostics import Health
from llava3d_ros.ros.tf import TF_QOS, TfInput
from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.corrections import apply_corrections, trajectory


class CorrectionsInput:
    """Applies each Path to the keyframes held; ``on_moved()`` runs when any moved."""

    def __init__(
        self,
        world_frame: str,
        body_frame: str,
        tolerance_s: float,
        tf: TfInput,
        buffer: FrameBuffer,
        lock: threading.Lock,
        guard: Guard,
        on_moved: Callable[[], None],
    ) -> None:
        self.world_frame, self.body_frame = world_frame, body_frame
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.tf, self.buffer, self.lock = tf, buffer, lock
        self._guard, self._on_moved = guard, on_moved
        self.received = 0
        self.moved = 0
        self.last = ""

    def subscribe(self, sensors: Any, resolve: Callable[[str], str]) -> None:
        name = "keyframe_corrections"
        sensors.subscribe(name, Path, resolve(name), self.on_path, TF_QOS, False, False)

    def on_path(self, msg: Path) -> None:
        self.received += 1
        try:
            poses = self._world_poses(msg)
        except Exception as exc:  # TransformError, a broken pose: said, never raised
            self.last = f"not applied: {exc}"
            self._guard.log("corrections", "warning", f"keyframe_corrections {self.last}")
            return
        with self.lock:
            report = apply_corrections(
                self.buffer, trajectory(poses), self.tolerance_ns, self._body_to_camera
            )
        self.moved += len(report.moved)
        self.last = (
            f"{len(report.moved)} keyframes moved (max {report.max_shift_m:.3f} m), "
            f"{report.unmoved} unchanged, {report.uncovered} not covered"
        )
        if report.moved:
            self._on_moved()

    def _world_poses(self, msg: Path) -> list[tuple[int, np.ndarray]]:
        """The Path's poses in the world frame (each in its own header's frame, else the Path's)."""
        out = []
        into_world: dict[str, np.ndarray] = {}
        for p in msg.poses:
            frame = p.header.frame_id or msg.header.frame_id
            if frame and frame != self.world_frame and frame not in into_world:
                into_world[frame] = self.tf.lookup(self.world_frame, frame, 0)
            mat = pose_to_matrix(p.pose)
            out.append((stamp_to_ns(p.header.stamp), into_world.get(frame, np.eye(4)) @ mat))
        return out

    def _body_to_camera(self, camera_frame: str) -> np.ndarray | None:
        """The camera in the trajectory's body frame (identity: the Path is of the camera)."""
        if not self.body_frame or self.body_frame == camera_frame:
            return np.eye(4)
        try:
            return self.tf.lookup(self.body_frame, camera_frame, 0)
        except Exception:
            return None  # that camera's keyframes are "not covered"; the report says so

    def report(self, h: Health) -> None:
        h.corrections = {"received": self.received, "moved": self.moved, "last": self.last}
