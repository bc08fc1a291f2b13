"""The approximate-time synchroniser and the pose-at-stamp history."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from llava3d_ros.scene.sync import FrameSynchronizer, PoseHistory

MS = 1_000_000


def pose(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    m[0, 3] = x
    return m


def test_pose_interpolated_between_neighbours():
    h = PoseHistory()
    h.add(0, pose(0.0, 0.0))
    h.add(40 * MS, pose(4.0, 40.0))
    status, (mat, dt) = h.at(10 * MS, 50 * MS)
    assert status == "ok" and dt == 0
    assert mat[0, 3] == pytest.approx(1.0)
    yaw = Rotation.from_matrix(mat[:3, :3]).as_euler("zyx", degrees=True)[0]
    assert yaw == pytest.approx(10.0)


def test_pose_never_latest_only_at_stamp():
    h = PoseHistory()
    h.add(0, pose(0.0))
    h.add(1000 * MS, pose(9.0))
    # halfway and far from both: fails instead of taking the latest
    status, reason = h.at(500 * MS, 50 * MS, final=True)
    assert status == "fail" and "no pose within 50 ms" in reason
    # just after the newest pose: waits for a later pose, unless final
    assert h.at(1010 * MS, 50 * MS)[0] == "wait"
    status, (mat, dt) = h.at(1010 * MS, 50 * MS, final=True)
    assert status == "ok" and dt == -10 * MS and mat[0, 3] == 9.0
    # nearest within tolerance when the other neighbour is too far
    status, (mat, dt) = h.at(20 * MS, 50 * MS)
    assert status == "ok" and dt == -20 * MS and mat[0, 3] == 0.0


def test_pose_history_out_of_order_duplicate_and_reset():
    h = PoseHistory()
    assert h.add(100 * MS, pose(1)) == "ok"
    assert h.add(50 * MS, pose(0.5)) == "out_of_order"
    assert h.add(100 * MS, pose(7)) == "duplicate"
    assert h.at(100 * MS, 0)[1][0][0, 3] == 1.0  # duplicate did not overwrite
    assert h.at(75 * MS, 30 * MS)[1][0][0, 3] == pytest.approx(0.75)  # sorted despite order
    assert h.add(100 * MS - 5_000 * MS, pose(3)) == "reset"  # a looping bag
    assert len(h) == 1 and h.resets == 1


@settings(max_examples=50, deadline=None)
@given(
    t0=st.integers(0, 10**12),
    period=st.integers(5 * MS, 100 * MS),
    frac=st.floats(0.0, 1.0),
)
def test_interpolation_is_linear_in_translation(t0, period, frac):
    h = PoseHistory()
    h.add(t0, pose(0.0))
    h.add(t0 + period, pose(1.0))
    stamp = t0 + int(frac * period)
    status, (mat, _) = h.at(stamp, period)
    assert status == "ok"
    assert mat[0, 3] == pytest.approx((stamp - t0) / period, abs=1e-9)


def sync(**kw) -> FrameSynchronizer:
    args = dict(slop_ns=10 * MS, pose_tolerance_ns=50 * MS, queue_size=5, pose_wait_ns=200 * MS)
    args.update(kw)
    return FrameSynchronizer(**args)


def test_matches_within_slop_in_any_arrival_order():
    s = sync()
    assert s.add_pose(80 * MS, pose(0.8)) == []
    assert s.add_color(100 * MS, "c1") == []
    assert s.add_color_info(100 * MS, "i1") == []
    assert s.add_pose(120 * MS, pose(1.2)) == []
    out = s.add_depth(105 * MS, "d1")
    assert len(out) == 1
    f = out[0]
    assert (f.stamp_ns, f.color, f.depth, f.color_info) == (100 * MS, "c1", "d1", "i1")
    assert f.cam_to_world[0, 3] == pytest.approx(1.0)  # interpolated at the colour stamp


def test_frame_between_distant_poses_is_dropped_not_given_latest():
    s = sync()
    s.add_pose(0, pose(0))
    s.add_pose(200 * MS, pose(2))
    s.add_color_info(100 * MS, "i")
    s.add_depth(100 * MS, "d")
    assert s.add_color(100 * MS, "c") == []
    assert s.drops["no pose at the image stamp"] == 1


def test_pose_arriving_after_the_image_completes_the_frame():
    s = sync()
    s.add_color_info(0, "info")
    s.add_pose(90 * MS, pose(0.9))
    assert s.add_depth(100 * MS, "d") == []
    assert s.add_color(100 * MS, "c") == []  # waits for a pose after 100 ms
    out = s.add_pose(110 * MS, pose(1.1))
    assert len(out) == 1 and out[0].cam_to_world[0, 3] == pytest.approx(1.0)
    assert out[0].pose_dt_ns == 0


def test_depth_outside_slop_drops_colour():
    s = sync()
    s.add_color_info(0, "info")
    s.add_color(100 * MS, "c")
    assert s.add_depth(150 * MS, "d") == []
    assert s.drops["no depth within slop"] == 1
    assert s.waiting()["color"] == 0


def test_missing_camera_info_holds_frames_until_queue_overflow():
    s = sync(queue_size=2)
    s.add_pose(0, pose(0))
    for i in range(4):
        s.add_depth(i * 30 * MS, f"d{i}")
        assert s.add_color(i * 30 * MS, f"c{i}") == []
    assert s.drops["no rgb/camera_info received"] == 2
    assert s.emitted == 0


def test_duplicate_and_old_stamps_are_dropped():
    s = sync()
    s.add_color_info(0, "info")
    s.add_pose(100 * MS, pose(1))
    s.add_depth(100 * MS, "d")
    assert len(s.add_color(100 * MS, "c")) == 1
    s.add_depth(101 * MS, "d2")
    assert s.add_depth(101 * MS, "d2-again") == []
    assert s.drops["duplicate depth stamp"] == 1
    assert s.add_color(100 * MS, "c-again") == []  # matches d2 but is not newer than the last frame
    assert s.drops["colour stamp not newer than the last frame"] == 1


def test_pose_absent_frames_fail_after_pose_wait():
    s = sync(pose_wait_ns=100 * MS)
    s.add_color_info(0, "info")
    out = []
    for i in range(5):
        s.add_depth(i * 60 * MS, "d")
        out += s.add_color(i * 60 * MS, "c")
    assert out == []
    assert s.drops["no pose at the image stamp"] >= 2
    assert "no pose received yet" in s.last_drop


def test_bad_settings():
    with pytest.raises(ValueError):
        FrameSynchronizer(-1, 0)
    with pytest.raises(ValueError):
        FrameSynchronizer(0, 0, queue_size=0)


def _frame(s: FrameSynchronizer, t_ns: int, x: float) -> list:
    s.add_pose(t_ns, pose(x))
    s.add_depth(t_ns, f"d{t_ns}")
    out = s.add_color(t_ns, f"c{t_ns}")
    return out + s.add_pose(t_ns + 10 * MS, pose(x))


def test_time_jump_back_starts_a_new_time_line_and_says_so():
    """A replay restarted: told once (at the second message), calibration kept, frames matched."""
    jumps: list[tuple[int, int]] = []
    s = sync(on_time_jump=lambda old, new: jumps.append((old, new)))
    s.add_color_info(0, "info")  # latched once, never again
    first = [f for i in range(1, 6) for f in _frame(s, i * 1000 * MS, i)]
    assert [f.epoch for f in first] == [0] * 5
    again = [f for i in range(1, 6) for f in _frame(s, i * 1000 * MS, i)]
    assert jumps == [(5010 * MS, 1000 * MS)], "the restart is reported once, with both stamps"
    # the first frame of the new time line came before the restart was sure: dropped (and said)
    assert s.drops["colour stamp not newer than the last frame"] == 1
    assert s.epoch == 1 and len(again) == 4 and {f.epoch for f in again} == {1}
    assert all(f.color_info == "info" for f in again), "calibration survives the new time line"
    assert s.drops["pose duplicate"] <= 1  # the same: the first pose of the new time line


def test_one_stray_old_message_is_no_time_jump():
    jumps: list[tuple[int, int]] = []
    s = sync(on_time_jump=lambda old, new: jumps.append((old, new)))
    s.add_color_info(0, "info")
    for i in range(1, 4):
        _frame(s, i * 1000 * MS, i)
    s.add_pose(1000 * MS, pose(9.0))  # a late copy of an old pose
    assert len(_frame(s, 4000 * MS, 4.0)) == 1
    assert jumps == [] and s.epoch == 0


def test_small_steps_back_are_drops_not_time_jumps():
    jumps: list[tuple[int, int]] = []
    s = sync(on_time_jump=lambda old, new: jumps.append((old, new)), time_jump_ns=1000 * MS)
    s.add_color_info(0, "info")
    assert len(_frame(s, 2000 * MS, 1.0)) == 1
    assert _frame(s, 1500 * MS, 2.0) == []  # 0.5 s back: below the threshold
    assert jumps == [] and s.epoch == 0
    assert s.drops["colour stamp not newer than the last frame"] == 1


def test_camera_info_stamps_never_start_a_time_line():
    jumps: list[tuple[int, int]] = []
    s = sync(on_time_jump=lambda old, new: jumps.append((old, new)))
    assert len(_frame(s, 9000 * MS, 1.0)) == 0  # no info yet: held
    s.add_color_info(0, "info stamped 0 by its driver")
    assert len(_frame(s, 9500 * MS, 1.5)) >= 1
    assert jumps == []
