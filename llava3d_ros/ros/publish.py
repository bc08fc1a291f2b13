"""Publish posed RGB-D frames as the node's input topics (used by replay, the demo and tests)."""

from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from llava3d_ros.ros.convert import array_to_image, matrix_to_pose, ns_to_stamp

SENSOR_PUB_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# tf2_ros's broadcaster profiles: /tf reliable depth 100, /tf_static latched
TF_PUB_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_PUB_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def camera_info(k: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> CameraInfo:
    """A CameraInfo for an undistorted pinhole camera."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id))
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = k.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    p = np.zeros((3, 4))
    p[:, :3] = k
    msg.p = p.reshape(-1).tolist()
    return msg


class FramePublisher:
    """Publishers for ``rgb/image``, ``rgb/camera_info``, ``depth/image`` and ``pose`` under ``prefix``."""

    def __init__(
        self,
        node: Node,
        prefix: str = "",
        world_frame: str = "map",
        camera_frame: str = "camera_optical_frame",
    ) -> None:
        def name(topic: str) -> str:
            return f"{prefix.rstrip('/')}/{topic}" if prefix else topic

        self.node = node
        self.world_frame, self.camera_frame = world_frame, camera_frame
        self.rgb = node.create_publisher(Image, name("rgb/image"), SENSOR_PUB_QOS)
        self.info = node.create_publisher(CameraInfo, name("rgb/camera_info"), SENSOR_PUB_QOS)
        self.depth = node.create_publisher(Image, name("depth/image"), SENSOR_PUB_QOS)
        self.pose = node.create_publisher(PoseStamped, name("pose"), SENSOR_PUB_QOS)

    def wait_for_subscribers(self, timeout: float) -> bool:
        """True once every topic has a subscriber (the node is active)."""
        deadline = time.monotonic() + timeout
        pubs = (self.rgb, self.info, self.depth, self.pose)
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.05)
        return False

    def publish(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        k: np.ndarray,
        cam_to_world: np.ndarray | None,
        stamp_ns: int,
        rgb_encoding: str = "rgb8",
    ) -> None:
        """One frame: pose first (the node looks it up at the image stamp), then info, depth, colour.

        ``depth`` uint16 goes out as 16UC1 (millimetres), float32 as 32FC1 (metres).
        """
        if cam_to_world is not None:
            pose = PoseStamped(
                header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=self.world_frame)
            )
            pose.pose = matrix_to_pose(cam_to_world)
            self.pose.publish(pose)
        h, w = rgb.shape[:2]
        self.info.publish(camera_info(k, w, h, stamp_ns, self.camera_frame))
        enc = "16UC1" if depth.dtype == np.uint16 else "32FC1"
        self.depth.publish(array_to_image(depth, enc, stamp_ns, self.camera_frame))
        self.rgb.publish(array_to_image(rgb, rgb_encoding, stamp_ns, self.camera_frame))


def transform_stamped(
    parent: str, child: str, parent_t_child: np.ndarray, stamp_ns: int
) -> TransformStamped:
    """``parent_T_child`` (4×4) as a TransformStamped."""
    pose = matrix_to_pose(parent_t_child)
    t = TransformStamped(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=parent))
    t.child_frame_id = child
    t.transform.translation.x = pose.position.x
    t.transform.translation.y = pose.position.y
    t.transform.translation.z = pose.position.z
    t.transform.rotation = pose.orientation
    return t


class TfPublisher:
    """``/tf`` and ``/tf_static`` as a robot's TF broadcasters send them (replay, demo, tests)."""

    def __init__(self, node: Node) -> None:
        from tf2_msgs.msg import TFMessage

        self._msg = TFMessage
        self.tf = node.create_publisher(TFMessage, "/tf", TF_PUB_QOS)
        self.tf_static = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_PUB_QOS)
        self._static: dict[str, TransformStamped] = {}

    def static(self, parent: str, child: str, parent_t_child: np.ndarray) -> None:
        """Add a static transform; all of them go out in one latched message (as tf2_ros does)."""
        self._static[child] = transform_stamped(parent, child, parent_t_child, 0)
        self.tf_static.publish(self._msg(transforms=list(self._static.values())))

    def send(self, transforms: list[tuple[str, str, np.ndarray, int]]) -> None:
        """Dynamic transforms ``(parent, child, parent_T_child, stamp_ns)`` in one message."""
        self.tf.publish(self._msg(transforms=[transform_stamped(*t) for t in transforms]))
