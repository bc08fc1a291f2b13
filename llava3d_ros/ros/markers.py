"""RViz markers for an answer: box edges, labels, the answer text and click points.

Every publish starts with a DELETEALL and reuses fixed namespaces and ids, so RViz replaces the
previous answer's markers instead of piling them up.

Labels and the answer text are lifted along ``up`` (a world-frame direction, default +z): for a
scene whose world frame is not z-up, pass the aligned world's up (``up_from_alignment``). All
numbers shown are world-frame ones, the same the query CLI prints.
"""

from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from llava3d_ros.answer import AnswerResult, Box3D
from llava3d_ros.geometry.boxes import BOX_EDGES, box_corners
from llava3d_ros.ros.convert import ns_to_stamp

NS_BOXES, NS_LABELS, NS_ANSWER, NS_CLICKS = "boxes", "labels", "answer", "clicks"
PALETTE = [(0.9, 0.2, 0.2), (0.2, 0.8, 0.2), (0.2, 0.4, 1.0), (1.0, 0.8, 0.1), (0.8, 0.3, 0.9)]
MAX_TEXT = 300  # characters of the answer shown in RViz (the full text is on ~/answer)
Z_UP = np.array([0.0, 0.0, 1.0])
LABEL_GAP_M, TEXT_GAP_M, CLICK_GAP_M = 0.1, 0.15, 0.2  # lifts along ``up``


def _color(i: int, alpha: float = 1.0) -> ColorRGBA:
    r, g, b = PALETTE[i % len(PALETTE)]
    return ColorRGBA(r=r, g=g, b=b, a=alpha)


def _pt(p: np.ndarray) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def as_up(up: np.ndarray | None) -> np.ndarray:
    """``up`` as a unit 3-vector; None, zero or non-finite → world +z."""
    if up is None:
        return Z_UP.copy()
    v = np.asarray(up, dtype=np.float64).reshape(3)
    n = float(np.linalg.norm(v))
    if not np.isfinite(v).all() or n < 1e-9:
        return Z_UP.copy()
    return v / n


def up_from_alignment(alignment: np.ndarray) -> np.ndarray:
    """The aligned world's +z in the world frame, from the buffer's world → aligned 4×4."""
    a = np.asarray(alignment, dtype=np.float64).reshape(4, 4)
    return as_up(np.linalg.inv(a)[:3, :3] @ Z_UP)


def box_name(i: int, box: Box3D) -> str:
    """The box's label, else ``object N`` (N counted from 1, as an operator reads a list)."""
    return box.label or f"object {i + 1}"


def box_yaw_deg(box: Box3D) -> float:
    """The box's yaw (rotation about world z, ``Box3D.euler[0]``) in degrees, in (−180, 180]."""
    yaw = math.degrees(float(np.asarray(box.euler, dtype=np.float64).reshape(3)[0]))
    return 0.0 - ((180.0 - yaw) % 360.0 - 180.0)


def _num(x: float, digits: int = 2) -> str:
    s = f"{x:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s  # no "-0.00"


def box_text(i: int, box: Box3D) -> str:
    """One compact line: name, world-frame centre, full size and yaw (degrees)."""
    c = ", ".join(_num(v) for v in np.asarray(box.center, dtype=np.float64).reshape(3))
    s = ", ".join(_num(v) for v in np.asarray(box.size, dtype=np.float64).reshape(3))
    return f"{box_name(i, box)}  c({c}) s({s}) yaw {_num(box_yaw_deg(box), 0)}°"


def answer_markers(
    result: AnswerResult,
    frame_id: str,
    stamp_ns: int,
    camera_xyz: np.ndarray | None = None,
    up: np.ndarray | None = None,
) -> MarkerArray:
    """Markers for one answer in ``frame_id``: DELETEALL, then boxes, labels, text and clicks.

    Labels sit just above each box along ``up`` (world frame, default +z); the answer text
    above the first box's label, else above the first click point, else at the camera.
    """
    up = as_up(up)
    header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    out = MarkerArray()
    out.markers.append(Marker(header=header, action=Marker.DELETEALL))
    tops = []
    for i, box in enumerate(result.boxes):
        corners = box_corners(box.center, box.size, box.euler)
        center = np.asarray(box.center, dtype=np.float64).reshape(3)
        edges = Marker(header=header, ns=NS_BOXES, id=i, type=Marker.LINE_LIST, action=Marker.ADD)
        edges.pose.orientation.w = 1.0
        edges.scale.x = 0.02
        edges.color = _color(i)
        edges.points = [_pt(corners[j]) for e in BOX_EDGES for j in e]
        out.markers.append(edges)
        height = float(np.max((corners - center) @ up))  # the box's extent along up
        top = center + up * (height + LABEL_GAP_M)
        tops.append(top)
        label = Marker(header=header, ns=NS_LABELS, id=i, type=Marker.TEXT_VIEW_FACING)
        label.pose.position = _pt(top)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.12
        label.color = _color(i)
        label.text = box_text(i, box)
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
        anchor = tops[0] + up * TEXT_GAP_M
    elif result.click_points:
        anchor = np.asarray(result.click_points[0], dtype=np.float64).reshape(3) + up * CLICK_GAP_M
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
