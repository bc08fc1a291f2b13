"""Fuzz CameraInfo → intrinsics and PoseStamped/Odometry → 4×4: valid output or ConversionError."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from hypothesis import given
from hypothesis import strategies as st
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo

from llava3d_ros.ros.convert import (
    ConversionError,
    camera_from_info,
    odometry_to_matrix,
    pose_stamped_to_matrix,
)

from .profile import check_rejection, count, fuzz

# floats a driver can emit: ordinary, tiny, huge, zero, NaN, ±inf
_any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-300, 1e300]),
)
_unit_ish = st.floats(-1.5, 1.5, allow_nan=False)


@st.composite
def camera_infos(draw: st.DrawFn) -> CameraInfo:
    msg = CameraInfo()
    msg.width, msg.height = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):  # a plausible pinhole K with random perturbations
        fx, fy, cx, cy = (draw(_any_float) for _ in range(4))
        k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        for i in draw(st.lists(st.integers(0, 8), max_size=2)):
            k[i] = draw(_any_float)
    else:
        k = draw(st.lists(_any_float, min_size=9, max_size=9))
    msg.k = k
    msg.d = draw(st.lists(_any_float, max_size=8))
    return msg


@fuzz
@given(msg=camera_infos())
def test_camera_info_gives_a_pinhole_k_or_is_rejected(msg: CameraInfo) -> None:
    count("CameraInfo → K")
    try:
        cam = camera_from_info(msg)
    except ConversionError as exc:
        check_rejection(exc)
        return
    k = cam.k
    assert k.shape == (3, 3) and np.isfinite(k).all()
    assert k[0, 0] > 0 and k[1, 1] > 0 and k[2, 2] == 1
    assert cam.width >= 1 and cam.height >= 1


def _fill_pose(pose, xyz, quat) -> None:  # noqa: ANN001 - geometry_msgs/Pose
    pose.position.x, pose.position.y, pose.position.z = xyz
    q = pose.orientation
    q.x, q.y, q.z, q.w = quat


@fuzz
@given(
    kind=st.sampled_from(["PoseStamped", "Odometry"]),
    xyz=st.tuples(_any_float, _any_float, _any_float),
    quat=st.one_of(
        st.tuples(_any_float, _any_float, _any_float, _any_float),
        st.tuples(_unit_ish, _unit_ish, _unit_ish, _unit_ish),
        st.just((0.0, 0.0, 0.0, 0.0)),
    ),
    sec=st.integers(-(2**31), 2**31 - 1),
    nanosec=st.integers(0, 2**32 - 1),
)
def test_pose_gives_a_rigid_transform_or_is_rejected(
    kind: str, xyz: tuple, quat: tuple, sec: int, nanosec: int
) -> None:
    count("PoseStamped/Odometry → 4x4")
    msg = PoseStamped() if kind == "PoseStamped" else Odometry()
    _fill_pose(msg.pose if kind == "PoseStamped" else msg.pose.pose, xyz, quat)
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    convert = pose_stamped_to_matrix if kind == "PoseStamped" else odometry_to_matrix
    try:
        stamp, _, mat = convert(msg)
    except ConversionError as exc:
        check_rejection(exc)
        with np.errstate(over="ignore"):
            plausible = np.isfinite(xyz).all() and 0.5 < np.linalg.norm(quat) < 1.5
        assert not plausible, f"a finite pose with |q| near 1 was rejected: {exc}"
        return
    assert stamp == sec * 1_000_000_000 + nanosec
    assert mat.shape == (4, 4) and np.isfinite(mat).all()
    rot = mat[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
    assert abs(np.linalg.det(rot) - 1) < 1e-9
    np.testing.assert_array_equal(mat[:3, 3], xyz)
    np.testing.assert_array_equal(mat[3], [0, 0, 0, 1])
