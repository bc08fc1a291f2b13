"""Serialized (CDR) sensor messages, read in place where that pays: stamps, poses, images.

The node subscribes to its sensor topics raw. rclpy would build a Python message for every
one (a PoseStamped is six objects, ~0.25 ms; a 640×480 image is copied twice more), at 30 Hz
and more, while most frames are only checked for a stamp and a pose and then dropped. The
readers here are written by hand because no installable library reads ROS CDR in place
(rclpy deserialises whole messages; rosbags' pure-Python deserialiser is slower still). They
read plain CDR, what rmw_fastrtps writes; any other encapsulation goes through rclpy. Each is
fuzzed against rclpy's own serialisation (test/fuzz/test_fuzz_serialized.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image

from llava3d_ros.ros.convert import (
    CameraModel,
    ConversionError,
    camera_from_info,
    pose_stamped_to_matrix,
    rigid_from_quaternion,
    stamp_to_ns,
)

# CDR encapsulation id (first 2 bytes, big-endian) → byte order of the payload: plain CDR
# and plain XCDR2 both put a leading Header's stamp (int32 sec, uint32 nanosec) at offset 4.
_CDR_BYTE_ORDER = {0x0000: ">", 0x0001: "<", 0x0006: ">", 0x0007: "<"}
_PLAIN_CDR = (0x0000, 0x0001)  # the readers below also rely on plain CDR's alignment rules

# the widest pixel of a supported encoding (4 channels of float32), for the raw-bytes guard
_MAX_PIXEL_BYTES = 16


def peek_stamp_ns(data: bytes) -> int | None:
    """Header stamp (ns) of a serialized message that starts with a std_msgs/Header, or None.

    Reads 12 bytes instead of deserialising; None for an encapsulation this does not know
    (the caller then deserialises). ``ConversionError`` for data too short to hold a stamp.
    """
    if len(data) < 12:
        raise ConversionError(f"serialized message of {len(data)} bytes is too short for a stamp")
    order = _CDR_BYTE_ORDER.get(int.from_bytes(data[:2], "big"))
    if order is None:
        return None
    sec, nanosec = struct.unpack_from(order + "iI", data, 4)
    return sec * 1_000_000_000 + nanosec


def deserialize(data: bytes, msg_type: type, what: str) -> Any:
    """rclpy's deserialisation, with ``ConversionError`` for a malformed buffer."""
    try:
        return deserialize_message(data, msg_type)
    except Exception as exc:  # rclpy raises bare RuntimeError/TypeError for bad buffers
        raise ConversionError(
            f"cannot deserialise the {what}: {type(exc).__name__}: {exc}"
        ) from exc


def image_from_serialized(data: bytes) -> Image:
    """Deserialise a raw sensor_msgs/Image; ``ConversionError`` if it is malformed."""
    return deserialize(data, Image, "image")


def serialized_stamp_ns(data: bytes, msg_type: type = Image) -> int:
    """Header stamp (ns) of a raw message that starts with a Header: peeked, else decoded."""
    stamp = peek_stamp_ns(data)
    if stamp is not None:
        return stamp
    return stamp_to_ns(deserialize(data, msg_type, msg_type.__name__).header.stamp)


def serialized_frame_id(data: bytes, msg_type: type = Image) -> str:
    """Header frame_id of a raw message that starts with a Header: read in place, else decoded."""
    if _plain_cdr(data):
        return _CdrReader(data, msg_type.__name__).string()
    return deserialize(data, msg_type, msg_type.__name__).header.frame_id


def check_serialized_size(data: bytes, max_pixels: int) -> None:
    """Refuse a raw Image too big to hold ``max_pixels`` of any supported encoding (cheap, early)."""
    limit = max_pixels * _MAX_PIXEL_BYTES + 4096  # + header, encoding string, CDR padding
    if len(data) > limit:
        raise ConversionError(
            f"image message of {len(data)} bytes exceeds what max_image_pixels={max_pixels} allows"
        )


class _CdrReader:
    """Plain-CDR reads from offset 12 (after the encapsulation and a Header's stamp).

    Alignment counts from the payload, which starts after the 4-byte encapsulation.
    """

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.what, self.pos = data, what, 12
        self.order = _CDR_BYTE_ORDER[int.from_bytes(data[:2], "big")]

    def _fail(self, why: str) -> ConversionError:
        return ConversionError(f"serialized {self.what} of {len(self.data)} bytes {why}")

    def _take(self, fmt: str, size: int, count: int = 1) -> tuple:
        self.pos = 4 + ((self.pos - 4 + size - 1) & ~(size - 1))
        if self.pos + size * count > len(self.data):
            raise self._fail("is truncated")
        values = struct.unpack_from(f"{self.order}{count}{fmt}", self.data, self.pos)
        self.pos += size * count
        return values

    def u8(self) -> int:
        return self._take("B", 1)[0]

    def u32(self) -> int:
        return self._take("I", 4)[0]

    def f64s(self, count: int) -> tuple[float, ...]:
        return self._take("d", 8, count)

    def string(self) -> str:
        n = self.u32()
        end = self.pos + n
        if n < 1 or end > len(self.data) or self.data[end - 1] != 0:
            raise self._fail("holds a malformed string")
        try:
            text = bytes(self.data[self.pos : end - 1]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._fail(f"holds a non-UTF-8 string: {exc}") from exc
        self.pos = end
        return text

    def octets(self) -> memoryview:
        n = self.u32()
        if self.pos + n > len(self.data):
            raise self._fail(f"cannot hold {n} bytes")
        view = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return view


def _plain_cdr(data: bytes) -> bool:
    return len(data) >= 16 and int.from_bytes(data[:2], "big") in _PLAIN_CDR


def pose_stamped_from_serialized(data: bytes) -> tuple[int, str, np.ndarray]:
    """(stamp ns, frame_id, 4×4) from a raw PoseStamped: its 64 bytes read in place."""
    if not _plain_cdr(data):
        return pose_stamped_to_matrix(deserialize(data, PoseStamped, "pose"))
    r = _CdrReader(data, "PoseStamped")
    frame_id = r.string()
    v = r.f64s(7)  # position xyz, orientation xyzw
    return peek_stamp_ns(data), frame_id, rigid_from_quaternion(list(v[:3]), list(v[3:]))


@dataclass(frozen=True)
class ImageView:
    """The fields of a sensor_msgs/Image that conversion reads; ``data`` may be a view."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes | memoryview

    @classmethod
    def from_msg(cls, msg: Image) -> ImageView:
        return cls(
            stamp_to_ns(msg.header.stamp),
            msg.header.frame_id,
            int(msg.height),
            int(msg.width),
            msg.encoding,
            bool(msg.is_bigendian),
            int(msg.step),
            msg.data,
        )


def image_view_from_serialized(data: bytes) -> ImageView:
    """A raw sensor_msgs/Image as an :class:`ImageView` over ``data`` (no pixel copy).

    rclpy's deserialisation would copy the pixels into a Python message, then again into the
    array (~1 ms for 640×480 RGB, per decoded frame).
    """
    if not _plain_cdr(data):
        return ImageView.from_msg(image_from_serialized(data))
    r = _CdrReader(data, "image")
    frame_id = r.string()
    height, width = r.u32(), r.u32()
    encoding = r.string()
    is_bigendian = bool(r.u8())
    step = r.u32()
    pixels = r.octets()
    stamp = peek_stamp_ns(data)
    return ImageView(stamp, frame_id, height, width, encoding, is_bigendian, step, pixels)


class SerializedCameraInfo:
    """Raw CameraInfo → :class:`CameraModel`, decoded once per distinct calibration.

    Camera info arrives with every frame but rarely changes: messages equal after their stamp
    (frame_id, size, K, D, …) give the cached model without deserialising again.
    """

    def __init__(self) -> None:
        self._key: bytes | None = None
        self._model: CameraModel | None = None

    def __call__(self, data: bytes) -> CameraModel:
        key = bytes(data[:4]) + bytes(data[12:])  # encapsulation and all after the stamp
        if key != self._key or self._model is None:
            self._model = camera_from_info(deserialize(data, CameraInfo, "camera_info"))
            self._key = key
        return self._model
