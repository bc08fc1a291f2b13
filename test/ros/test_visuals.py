"""The debug image (``draw_boxes``) and ``Visuals.answer``'s markers, without a ROS graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from llava3d_ros.answer import AnswerResult, Box3D, ResultCode
from llava3d_ros.guard import Guard
from llava3d_ros.ros import markers
from llava3d_ros.ros.visuals import CLICK_COLOUR, Visuals, box_colour, draw_boxes
from llava3d_ros.scene.frame import Frame

W, H = 160, 120
K = np.array([[100.0, 0.0, 79.5], [0.0, 100.0, 59.5], [0.0, 0.0, 1.0]])
CORNER = (slice(H - 14, H), slice(0, 100))  # where "not in this view" lines go (bottom left)

IN_VIEW = Box3D(center=np.array([-0.1, 0.0, 2.0]), size=np.array([0.6, 0.4, 0.4]), label="chair")
BEHIND = Box3D(center=np.array([0.0, 0.0, -2.0]), size=np.array([0.5, 0.5, 0.5]))
CLICK = np.array([0.5, 0.3, 2.0])  # → pixel (129.5, 74.5)


def _frame() -> Frame:
    """A 160×120 frame, camera at the origin looking along +z (OpenCV optical axes)."""
    u = np.linspace(60, 140, W, dtype=np.float64)[None, :]
    v = np.linspace(0, 40, H, dtype=np.float64)[:, None]
    rgb = np.stack([u + v, u + v, 0 * u + v + 90], axis=-1).astype(np.uint8)
    depth = np.full((H // 2, W // 2), 2.0, dtype=np.float32)
    return Frame(rgb, depth, K, K / [[2], [2], [1]], np.eye(4), stamp_ns=1)


def _result(boxes, clicks=()) -> AnswerResult:
    return AnswerResult(code=ResultCode.OK, text="a chair", boxes=boxes, click_points=list(clicks))


def _pixel(p: np.ndarray) -> tuple[int, int]:
    uv = K @ p / p[2]
    return int(round(uv[1])), int(round(uv[0]))  # (row, column)


def _near(img: np.ndarray, rc: tuple[int, int], colour, radius: int = 1, tol: int = 60) -> bool:
    r, c = rc
    patch = img[max(0, r - radius) : r + radius + 1, max(0, c - radius) : c + radius + 1]
    return bool((np.abs(patch.astype(int) - colour).max(axis=-1) <= tol).any())


def _save(img: np.ndarray, tmp_path: Path, name: str) -> None:
    PILImage.fromarray(img).save(tmp_path / name)
    folder = os.environ.get("LLAVA3D_PICTURES")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(img).save(Path(folder) / name)


def test_boxes_clicks_and_boxes_out_of_view(tmp_path):
    frame = _frame()
    before = frame.rgb.copy()
    img = draw_boxes(frame, _result([IN_VIEW, BEHIND], [CLICK]))
    _save(img, tmp_path, "draw_boxes.png")
    assert img.dtype == np.uint8 and img.shape == (H, W, 3)
    np.testing.assert_array_equal(frame.rgb, before)  # drawn on a copy

    # the box in view: its corners are drawn in its colour, its name just above its top
    colour = box_colour(0)
    for corner in markers.box_corners(IN_VIEW.center, IN_VIEW.size, IN_VIEW.euler):
        assert _near(img, _pixel(corner), colour), corner
    top = min(_pixel(c)[0] for c in markers.box_corners(IN_VIEW.center, IN_VIEW.size))
    above = img[top - 12 : top, 50:110].astype(int)
    reddish = (above[..., 0] > 150) & (above[..., 1] < 110) & (above[..., 2] < 110)
    assert reddish.sum() >= 10  # "chair" in red over a darkened band

    # the click point: circle and crosshair in magenta around its pixel
    row, col = _pixel(CLICK)
    assert _near(img, (row, col), CLICK_COLOUR, radius=0)
    assert _near(img, (row, col + 7), CLICK_COLOUR) and _near(img, (row - 7, col), CLICK_COLOUR)

    # the box behind the camera is listed in the corner, and drawn nowhere else
    assert (img[CORNER] != before[CORNER]).any(axis=-1).sum() > 30
    only_in_view = draw_boxes(frame, _result([IN_VIEW], [CLICK]))
    np.testing.assert_array_equal(only_in_view[CORNER], before[CORNER])
    changed = (img != only_in_view).any(axis=-1)
    assert changed[CORNER].sum() == changed.sum()


def test_the_corner_list_names_what_is_not_in_view():
    frame = _frame()
    outside = Box3D(center=np.array([5.0, 0.0, 2.0]), size=np.full(3, 0.3))  # in front, off-image
    one = draw_boxes(frame, _result([outside]))
    two = draw_boxes(frame, _result([outside, BEHIND], [np.array([0.0, 0.0, -1.0])]))
    rows_one = np.flatnonzero((one != frame.rgb).any(axis=(1, 2)))
    rows_two = np.flatnonzero((two != frame.rgb).any(axis=(1, 2)))
    assert rows_one.min() >= H - 14 and rows_one.max() < H  # one line in the corner
    assert H - 45 < rows_two.min() < rows_one.min() - 20  # three lines stack upwards
    assert (two[:, 100:] == frame.rgb[:, 100:]).all()  # and stay in the left corner


def test_a_box_across_the_camera_plane_is_clipped_not_dropped():
    frame = _frame()
    across = Box3D(center=np.array([0.0, 0.3, 0.5]), size=np.array([0.4, 0.2, 2.0]))  # z −0.5…1.5
    img = draw_boxes(frame, _result([across]))
    changed = (img != frame.rgb).any(axis=-1)
    assert changed[: H - 14].sum() > 50  # edges drawn in the picture
    assert _near(img, _pixel(np.array([0.2, 0.4, 1.5])), box_colour(0))  # a far corner


def test_no_result_gives_the_plain_image():
    frame = _frame()
    img = draw_boxes(frame, None)
    np.testing.assert_array_equal(img, frame.rgb)
    assert img is not frame.rgb


class _Pub:
    def __init__(self) -> None:
        self.sent: list = []

    def publish(self, msg) -> None:
        self.sent.append(msg)


class _Node:
    def __init__(self) -> None:
        self.pubs: dict[str, _Pub] = {}

    def create_publisher(self, _type, topic, _qos):
        self.pubs[topic] = _Pub()
        return self.pubs[topic]

    def destroy_publisher(self, _pub) -> None:
        pass


class _Logger:
    def __getattr__(self, _level):
        return lambda *_a, **_k: None


@pytest.mark.parametrize("with_up", [False, True])
def test_visuals_answer_passes_up_to_the_markers(with_up):
    node = _Node()
    guard = Guard(_Logger())
    vis = Visuals(node, "map", guard, debug_image=True, scene_points=False)
    up = np.array([0.0, -1.0, 0.0])
    frame = _frame()
    result = _result([IN_VIEW], [CLICK])
    if with_up:
        vis.answer(result, 5, frame, up=up)
    else:
        vis.answer(result, 5, frame)  # the old call still works: world +z
    assert not guard.failures
    (arr,) = node.pubs["~/markers"].sent
    (label,) = [m for m in arr.markers if m.ns == markers.NS_LABELS]
    lift = np.array([label.pose.position.x, label.pose.position.y, label.pose.position.z])
    lift -= IN_VIEW.center
    direction = up if with_up else np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(lift / np.linalg.norm(lift), direction, atol=1e-12)
    (image,) = node.pubs["~/debug_image"].sent
    assert (image.width, image.height, image.encoding) == (W, H, "rgb8")
