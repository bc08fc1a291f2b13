"""TransformBuffer: tf2 semantics (chains, interpolation, latest common time, errors, threads)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation, Slerp

from llava3d_ros.scene.transforms import TransformBuffer, TransformError

S = 1_000_000_000
MS = 1_000_000


def mat(t, rot: Rotation) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot.as_matrix()
    m[:3, 3] = t
    return m


def put(buf: TransformBuffer, parent, child, stamp, t, rot: Rotation, static=False) -> None:
    buf.set_transform(parent, child, stamp, np.asarray(t, float), rot.as_quat(), static=static)


# The robot: map→odom (dynamic, slow corrections), odom→base_link (dynamic, odometry),
# base_link→camera_link and camera_link→camera_optical (static mounts).
MAP_ODOM = ([1.0, -2.0, 0.0], Rotation.from_euler("z", 30, degrees=True))
BASE_CAM = ([0.2, 0.0, 1.1], Rotation.from_euler("y", 10, degrees=True))
CAM_OPT = ([0.0, 0.0, 0.0], Rotation.from_euler("zx", [-90, -90], degrees=True))


def odom_base(stamp_ns: int) -> tuple[list[float], Rotation]:
    s = stamp_ns / S
    return [0.5 * s, 0.1 * s * s, 0.0], Rotation.from_euler("z", 20 * s, degrees=True)


def robot(stamps=(1 * S, 2 * S, 3 * S), **kw) -> TransformBuffer:
    buf = TransformBuffer(**kw)
    put(buf, "base_link", "camera_link", 0, *BASE_CAM, static=True)
    put(buf, "camera_link", "camera_optical", 0, *CAM_OPT, static=True)
    put(buf, "map", "odom", 0, *MAP_ODOM, static=True)
    for s in stamps:
        put(buf, "odom", "base_link", s, *odom_base(s))
    return buf


def test_static_only_chain_composes():
    buf = TransformBuffer()
    put(buf, "base_link", "camera_link", 0, *BASE_CAM, static=True)
    put(buf, "camera_link", "camera_optical", 0, *CAM_OPT, static=True)
    expected = mat(*BASE_CAM) @ mat(*CAM_OPT)
    got = buf.lookup("base_link", "camera_optical", 5 * S)
    assert got.shape == (4, 4) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("base_link", "camera_optical", 0), expected, atol=1e-12)


def test_four_edge_chain_at_a_sample_stamp():
    buf = robot()
    expected = mat(*MAP_ODOM) @ mat(*odom_base(2 * S)) @ mat(*BASE_CAM) @ mat(*CAM_OPT)
    got = buf.lookup("map", "camera_optical", 2 * S)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # maps points: the optical origin lands at the camera position in the map
    np.testing.assert_allclose(got @ [0, 0, 0, 1], expected[:, 3], atol=1e-12)


def test_four_edge_chain_map_odom_dynamic_too():
    buf = robot()
    put(buf, "map", "odom", 1 * S, *MAP_ODOM)  # now dynamic: replaces the static edge
    put(buf, "map", "odom", 3 * S, [2.0, -2.0, 0.0], Rotation.from_euler("z", 50, degrees=True))
    got = buf.lookup("map", "camera_optical", int(2.5 * S))
    mo = mat([1.75, -2.0, 0.0], Rotation.from_euler("z", 45, degrees=True))  # 3/4 of the way
    expected = mo @ mat(*ob_interp(2.5)) @ mat(*BASE_CAM) @ mat(*CAM_OPT)
    np.testing.assert_allclose(got, expected, atol=1e-9)


def ob_interp(s: float) -> tuple[np.ndarray, Rotation]:
    """odom→base_link as the buffer interpolates it between the samples at 1, 2 and 3 s."""
    lo, hi = int(np.floor(s)), int(np.floor(s)) + 1
    (t0, r0), (t1, r1) = odom_base(lo * S), odom_base(hi * S)
    f = s - lo
    rot = Slerp([0.0, 1.0], Rotation.concatenate([r0, r1]))([f])[0]
    return (1 - f) * np.asarray(t0) + f * np.asarray(t1), rot


def test_interpolation_midway_lerp_and_slerp():
    buf = TransformBuffer()
    r0 = Rotation.from_euler("xyz", [10, -20, 30], degrees=True)
    r1 = Rotation.from_euler("xyz", [70, 15, -100], degrees=True)
    put(buf, "odom", "base_link", 1 * S, [0.0, 0.0, 0.0], r0)
    put(buf, "odom", "base_link", 2 * S, [2.0, -4.0, 6.0], r1)
    for f in (0.25, 0.5, 0.9):
        got = buf.lookup("odom", "base_link", S + int(f * S))
        np.testing.assert_allclose(got[:3, 3], [2.0 * f, -4.0 * f, 6.0 * f], atol=1e-12)
        want = Slerp([0.0, 1.0], Rotation.concatenate([r0, r1]))([f]).as_matrix()[0]
        np.testing.assert_allclose(got[:3, :3], want, atol=1e-9)
    # the rotation really moved: midway is neither end
    mid = buf.lookup("odom", "base_link", int(1.5 * S))[:3, :3]
    assert not np.allclose(mid, r0.as_matrix(), atol=1e-3)
    assert not np.allclose(mid, r1.as_matrix(), atol=1e-3)


def test_slerp_takes_the_short_way_whatever_the_quaternion_signs():
    r0 = Rotation.from_euler("z", 170, degrees=True)
    r1 = Rotation.from_euler("z", -170, degrees=True)  # 20° away, across ±180°
    for sign in (1.0, -1.0):  # q and −q are the same rotation
        buf = TransformBuffer()
        buf.set_transform("a", "b", 0, np.zeros(3), r0.as_quat())
        buf.set_transform("a", "b", 4, np.zeros(3), sign * r1.as_quat())
        mid = Rotation.from_matrix(buf.lookup("a", "b", 1)[:3, :3])
        yaw = mid.as_euler("zyx", degrees=True)[0]
        assert yaw == pytest.approx(175.0, abs=1e-6)


def test_leaves_through_a_common_ancestor_that_is_not_the_root():
    buf = robot()
    lidar = ([-0.3, 0.1, 0.8], Rotation.from_euler("z", 180, degrees=True))
    put(buf, "base_link", "lidar", 0, *lidar, static=True)
    got = buf.lookup("lidar", "camera_optical", 2 * S)
    expected = np.linalg.inv(mat(*lidar)) @ mat(*BASE_CAM) @ mat(*CAM_OPT)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # independent of the dynamic edges above base_link: works at any stamp, even one outside
    np.testing.assert_allclose(buf.lookup("lidar", "camera_optical", 99 * S), expected, atol=1e-12)


def test_inverse_direction_is_the_inverse_matrix():
    buf = robot()
    for stamp in (1 * S, int(1.7 * S), 3 * S):
        fwd = buf.lookup("map", "camera_optical", stamp)
        back = buf.lookup("camera_optical", "map", stamp)
        np.testing.assert_allclose(back, np.linalg.inv(fwd), atol=1e-12)
        np.testing.assert_allclose(back @ fwd, np.eye(4), atol=1e-12)


def test_same_frame_is_identity():
    buf = robot()
    np.testing.assert_array_equal(buf.lookup("odom", "odom", 123), np.eye(4))
    assert buf.can_transform("odom", "odom", 0) == (True, "")


def test_stamp_zero_is_latest_common_time():
    buf = robot(stamps=(1 * S, 2 * S, 3 * S))
    put(buf, "odom", "wheel", 1 * S, [0, 0, 0], Rotation.identity())
    put(buf, "odom", "wheel", 2 * S, [1, 0, 0], Rotation.identity())  # wheel stops at 2 s
    assert buf.latest_common_time("map", "camera_optical") == 3 * S
    np.testing.assert_allclose(
        buf.lookup("map", "camera_optical", 0), buf.lookup("map", "camera_optical", 3 * S)
    )
    # base_link↔wheel needs odom→base_link (to 3 s) and odom→wheel (to 2 s): the minimum
    assert buf.latest_common_time("wheel", "base_link") == 2 * S
    np.testing.assert_allclose(
        buf.lookup("wheel", "base_link", 0), buf.lookup("wheel", "base_link", 2 * S)
    )
    assert not np.allclose(
        buf.lookup("wheel", "base_link", 0), buf.lookup("wheel", "base_link", int(1.5 * S))
    )
    # an all-static chain has no time: 0
    assert buf.latest_common_time("base_link", "camera_optical") == 0


def test_too_old_after_cache_trimming():
    buf = robot(stamps=range(1 * S, 12 * S + 1, S), cache_s=5.0)
    buf.lookup("map", "camera_optical", 7 * S)  # exactly cache_s behind the newest: kept
    with pytest.raises(TransformError) as e:
        buf.lookup("map", "camera_optical", 6 * S)
    assert e.value.reason == "too_old"
    msg = str(e.value)
    assert "'camera_optical'" in msg and "'map'" in msg
    assert "6.000 s" in msg and "odom→base_link is 7.000 s" in msg
    assert buf.can_transform("map", "camera_optical", 6 * S) == (False, "too_old")
    # a late sample older than the window is dropped, not inserted
    put(buf, "odom", "base_link", 2 * S, *odom_base(2 * S))
    assert buf.can_transform("map", "camera_optical", 2 * S) == (False, "too_old")


def test_extrapolation_beyond_tolerance_and_success_within():
    strict = robot()
    with pytest.raises(TransformError) as e:
        strict.lookup("map", "camera_optical", 3 * S + 1 * MS)
    assert e.value.reason == "extrapolation"
    assert "future" in str(e.value) and "3.001 s" in str(e.value) and "3.000 s" in str(e.value)

    loose = robot(extrapolation_tolerance_s=0.05)
    at_end = loose.lookup("map", "camera_optical", 3 * S)
    np.testing.assert_allclose(loose.lookup("map", "camera_optical", 3 * S + 50 * MS), at_end)
    np.testing.assert_allclose(
        loose.lookup("map", "camera_optical", 1 * S - 50 * MS),
        loose.lookup("map", "camera_optical", 1 * S),
    )
    assert loose.can_transform("map", "camera_optical", 3 * S + 51 * MS) == (False, "extrapolation")
    assert loose.can_transform("map", "camera_optical", 1 * S - 51 * MS) == (False, "too_old")


def test_single_sample_needs_the_exact_stamp():
    buf = TransformBuffer()
    buf.set_transform("a", "b", 5 * S, [1, 2, 3], [0, 0, 0, 1])
    np.testing.assert_allclose(buf.lookup("a", "b", 5 * S)[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(buf.lookup("a", "b", 0)[:3, 3], [1, 2, 3])
    assert buf.can_transform("a", "b", 5 * S + 1) == (False, "extrapolation")
    assert buf.can_transform("a", "b", 5 * S - 1) == (False, "too_old")


def test_unknown_frame_and_no_path():
    buf = robot()
    put(buf, "world", "other_robot", 0, [0, 0, 0], Rotation.identity(), static=True)
    with pytest.raises(TransformError) as e:
        buf.lookup("map", "nowhere", 2 * S)
    assert e.value.reason == "unknown_frame" and "'nowhere'" in str(e.value)
    assert buf.can_transform("nowhere", "map", 2 * S) == (False, "unknown_frame")
    with pytest.raises(TransformError) as e:
        buf.lookup("other_robot", "camera_optical", 2 * S)
    assert e.value.reason == "no_path"
    assert "'map'" in str(e.value) and "'world'" in str(e.value)
    assert buf.can_transform("world", "base_link", 0) == (False, "no_path")


def test_static_edges_are_timeless():
    buf = TransformBuffer()
    put(buf, "base_link", "camera_link", 5 * S, *BASE_CAM, static=True)
    for stamp in (0, 1, 5 * S, 10**18):
        np.testing.assert_allclose(buf.lookup("base_link", "camera_link", stamp), mat(*BASE_CAM))
    put(buf, "base_link", "camera_link", 1 * S, [9, 9, 9], Rotation.identity(), static=True)
    np.testing.assert_allclose(buf.lookup("base_link", "camera_link", 7 * S)[:3, 3], [9, 9, 9])


def test_map_odom_correction_changes_lookups_after_it_only():
    buf = robot(stamps=[s * S for s in range(1, 11)])
    put(buf, "map", "odom", 1 * S, *MAP_ODOM)
    put(buf, "map", "odom", 5 * S, *MAP_ODOM)  # the correction lands between 5 s and 6 s
    jumped = ([1.4, -2.3, 0.0], Rotation.from_euler("z", 33, degrees=True))
    put(buf, "map", "odom", 6 * S, *jumped)
    put(buf, "map", "odom", 10 * S, *jumped)
    for s in (2, 4, 5):
        want = mat(*MAP_ODOM) @ mat(*odom_base(s * S)) @ mat(*BASE_CAM) @ mat(*CAM_OPT)
        np.testing.assert_allclose(buf.lookup("map", "camera_optical", s * S), want, atol=1e-12)
    for s in (6, 8, 10):
        want = mat(*jumped) @ mat(*odom_base(s * S)) @ mat(*BASE_CAM) @ mat(*CAM_OPT)
        np.testing.assert_allclose(buf.lookup("map", "camera_optical", s * S), want, atol=1e-12)
    # odom-frame lookups never see the correction
    np.testing.assert_allclose(
        buf.lookup("odom", "base_link", 8 * S), mat(*odom_base(8 * S)), atol=1e-12
    )


def test_repeated_stamp_replaces_the_sample():
    buf = TransformBuffer()
    buf.set_transform("a", "b", 1 * S, [1, 0, 0], [0, 0, 0, 1])
    buf.set_transform("a", "b", 3 * S, [3, 0, 0], [0, 0, 0, 1])
    buf.set_transform("a", "b", 1 * S, [-1, 0, 0], [0, 0, 0, 1])
    np.testing.assert_allclose(buf.lookup("a", "b", 1 * S)[:3, 3], [-1, 0, 0])
    np.testing.assert_allclose(buf.lookup("a", "b", 2 * S)[:3, 3], [1, 0, 0])


def test_out_of_order_samples_are_sorted():
    buf = TransformBuffer()
    for s in (3, 1, 2):
        buf.set_transform("a", "b", s * S, [float(s), 0, 0], [0, 0, 0, 1])
    np.testing.assert_allclose(buf.lookup("a", "b", int(1.5 * S))[:3, 3], [1.5, 0, 0])
    np.testing.assert_allclose(buf.lookup("a", "b", int(2.5 * S))[:3, 3], [2.5, 0, 0])


@pytest.mark.parametrize(
    "t, q",
    [
        ([np.nan, 0, 0], [0, 0, 0, 1]),
        ([0, 0, np.inf], [0, 0, 0, 1]),
        ([0, 0, 0], [0, np.nan, 0, 1]),
        ([0, 0, 0], [0, 0, 0, 0]),
        ([0, 0], [0, 0, 0, 1]),
        ([0, 0, 0], [0, 0, 1]),
    ],
)
def test_bad_values_rejected(t, q):
    buf = TransformBuffer()
    with pytest.raises(ValueError):
        buf.set_transform("a", "b", S, t, q)
    assert buf.frames() == {}


def test_bad_names_and_stamps_rejected():
    buf = TransformBuffer()
    with pytest.raises(ValueError):
        buf.set_transform("a", "a", S, [0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ValueError):
        buf.set_transform("", "a", S, [0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ValueError):
        buf.set_transform("a", "b", -1, [0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(TypeError):
        buf.set_transform("a", "b", 1.5, [0, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ValueError):
        TransformBuffer(cache_s=0.0)
    with pytest.raises(ValueError):
        TransformBuffer(extrapolation_tolerance_s=-1.0)


def test_quaternion_is_normalised():
    buf = TransformBuffer()
    q = Rotation.from_euler("z", 45, degrees=True).as_quat()
    buf.set_transform("a", "b", 0, [0, 0, 0], 7.5 * q, static=True)
    got = buf.lookup("a", "b", 0)[:3, :3]
    np.testing.assert_allclose(got, Rotation.from_quat(q).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(got @ got.T, np.eye(3), atol=1e-12)


def test_reparenting_the_new_parent_wins():
    buf = robot()
    put(buf, "odom", "camera_link", 0, [5, 0, 0], Rotation.identity(), static=True)
    assert buf.frames()["camera_link"] == "odom"
    got = buf.lookup("odom", "camera_optical", 2 * S)
    np.testing.assert_allclose(got, mat([5, 0, 0], Rotation.identity()) @ mat(*CAM_OPT))
    # base_link no longer carries the camera, but stays known
    np.testing.assert_allclose(
        buf.lookup("base_link", "camera_optical", 2 * S),
        np.linalg.inv(mat(*odom_base(2 * S))) @ got,
        atol=1e-12,
    )
    # a loop is refused and changes nothing
    with pytest.raises(ValueError, match="loop"):
        put(buf, "camera_optical", "odom", 0, [0, 0, 0], Rotation.identity(), static=True)
    assert buf.frames()["odom"] == "map"


def test_frames_and_clear_keeps_statics():
    buf = robot()
    assert buf.frames() == {
        "odom": "map",
        "base_link": "odom",
        "camera_link": "base_link",
        "camera_optical": "camera_link",
    }
    buf.clear()
    assert len(buf.frames()) == 4
    np.testing.assert_allclose(
        buf.lookup("base_link", "camera_optical", 0), mat(*BASE_CAM) @ mat(*CAM_OPT), atol=1e-12
    )
    for stamp in (0, 2 * S):
        with pytest.raises(TransformError) as e:
            buf.lookup("map", "camera_optical", stamp)
        assert e.value.reason == "extrapolation" and "odom→base_link" in str(e.value)
    # after the jump, time may restart lower than before
    put(buf, "odom", "base_link", 1 * MS, *odom_base(1 * MS))
    assert buf.can_transform("map", "camera_optical", 1 * MS) == (True, "")


def test_concurrent_set_and_lookup():
    buf = robot(stamps=(1 * S,), cache_s=1.0)
    stop = threading.Event()
    errors: list[BaseException] = []
    newest = [1 * S]

    def writer() -> None:
        s = 1 * S
        try:
            while not stop.is_set():
                s += 10 * MS
                put(buf, "odom", "base_link", s, *odom_base(s))
                put(buf, "map", "odom", 0, *MAP_ODOM, static=True)
                newest[0] = s
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        n = 0
        try:
            while not stop.is_set():
                m = buf.lookup("map", "camera_optical", 0)
                assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-9)
                ok, why = buf.can_transform("map", "camera_optical", newest[0] - 200 * MS)
                assert ok or why == "too_old"
                n += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        counts.append(n)

    counts: list[int] = []
    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    assert not errors, errors
    assert counts and counts[0] > 0
    assert newest[0] > 1 * S


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(-5, 5), min_size=3, max_size=3),
            st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(
                lambda q: np.linalg.norm(q) > 0.1
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_random_static_chain_matches_matrix_product(edges):
    buf = TransformBuffer()
    expected = np.eye(4)
    for i, (t, q) in enumerate(edges):
        buf.set_transform(f"f{i}", f"f{i + 1}", 0, t, q, static=True)
        expected = expected @ mat(t, Rotation.from_quat(q))
    n = len(edges)
    np.testing.assert_allclose(buf.lookup("f0", f"f{n}", 0), expected, atol=1e-9)
    np.testing.assert_allclose(buf.lookup(f"f{n}", "f0", 0), np.linalg.inv(expected), atol=1e-9)


def test_lookup_speed_report():
    """Not a timed test: prints µs per 5-edge lookup (see it with ``-s``)."""
    buf = robot(stamps=[s * S // 10 for s in range(1, 101)])
    put(buf, "camera_optical", "pixel_grid", 0, [0, 0, 0.01], Rotation.identity(), static=True)
    stamp = int(5.55 * S)
    buf.lookup("map", "pixel_grid", stamp)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        buf.lookup("map", "pixel_grid", stamp)
    us = (time.perf_counter() - t0) / n * 1e6
    print(f"\nTransformBuffer: {us:.1f} µs per 5-edge lookup (interpolated)")
