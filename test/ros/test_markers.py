"""RViz answer markers: labels and the answer text lifted along the scene's up, label contents."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from visualization_msgs.msg import Marker

from llava3d_ros.answer import AnswerResult, Box3D, ResultCode
from llava3d_ros.ros import markers
from llava3d_ros.ros.markers import answer_markers, box_text, up_from_alignment

TILTED_UP = Rotation.from_euler("x", 30, degrees=True).apply([0.0, 0.0, 1.0])


def _xyz(p) -> np.ndarray:
    return np.array([p.x, p.y, p.z])


def _by_ns(arr, ns: str) -> list[Marker]:
    return sorted((m for m in arr.markers if m.ns == ns), key=lambda m: m.id)


def _result(**kw) -> AnswerResult:
    return AnswerResult(code=ResultCode.OK, text="the chair is by the table", **kw)


BOX = Box3D(
    center=np.array([1.0, 2.0, 3.0]),
    size=np.array([0.4, 0.3, 0.2]),
    euler=np.array([math.radians(15), 0.0, 0.0]),
)


def test_default_up_keeps_labels_above_the_box_along_world_z():
    arr = answer_markers(_result(boxes=[BOX]), "map", 0)
    assert arr.markers[0].action == Marker.DELETEALL
    (label,) = _by_ns(arr, markers.NS_LABELS)
    (text,) = _by_ns(arr, markers.NS_ANSWER)
    np.testing.assert_allclose(_xyz(label.pose.position), [1.0, 2.0, 3.0 + 0.1 + 0.1])
    np.testing.assert_allclose(_xyz(text.pose.position), [1.0, 2.0, 3.0 + 0.2 + 0.15])
    assert text.text == "the chair is by the table"


@pytest.mark.parametrize("scale", [1.0, 3.0])  # a non-unit up is normalised
def test_labels_and_text_sit_along_a_tilted_up(scale):
    arr = answer_markers(_result(boxes=[BOX]), "map", 0, up=TILTED_UP * scale)
    (label,) = _by_ns(arr, markers.NS_LABELS)
    (text,) = _by_ns(arr, markers.NS_ANSWER)
    lift = _xyz(label.pose.position) - BOX.center
    assert np.linalg.norm(np.cross(lift, TILTED_UP)) < 1e-9 and lift @ TILTED_UP > 0
    corners = markers.box_corners(BOX.center, BOX.size, BOX.euler)
    extent = float(np.max((corners - BOX.center) @ TILTED_UP))
    assert lift @ TILTED_UP == pytest.approx(extent + markers.LABEL_GAP_M)
    np.testing.assert_allclose(
        _xyz(text.pose.position),
        _xyz(label.pose.position) + markers.TEXT_GAP_M * TILTED_UP,
    )
    # the box edges stay where they are: only the annotations follow up
    (edges,) = _by_ns(arr, markers.NS_BOXES)
    assert {tuple(np.round(_xyz(p), 9)) for p in edges.points} == {
        tuple(np.round(c, 9)) for c in corners
    }


def test_text_above_a_click_point_along_up_without_boxes():
    click = np.array([0.5, -1.0, 0.7])
    arr = answer_markers(_result(click_points=[click]), "map", 0, up=TILTED_UP)
    (text,) = _by_ns(arr, markers.NS_ANSWER)
    np.testing.assert_allclose(_xyz(text.pose.position), click + markers.CLICK_GAP_M * TILTED_UP)
    (clicks,) = _by_ns(arr, markers.NS_CLICKS)
    np.testing.assert_allclose(_xyz(clicks.points[0]), click)


def test_refusal_text_at_the_camera():
    result = AnswerResult(code=ResultCode.NO_SCENE, message="no keyframes yet")
    arr = answer_markers(result, "map", 0, camera_xyz=np.array([1.0, 1.0, 1.0]), up=TILTED_UP)
    (text,) = _by_ns(arr, markers.NS_ANSWER)
    np.testing.assert_allclose(_xyz(text.pose.position), [1.0, 1.0, 1.0])
    assert text.text == "[NO_SCENE] no keyframes yet"


@pytest.mark.parametrize("bad", [np.zeros(3), np.array([np.nan, 0.0, 1.0])])
def test_a_degenerate_up_falls_back_to_world_z(bad):
    arr = answer_markers(_result(boxes=[BOX]), "map", 0, up=bad)
    (label,) = _by_ns(arr, markers.NS_LABELS)
    np.testing.assert_allclose(_xyz(label.pose.position), [1.0, 2.0, 3.2])


def test_label_text_names_the_box_with_world_centre_size_and_yaw():
    box = Box3D(
        center=np.array([-2.07, -0.24, 2.11]),
        size=np.array([0.4, 0.3, 0.2]),
        euler=np.array([math.radians(15), 0.0, 0.0]),
    )
    chair = Box3D(center=np.array([-0.001, 0.0, 1.0]), size=np.ones(3), label="chair")
    arr = answer_markers(_result(boxes=[box, chair]), "map", 0, up=TILTED_UP)
    first, second = (m.text for m in _by_ns(arr, markers.NS_LABELS))
    assert first == "object 1  c(-2.07, -0.24, 2.11) s(0.40, 0.30, 0.20) yaw 15°"
    assert second == "chair  c(0.00, 0.00, 1.00) s(1.00, 1.00, 1.00) yaw 0°"
    assert box_text(0, box) == first


@pytest.mark.parametrize(("deg", "shown"), [(190, -170), (-180, 180), (359.6, 0), (-15.4, -15)])
def test_yaw_is_shown_in_degrees_in_the_half_open_circle(deg, shown):
    box = Box3D(np.zeros(3), np.ones(3), np.array([math.radians(deg), 0.0, 0.0]))
    assert box_text(0, box).endswith(f"yaw {shown}°")


def test_up_from_alignment_is_the_aligned_z_in_the_world():
    align = np.eye(4)
    align[:3, :3] = Rotation.from_euler("xy", [25, -10], degrees=True).as_matrix()
    align[:3, 3] = [0.3, -1.0, 1.2]  # the translation does not matter
    up = up_from_alignment(align)
    assert np.linalg.norm(up) == pytest.approx(1.0)
    np.testing.assert_allclose(align[:3, :3] @ up, [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(up_from_alignment(np.eye(4)), [0.0, 0.0, 1.0])
