"""Sensor input at the edge: cameras, poses, TF, rates, input errors, stamp matching, time restarts.

Callbacks run on the sensor helper's own thread (``helper_nodes.SensorInputs``) and only peek
at stamps, bound image sizes and match the streams (``scene/sync.py``, one synchroniser per
camera, ``ros/cameras.py``); matched frames go to ``on_frames`` still serialized, and the
ingest thread decodes the ones worth it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion
from nav_msgs.msg import Odometry
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from llava3d_ros.guard import Guard
from llava3d_ros.query.clicks import CameraView
from llava3d_ros.ros import convert, serialized
from llava3d_ros.ros.cameras import CameraFeed, make_synchronizer
from llava3d_ros.ros.diagnostics import Health
from llava3d_ros.ros.helper_nodes import SensorInputs
from llava3d_ros.ros.images import FrameDecoder
from llava3d_ros.ros.params import Settings
from llava3d_ros.ros.tf import TfInput
from llava3d_ros.scene.sync import AutoPoses, SyncedFrame, TfPoses, TopicPoses


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
    """One configuration's sensor side: cameras, TF, and what /diagnostics says of inputs.

    ``on_frames(frames)`` gets matched frames; ``on_time_jump(old_ns, new_ns)`` is called (off
    the sync lock) when sensor time ran backwards, before any frame of the new time line.
    A time jump seen by one camera restarts every camera's time line (and TF's).
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
        self.tf = TfInput(
            s.tf_cache_s,
            on_update=self._on_tf,
            time_jump_ns=int(s.time_jump_threshold_s * 1e9),
            use_tf2_ros=None if s.tf_backend == "auto" else s.tf_backend == "tf2_ros",
        )
        self.decoder = FrameDecoder(
            s.rgb_transport, s.depth_transport, s.max_image_pixels, self._depth_to_color
        )
        pose_topic = {"pose": "pose", "odom": "odom", "auto": "pose", "tf": ""}[s.pose_source]
        self.cameras = [
            CameraFeed(
                name,
                make_synchronizer(s, self._poses(), name, self._on_drop, self._saw_time_jump),
                pose_topic,
                s.recent_frames_held,
                self.decoder,
            )
            for name in dict.fromkeys(n.strip("/") for n in s.cameras)
        ]
        self._fixed_depth_to_color = (
            convert.rigid_from_quaternion(list(s.depth_to_color[:3]), list(s.depth_to_color[3:]))
            if any(s.depth_to_color[3:])
            else None
        )
        self.epoch = 0  # time lines: one more at each time jump (read without the lock)
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

    def _depth_to_color(
        self, color_frame: str, depth_frame: str, stamp_ns: int
    ) -> np.ndarray | str:
        """The depth camera in the colour camera: the depth_to_color parameter, else TF."""
        if self._fixed_depth_to_color is not None:
            return self._fixed_depth_to_color
        try:
            return self.tf.lookup(color_frame, depth_frame, stamp_ns)
        except Exception as first:  # not at the stamp: the extrinsic is static, take the latest
            try:
                return self.tf.lookup(color_frame, depth_frame, 0)
            except Exception:
                return f"TF: {first}"

    def _poses(self) -> TopicPoses | TfPoses | AutoPoses:
        s = self.settings
        tf = TfPoses(self.tf, s.world_frame)
        topic = TopicPoses(int(s.pose_tolerance_s * 1e9), s.world_frame, self.tf)
        return {"tf": tf, "auto": AutoPoses(topic, tf)}.get(s.pose_source, topic)

    def subscribe(
        self, sensors: SensorInputs, resolve: Callable[[str], str], tf_node: Callable[[], Any]
    ) -> None:
        """Sensor and TF subscriptions on ``sensors`` (names resolved by the node).

        ``tf_node()`` makes the node a tf2_ros listener spins on its own (full installs only).
        """
        qos = sensor_qos(self.settings)
        # gated inputs: only the newest waits in DDS while the gate is shut
        image_qos = sensor_qos(self.settings, depth=1) if sensors.gate.gating else qos
        for cam in self.cameras:
            for name, topic, msg_type, gated in cam.topics():
                # Raw (serialized) where it pays: images are deserialised only for the frames
                # kept, camera_info once per calibration, PoseStamped read in place.
                raw = msg_type is not Odometry
                sensors.subscribe(
                    cam.key(name),
                    msg_type,
                    resolve(cam.key(topic)),
                    self._callback(cam, name, msg_type),
                    image_qos if gated else qos,
                    raw,
                    gated,
                )
        self.tf.subscribe(sensors, tf_node)

    def _callback(self, cam: CameraFeed, topic: str, msg_type: type) -> Callable[[Any], None]:
        if topic == "pose":
            return lambda data: self._on_pose(cam, data)
        if topic == "odom":
            return lambda msg: self._on_odom(cam, msg)
        return lambda data: self._on_raw(cam, topic, msg_type, data)

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
        for cam in self.cameras:
            for t in cam.rates:
                if cam.key(t) == topic:
                    cam.rates[t].untaken(n)
        self.not_taken[topic] += n

    def _on_drop(self, reason: str) -> None:
        """A frame a synchroniser dropped: said in the log too, once per reason and period."""
        self._guard.log(f"drop {reason.split(':')[0]}", "warning", f"frame dropped: {reason}")

    def _saw_time_jump(self, old_ns: int, new_ns: int) -> None:
        # under the feed lock: handled in _feed once it is free (the scene lock is never
        # taken under the feed lock; a query holds the scene lock while it asks why_no_scene)
        self._jump = (old_ns, new_ns)

    # ------------------------------------------------------------------ callbacks
    def _feed(self, cam: CameraFeed | None, add: Callable[[], list[SyncedFrame]]) -> None:
        with self.lock:
            before = self._no_pose_drops()
            frames = add()
            jump, self._jump = self._jump, None
            if jump is not None:
                for other in self.cameras:  # one time line for all cameras
                    if other.sync is not (cam.sync if cam else None):
                        other.sync.reset()
                    other.clear()
                self.epoch += 1
            for f in frames:
                f.epoch = self.epoch
            if cam is not None:
                cam.emitted(frames)
            self.pose_failures += self._no_pose_drops() - before
        if jump is not None:
            self.tf.clear()
            self._on_time_jump(*jump)
        if frames:
            self.frames_synced += len(frames)
            self._on_frames(frames)

    def _no_pose_drops(self) -> int:
        return sum(
            n for c in self.cameras for k, n in c.sync.drops.items() if k.startswith("no pose")
        )

    def _on_tf(self) -> None:
        """Transforms arrived: frames waiting for their pose may be posed now.

        Also called periodically (``poll``): tf2_ros's listener tells nobody when /tf came.
        """
        for cam in self.cameras:
            self._feed(cam, cam.sync.resolve)

    poll = _on_tf

    def _on_raw(self, cam: CameraFeed, topic: str, msg_type: type, data: bytes) -> None:
        """A raw image or camera_info: stamp peeked, an image's size bounded, then synchronised."""
        key = cam.key(topic)
        cam.rates[topic].tick()
        try:
            stamp = serialized.serialized_stamp_ns(data, msg_type)
            if topic.endswith("image"):
                serialized.check_serialized_size(data, self.settings.max_image_pixels)
        except convert.ConversionError as exc:
            return self.input_error(key, str(exc))
        try:
            self._feed(cam, lambda: cam.add(topic, stamp, data))
        except convert.ConversionError as exc:
            self.input_error(key, str(exc))

    def _on_pose(self, cam: CameraFeed, data: bytes) -> None:
        cam.rates["pose"].tick()
        try:
            stamp, frame, mat = serialized.pose_stamped_from_serialized(data)
        except convert.ConversionError as exc:
            return self.input_error(cam.key("pose"), str(exc))
        self._feed(cam, lambda: cam.sync.add_pose(stamp, mat, frame))

    def _on_odom(self, cam: CameraFeed, msg: Odometry) -> None:
        cam.rates["odom"].tick()
        try:
            stamp, frame, mat = convert.odometry_to_matrix(msg)
        except convert.ConversionError as exc:
            return self.input_error(cam.key("odom"), str(exc))
        self._feed(cam, lambda: cam.sync.add_pose(stamp, mat @ self._camera_in_base, frame))

    # ------------------------------------------------------------------ clicks
    def camera_at(self, camera_frame: str, stamp_ns: int) -> CameraView | str:
        """The camera whose image is ``camera_frame`` (or the only one) at ``stamp_ns``."""
        with self.lock:
            cams = self.cameras
            if camera_frame:
                cams = [c for c in cams if camera_frame in (c.frame_id, c.name)]
                if not cams:
                    known = [c.frame_id or c.name for c in self.cameras]
                    return f"no camera has frame {camera_frame!r} (cameras: {known})"
            elif len(cams) > 1:
                held = [c for c in cams if any(f.stamp_ns == stamp_ns for f in c.recent)]
                if len(held) != 1:
                    return (
                        f"{len(cams)} cameras: give the click's frame_id (one of "
                        f"{[c.frame_id or c.name for c in cams]})"
                    )
                cams = held
            return cams[0].view_at(stamp_ns, self.settings.max_image_pixels)

    # ------------------------------------------------------------------ reports
    def report(self, h: Health) -> None:
        """Fill the input side of ``h``."""
        h.rates_hz = {
            c.key(k): round(m.rate(), 3) for c in self.cameras for k, m in c.rates.items()
        }
        h.input_errors = dict(self.errors)
        h.input_error_counts = dict(self.error_counts)
        h.pose_failures = self.pose_failures
        h.frames_synced = self.frames_synced
        h.not_taken = dict(self.not_taken)
        h.cameras = {c.name: c.frame_id or "(none seen)" for c in self.cameras}
        self.tf.report(h)
        multi = len(self.cameras) > 1
        with self.lock:
            for c in self.cameras:
                pre = f"{c.name}/" if multi and c.name else ""
                h.sync_drops.update({pre + k: v for k, v in c.sync.drops.items()})
                h.sync_waiting.update({pre + k: v for k, v in c.sync.waiting().items()})
                newest_pose, last_frame = c.newest_pose_ns(), c.sync.last_emitted_ns
                if last_frame > 0 and newest_pose is not None:
                    lag = last_frame - newest_pose
                    if lag > self.settings.pose_tolerance_s * 1e9 and c.pose_topic:
                        h.warnings.append(
                            f"stale poses{f' ({c.name})' if c.name else ''}: newest pose is "
                            f"{lag / 1e6:.0f} ms older than the newest image"
                        )

    def why_no_scene(self) -> str:
        """What kept frames out, for a NO_SCENE answer."""
        parts = [f"{k}: {v}" for k, v in sorted(self.errors.items())]
        with self.lock:
            for c in self.cameras:
                if c.sync.last_drop:
                    parts.append(
                        f"last sync drop{f' ({c.name})' if c.name else ''}: {c.sync.last_drop}"
                    )
                waiting = {k: v for k, v in c.sync.waiting().items() if v}
                if waiting:
                    parts.append(f"unmatched messages{f' ({c.name})' if c.name else ''}: {waiting}")
        silent = [
            c.key(k)
            for c in self.cameras
            for k in ("rgb/image", "depth/image", "rgb/camera_info")
            if not c.rates[k].count
        ]
        if silent:
            parts.append(f"nothing received on {', '.join(silent)}")
        return "; ".join(parts)
