"""Clicks placed beyond keyframes: any recent image (held or rendered), any TF-connected frame."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geometry.realdata import seven_frame  # noqa: E402

from llava3d_ros.answer import QueryError  # noqa: E402
from llava3d_ros.geometry.clicks import click_to_world  # noqa: E402
from llava3d_ros.query.clicks import CameraView, ClickResolver  # noqa: E402
from llava3d_ros.query.request import PixelClick, PointClick  # noqa: E402
from llava3d_ros.scene.buffer import FrameBuffer  # noqa: E402
from llava3d_ros.scene.frame import Frame  # noqa: E402
from llava3d_ros.scene.transforms import TransformBuffer  # noqa: E402

KEYFRAMES = (150, 156, 162, 168, 174)
HELD_OUT = 160


class Images:
    """An ImageLookup that knows one camera at one stamp (or nothing)."""

    def __init__(self, views: dict[int, CameraView]) -> None:
        self.views = views
        self.asked: list[tuple[str, int]] = []

    def camera_at(self, camera_frame: str, stamp_ns: int) -> CameraView | str:
        self.asked.append((camera_frame, stamp_ns))
        return self.views.get(stamp_ns, "no camera pose at that stamp (test)")


def _buffer() -> FrameBuffer:
    buf = FrameBuffer(min_translation=0.0, min_rotation_deg=0.0)
    for i, n in enumerate(KEYFRAMES):
        rgb, depth, pose, k = seven_frame(n)
        assert buf.add(Frame.from_raw(rgb, depth, k, pose, (i + 1) * 1000)) is not None
    return buf


def _truth(n: int, u: float, v: float) -> np.ndarray:
    """Where the frame's own depth puts pixel (u, v)."""
    rgb, depth, pose, k = seven_frame(n)
    f = Frame.from_raw(rgb, depth, k, pose, 1)
    return click_to_world(u, v, f.depth, f.k_depth, f.k_rgb, f.cam_to_world, (640, 480))


def test_click_on_a_frame_that_never_became_a_keyframe_lands_on_the_surface() -> None:
    buf = _buffer()
    rgb, depth, pose, k = seven_frame(HELD_OUT)
    stamp = 5_500
    images = Images({stamp: CameraView(pose, k, (640, 480))})  # pose + calibration, no depth
    resolver = ClickResolver(buf, "map", images)
    errors = []
    for u, v in [(320.0, 240.0), *[(u, v) for u in (120.0, 320.0, 520.0) for v in (100.0, 380.0)]]:
        got = resolver.resolve(0, PixelClick(u, v, stamp))
        errors.append(np.linalg.norm(got - _truth(HELD_OUT, u, v)))
    print(
        f"rendered-click error vs the frame's own depth: centre {errors[0] * 100:.1f} cm, "
        f"max over 7 clicks {max(errors) * 100:.1f} cm"
    )
    assert errors[0] < 0.03
    assert np.median(errors) < 0.03
    assert images.asked == [("", stamp)] * 7


def test_click_on_a_held_frame_uses_its_own_depth_exactly() -> None:
    buf = _buffer()
    rgb, depth, pose, k = seven_frame(HELD_OUT)
    f = Frame.from_raw(rgb, depth, k, pose, 1)
    view = CameraView(pose, k, (640, 480), f.depth, f.k_depth)
    got = ClickResolver(buf, "map", Images({7: view})).resolve(0, PixelClick(320.0, 240.0, 7))
    np.testing.assert_allclose(got, _truth(HELD_OUT, 320.0, 240.0), atol=1e-9)


def test_click_with_no_pose_at_its_stamp_is_a_bad_request_saying_why() -> None:
    buf = _buffer()
    with pytest.raises(QueryError) as err:
        ClickResolver(buf, "map", Images({})).resolve(2, PixelClick(10.0, 10.0, 123))
    assert "click 2" in err.value.message and "no camera pose at that stamp" in err.value.message
    assert "nearest keyframes" in err.value.message
    with pytest.raises(QueryError, match="keeps no images"):
        ClickResolver(buf, "map").resolve(0, PixelClick(10.0, 10.0, 123))


def test_click_where_no_keyframe_saw_anything_is_a_bad_request() -> None:
    buf = _buffer()
    _, _, pose, k = seven_frame(HELD_OUT)
    away = pose.copy()
    away[:3, :3] = away[:3, :3] @ Rotation.from_euler("y", 180, degrees=True).as_matrix()
    resolver = ClickResolver(buf, "map", Images({9: CameraView(away, k, (640, 480))}))
    with pytest.raises(QueryError, match="no keyframe saw the surface"):
        resolver.resolve(0, PixelClick(320.0, 240.0, 9))
    with pytest.raises(QueryError, match="outside the 640x480"):
        resolver.resolve(0, PixelClick(640.0, 240.0, 9))


def test_keyframe_clicks_are_unchanged_and_stamp_zero_is_the_newest() -> None:
    buf = _buffer()
    resolver = ClickResolver(buf, "map")
    newest = buf.frame_ids()[-1]
    np.testing.assert_allclose(
        resolver.resolve(0, PixelClick(300.0, 200.0, 0)), buf.click(newest, 300.0, 200.0)
    )
    np.testing.assert_allclose(
        resolver.resolve(0, PixelClick(300.0, 200.0, 2000)),
        buf.click(buf.frame_ids()[1], 300.0, 200.0),
    )


def _tf() -> TransformBuffer:
    tf = TransformBuffer()
    tf.set_transform(
        "map", "odom", 0, [1.0, 2.0, 0.0], [0, 0, np.sin(0.2), np.cos(0.2)], static=True
    )
    for t, x in ((0, 0.0), (1_000_000_000, 1.0)):
        tf.set_transform("odom", "base_link", t, [x, 0.0, 0.0], [0, 0, 0, 1])
    return tf


def test_point_click_in_base_link_lands_on_its_map_point() -> None:
    buf = _buffer()
    tf = _tf()
    resolver = ClickResolver(buf, "map", transforms=tf)
    got = resolver.resolve(0, PointClick(np.array([0.5, 0.0, 0.2]), "base_link", 500_000_000))
    yaw = Rotation.from_euler("z", 0.4)
    want = yaw.apply([0.5 + 0.5, 0.0, 0.2]) + [1.0, 2.0, 0.0]  # base_link at x=0.5 in odom
    np.testing.assert_allclose(got, want, atol=1e-9)
    with pytest.raises(QueryError, match="no transform from 'nowhere'"):
        resolver.resolve(0, PointClick(np.zeros(3), "nowhere", 0))
    with pytest.raises(QueryError, match="no TF"):
        ClickResolver(buf, "map").resolve(0, PointClick(np.zeros(3), "base_link", 0))
