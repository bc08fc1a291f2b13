"""One camera at the edge: its topics under its namespace, its synchroniser, its recent frames.

Each camera of the ``cameras`` parameter has ``<ns>/rgb/image``, ``<ns>/rgb/camera_info``,
``<ns>/depth/image``, ``<ns>/depth/camera_info`` (and ``<ns>/pose`` or ``<ns>/odom`` when
posed by a topic). The default camera has the empty namespace: the node's own topics.
Callbacks hold the feed's lock while they match stamps.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image

from llava3d_ros.query.clicks import CameraView
from llava3d_ros.ros import convert, serialized
from llava3d_ros.ros.diagnostics import RateMeter
from llava3d_ros.scene.ingest import depth_intrinsics
from llava3d_ros.scene.sync import FrameSynchronizer, SyncedFrame, TopicPoses

SENSOR_TOPICS = ("rgb/image", "rgb/camera_info", "depth/image", "depth/camera_info")


class CameraFeed:
    """Topics, stamp matching and the recent frames of the camera named ``name``."""

    def __init__(self, name: str, sync: FrameSynchronizer, pose_topic: str, held: int) -> None:
        """``pose_topic``: "pose", "odom" or "" (posed by TF); ``held``: frames kept for clicks."""
        self.name = name
        self.sync = sync
        self.pose_topic = pose_topic
        self.frame_id = ""  # the optical frame its colour images name
        self.rates = {
            t: RateMeter() for t in (*SENSOR_TOPICS, *([pose_topic] if pose_topic else []))
        }
        self.recent: collections.deque[SyncedFrame] = collections.deque(maxlen=max(held, 1))
        self.held = held
        self._color_info = serialized.SerializedCameraInfo()
        self._depth_info = serialized.SerializedCameraInfo()
        self._last_color_info: bytes | None = None

    def key(self, topic: str) -> str:
        """The camera's name for ``topic`` in logs and /diagnostics (``front/rgb/image``)."""
        return f"{self.name}/{topic}" if self.name else topic

    def topics(self) -> list[tuple[str, type, bool]]:
        """(topic, type, gated) of each subscription; poses are never gated."""
        out = [(t, CameraInfo if t.endswith("info") else Image, True) for t in SENSOR_TOPICS]
        if self.pose_topic:
            out.append(
                (self.pose_topic, PoseStamped if self.pose_topic == "pose" else Odometry, False)
            )
        return out

    # ---------------------------------------------------------------- called under the feed lock
    def add(self, topic: str, stamp_ns: int, data: bytes) -> list[SyncedFrame]:
        """A raw image or camera_info of this camera, matched by stamp."""
        if topic == "rgb/image":
            self.frame_id = serialized.serialized_frame_id(data, Image)
            return self.sync.add_color(stamp_ns, data, self.frame_id)
        if topic == "depth/image":
            return self.sync.add_depth(stamp_ns, data)
        if topic == "rgb/camera_info":
            self._last_color_info = data
            return self.sync.add_color_info(stamp_ns, data)
        return self.sync.add_depth_info(stamp_ns, data)

    def emitted(self, frames: list[SyncedFrame]) -> None:
        """Keep the depth of matched frames (not colour: clicks need depth and pose only)."""
        if self.held > 0:
            self.recent.extend(replace(f, color=None) for f in frames)

    def clear(self) -> None:
        self.recent.clear()

    def view_at(self, stamp_ns: int, max_pixels: int) -> CameraView | str:
        """This camera at ``stamp_ns``: the held frame with its depth, else its pose and calibration."""
        for f in self.recent:
            if f.stamp_ns == stamp_ns:
                return _held_view(f, self._color_info, self._depth_info, max_pixels)
        if self._last_color_info is None:
            return f"no rgb/camera_info received from camera {self.name or '(default)'}"
        status, value = self.sync.poses.at(stamp_ns, self.frame_id, True)
        if status != "ok":
            return f"no camera pose at that stamp ({value})"
        try:
            cam = self._color_info(self._last_color_info)
        except convert.ConversionError as exc:
            return f"rgb/camera_info unusable: {exc}"
        return CameraView(value[0], cam.k, (cam.width, cam.height))

    def newest_pose_ns(self) -> int | None:
        return self.sync.poses.newest_ns


def _held_view(
    f: SyncedFrame,
    color_info: Callable[[bytes], Any],
    depth_info: Callable[[bytes], Any],
    max_pixels: int,
) -> CameraView | str:
    """A held frame as a click view: its depth (metres), calibration and pose."""
    try:
        view = serialized.image_view_from_serialized(f.depth)
        convert.check_image_size(view, max_pixels)
        depth = convert.depth_from_image(view)
        cam = color_info(f.color_info)
        dcam = None
        if f.depth_info is not None:
            d = depth_info(f.depth_info)
            dcam = (d.k, (d.width, d.height))
        k_depth, _ = depth_intrinsics(
            cam.k, (cam.width, cam.height), (depth.shape[1], depth.shape[0]), dcam
        )
    except Exception as exc:  # a broken held frame is a reason, never a crash
        return f"the held frame cannot be read: {type(exc).__name__}: {exc}"
    return CameraView(np.asarray(f.cam_to_world), cam.k, (cam.width, cam.height), depth, k_depth)


def make_synchronizer(
    s: Any, poses: Any, camera: str, on_drop: Callable, on_jump: Callable
) -> FrameSynchronizer:
    """A camera's synchroniser from the settings (TF-posed cameras wait ``tf_timeout_s``)."""
    wait_s = s.tf_timeout_s if not isinstance(poses, TopicPoses) else s.pose_wait_s
    return FrameSynchronizer(
        slop_ns=int(s.sync_slop_s * 1e9),
        pose_tolerance_ns=int(s.pose_tolerance_s * 1e9),
        pose_wait_ns=int(wait_s * 1e9),
        queue_size=max(s.sensor_queue_size, 2),
        use_depth_info=s.use_depth_camera_info,
        on_drop=on_drop,
        time_jump_ns=int(s.time_jump_threshold_s * 1e9),
        on_time_jump=on_jump,
        poses=poses,
        camera=camera,
    )
