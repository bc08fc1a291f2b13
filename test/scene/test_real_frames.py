"""Real 7-Scenes / TUM frames: multi-view consistency, clicks, depth units."""

from __future__ import annotations

import numpy as np
import pytest
from geometry.realdata import TUM, need, seven_frame
from PIL import Image
from scipy.spatial import cKDTree

from llava3d_ros.geometry.depth import TUM_SCALE, decode_depth
from llava3d_ros.geometry.errors import GeometryError, NoValidDepthError
from llava3d_ros.geometry.unproject import pose_from_tum, unproject_pixels
from llava3d_ros.scene.buffer import FrameBuffer, FrameOrderError
from llava3d_ros.scene.frame import Frame


def _frame(n: int, stamp: int) -> Frame:
    rgb, depth, pose, k = seven_frame(n)
    return Frame.from_raw(rgb, depth, k, pose, stamp)


def _cloud(f: Frame) -> np.ndarray:
    v, u = np.nonzero(np.isfinite(f.depth))
    return unproject_pixels(u, v, f.depth[v, u], f.k_depth, f.cam_to_world)


def test_two_7scenes_frames_see_same_surface_within_2cm() -> None:
    buf = FrameBuffer(mode="robust", min_translation=0.0, min_rotation_deg=0.0)
    a, b = buf.add(_frame(150, 1)), buf.add(_frame(170, 2))
    views = {v.frame_id: v for v in buf.views(2).views}
    tree = cKDTree(_cloud(buf.keyframe(b).frame))
    pa = views[a].patch_xyz[views[a].patch_valid]
    d, _ = tree.query(pa)
    overlap = d < 0.10
    assert overlap.mean() > 0.3
    assert np.median(d[overlap]) < 0.02
    # with the wrong pose the same check fails (the test can see a bad pose)
    buf.update_pose(1, buf.keyframe(b).frame.cam_to_world)
    moved = buf.views(2).views
    pa2 = next(v for v in moved if v.frame_id == a)
    d2, _ = tree.query(pa2.patch_xyz[pa2.patch_valid])
    assert np.median(d2[d2 < 0.10]) > np.median(d[overlap]) * 2 or (d2 < 0.10).mean() < 0.3


def test_click_lands_on_surface_another_frame_sees() -> None:
    buf = FrameBuffer(min_translation=0.0, min_rotation_deg=0.0)
    a, b = buf.add(_frame(150, 1)), buf.add(_frame(160, 2))
    rgb = buf.keyframe(a).frame.rgb.astype(float).mean(axis=2)
    # the most textured pixel (largest local gradient) in the central region
    gy, gx = np.gradient(rgb)
    mag = np.hypot(gx, gy)[180:300, 240:400]
    v, u = np.unravel_index(np.argmax(mag), mag.shape)
    p = buf.click(a, float(u + 240), float(v + 180))
    assert b in buf.project(p)
    tree = cKDTree(_cloud(buf.keyframe(b).frame))
    dist, _ = tree.query(p)
    assert dist < 0.03


def test_click_in_hole_raises() -> None:
    f = _frame(150, 1)
    f.depth[200:260, 300:360] = np.nan
    buf = FrameBuffer()
    fid = buf.add(f)
    with pytest.raises(NoValidDepthError):
        buf.click(fid, 330.0, 230.0, window=7)
    buf.click(fid, 330.0, 230.0, window=81)  # a wider window reaches valid depth


def test_depth_units_tum_and_7scenes() -> None:
    root = need(TUM)
    raw = np.asarray(Image.open(root / "case_1" / "dep_prev.png"))
    assert raw.dtype == np.uint16
    m = decode_depth(raw, TUM_SCALE)
    med = float(np.nanmedian(m))
    assert 0.4 < med < 4.0  # an office desk scene at Kinect range
    np.testing.assert_allclose(m[raw > 0], raw[raw > 0] / 5000.0, rtol=1e-6)
    assert np.isnan(m[raw == 0]).all()
    _, d7, _, _ = seven_frame(150)
    m7 = decode_depth(d7, 1000.0)
    assert 0.4 < float(np.nanmedian(m7)) < 4.0
    assert np.isnan(m7[(d7 == 0) | (d7 == 65535)]).all()


def test_tum_pairs_agree() -> None:
    root = need(TUM)
    k = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    frames = []
    for i, name in enumerate(("prev", "curr")):
        rgb = np.asarray(Image.open(root / "case_1" / f"img_{name}.png").convert("RGB"))
        dep = np.asarray(Image.open(root / "case_1" / f"dep_{name}.png"))
        pose = pose_from_tum(*np.loadtxt(root / "case_1" / f"pose_{name}.txt").reshape(-1)[:7])
        frames.append(Frame.from_raw(rgb, dep, k, pose, i + 1, depth_scale=TUM_SCALE))
    tree = cKDTree(_cloud(frames[1]))
    d, _ = tree.query(_cloud(frames[0])[::50])
    assert np.median(d) < 0.02


def test_stream_order_and_bad_frames() -> None:
    buf = FrameBuffer()
    buf.add(_frame(150, 10))
    with pytest.raises(FrameOrderError, match="duplicate"):
        buf.add(_frame(152, 10))
    with pytest.raises(FrameOrderError, match="out-of-order"):
        buf.add(_frame(152, 5))
    rgb, depth, pose, k = seven_frame(150)
    with pytest.raises(NoValidDepthError):
        buf.add(Frame.from_raw(rgb, np.zeros_like(depth), k, pose, 20))
    bad = pose.copy()
    bad[0, 3] = np.nan
    with pytest.raises(GeometryError):
        Frame.from_raw(rgb, depth, k, bad, 30)
    with pytest.raises(GeometryError):
        Frame.from_raw(rgb, depth, np.zeros((3, 3)), pose, 30)
    with pytest.raises(GeometryError):
        Frame.from_raw(rgb, depth.astype(np.int32), k, pose, 30)
    with pytest.raises(GeometryError):
        Frame.from_raw(rgb[:100], depth, k, pose, 30)
