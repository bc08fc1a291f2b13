"""The one place that reads and writes ROS message fields: messages ↔ numpy arrays and plain values.

Written by hand because cv_bridge and sensor_msgs_py are not installable here (and would pull
OpenCV/ROS build deps on robots); everything downstream of this module works on arrays,
4×4 matrices and the plain request/answer dataclasses.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Vector3
from nav_msgs.msg import Odometry
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from llava3d_ros.answer import AnswerResult, Box3D
from llava3d_ros.geometry.cameras import intrinsics_from_camera_info
from llava3d_ros.geometry.depth import MM_SCALE, decode_depth
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.rectify import Calibration
from llava3d_ros.msg import Answer, Click, GroundedObject, Prompt
from llava3d_ros.query.request import PixelClick, PointClick, QueryRequest

if TYPE_CHECKING:  # a duck-typed Image read in place (serialized.py imports this module)
    from llava3d_ros.ros.serialized import ImageView


class ConversionError(ValueError):
    """A message that cannot be turned into a valid array or value (the message says why)."""


# encoding → (numpy dtype, channels); REP-118 depth: 16UC1 millimetres, 32FC1 metres.
_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")
_MAX_SIDE = 16384  # larger than any camera; guards against absurd allocations from bad headers


def stamp_to_ns(stamp: Time) -> int:
    """Nanoseconds since the epoch of a builtin_interfaces/Time."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """A builtin_interfaces/Time from nanoseconds (must be ≥ 0)."""
    if ns < 0:
        raise ConversionError(f"a ROS time cannot be negative, got {ns} ns")
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def check_image_size(msg: Image | ImageView, max_pixels: int) -> None:
    """``ConversionError`` when ``msg`` has more than ``max_pixels`` pixels (max_image_pixels)."""
    w, h = int(msg.width), int(msg.height)
    if w * h > max_pixels:
        raise ConversionError(f"image {w}x{h} has more pixels than max_image_pixels={max_pixels}")


def image_to_array(msg: Image | ImageView) -> np.ndarray:
    """The pixels of an Image as (H, W) or (H, W, C) in the encoding's dtype, native byte order.

    Checks encoding, sizes, ``step`` (row padding allowed) and data length; honours
    ``is_bigendian``. Returns a copy, so the message buffer can be released.
    """
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise ConversionError(
            f"unsupported image encoding {enc!r} (supported: {', '.join(_ENCODINGS)})"
        )
    dtype, channels = _ENCODINGS[enc]
    h, w = int(msg.height), int(msg.width)
    if not (0 < h <= _MAX_SIDE and 0 < w <= _MAX_SIDE):
        raise ConversionError(f"image size {w}x{h} is empty or implausible")
    row_bytes = w * channels * dtype.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ConversionError(
            f"step {step} is smaller than width*channels*itemsize = {row_bytes} for {w}x{h} {enc}"
        )
    if step % dtype.itemsize:
        raise ConversionError(f"step {step} is not a multiple of the {enc} element size")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != step * h:
        raise ConversionError(
            f"data holds {buf.size} bytes but step*height = {step}*{h} = {step * h} ({enc})"
        )
    rows = buf.reshape(h, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(order))
    shape = (h, w) if channels == 1 else (h, w, channels)
    out = pixels.reshape(shape)
    return out.astype(dtype.newbyteorder("="), copy=True)


def color_from_image(msg: Image | ImageView) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a colour Image (rgb8, bgr8, rgba8, bgra8, mono8)."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ConversionError(
            f"colour image encoding {msg.encoding!r} is not one of {', '.join(COLOR_ENCODINGS)}"
        )
    arr = image_to_array(msg)
    if msg.encoding == "mono8":
        return np.repeat(arr[:, :, None], 3, axis=2)
    if msg.encoding in ("bgr8", "bgra8"):
        arr = arr[:, :, 2::-1]
    return np.ascontiguousarray(arr[:, :, :3])


def depth_from_image(msg: Image | ImageView) -> np.ndarray:
    """An (H, W) float32 depth in metres, NaN where invalid (16UC1 = mm, 32FC1 = m, REP-118)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ConversionError(
            f"depth image encoding {msg.encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)}"
        )
    try:
        return decode_depth(image_to_array(msg), MM_SCALE)
    except GeometryError as exc:
        raise ConversionError(f"depth image: {exc}") from exc


def array_to_image(arr: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = "") -> Image:
    """An Image message from an array already in ``encoding``'s layout (no colour conversion)."""
    if encoding not in _ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r}")
    dtype, channels = _ENCODINGS[encoding]
    arr = np.asarray(arr)
    expected_ndim = 2 if channels == 1 else 3
    if (
        arr.dtype != dtype
        or arr.ndim != expected_ndim
        or (channels > 1 and arr.shape[2] != channels)
    ):
        raise ConversionError(
            f"{encoding} needs a {'(H, W)' if channels == 1 else f'(H, W, {channels})'} "
            f"{dtype} array, got {arr.shape} {arr.dtype}"
        )
    msg = Image()
    msg.header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = np.ascontiguousarray(arr).tobytes()
    return msg


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics of one camera stream, with the image size and frame they belong to."""

    k: np.ndarray  # (3, 3) float64
    width: int
    height: int
    frame_id: str
    distorted: bool  # non-zero distortion coefficients: the image is not rectified
    d: tuple[float, ...] = ()
    distortion_model: str = ""

    def calibration(self) -> Calibration:
        """As the ROS-free core takes it (``geometry/rectify.py``)."""
        return Calibration(
            self.k, (self.width, self.height), self.d, self.distortion_model, self.frame_id
        )


def camera_from_info(msg: CameraInfo) -> CameraModel:
    """Intrinsics from a CameraInfo, rejecting an all-zero (uncalibrated) K."""
    k = np.asarray(msg.k, dtype=np.float64)
    if not np.any(k):
        raise ConversionError("CameraInfo k is all zeros: the camera is not calibrated")
    try:
        kk = intrinsics_from_camera_info(k, int(msg.width), int(msg.height))
    except GeometryError as exc:
        raise ConversionError(f"CameraInfo: {exc}") from exc
    d = np.asarray(msg.d, dtype=np.float64)
    if not np.isfinite(d).all():
        raise ConversionError("CameraInfo d holds non-finite values")
    return CameraModel(
        kk,
        int(msg.width),
        int(msg.height),
        msg.header.frame_id,
        bool(np.any(d)),
        tuple(d.tolist()),
        msg.distortion_model,
    )


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """A 4×4 float64 rigid transform from a geometry_msgs/Pose (quaternion normalised)."""
    p, q = pose.position, pose.orientation
    return rigid_from_quaternion(
        [float(p.x), float(p.y), float(p.z)], [float(q.x), float(q.y), float(q.z), float(q.w)]
    )


def rigid_from_quaternion(t: list[float], quat: list[float]) -> np.ndarray:
    """A 4×4 from a translation and an (x, y, z, w) quaternion, normalised; finite or refused."""
    # On Python floats: this runs for every pose message (30+ Hz), and scipy's Rotation costs
    # ~0.2 ms per call against a few µs here (same formula as Rotation.as_matrix).
    if not all(map(math.isfinite, t + quat)):
        raise ConversionError(f"pose holds non-finite values: t={t} q={quat}")
    norm = math.sqrt(sum(c * c for c in quat))
    if not 0.5 < norm < 1.5:
        raise ConversionError(f"pose quaternion is not a rotation (norm {norm:.3g})")
    x, y, z, w = (c / norm for c in quat)
    x2, y2, z2, w2 = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    return np.array(
        [
            [x2 - y2 - z2 + w2, 2 * (xy - zw), 2 * (xz + yw), t[0]],
            [2 * (xy + zw), -x2 + y2 - z2 + w2, 2 * (yz - xw), t[1]],
            [2 * (xz - yw), 2 * (yz + xw), -x2 - y2 + z2 + w2, t[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def pose_stamped_to_matrix(msg: PoseStamped) -> tuple[int, str, np.ndarray]:
    """(stamp ns, frame_id, 4×4 camera-to-world) from a PoseStamped."""
    return stamp_to_ns(msg.header.stamp), msg.header.frame_id, pose_to_matrix(msg.pose)


def odometry_to_matrix(msg: Odometry) -> tuple[int, str, np.ndarray]:
    """(stamp ns, frame_id, 4×4 child-to-frame) from an Odometry message's pose."""
    return stamp_to_ns(msg.header.stamp), msg.header.frame_id, pose_to_matrix(msg.pose.pose)


def matrix_to_pose(mat: np.ndarray) -> Pose:
    """A Pose from a 4×4 transform; the rotation is re-orthonormalised first (SVD)."""
    mat = np.asarray(mat, dtype=np.float64)
    if mat.shape != (4, 4) or not np.isfinite(mat).all():
        raise ConversionError(f"pose must be a finite 4x4 matrix, got shape {mat.shape}")
    u, _, vt = np.linalg.svd(mat[:3, :3])
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        raise ConversionError("pose rotation is a reflection (det < 0)")
    x, y, z, w = Rotation.from_matrix(rot).as_quat()
    t = mat[:3, 3]
    return Pose(
        position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=Quaternion(x=float(x), y=float(y), z=float(z), w=float(w)),
    )


def prompt_from_msg(msg: Prompt) -> QueryRequest:
    """The plain request from a Prompt message (validation of meaning happens in the core path)."""
    clicks: list[PixelClick | PointClick] = []
    for i, c in enumerate(msg.clicks):
        if c.kind == Click.PIXEL:
            clicks.append(PixelClick(float(c.u), float(c.v), stamp_to_ns(c.stamp), str(c.frame_id)))
        elif c.kind == Click.POINT:
            p = c.point.point
            clicks.append(
                PointClick(
                    xyz=np.array([p.x, p.y, p.z], dtype=np.float64),
                    frame_id=c.point.header.frame_id,
                    stamp_ns=stamp_to_ns(c.point.header.stamp),
                )
            )
        else:
            raise ConversionError(f"click {i} has unknown kind {c.kind} (PIXEL=0, POINT=1)")
    return QueryRequest(
        question=msg.question,
        task=msg.task,
        clicks=tuple(clicks),
        max_new_tokens=int(msg.max_new_tokens),
        temperature=float(msg.temperature),
        max_views=int(msg.max_views),
        client_id=msg.client_id,
    )


def prompt_to_msg(req: QueryRequest) -> Prompt:
    """A Prompt message from a plain request (how the node echoes what it understood)."""
    msg = Prompt(
        question=req.question,
        task=req.task,
        max_new_tokens=int(req.max_new_tokens),
        temperature=float(req.temperature),
        max_views=int(req.max_views),
        client_id=req.client_id,
    )
    for c in req.clicks:
        click = Click()
        if isinstance(c, PixelClick):
            click.kind = Click.PIXEL
            click.u, click.v = float(c.u), float(c.v)
            click.stamp = ns_to_stamp(c.stamp_ns)
            click.frame_id = c.camera_frame
        else:
            click.kind = Click.POINT
            click.point.header.frame_id = c.frame_id
            click.point.header.stamp = ns_to_stamp(c.stamp_ns)
            click.point.point = _point(c.xyz)
        msg.clicks.append(click)
    return msg


def _point(xyz: Sequence[float] | np.ndarray) -> Point:
    x, y, z = (float(v) for v in np.asarray(xyz, dtype=np.float64).reshape(3))
    return Point(x=x, y=y, z=z)


def grounded_object(box: Box3D) -> GroundedObject:
    """The GroundedObject of a world-frame box: label, score, centre pose (yaw/pitch/roll as a
    quaternion), full extents."""
    obj = GroundedObject(label=box.label, score=float(box.score))
    obj.center.position = _point(box.center)
    x, y, z, w = Rotation.from_euler("ZYX", np.asarray(box.euler, dtype=np.float64)).as_quat()
    obj.center.orientation = Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))
    sx, sy, sz = (float(v) for v in np.asarray(box.size, dtype=np.float64).reshape(3))
    obj.size = Vector3(x=sx, y=sy, z=sz)
    return obj


def answer_to_msg(
    result: AnswerResult, request: QueryRequest, world_frame: str, stamp_ns: int | None = None
) -> Answer:
    """The Answer message for a result; header stamp = newest view used unless given."""
    msg = Answer()
    newest = max(result.view_stamps_ns, default=0)
    msg.header = Header(
        stamp=ns_to_stamp(newest if stamp_ns is None else stamp_ns), frame_id=world_frame
    )
    msg.success = bool(result.success)
    msg.code = int(result.code)
    msg.message = result.message
    msg.prompt = prompt_to_msg(request)
    msg.text = result.text
    msg.objects = [grounded_object(box) for box in result.boxes]
    msg.click_points = [_point(p) for p in result.click_points]
    msg.view_stamps = [ns_to_stamp(s) for s in result.view_stamps_ns]
    msg.view_frames = list(result.view_frames)
    msg.model = result.model
    msg.scene_tokens = int(result.scene_tokens)
    t = result.timings
    msg.encode_s, msg.prefill_s = float(t.encode_s), float(t.prefill_s)
    msg.decode_s, msg.total_s = float(t.decode_s), float(t.total_s)
    msg.warnings = list(result.parse_warnings)
    return msg


def answer_summary(msg: Answer) -> dict:
    """A plain dict view of an Answer message (for printing by the command-line client)."""
    return {
        "success": bool(msg.success),
        "code": int(msg.code),
        "message": msg.message,
        "text": msg.text,
        "objects": [
            {
                "label": o.label,
                "score": None if math.isnan(o.score) else float(o.score),
                "center": [o.center.position.x, o.center.position.y, o.center.position.z],
                "size": [o.size.x, o.size.y, o.size.z],
            }
            for o in msg.objects
        ],
        "click_points": [[p.x, p.y, p.z] for p in msg.click_points],
        "view_stamps_ns": [stamp_to_ns(s) for s in msg.view_stamps],
        "view_frames": list(msg.view_frames),
        "model": msg.model,
        "scene_tokens": int(msg.scene_tokens),
        "timings_s": {
            "encode": msg.encode_s,
            "prefill": msg.prefill_s,
            "decode": msg.decode_s,
            "total": msg.total_s,
        },
        "warnings": list(msg.warnings),
    }


def cloud_from_points(
    xyz: np.ndarray, rgb: np.ndarray | None, stamp_ns: int, frame_id: str
) -> PointCloud2:
    """A PointCloud2 (x, y, z float32 + packed rgb) packed with a numpy structured array.

    The packed-float ``rgb`` field is the PCL/RViz convention (0x00RRGGBB reinterpreted).
    """
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    n = xyz.shape[0]
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    rec = np.zeros(n, dtype=dtype)
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        c = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
        if c.shape[0] != n:
            raise ConversionError(f"{c.shape[0]} colours for {n} points")
        rec["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    msg = PointCloud2()
    msg.header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
    ]
    msg.is_bigendian = False
    msg.point_step = dtype.itemsize
    msg.row_step = dtype.itemsize * n
    msg.is_dense = True
    msg.data = rec.tobytes()
    return msg


def cloud_to_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """(xyz (N, 3) float32, rgb (N, 3) uint8) from a cloud written by :func:`cloud_from_points`."""
    names = [f.name for f in msg.fields]
    if names[:4] != ["x", "y", "z", "rgb"] or msg.point_step != 16:
        raise ConversionError(f"expected x,y,z,rgb float32 fields (16 bytes), got {names}")
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    rec = np.frombuffer(msg.data, dtype=dtype, count=msg.width * msg.height)
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    packed = rec["rgb"]
    rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1)
    return xyz, rgb.astype(np.uint8)
