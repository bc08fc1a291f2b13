"""Serialized sensor messages read in place (ros/serialized.py), checked against rclpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llava3d_ros.ros import convert, serialized
from llava3d_ros.ros.convert import ConversionError

from .test_convert import _image


@pytest.mark.parametrize(
    ("sec", "nanosec", "frame_id", "encoding"),
    [
        (0, 0, "", "rgb8"),
        (1_700_000_000, 999_999_999, "camera_color_optical_frame", "16UC1"),
        (-5, 7, "x", "32FC1"),  # negative seconds: int32, not uint32
        (2**31 - 1, 2**32 - 1, "é", "mono8"),
    ],
)
def test_peek_stamp_matches_serialized_images(sec, nanosec, frame_id, encoding):
    from builtin_interfaces.msg import Time
    from rclpy.serialization import serialize_message

    msg = _image(np.zeros((2, 3), dtype=np.uint8), "mono8")
    msg.header.stamp = Time(sec=sec, nanosec=nanosec)
    msg.header.frame_id, msg.encoding = frame_id, encoding
    data = serialize_message(msg)
    assert data[:2] == b"\x00\x01"  # this rmw writes little-endian CDR
    want = sec * 1_000_000_000 + nanosec
    assert serialized.peek_stamp_ns(data) == want
    assert serialized.serialized_stamp_ns(data) == want
    back = serialized.image_from_serialized(data)
    assert (back.header.frame_id, back.encoding, back.width) == (frame_id, encoding, 3)
    # the same stamp written big-endian (encapsulation 0x0000) reads the same
    big = b"\x00\x00\x00\x00" + int(sec).to_bytes(4, "big", signed=True)
    big += int(nanosec).to_bytes(4, "big") + data[12:]
    assert serialized.peek_stamp_ns(big) == want


def test_peek_stamp_unknown_encapsulation_and_truncation():
    from rclpy.serialization import serialize_message

    msg = _image(np.zeros((2, 3), dtype=np.uint8), "mono8")
    msg.header.stamp = convert.ns_to_stamp(12 * 1_000_000_000 + 34)
    data = serialize_message(msg)
    assert serialized.peek_stamp_ns(b"\x00\x03" + data[2:]) is None  # PL_CDR: not peeked
    with pytest.raises(ConversionError, match="too short"):
        serialized.peek_stamp_ns(data[:11])
    with pytest.raises(ConversionError, match="cannot deserialise"):
        serialized.image_from_serialized(data[:40])


@pytest.mark.parametrize("order", ["<", ">"])
def test_raw_pose_stamped_reads_both_byte_orders(order: str):
    import struct

    # plain CDR by hand: stamp, frame_id "map" (4 bytes with NUL), pad to 8, 7 float64
    payload = struct.pack(order + "iII", 7, 5, 4) + b"map\x00"
    payload += b"\x00" * (-len(payload) % 8)
    payload += struct.pack(order + "7d", 1.0, 2.0, 3.0, 0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5))
    data = (b"\x00\x01" if order == "<" else b"\x00\x00") + b"\x00\x00" + payload
    stamp, frame, mat = serialized.pose_stamped_from_serialized(data)
    assert (stamp, frame) == (7_000_000_005, "map")
    np.testing.assert_allclose(mat[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(mat[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    with pytest.raises(ConversionError, match="serialized PoseStamped of 75 bytes is truncated"):
        serialized.pose_stamped_from_serialized(data[:-1])


def test_serialized_camera_info_decoded_once_per_calibration(monkeypatch):
    from rclpy.serialization import serialize_message

    from llava3d_ros.ros.publish import camera_info

    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    decoder = serialized.SerializedCameraInfo()
    calls = []
    real = serialized.deserialize
    monkeypatch.setattr(serialized, "deserialize", lambda *a: calls.append(1) or real(*a))
    first = decoder(serialize_message(camera_info(k, 640, 480, 1_000, "cam")))
    again = decoder(serialize_message(camera_info(k, 640, 480, 2_000, "cam")))  # new stamp only
    assert again is first and len(calls) == 1
    k2 = k.copy()
    k2[0, 0] = 510.0
    changed = decoder(serialize_message(camera_info(k2, 640, 480, 3_000, "cam")))
    assert len(calls) == 2 and changed.k[0, 0] == 510.0
    with pytest.raises(ConversionError, match="cannot deserialise the camera_info"):
        decoder(serialize_message(camera_info(k, 640, 480, 4_000, "cam"))[:30])
