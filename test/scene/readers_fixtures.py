"""Builders of small synthetic sequences in each reader layout (written into tmp dirs)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

K = np.array([[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]])


def rgb_image(seed: int, w: int = 64, h: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def depth_image(seed: int, w: int = 64, h: int = 48) -> np.ndarray:
    d = np.random.default_rng(seed).integers(500, 4000, (h, w)).astype(np.uint16)
    d[0, 0] = 0  # one hole, which must decode as invalid
    return d


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_depth(path: Path, depth: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), depth)


def pose_at(t: float) -> np.ndarray:
    """A camera moving along x at 1 m/s, turning about z at 0.5 rad/s."""
    c, s = np.cos(0.5 * t), np.sin(0.5 * t)
    m = np.eye(4)
    m[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    m[:3, 3] = [t, 0.5, 1.2]
    return m


def quat_xyzw(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r).as_quat()


def write_seven_scenes(root: Path, frames: list[int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "camera-intrinsics.txt", K)
    for n in frames:
        write_rgb(root / f"frame-{n:06d}.color.png", rgb_image(n))
        write_depth(root / f"frame-{n:06d}.depth.png", depth_image(n))
        np.savetxt(root / f"frame-{n:06d}.pose.txt", pose_at(n / 30))


def write_tum(root: Path) -> dict:
    """A TUM sequence: 4 depth frames at 30 Hz, colour 5 ms later, ground truth at 100 Hz.

    Depth frame 0 precedes the ground truth (skipped); one extra colour image has no depth.
    """
    root.mkdir(parents=True, exist_ok=True)
    t0 = 1305031102.0
    depth_t = [t0 + i / 30 for i in range(4)]
    rgb_t = [t + 0.005 for t in depth_t] + [t0 + 0.5]
    gt_t = [t0 + 0.02 + i / 100 for i in range(30)]
    rgb_lines = ["# color images", "# timestamp filename"]
    depth_lines = ["# depth maps", "# timestamp filename"]
    for i, t in enumerate(rgb_t):
        write_rgb(root / "rgb" / f"{t:.6f}.png", rgb_image(i))
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
    for i, t in enumerate(depth_t):
        write_depth(root / "depth" / f"{t:.6f}.png", depth_image(100 + i))
        depth_lines.append(f"{t:.6f} depth/{t:.6f}.png")
    gt_lines = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
    for t in gt_t:
        m = pose_at(t - t0)
        q = quat_xyzw(m[:3, :3])
        gt_lines.append(f"{t:.4f} " + " ".join(f"{x:.9f}" for x in [*m[:3, 3], *q]))
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (root / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    return {"t0": t0, "depth_t": depth_t}


SCANNET_ALIGN = np.array(
    [[0.0, 1.0, 0.0, -2.0], [-1.0, 0.0, 0.0, 3.0], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1.0]]
)


def write_scannet(root: Path, n_frames: int = 3, lost: tuple[int, ...] = (1,)) -> None:
    """Colour 128×96 (K doubled), depth 64×48; frames in ``lost`` carry ScanNet's -inf pose."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(n_frames):
        write_rgb(root / "color" / f"{n}.jpg", rgb_image(n, 128, 96))
        write_depth(root / "depth" / f"{n}.png", depth_image(n))
        pose = np.full((4, 4), -np.inf) if n in lost else pose_at(n / 30)
        (root / "pose").mkdir(exist_ok=True)
        np.savetxt(root / "pose" / f"{n}.txt", pose)
    (root / "intrinsic").mkdir(exist_ok=True)
    kc = np.eye(4)
    kc[:3, :3] = K * [[2], [2], [1]]
    kd = np.eye(4)
    kd[:3, :3] = K
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", kc)
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", kd)
    (root / f"{root.name}.txt").write_text(
        "colorHeight = 96\naxisAlignment = "
        + " ".join(f"{x:g}" for x in SCANNET_ALIGN.reshape(-1))
        + "\nnumDepthFrames = 3\n"
    )


TS = get_typestore(Stores.ROS2_KILTED)


def _header(stamp_ns: int, frame: str = "camera") -> object:
    time = TS.types["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
    )
    return TS.types["std_msgs/msg/Header"](stamp=time, frame_id=frame)


def image_msg(stamp_ns: int, array: np.ndarray, encoding: str) -> object:
    h, w = array.shape[:2]
    data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    return TS.types["sensor_msgs/msg/Image"](
        header=_header(stamp_ns),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=data.size // h,
        data=data,
    )


def camera_info_msg(stamp_ns: int, k: np.ndarray, w: int, h: int) -> object:
    roi = TS.types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    p = np.zeros((3, 4))
    p[:, :3] = k
    return TS.types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns),
        height=h,
        width=w,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k.reshape(-1).astype(np.float64),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def pose_msg(stamp_ns: int, m: np.ndarray) -> object:
    q = quat_xyzw(m[:3, :3])
    point = TS.types["geometry_msgs/msg/Point"](x=m[0, 3], y=m[1, 3], z=m[2, 3])
    quat = TS.types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])
    pose = TS.types["geometry_msgs/msg/Pose"](position=point, orientation=quat)
    return TS.types["geometry_msgs/msg/PoseStamped"](header=_header(stamp_ns, "map"), pose=pose)


def write_bag(
    path: Path,
    n_frames: int = 3,
    depth_encoding: str = "16UC1",
    extra_image_topic: bool = False,
) -> list[int]:
    """A bag with colour (rgb8) 5 ms after depth, one CameraInfo, poses at 100 Hz from t=0.

    Returns the depth stamps (ns); stamps start at 1 s, 1/30 s apart.
    """
    stamps = [1_000_000_000 + round(i * 1e9 / 30) for i in range(n_frames)]
    with Writer(path, version=9) as w:
        c_rgb = w.add_connection("/camera/color/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        c_dep = w.add_connection(
            "/camera/depth/image_rect_raw", "sensor_msgs/msg/Image", typestore=TS
        )
        c_inf = w.add_connection(
            "/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TS
        )
        c_pose = w.add_connection("/camera/pose", "geometry_msgs/msg/PoseStamped", typestore=TS)
        c_extra = None
        if extra_image_topic:
            c_extra = w.add_connection("/other/image", "sensor_msgs/msg/Image", typestore=TS)
        msgs = []
        for i in range(200):
            t = i * 10_000_000
            msgs.append((t, c_pose, pose_msg(t, pose_at(t / 1e9)), "geometry_msgs/msg/PoseStamped"))
        msgs.append((0, c_inf, camera_info_msg(0, K, 64, 48), "sensor_msgs/msg/CameraInfo"))
        for i, s in enumerate(stamps):
            if depth_encoding == "32FC1":
                dep = depth_image(100 + i).astype(np.float32) / 1000.0
            else:
                dep = depth_image(100 + i)
            msgs.append((s, c_dep, image_msg(s, dep, depth_encoding), "sensor_msgs/msg/Image"))
            rgb = image_msg(s + 5_000_000, rgb_image(i), "rgb8")
            msgs.append((s + 5_000_000, c_rgb, rgb, "sensor_msgs/msg/Image"))
            if c_extra is not None:
                msgs.append((s, c_extra, rgb, "sensor_msgs/msg/Image"))
        for t, conn, msg, kind in sorted(msgs, key=lambda m: m[0]):
            w.write(conn, t, TS.serialize_cdr(msg, kind))
    return stamps
