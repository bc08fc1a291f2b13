"""``llava3d-ros replay``: publish a dataset folder or rosbag2 as the node's input topics.

Frames come from the scene core's readers (``scene.readers.open_dataset``), so every layout
they know replays the same way; stamps keep their recorded spacing, scaled by ``--rate``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo

from llava3d_ros.ros.convert import ns_to_stamp
from llava3d_ros.ros.publish import SENSOR_PUB_QOS, FramePublisher, camera_info
from llava3d_ros.scene.readers import DatasetError, open_dataset


def depth_for_wire(depth_m: np.ndarray) -> np.ndarray:
    """Metres (NaN invalid) → 16UC1 millimetres (0 invalid), the common driver encoding."""
    mm = np.where(np.isfinite(depth_m), np.round(depth_m * 1000.0), 0.0)
    if mm.max(initial=0) > 65534:
        raise ValueError("depth beyond 65.5 m does not fit 16UC1 millimetres")
    return mm.astype(np.uint16)


def main(args: argparse.Namespace, ros_args: list[str]) -> int:
    """Publish the recording; returns 0 when every frame went out."""
    if not args.rate > 0:
        print("llava3d-ros replay: --rate must be > 0", file=sys.stderr)
        return 2
    try:
        reader = open_dataset(args.source)
    except (DatasetError, OSError) as exc:
        print(f"llava3d-ros replay: {exc}", file=sys.stderr)
        return 2
    context = rclpy.Context()
    rclpy.init(args=["llava3d-ros", *ros_args], context=context)
    overrides = [Parameter("use_sim_time", Parameter.Type.BOOL, False)]
    node = rclpy.create_node("llava3d_replay", context=context, parameter_overrides=overrides)
    pub = FramePublisher(node, world_frame=args.world_frame, camera_frame=args.camera_frame)
    depth_info = node.create_publisher(CameraInfo, "depth/camera_info", SENSOR_PUB_QOS)
    clock = node.create_publisher(Clock, "/clock", 10) if args.use_sim_time else None
    log = node.get_logger()
    if not pub.wait_for_subscribers(args.wait_subscribers):
        log.warning(
            f"no subscriber on the input topics after {args.wait_subscribers} s; publishing anyway"
        )
    offset = int(args.stamp_offset_s * 1e9)
    sent = 0
    try:
        while True:
            first = last = None
            t_start = time.monotonic()
            for frame in reader:
                first = frame.stamp_ns if first is None else first
                due = t_start + (frame.stamp_ns - first) / 1e9 / args.rate
                time.sleep(max(0.0, due - time.monotonic()))
                stamp = frame.stamp_ns + offset
                if clock is not None:
                    clock.publish(Clock(clock=ns_to_stamp(stamp)))
                dh, dw = frame.depth.shape
                if not np.array_equal(frame.k_depth, frame.k_rgb) or frame.rgb.shape[:2] != (
                    dh,
                    dw,
                ):
                    depth_info.publish(camera_info(frame.k_depth, dw, dh, stamp, args.camera_frame))
                pub.publish(
                    frame.rgb, depth_for_wire(frame.depth), frame.k_rgb, frame.cam_to_world, stamp
                )
                sent += 1
                last = frame.stamp_ns
            if not args.loop or first is None:
                break
            # keep stamps increasing across loops (the node drops time going backwards)
            offset += (last - first) + max((last - first) // max(len(reader) - 1, 1), 1)
        log.info(f"replayed {sent} frames from {reader!r}")
        time.sleep(0.5)  # let the last messages leave before the publishers go
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    return 0 if sent else 1
