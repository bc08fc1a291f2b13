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
from sensor_msgs.msg import CameraInfo

from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.query.clicks import CameraView
from llava3d_ros.ros import convert, serialized
from llava3d_ros.ros.diagnostics import RateMeter
from llava3d_ros.ros.images import COLOR_TRANSPORTS, DEPTH_TRANSPORTS, FrameDecoder
from llava3d_ros.scene.ingest import InputProblem
from llava3d_ros.scene.sync import FrameSynchronizer, SyncedFrame, TopicPoses

SENSOR_TOPICS = ("rgb/image", "rgb/camera_info", "depth/image", "depth/camera_info")


class CameraFeed:
    """Topics, stamp matching and the recent frames of the camera named ``name``."""

    def __init__(
        self,
        name: str,
        sync: FrameSynchronizer,
        pose_topic: str,
        held: int,
        decoder: FrameDecoder,
    ) -> None:
        """``pose_topic``: "pose", "odom" or "" (posed by TF); ``held``: frames kept for clicks."""
        self.name = name
        self.decoder = decoder
        self.sync = sync
        self.pose_topic = pose_topic
        self.frame_id = ""  # the optical frame its colour images name
        self.rates = {
            t: RateMeter() for t in (*SENSOR_TOPICS, *([pose_topic] if pose_topic else []))
        }
        self.recent: collections.deque[SyncedFrame] = collections.deque(maxlen=max(held, 1))
        self.held = held
        self._color_info = serialized.SerializedCameraInfo()
        self._last_color_info: bytes | None = None

    def key(self, topic: str) -> str:
        """The camera's name for ``topic`` in logs and /diagnostics (``front/rgb/image``)."""
        return f"{self.name}/{topic}" if self.name else topic

    def topics(self) -> list[tuple[str, str, type, bool]]:
        """(input, topic, type, gated) of each subscription; poses are never gated.

        Compressed images follow image_transport's names: ``rgb/image/compressed``,
        ``depth/image/compressedDepth``.
        """
        color_suffix, color_type = COLOR_TRANSPORTS[self.decoder.rgb_transport]
        depth_suffix, depth_type = DEPTH_TRANSPORTS[self.decoder.depth_transport]
        out = [
            ("rgb/image", "rgb/image" + color_suffix, color_type, True),
            ("rgb/camera_info", "rgb/camera_info", CameraInfo, True),
            ("depth/image", "depth/image" + depth_suffix, depth_type, True),
            ("depth/camera_info", "depth/camera_info", CameraInfo, True),
        ]
        if self.pose_topic:
            pose_type = PoseStamped if self.pose_topic == "pose" else Odometry
            out.append((self.pose_topic, self.pose_topic, pose_type, False))
        return out

    # ---------------------------------------------------------------- called under the feed lock
    def add(self, topic: str, stamp_ns: int, data: bytes) -> list[SyncedFrame]:
        """A raw image or camera_info of this camera, matched by stamp."""
        if topic == "rgb/image":
            self.frame_id = serialized.serialized_frame_id(data, self.topics()[0][2])
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
                try:
                    d = self.decoder.decode(f, with_color=False)
                except InputProblem as exc:  # a broken held frame is a reason, never a crash
                    return f"the held frame cannot be read: {exc}"
                return CameraView(
                    np.asarray(f.cam_to_world), d.k_rgb, d.size, d.depth, d.k_depth, d.pixel_map
                )
        if self._last_color_info is None:
            return f"no rgb/camera_info received from camera {self.name or '(default)'}"
        status, value = self.sync.poses.at(stamp_ns, self.frame_id, True)
        if status != "ok":
            return f"no camera pose at that stamp ({value})"
        try:
            cam = self._color_info(self._last_color_info)
            und = cam.calibration().undistorter()
        except (convert.ConversionError, GeometryError) as exc:
            return f"rgb/camera_info unusable: {exc}"
        pixel_map = und.undistort_pixel if und is not None else None
        return CameraView(value[0], cam.k, (cam.width, cam.height), undistort=pixel_map)

    def newest_pose_ns(self) -> int | None:
        return self.sync.poses.newest_ns


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
