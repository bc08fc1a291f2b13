"""RViz markers for an answer: box edges, labels, the answer text and click points.

Every publish starts with a DELETEALL and reuses fixed namespaces and ids, so RViz replaces the
previous answer's markers instead of piling them up.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from llava3d_ros.answer import AnswerResult
from llava3d_ros.geometry.boxes import BOX_EDGES, box_corners
from llava3d_ros.ros.convert import ns_to_stamp

NS_BOXES, NS_LABELS, NS_ANSWER, NS_CLICKS = "boxes", "labels", "answer", "clicks"
_PALETTE = [(0.9, 0.2, 0.2), (0.2, 0.8, 0.2), (0.2, 0.4, 1.0), (1.0, 0.8, 0.1), (0.8, 0.3, 0.9)]
MAX_TEXT = 300  # characters of the answer shown in RViz (the full text is on ~/answer)


def _color(i: int, alpha: float = 1.0) -> ColorRGBA:
    r, g, b = _PALETTE[i % len(_PALETTE)]
    return ColorRGBA(r=r, g=g, b=b, a=alpha)


def _pt(p: np.ndarray) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def answer_markers(
    result: AnswerResult, frame_id: str, stamp_ns: int, camera_xyz: np.ndarray | None = None
) -> MarkerArray:
    """Markers for one answer in ``frame_id``: DELETEALL, then boxes, labels, text and clicks."""
    header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    out = MarkerArray()
    out.markers.append(Marker(header=header, action=Marker.DELETEALL))
    tops = []
    for i, box in enumerate(result.boxes):
        corners = box_corners(box.center, box.size, box.euler)
        edges = Marker(header=header, ns=NS_BOXES, id=i, type=Marker.LINE_LIST, action=Marker.ADD)
        edges.pose.orientation.w = 1.0
        edges.scale.x = 0.02
        edges.color = _color(i)
        edges.points = [_pt(corners[j]) for e in BOX_EDGES for j in e]
        out.markers.append(edges)
        top = np.asarray(box.center, dtype=np.float64) + [
            0,
            0,
            float(np.max(corners[:, 2]) - box.center[2]) + 0.1,
        ]
        tops.append(top)
        label = Marker(header=header, ns=NS_LABELS, id=i, type=Marker.TEXT_VIEW_FACING)
        label.pose.position = _pt(top)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.12
        label.color = _color(i)
        label.text = box.label or f"object {i}"
        out.markers.append(label)
    if result.click_points:
        clicks = Marker(header=header, ns=NS_CLICKS, id=0, type=Marker.SPHERE_LIST)
        clicks.pose.orientation.w = 1.0
        clicks.scale = Vector3(x=0.06, y=0.06, z=0.06)
        clicks.color = ColorRGBA(r=1.0, g=0.0, b=1.0, a=1.0)
        clicks.points = [_pt(np.asarray(p, dtype=np.float64)) for p in result.click_points]
        out.markers.append(clicks)
    anchor = None
    if tops:
        anchor = tops[0] + [0, 0, 0.15]
    elif result.click_points:
        anchor = np.asarray(result.click_points[0], dtype=np.float64) + [0, 0, 0.2]
    elif camera_xyz is not None:
        anchor = np.asarray(camera_xyz, dtype=np.float64)
    if anchor is not None:
        text = Marker(header=header, ns=NS_ANSWER, id=0, type=Marker.TEXT_VIEW_FACING)
        text.pose.position = _pt(anchor)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.1
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        body = result.text if result.success else f"[{result.code.name}] {result.message}"
        text.text = body if len(body) <= MAX_TEXT else body[: MAX_TEXT - 1] + "…"
        out.markers.append(text)
    return out
