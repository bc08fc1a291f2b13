"""FrameBuffer on synthetic frames: bounds, eviction, pose updates, focus, provenance, rigidity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

import llava3d_ros.scene.buffer as buffer_mod
from llava3d_ros.scene.buffer import FrameBuffer, FrameOrderError, UnknownFrameError
from llava3d_ros.scene.frame import Frame

K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])
S = 1_000_000_000


def pose(x: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """A camera at (x, 0, 1) looking horizontally, turned ``yaw`` about the world z axis."""
    m = np.eye(4)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    m[:3, :3] = np.c_[right, [0.0, 0.0, -1.0], forward]
    m[:3, 3] = [x, 0.0, 1.0]
    return m


def frame(stamp: int, cam_to_world: np.ndarray, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    depth = rng.uniform(1.0, 3.0, (48, 64)).astype(np.float32)
    return Frame(rgb, depth, K, K, cam_to_world, stamp)


def test_capacity_eviction_keeps_newest_and_reports() -> None:
    evicted: list[int] = []
    buf = FrameBuffer(capacity=3, on_evict=evicted.append)
    # x = 0, 1, 1.05 (a near-duplicate of 1), 3, 5: the redundant pair goes first
    ids = [buf.add(frame((i + 1) * S, pose(x))) for i, x in enumerate([0.0, 1.0, 1.15, 3.0, 5.0])]
    assert None not in ids and len(buf) == 3
    assert len(evicted) == 2 and ids[-1] in buf.frame_ids()
    assert ids[1] in evicted or ids[2] in evicted
    assert sorted(buf.frame_ids() + evicted) == sorted(ids)
    with pytest.raises(UnknownFrameError):
        buf.keyframe(evicted[0])


def test_byte_bound() -> None:
    one = FrameBuffer()
    one.add(frame(S, pose()))
    per_frame = one.nbytes
    assert per_frame > 48 * 64 * 3 + 336 * 336 * 3
    buf = FrameBuffer(capacity=100, max_bytes=int(2.5 * per_frame))
    for i in range(6):
        buf.add(frame((i + 1) * S, pose(float(i))))
        assert buf.nbytes <= 2.5 * per_frame
    assert len(buf) == 2 and buf.nbytes == 2 * per_frame
    with pytest.raises(ValueError):
        FrameBuffer(capacity=0)


def test_keyframe_novelty_and_interval() -> None:
    buf = FrameBuffer(min_translation=0.1, min_rotation_deg=10, max_interval_s=5)
    assert buf.add(frame(1 * S, pose(0.0))) == 0
    assert buf.add(frame(2 * S, pose(0.05))) is None  # too close
    assert buf.add(frame(3 * S, pose(0.0, np.deg2rad(5)))) is None  # turned too little
    assert buf.add(frame(4 * S, pose(0.0, np.deg2rad(15)))) == 1  # turned enough
    assert buf.add(frame(9 * S, pose(0.0, np.deg2rad(15)))) == 2  # 5 s passed


def test_update_pose_moves_positions_without_re_preparing(monkeypatch) -> None:
    calls = []
    real = buffer_mod.resize_crop_rgb
    monkeypatch.setattr(buffer_mod, "resize_crop_rgb", lambda *a: calls.append(1) or real(*a))
    buf = FrameBuffer(min_translation=0.0, min_rotation_deg=0.0)
    a = buf.add(frame(1 * S, pose(0.0)))
    buf.add(frame(2 * S, pose(1.0)))
    assert len(calls) == 2
    before = {v.frame_id: v for v in buf.views(2).views}
    corrected = pose(0.0)
    corrected[:3, 3] += [0.25, -0.5, 0.125]  # a SLAM loop closure shifting frame a
    assert buf.update_pose(1 * S, corrected)
    assert not buf.update_pose(7 * S, corrected)  # no keyframe has that stamp
    after = {v.frame_id: v for v in buf.views(2).views}
    assert len(calls) == 2  # no image was prepared again
    assert after[a].image is before[a].image
    np.testing.assert_allclose(
        after[a].patch_xyz - before[a].patch_xyz,
        np.broadcast_to([0.25, -0.5, 0.125], (24, 24, 3)),
        atol=1e-6,
    )
    np.testing.assert_array_equal(after[1].patch_xyz, before[1].patch_xyz)


def test_focus_points_bias_view_selection() -> None:
    buf = FrameBuffer(min_translation=0.0, min_rotation_deg=0.0)
    yaws = [0.0, np.pi / 2, np.pi, 3 * np.pi / 2]  # four cameras at one spot, facing +x, +y, ...
    ids = [buf.add(frame((i + 1) * S, pose(0.0, y))) for i, y in enumerate(yaws)]
    assert buf.select(1) == [ids[-1]]  # no focus: the newest
    assert buf.select(1, focus_points=np.array([[0.0, 3.0, 1.0]])) == [ids[1]]  # seen facing +y
    assert buf.select(1, focus_points=np.array([[-3.0, 0.2, 1.0]])) == [ids[2]]
    two = buf.select(2, focus_points=np.array([[3.0, 0.0, 1.0]]))
    assert ids[0] in two and len(two) == 2


def test_select_takes_every_keyframe_without_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """At least as many views as keyframes: all of them, in order, no pose distances needed."""
    buf = FrameBuffer(min_translation=0.0, min_rotation_deg=0.0)
    ids = [buf.add(frame((i + 1) * S, pose(0.3 * i, 0.4 * i))) for i in range(5)]
    focus = np.array([[3.0, 0.0, 1.0]])
    assert len(set(buf.select(4, focus_points=focus))) == 4  # fewer: sampled as before

    def no_distances(*args: object) -> float:
        raise AssertionError("pose distances computed")

    monkeypatch.setattr(buffer_mod, "_pose_distance", no_distances)
    for n in (5, 6, 50):
        assert buf.select(n) == ids
        assert buf.select(n, focus_points=focus) == ids
        assert [v.frame_id for v in buf.views(n).views] == ids
    with pytest.raises(ValueError, match="reshape"):
        buf.select(5, focus_points=np.zeros(4))  # not (P, 3): rejected as before


def test_staleness_and_provenance() -> None:
    buf = FrameBuffer(min_translation=0.5)
    buf.add(frame(1 * S, pose(0.0)))
    buf.add(frame(2 * S, pose(1.0)))
    assert buf.add(frame(2 * S + S // 10, pose(1.01))) is None  # received, not kept
    sv = buf.views(5)
    assert sv.stamps_ns == [1 * S, 2 * S]
    assert sv.latest_stamp_ns == 2 * S + S // 10 and sv.staleness_ns == S // 10
    assert [v.stamp_ns for v in sv.views] == sv.stamps_ns


def _rotation(q: list[float]) -> np.ndarray:
    return Rotation.from_quat(q).as_matrix()


quats = st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 0.1)


@settings(max_examples=25, deadline=None)
@given(q=quats, t=st.lists(st.floats(-10, 10), min_size=3, max_size=3))
def test_rigid_motion_of_the_rig_moves_every_patch(q: list[float], t: list[float]) -> None:
    motion = np.eye(4)
    motion[:3, :3] = _rotation(q)
    motion[:3, 3] = t
    rig = [pose(0.0), pose(0.7, 0.4), pose(-0.5, 2.0)]
    views = []
    for poses in (rig, [motion @ p for p in rig]):
        buf = FrameBuffer(min_translation=0.0, min_rotation_deg=0.0)
        for i, p in enumerate(poses):
            buf.add(frame((i + 1) * S, p, seed=i))
        views.append(buf.views(3).views)
    for a, b in zip(*views, strict=True):
        assert np.array_equal(a.patch_valid, b.patch_valid)
        moved = a.patch_xyz.astype(np.float64) @ motion[:3, :3].T + motion[:3, 3]
        np.testing.assert_allclose(b.patch_xyz, moved, atol=2e-5 * (1 + np.abs(t).max()))
        np.testing.assert_allclose(b.cam_to_world, motion @ a.cam_to_world, atol=1e-9)


def test_would_keep_agrees_with_add_and_skip_keeps_order() -> None:
    """The image-free keyframe check predicts add(); skip() records stamps like a dropped add."""
    offers = [
        (1, pose(0.0)),
        (2, pose(0.05)),
        (3, pose(0.0, np.deg2rad(5))),
        (4, pose(0.0, np.deg2rad(15))),
        (9, pose(0.0, np.deg2rad(15))),
        (10, pose(0.3)),
    ]
    buf = FrameBuffer(min_translation=0.1, min_rotation_deg=10, max_interval_s=5)
    skipping = FrameBuffer(min_translation=0.1, min_rotation_deg=10, max_interval_s=5)
    for stamp, p in offers:
        predicted = buf.would_keep(stamp * S, p)
        assert predicted == (buf.add(frame(stamp * S, p)) is not None)
        if skipping.would_keep(stamp * S, p):
            skipping.add(frame(stamp * S, p))
        else:
            skipping.skip(stamp * S)
    assert [kf.frame.stamp_ns for kf in map(buf.keyframe, buf.frame_ids())] == [
        kf.frame.stamp_ns for kf in map(skipping.keyframe, skipping.frame_ids())
    ]
    assert skipping.views().latest_stamp_ns == 10 * S
    for b in (buf, skipping):
        with pytest.raises(FrameOrderError, match="duplicate"):
            b.would_keep(10 * S, pose(5.0))
        with pytest.raises(FrameOrderError, match="out-of-order"):
            b.skip(9 * S)


def test_reset_and_restart_timeline_after_time_runs_back() -> None:
    evicted: list[int] = []
    buf = FrameBuffer(on_evict=evicted.append)
    ids = [buf.add(frame(int(1e9) * (i + 1), pose(x=0.5 * i))) for i in range(3)]
    with pytest.raises(FrameOrderError):
        buf.add(frame(1, pose(x=5.0)))
    buf.restart_timeline()  # keep: older stamps are accepted, the keyframes stay
    assert buf.add(frame(1, pose(x=5.0))) is not None and len(buf) == 4
    assert buf.reset() == 4 and len(buf) == 0
    assert sorted(evicted) == [*ids, ids[-1] + 1], "a feature cache hears of every drop"
    assert buf.add(frame(0, pose())) == ids[-1] + 2, "ids never repeat"
