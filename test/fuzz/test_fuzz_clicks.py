"""Fuzz click resolution: any (u, v), depth holes and intrinsics → a world point on the ray, or GeometryError."""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from llava3d_ros.geometry.clicks import click_to_world
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.scene.buffer import FrameBuffer, UnknownFrameError
from llava3d_ros.scene.frame import Frame

from .profile import check_rejection, count, fuzz

_coord = st.one_of(
    st.floats(-50, 250, allow_nan=False),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.5, 1e18, -1e18]),
)


@st.composite
def depth_images(draw: st.DrawFn) -> np.ndarray:
    """A small depth map in metres with random holes (NaN, 0-as-NaN) and random valid values."""
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 32))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    depth = rng.uniform(0.2, 8.0, (h, w)).astype(np.float32)
    hole_fraction = draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))
    depth[rng.random((h, w)) < hole_fraction] = np.nan
    return depth


@st.composite
def intrinsics(draw: st.DrawFn, w: int, h: int) -> np.ndarray:
    if draw(st.integers(0, 9)) == 0:  # occasionally a broken K
        return np.array(draw(st.lists(st.floats(allow_nan=True), min_size=9, max_size=9))).reshape(
            3, 3
        )
    f = draw(st.floats(5.0, 500.0))
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


@fuzz
@given(data=st.data(), depth=depth_images(), u=_coord, v=_coord, window=st.integers(-1, 9))
def test_click_gives_a_point_on_the_ray_or_is_rejected(
    data: st.DataObject, depth: np.ndarray, u: float, v: float, window: int
) -> None:
    count("click → world point")
    rgb_w, rgb_h = data.draw(st.integers(1, 200)), data.draw(st.integers(1, 200))
    k_rgb = data.draw(intrinsics(rgb_w, rgb_h))
    k_depth = data.draw(intrinsics(depth.shape[1], depth.shape[0]))
    t = np.array(data.draw(st.tuples(*[st.floats(-100, 100)] * 3)))
    pose = np.eye(4)
    pose[:3, 3] = t
    try:
        p = click_to_world(u, v, depth, k_depth, k_rgb, pose, (rgb_w, rgb_h), window)
    except GeometryError as exc:
        check_rejection(exc)
        return
    assert p.shape == (3,) and np.isfinite(p).all()
    cam = p - t
    assert cam[2] > 0, "a clicked point lies in front of the camera"
    # back through K_depth then K_rgb: the colour pixel clicked (the ray is kept exactly)
    ud, vd, _ = k_depth @ (cam / cam[2])
    uc, vc, _ = k_rgb @ np.linalg.solve(k_depth, [ud, vd, 1.0])
    np.testing.assert_allclose([uc, vc], [u, v], atol=1e-3 * max(1.0, abs(u), abs(v)))
    # the depth used is one of the valid depths near the click (the median of a window)
    assert np.nanmin(depth) - 1e-4 <= cam[2] <= np.nanmax(depth) + 1e-4


@functools.cache
def _buffer() -> tuple[FrameBuffer, int]:
    """A buffer holding one 64×48 keyframe whose depth has a hole in its left half."""
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 3.0, (48, 64)).astype(np.float32)
    depth[:, :20] = np.nan
    k = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buf = FrameBuffer(capacity=2)
    fid = buf.add(Frame(rgb, depth, k, k, np.eye(4), 1_000_000_000))
    assert fid is not None
    return buf, fid


@fuzz
@given(u=_coord, v=_coord, other_id=st.integers(-5, 5), window=st.integers(-1, 9))
def test_buffer_click_gives_a_point_or_a_documented_error(
    u: float, v: float, other_id: int, window: int
) -> None:
    count("FrameBuffer.click")
    buf, fid = _buffer()
    frame_id = fid + other_id if other_id % 3 else fid
    try:
        p = buf.click(frame_id, u, v, window)
    except UnknownFrameError as exc:
        assert frame_id not in buf.frame_ids()
        check_rejection(exc)
        return
    except GeometryError as exc:
        check_rejection(exc)
        return
    assert p.shape == (3,) and np.isfinite(p).all() and 1.0 <= p[2] <= 3.0
