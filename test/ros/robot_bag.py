"""Write a robot-style rosbag2 with ``rosbags``: TF tree, compressed images, camera_info.

What a RealSense on a mobile base records: ``/tf_static`` (``base_link → camera_link`` and
``camera_link → camera_color_optical_frame``, from two broadcasters, the first repeated),
``/tf`` (``map → odom`` at 5 Hz, sent ahead of the images, and ``odom → base_link`` at every
frame), JPEG colour on ``/camera/color/image_raw/compressed`` (``"rgb8; jpeg compressed
bgr8"``), PNG depth on ``/camera/aligned_depth_to_color/image_raw/compressedDepth``
(``"16UC1; compressedDepth png"``: 12-byte header + PNG) and both camera_info topics. No
PoseStamped: poses exist only through TF. The frames' poses are ``map ← optical``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

TS = get_typestore(Stores.ROS2_KILTED)

OPTICAL = "camera_color_optical_frame"
COLOR = "/camera/color/image_raw/compressed"
DEPTH = "/camera/aligned_depth_to_color/image_raw/compressedDepth"
COLOR_INFO = "/camera/color/camera_info"
DEPTH_INFO = "/camera/aligned_depth_to_color/camera_info"
# --map arguments that put the bag onto the node's inputs (compressed transports)
NODE_MAPS = (
    f"{COLOR}=rgb/image/compressed",
    f"{DEPTH}=depth/image/compressedDepth",
    f"{COLOR_INFO}=rgb/camera_info",
    f"{DEPTH_INFO}=depth/camera_info",
)
COLOR_FORMAT = "rgb8; jpeg compressed bgr8"
DEPTH_FORMAT = "16UC1; compressedDepth png"


def rigid(xyz: tuple[float, float, float], euler_deg: tuple[float, float, float]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", euler_deg, degrees=True).as_matrix()
    m[:3, 3] = xyz
    return m


BASE_T_LINK = rigid((0.1, 0.0, 0.5), (0.0, 10.0, 0.0))
LINK_T_OPTICAL = rigid((0.0, 0.015, 0.0), (-90.0, 0.0, -90.0))
MAP_T_ODOM = rigid((0.3, -0.2, 0.0), (0.0, 0.0, 5.0))


def frame_stamp(f: dict) -> int:
    """Header stamp of a frame: its index at 30 Hz."""
    return round(f["index"] * 1e9 / 30)


def _header(stamp_ns: int, frame: str) -> object:
    t = TS.types["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
    )
    return TS.types["std_msgs/msg/Header"](stamp=t, frame_id=frame)


def _transform(parent: str, child: str, m: np.ndarray, stamp_ns: int) -> object:
    q = Rotation.from_matrix(m[:3, :3]).as_quat()
    v = TS.types["geometry_msgs/msg/Vector3"](x=m[0, 3], y=m[1, 3], z=m[2, 3])
    r = TS.types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])
    return TS.types["geometry_msgs/msg/TransformStamped"](
        header=_header(stamp_ns, parent),
        child_frame_id=child,
        transform=TS.types["geometry_msgs/msg/Transform"](translation=v, rotation=r),
    )


def tf_message(transforms: list[tuple[str, str, np.ndarray, int]]) -> object:
    return TS.types["tf2_msgs/msg/TFMessage"](transforms=[_transform(*t) for t in transforms])


def compressed_color(rgb: np.ndarray, stamp_ns: int, quality: int = 95) -> object:
    ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return TS.types["sensor_msgs/msg/CompressedImage"](
        header=_header(stamp_ns, OPTICAL), format=COLOR_FORMAT, data=jpg.reshape(-1)
    )


def compressed_depth(depth_mm: np.ndarray, stamp_ns: int) -> object:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(depth_mm, dtype=np.uint16))
    assert ok
    data = np.frombuffer(struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes(), dtype=np.uint8)
    return TS.types["sensor_msgs/msg/CompressedImage"](
        header=_header(stamp_ns, OPTICAL), format=DEPTH_FORMAT, data=data
    )


def camera_info(k: np.ndarray, w: int, h: int, stamp_ns: int) -> object:
    roi = TS.types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    p = np.zeros((3, 4))
    p[:, :3] = k
    return TS.types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns, OPTICAL),
        height=h,
        width=w,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.asarray(k, dtype=np.float64).reshape(-1),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def write_robot_bag(
    path: Path, frames: list[dict], storage: str = "mcap", unknown_topic: bool = False
) -> list[int]:
    """Write the bag; returns the frames' header stamps (ns).

    Receive (log) times: statics first, ``map → odom`` 250 ms ahead of its stamp, the rest
    5 ms after theirs. ``unknown_topic`` adds ``/robot/status`` of a type not known here.
    """
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    stamps = [frame_stamp(f) for f in frames]
    msgs: list[tuple[int, str, object, str]] = []
    tfm = "tf2_msgs/msg/TFMessage"
    t0 = stamps[0] - 500_000_000
    msgs.append((t0, "/tf_static", tf_message([("base_link", "camera_link", BASE_T_LINK, 0)]), tfm))
    msgs.append(
        (t0 + 1, "/tf_static", tf_message([("camera_link", OPTICAL, LINK_T_OPTICAL, 0)]), tfm)
    )
    msgs.append(
        (t0 + 2, "/tf_static", tf_message([("base_link", "camera_link", BASE_T_LINK, 0)]), tfm)
    )
    for s in range(stamps[0] - 200_000_000, stamps[-1] + 400_000_000, 200_000_000):
        msgs.append((s - 250_000_000, "/tf", tf_message([("map", "odom", MAP_T_ODOM, s)]), tfm))
    base_t_optical = BASE_T_LINK @ LINK_T_OPTICAL
    for f, s in zip(frames, stamps, strict=True):
        odom_t_base = np.linalg.inv(MAP_T_ODOM) @ f["pose"] @ np.linalg.inv(base_t_optical)
        msgs.append(
            (s + 1_000_000, "/tf", tf_message([("odom", "base_link", odom_t_base, s)]), tfm)
        )
        h, w = f["depth"].shape
        info = camera_info(f["k"], w, h, s)
        msgs.append((s + 4_000_000, COLOR_INFO, info, "sensor_msgs/msg/CameraInfo"))
        msgs.append((s + 4_000_000, DEPTH_INFO, info, "sensor_msgs/msg/CameraInfo"))
        cimg = "sensor_msgs/msg/CompressedImage"
        msgs.append((s + 5_000_000, DEPTH, compressed_depth(f["depth"], s), cimg))
        msgs.append((s + 6_000_000, COLOR, compressed_color(f["rgb"], s), cimg))
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for _, topic, _, kind in msgs:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, kind, typestore=TS)
        if unknown_topic:
            from rosbags.typesys import get_types_from_msg

            kind, msgdef = "robot_status_msgs/msg/Status", "int32 level\n"
            own = get_typestore(Stores.EMPTY)
            own.register(get_types_from_msg(msgdef, kind))
            status = writer.add_connection(
                "/robot/status", kind, msgdef=msgdef, rihs01=own.hash_rihs01(kind)
            )
            writer.write(status, stamps[0], b"\x00\x01\x00\x00\x07\x00\x00\x00")
        for t, topic, msg, kind in sorted(msgs, key=lambda m: m[0]):
            writer.write(conns[topic], t, TS.serialize_cdr(msg, kind))
    return stamps
