"""Fuzz the hand-written CDR readers against rclpy: same result, and damaged bytes rejected."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from hypothesis import given
from hypothesis import strategies as st
from rclpy.serialization import serialize_message

from llava3d_ros.ros.convert import ConversionError, image_to_array, pose_stamped_to_matrix
from llava3d_ros.ros.serialized import image_view_from_serialized, pose_stamped_from_serialized

from .profile import check_rejection, count, fuzz
from .test_fuzz_images import headers_and_data

_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


def _outcome(fn, *args):  # noqa: ANN001, ANN202 - (value, None) or (None, rejection)
    try:
        return fn(*args), None
    except ConversionError as exc:
        check_rejection(exc)
        return None, exc


@fuzz
@given(
    frame_id=_text,
    values=st.lists(_floats, min_size=7, max_size=7),
    sec=st.integers(-(2**31), 2**31 - 1),
    nanosec=st.integers(0, 2**32 - 1),
)
def test_raw_pose_reads_like_rclpy(frame_id: str, values: list, sec: int, nanosec: int) -> None:
    count("raw PoseStamped → 4x4 (vs rclpy)")
    msg = PoseStamped()
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = frame_id, sec, nanosec
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z, q.x, q.y, q.z, q.w = values
    want, want_exc = _outcome(pose_stamped_to_matrix, msg)
    got, got_exc = _outcome(pose_stamped_from_serialized, serialize_message(msg))
    assert (want_exc is None) == (got_exc is None), (want_exc, got_exc)
    if want is not None:
        assert got[:2] == want[:2]
        np.testing.assert_array_equal(got[2], want[2])


@fuzz
@given(msg=headers_and_data(), frame_id=_text)
def test_raw_image_reads_like_rclpy(msg, frame_id: str) -> None:  # noqa: ANN001 - Image
    count("raw Image → view (vs rclpy)")
    msg.header.frame_id = frame_id
    view = image_view_from_serialized(serialize_message(msg))
    assert (view.frame_id, view.height, view.width, view.encoding, view.step) == (
        frame_id,
        msg.height,
        msg.width,
        msg.encoding,
        msg.step,
    )
    assert view.is_bigendian == msg.is_bigendian and bytes(view.data) == bytes(msg.data)
    want, want_exc = _outcome(image_to_array, msg)
    got, got_exc = _outcome(image_to_array, view)
    assert str(want_exc) == str(got_exc)
    if want is not None:
        np.testing.assert_array_equal(got, want)


@fuzz
@given(
    kind=st.sampled_from(["pose", "image"]),
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
)
def test_damaged_raw_messages_are_rejected_or_read(kind: str, cut: int, flips: list) -> None:
    count("damaged raw PoseStamped/Image")
    if kind == "pose":
        msg = PoseStamped()
        msg.header.frame_id = "map"
        msg.pose.orientation.w = 1.0
        reader = pose_stamped_from_serialized
    else:
        from sensor_msgs.msg import Image

        msg = Image(height=2, width=3, encoding="mono8", step=3, data=bytes(range(6)))
        msg.header.frame_id = "camera"
        reader = image_view_from_serialized
    data = bytearray(serialize_message(msg))
    for at, value in flips:
        if at < len(data):
            data[at] = value
    del data[len(data) - min(cut, len(data)) :]
    _outcome(reader, bytes(data))  # anything but ConversionError fails the test
