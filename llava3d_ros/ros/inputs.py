"""Sensor input at the edge: subscriptions, rates, input errors, stamp matching, time restarts.

Callbacks run on the sensor helper's own thread (``helper_nodes.SensorInputs``) and only peek
at stamps, bound image sizes and match the streams (``scene/sync.py``); matched frames go to
``on_frames`` still serialized, and the ingest thread decodes the ones worth it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from nav_msgs.msg import Odometry
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from llava3d_ros.guard import Guard
from llava3d_ros.ros import convert, serialized
from llava3d_ros.ros.diagnostics import Health, RateMeter
from llava3d_ros.ros.helper_nodes import SensorInputs
from llava3d_ros.ros.params import Settings
from llava3d_ros.scene.sync import FrameSynchronizer, SyncedFrame

INPUTS = ("rgb/image", "rgb/camera_info", "depth/image", "depth/camera_info", "pose", "odom")


def sensor_qos(s: Settings, depth: int | None = None) -> QoSProfile:
    depth = s.sensor_queue_size if depth is None else depth
    if s.sensor_qos == "sensor_data":
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


class SensorFeed:
    """One configuration's sensor side: the synchroniser and what /diagnostics says of inputs.

    ``on_frames(frames)`` gets matched frames; ``on_time_jump(old_ns, new_ns)`` is called (off
    the sync lock) when sensor time ran backwards, before any frame of the new time line.
    """

    def __init__(
        self,
        s: Settings,
        guard: Guard,
        on_frames: Callable[[list[SyncedFrame]], None],
        on_time_jump: Callable[[int, int], None],
    ) -> None:
        self.settings, self._guard = s, guard
        self._on_frames, self._on_time_jump = on_frames, on_time_jump
        self.lock = threading.Lock()
        self.sync = FrameSynchronizer(
            slop_ns=int(s.sync_slop_s * 1e9),
            pose_tolerance_ns=int(s.pose_tolerance_s * 1e9),
            pose_wait_ns=int(s.pose_wait_s * 1e9),
            queue_size=max(s.sensor_queue_size, 2),
            use_depth_info=s.use_depth_camera_info,
            on_drop=self._on_drop,
            time_jump_ns=int(s.time_jump_threshold_s * 1e9),
            on_time_jump=self._saw_time_jump,
        )
        self.rates = {name: RateMeter() for name in INPUTS}
        self.errors: dict[str, str] = {}
        self.error_counts: collections.Counter[str] = collections.Counter()
        self.pose_failures = 0
        self.frames_synced = 0
        self.not_taken: collections.Counter[str] = collections.Counter()
        self._jump: tuple[int, int] | None = None
        x, y, z, qx, qy, qz, qw = s.camera_in_base
        self._camera_in_base = convert.pose_to_matrix(
            Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
        )

    @property
    def epoch(self) -> int:
        """The synchroniser's time line (an int: read without the lock)."""
        return self.sync.epoch

    def subscribe(self, sensors: SensorInputs, resolve: Callable[[str], str]) -> None:
        """Create the sensor subscriptions on ``sensors`` (names resolved by the lifecycle node)."""
        qos = sensor_qos(self.settings)
        # gated inputs: only the newest waits in DDS while the gate is shut
        image_qos = sensor_qos(self.settings, depth=1) if sensors.gate.gating else qos
        pose = (
            ("pose", PoseStamped, self._on_pose)
            if self.settings.pose_source == "pose"
            else ("odom", Odometry, self._on_odom)
        )
        for name, msg_type, callback in (
            ("rgb/image", Image, self._on_color),
            ("rgb/camera_info", CameraInfo, self._on_color_info),
            ("depth/image", Image, self._on_depth),
            ("depth/camera_info", CameraInfo, self._on_depth_info),
            pose,
        ):
            # Raw (serialized) where it pays: images are deserialised only for the frames kept
            # (a 640×480 frame costs more than everything else here), camera_info once per
            # calibration, PoseStamped read in place (ros/serialized.py).
            raw = msg_type in (Image, CameraInfo, PoseStamped)
            # images and camera_info (static calibration: the newest one serves) wait behind
            # the ingest gate; poses never do, the pose at an image stamp needs their history
            gated = msg_type in (Image, CameraInfo)
            sensors.subscribe(
                name, msg_type, resolve(name), callback, image_qos if gated else qos, raw, gated
            )

    # ------------------------------------------------------------------ problems
    def input_error(self, name: str, message: str) -> None:
        self.errors[name] = message
        self.error_counts[name] += 1
        self._guard.log(f"input {name}", "warning", f"{name}: {message}")

    def clear_error(self, name: str) -> None:
        self.errors.pop(name, None)

    def on_callback_error(self, name: str, exc: Exception) -> None:
        self.input_error(name, f"callback failed: {type(exc).__name__}: {exc}")

    def on_untaken(self, topic: str, n: int) -> None:
        """Messages the ingest gate left in DDS: counted at the rate they were sent."""
        self.rates[topic].untaken(n)
        self.not_taken[topic] += n

    def _on_drop(self, reason: str) -> None:
        """A frame the synchroniser dropped: said in the log too, once per reason and period."""
        self._guard.log(f"drop {reason.split(':')[0]}", "warning", f"frame dropped: {reason}")

    def _saw_time_jump(self, old_ns: int, new_ns: int) -> None:
        # under the sync lock: handled in _feed once it is free (the scene lock is never
        # taken under the sync lock; a query holds the scene lock while it asks why_no_scene)
        self._jump = (old_ns, new_ns)

    # ------------------------------------------------------------------ callbacks
    def _feed(self, add: Callable[[], list[SyncedFrame]]) -> None:
        with self.lock:
            before = self._no_pose_drops()
            frames = add()
            self.pose_failures += self._no_pose_drops() - before
            jump, self._jump = self._jump, None
        if jump is not None:
            self._on_time_jump(*jump)
        if frames:
            self.frames_synced += len(frames)
            self._on_frames(frames)

    def _no_pose_drops(self) -> int:
        return sum(n for k, n in self.sync.drops.items() if k.startswith("no pose"))

    def _on_color(self, data: bytes) -> None:
        self._on_raw("rgb/image", Image, data, self.sync.add_color)

    def _on_depth(self, data: bytes) -> None:
        self._on_raw("depth/image", Image, data, self.sync.add_depth)

    def _on_color_info(self, data: bytes) -> None:
        self._on_raw("rgb/camera_info", CameraInfo, data, self.sync.add_color_info)

    def _on_depth_info(self, data: bytes) -> None:
        self._on_raw("depth/camera_info", CameraInfo, data, self.sync.add_depth_info)

    def _on_raw(
        self, topic: str, msg_type: type, data: bytes, add: Callable[[int, bytes], Any]
    ) -> None:
        """A raw image or camera_info: stamp peeked, an image's size bounded, then synchronised."""
        self.rates[topic].tick()
        try:
            stamp = serialized.serialized_stamp_ns(data, msg_type)
            if msg_type is Image:
                serialized.check_serialized_size(data, self.settings.max_image_pixels)
        except convert.ConversionError as exc:
            return self.input_error(topic, str(exc))
        self._feed(lambda: add(stamp, data))

    def _on_pose(self, data: bytes) -> None:
        self.rates["pose"].tick()
        try:
            stamp, frame, mat = serialized.pose_stamped_from_serialized(data)
        except convert.ConversionError as exc:
            return self.input_error("pose", str(exc))
        self._add_pose("pose", stamp, frame, mat)

    def _on_odom(self, msg: Odometry) -> None:
        self.rates["odom"].tick()
        try:
            stamp, frame, mat = convert.odometry_to_matrix(msg)
        except convert.ConversionError as exc:
            return self.input_error("odom", str(exc))
        self._add_pose("odom", stamp, frame, mat @ self._camera_in_base)

    def _add_pose(self, name: str, stamp: int, frame: str, mat: np.ndarray) -> None:
        world = self.settings.world_frame
        if frame and frame != world:
            return self.input_error(
                name, f"pose is in frame {frame!r}, not the world frame {world!r}: dropped"
            )
        self._feed(lambda: self.sync.add_pose(stamp, mat))

    # ------------------------------------------------------------------ reports
    def report(self, h: Health) -> None:
        """Fill the input side of ``h``."""
        h.rates_hz = {k: round(m.rate(), 3) for k, m in self.rates.items()}
        h.input_errors = dict(self.errors)
        h.input_error_counts = dict(self.error_counts)
        h.pose_failures = self.pose_failures
        h.frames_synced = self.frames_synced
        h.not_taken = dict(self.not_taken)
        with self.lock:
            h.sync_drops = dict(self.sync.drops)
            h.sync_waiting = self.sync.waiting()
            newest_pose = self.sync.poses.newest_ns
            last_frame = self.sync.last_emitted_ns
        if last_frame > 0 and newest_pose is not None:
            lag = last_frame - newest_pose
            if lag > self.settings.pose_tolerance_s * 1e9:
                h.warnings.append(
                    f"stale poses: newest pose is {lag / 1e6:.0f} ms older than the newest image"
                )

    def why_no_scene(self) -> str:
        """What kept frames out, for a NO_SCENE answer."""
        parts = [f"{k}: {v}" for k, v in sorted(self.errors.items())]
        with self.lock:
            if self.sync.last_drop:
                parts.append(f"last sync drop: {self.sync.last_drop}")
            waiting = {k: v for k, v in self.sync.waiting().items() if v}
        if waiting:
            parts.append(f"unmatched messages: {waiting}")
        silent = [
            k for k in ("rgb/image", "depth/image", "rgb/camera_info") if not self.rates[k].count
        ]
        if silent:
            parts.append(f"nothing received on {', '.join(silent)}")
        return "; ".join(parts)
