"""What an operator sees in RViz: ``~/markers``, ``~/scene_points`` and ``~/debug_image``.

All of it is optional output: the node runs each step through its ``Guard`` (a failure is
counted and logged, never passed on), and the debug image and the cloud can be switched off.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from llava3d_ros.answer import AnswerResult
from llava3d_ros.geometry.boxes import BOX_EDGES, box_corners, project_points
from llava3d_ros.guard import Guard
from llava3d_ros.ros import convert, markers
from llava3d_ros.scene.buffer import Keyframe
from llava3d_ros.scene.frame import Frame

RESULT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
SCENE_POINTS_PERIOD_S = 1.0  # the cloud only changes with keyframes; RViz needs no more
BOX_COLOUR, LABEL_COLOUR = (255, 60, 60), (255, 255, 0)
NEAR_M = 0.05  # a box with a corner nearer the camera than this is not drawn


def draw_boxes(frame: Frame, result: AnswerResult | None) -> np.ndarray:
    """The frame's colour image with ``result``'s boxes projected into it (a new array)."""
    import cv2  # only needed for drawing

    img = np.ascontiguousarray(frame.rgb.copy())
    if result is None:
        return img
    h, w = img.shape[:2]
    for i, box in enumerate(result.boxes):
        corners = box_corners(box.center, box.size, box.euler)
        uv, inside = project_points(corners, frame.k_rgb, frame.cam_to_world, w, h)
        cam = (corners - frame.cam_to_world[:3, 3]) @ frame.cam_to_world[:3, :3]
        if (cam[:, 2] <= NEAR_M).any():
            continue
        pts = np.round(uv).astype(np.int32)
        for a, b in BOX_EDGES:
            cv2.line(img, tuple(map(int, pts[a])), tuple(map(int, pts[b])), BOX_COLOUR, 2)
        if inside.any():
            anchor = tuple(map(int, pts[inside][0]))
            label = box.label or f"object {i}"
            cv2.putText(img, label, anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.6, LABEL_COLOUR, 2)
    return img


class Visuals:
    """The RViz outputs of one activation: created with it, destroyed with it."""

    def __init__(
        self, node: Node, world_frame: str, guard: Guard, debug_image: bool, scene_points: bool
    ) -> None:
        self._node, self.world_frame, self._guard = node, world_frame, guard
        self._pubs: dict[str, Any] = {
            "markers": node.create_publisher(MarkerArray, "~/markers", LATCHED_QOS)
        }
        if debug_image:
            self._pubs["debug_image"] = node.create_publisher(Image, "~/debug_image", RESULT_QOS)
        if scene_points:
            self._pubs["scene_points"] = node.create_publisher(
                PointCloud2, "~/scene_points", LATCHED_QOS
            )
        self._last_result: AnswerResult | None = None
        self._points_published = -1e9
        self._points_cache: dict[int, tuple] = {}

    def destroy(self) -> None:
        pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self._node.destroy_publisher(pub)

    def _publish(self, name: str, msg: Any) -> None:
        pub = self._pubs.get(name)
        if pub is not None:
            pub.publish(msg)

    def answer(self, result: AnswerResult, stamp_ns: int, newest: Frame | None) -> None:
        """Markers of an answer (a refusal clears them); a successful one is drawn too."""
        if result.success:
            self._last_result = result
        camera = newest.cam_to_world[:3, 3] if newest is not None else None
        self._guard.run(
            "markers",
            lambda: self._publish(
                "markers", markers.answer_markers(result, self.world_frame, stamp_ns, camera)
            ),
        )
        if result.success and newest is not None:
            self._guard.run("debug_image", lambda: self._debug_image(newest))

    def scene(self, keyframes: list[Keyframe]) -> None:
        """After a new keyframe: the debug image of the newest one, the cloud at most once a second."""
        if not keyframes:
            return
        self._guard.run("debug_image", lambda: self._debug_image(keyframes[-1].frame))
        self._guard.run("scene_points", lambda: self._scene_points(keyframes))

    def _debug_image(self, frame: Frame) -> None:
        if "debug_image" not in self._pubs:
            return
        img = draw_boxes(frame, self._last_result)
        msg = convert.array_to_image(img, "rgb8", frame.stamp_ns, self.world_frame + "_debug")
        self._publish("debug_image", msg)

    def _scene_points(self, keyframes: list[Keyframe]) -> None:
        now = time.monotonic()
        if "scene_points" not in self._pubs or now - self._points_published < SCENE_POINTS_PERIOD_S:
            return
        self._points_published = now
        cache, self._points_cache = self._points_cache, {}
        for kf in keyframes:  # per keyframe once (again only when its pose was corrected)
            fid, pose = kf.frame.frame_id, kf.frame.cam_to_world
            hit = cache.get(fid)
            if hit is None or not np.array_equal(hit[0], pose):
                g = kf.points.valid.shape[0]
                p = kf.image.shape[0] // g
                # patch means (floored), rows first: ~10× faster than mean(axis=(1, 3))
                sums = kf.image.reshape(g, p, g, p, 3).sum(axis=1, dtype=np.uint32).sum(axis=2)
                colours = (sums // (p * p)).astype(np.uint8)
                cam = kf.points.cam_xyz[kf.points.valid].astype(np.float64)
                hit = (pose.copy(), cam @ pose[:3, :3].T + pose[:3, 3], colours[kf.points.valid])
            self._points_cache[fid] = hit
        xyz = np.concatenate([v[1] for v in self._points_cache.values()])
        rgb = np.concatenate([v[2] for v in self._points_cache.values()])
        stamp = keyframes[-1].frame.stamp_ns
        self._publish("scene_points", convert.cloud_from_points(xyz, rgb, stamp, self.world_frame))
