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
from llava3d_ros.geometry.boxes import BOX_EDGES, box_corners
from llava3d_ros.guard import Guard
from llava3d_ros.ros import convert, markers
from llava3d_ros.scene.buffer import Keyframe
from llava3d_ros.scene.frame import Frame

RESULT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
SCENE_POINTS_PERIOD_S = 1.0  # the cloud only changes with keyframes; RViz needs no more
CLICK_COLOUR = (255, 0, 255)  # magenta, as the click spheres in RViz
NEAR_M = 0.05  # box edges are clipped at this depth; a click point nearer is not in view


def box_colour(i: int) -> tuple[int, int, int]:
    """Box ``i``'s RGB colour: the same as its edges and label in RViz."""
    r, g, b = markers.PALETTE[i % len(markers.PALETTE)]
    return round(r * 255), round(g * 255), round(b * 255)


def _project(cam: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Pixel (u, v) of a camera-frame point in front of the camera."""
    p = k @ cam
    return p[:2] / p[2]


def _clip(p: np.ndarray, q: np.ndarray, w: int, h: int) -> tuple | None:
    """The part of segment p→q (pixels) inside the image, as integer end points (Liang–Barsky)."""
    d = q - p
    t0, t1 = 0.0, 1.0
    for delta, lo, hi, x in ((d[0], 0.0, w - 1.0, p[0]), (d[1], 0.0, h - 1.0, p[1])):
        for num, den in ((x - lo, -delta), (hi - x, delta)):
            if den == 0:
                if num < 0:
                    return None
                continue
            t = num / den
            if den < 0:
                t0 = max(t0, t)
            else:
                t1 = min(t1, t)
            if t0 > t1:
                return None
    a, b = p + t0 * d, p + t1 * d
    return tuple(int(round(v)) for v in a), tuple(int(round(v)) for v in b)


def _box_segments(cam: np.ndarray, k: np.ndarray, w: int, h: int) -> list[tuple]:
    """The visible pixel segments of a box's edges (corners in the camera frame, (8, 3))."""
    out = []
    for a, b in BOX_EDGES:
        p, q = cam[a], cam[b]
        if p[2] < NEAR_M and q[2] < NEAR_M:
            continue
        if p[2] < NEAR_M:  # clip at the near plane: the part behind the camera is not drawn
            p = p + (q - p) * (NEAR_M - p[2]) / (q[2] - p[2])
        elif q[2] < NEAR_M:
            q = q + (p - q) * (NEAR_M - q[2]) / (p[2] - q[2])
        seg = _clip(_project(p, k), _project(q, k), w, h)
        if seg is not None:
            out.append(seg)
    return out


def _fit(cv2: Any, text: str, w: int) -> tuple[float, tuple[int, int], int]:
    """Font scale (smaller on small images, shrunk to fit the width), text size and baseline."""
    scale = min(0.6, max(0.3, w / 1000))
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    if tw > w - 4:
        scale = max(0.25, scale * (w - 4) / tw)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return scale, (tw, th), base


def _text(cv2: Any, img: np.ndarray, text: str, x: int, y: int, colour: tuple) -> int:
    """``text`` with its bottom-left at (x, y) (kept inside), over a darkened band; its height."""
    h, w = img.shape[:2]
    scale, (tw, th), base = _fit(cv2, text, w)
    x = int(min(max(x, 1), max(1, w - tw - 1)))
    y = int(min(max(y, th + 1), h - base - 1))
    y0, y1, x0, x1 = max(0, y - th - 1), min(h, y + base + 1), max(0, x - 1), min(w, x + tw + 1)
    img[y0:y1, x0:x1] = (img[y0:y1, x0:x1] * 0.3).astype(np.uint8)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return th + base + 2


def draw_boxes(frame: Frame, result: AnswerResult | None) -> np.ndarray:
    """The frame's colour image (RGB uint8, a new array) with ``result`` drawn into it.

    Each box's edges are projected (clipped at the near plane and the image border) and its
    name written by it; the answer's click points are marked with a circle and crosshair. A box
    or click point not in this view (behind the camera or projecting outside the image) is
    listed in the bottom-left corner instead ("object 1: not in this view").
    """
    import cv2  # only needed for drawing

    img = np.ascontiguousarray(frame.rgb.copy())
    if result is None:
        return img
    h, w = img.shape[:2]
    k = frame.k_rgb
    rot, origin = frame.cam_to_world[:3, :3], frame.cam_to_world[:3, 3]
    thick = max(1, round(w / 320))
    labels: list[tuple[str, int, int, tuple]] = []
    missing: list[tuple[str, tuple]] = []
    for i, box in enumerate(result.boxes):
        name, colour = markers.box_name(i, box), box_colour(i)
        cam = (box_corners(box.center, box.size, box.euler) - origin) @ rot
        segs = _box_segments(cam, k, w, h)
        if not segs:
            missing.append((f"{name}: not in this view", colour))
            continue
        for a, b in segs:
            cv2.line(img, a, b, colour, thick, cv2.LINE_AA)
        top = min((pt for seg in segs for pt in seg), key=lambda pt: (pt[1], pt[0]))
        labels.append((name, top[0], top[1] - 3, colour))
    r = max(4, w // 40)
    for j, point in enumerate(result.click_points):
        cam = (np.asarray(point, dtype=np.float64).reshape(3) - origin) @ rot
        uv = _project(cam, k) if cam[2] >= NEAR_M else None
        if uv is None or not (-0.5 <= uv[0] < w - 0.5 and -0.5 <= uv[1] < h - 0.5):
            missing.append((f"click {j + 1}: not in this view", CLICK_COLOUR))
            continue
        u, v = int(round(uv[0])), int(round(uv[1]))
        for colour, t in (((0, 0, 0), thick + 2), (CLICK_COLOUR, thick)):  # outlined
            cv2.circle(img, (u, v), r, colour, t, cv2.LINE_AA)
            cv2.line(img, (u - 2 * r, v), (u + 2 * r, v), colour, t, cv2.LINE_AA)
            cv2.line(img, (u, v - 2 * r), (u, v + 2 * r), colour, t, cv2.LINE_AA)
    for name, x, y, colour in labels:  # after all lines: names stay readable
        _text(cv2, img, name, x, y, colour)
    y = h - 2
    for line, colour in reversed(missing):  # bottom-left corner, first entry on top
        _, (_, th), base = _fit(cv2, line, w)
        _text(cv2, img, line, 2, y - base, colour)
        y -= th + base + 3
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
        self._pending: list[Keyframe] | None = None  # a cloud held back by the rate limit

    def destroy(self) -> None:
        pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self._node.destroy_publisher(pub)

    def _publish(self, name: str, msg: Any) -> None:
        pub = self._pubs.get(name)
        if pub is not None:
            pub.publish(msg)

    def answer(
        self,
        result: AnswerResult,
        stamp_ns: int,
        newest: Frame | None,
        up: np.ndarray | None = None,
    ) -> None:
        """Markers of an answer (a refusal clears them); a successful one is drawn too.

        ``up`` (world frame, default +z) is the direction labels and the answer text are lifted
        along: the scene's aligned up, ``markers.up_from_alignment(buffer.alignment)``.
        """
        if result.success:
            self._last_result = result
        camera = newest.cam_to_world[:3, 3] if newest is not None else None
        self._guard.run(
            "markers",
            lambda: self._publish(
                "markers", markers.answer_markers(result, self.world_frame, stamp_ns, camera, up)
            ),
        )
        if result.success and newest is not None:
            self._guard.run("debug_image", lambda: self._debug_image(newest))

    def scene(self, keyframes: list[Keyframe], force: bool = False) -> None:
        """After a new keyframe: the debug image of the newest one, the cloud at most once a second.

        A cloud held back by that limit goes out at the next ``flush`` (the node calls it
        periodically), so the last keyframes of a stream are never missing from it;
        ``force`` (keyframes re-posed) sends it at once.
        """
        if not keyframes:
            return
        self._guard.run("debug_image", lambda: self._debug_image(keyframes[-1].frame))
        if force:
            self._points_published = -1e9
        self._guard.run("scene_points", lambda: self._scene_points(keyframes))

    def flush(self) -> None:
        """Send a cloud the rate limit held back, once the limit allows."""
        pending = self._pending
        if pending is not None:
            self._guard.run("scene_points", lambda: self._scene_points(pending))

    def _debug_image(self, frame: Frame) -> None:
        if "debug_image" not in self._pubs:
            return
        img = draw_boxes(frame, self._last_result)
        msg = convert.array_to_image(img, "rgb8", frame.stamp_ns, self.world_frame + "_debug")
        self._publish("debug_image", msg)

    def _scene_points(self, keyframes: list[Keyframe]) -> None:
        now = time.monotonic()
        if "scene_points" not in self._pubs:
            return
        if now - self._points_published < SCENE_POINTS_PERIOD_S:
            self._pending = keyframes
            return
        self._pending = None
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
