"""``llava3d-ros replay``: publish a dataset folder, a rosbag2 or a generated room as input topics.

Frames come from the scene core's readers (``scene.readers.open_dataset``), so every layout
they know replays the same way; stamps keep their recorded spacing, scaled by ``--rate``.
``--synthetic SEED`` plays the generated room SEED (``synthetic.sequence``: the demo's views of
the embedded model's own world) the same way, stamped at ``--fps``. Progress goes to stdout as
plain lines (what is replayed, a line every ~2 s, one per loop, a summary) unless ``--quiet``.

A rosbag2 (mcap or sqlite3) that holds robot topics (``/tf``/``/tf_static``, CompressedImage,
Odometry), or any rosbag2 given ``--map FROM=TO`` or ``--as-recorded``, is played as recorded
by ``ros.bag_replay`` (every topic's bytes unchanged, renamed by ``--map``); a bag of raw
Image + CameraInfo + PoseStamped topics alone is read into frames and published on the node's
input topics like a dataset folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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


PROGRESS_EVERY_S = 2.0
LOOP_LINE_MIN_S = 1.0  # fast loops (a short sequence at a high --rate) would flood stdout


class Progress:
    """Plain progress lines on stdout, flushed (silent when ``quiet``)."""

    def __init__(
        self, quiet: bool, every_s: float = PROGRESS_EVERY_S, unit: str = "frames"
    ) -> None:
        self.quiet = quiet
        self.unit = unit
        self.every_s = every_s
        self.t0 = self._last_t = time.monotonic()
        self.sent = self._last_sent = 0
        self.loop = 1
        self.t_end: float | None = None
        self._last_loop_line: float | None = None

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)

    def start(self, what: str, frames: int, pace: str) -> None:
        self.say(f"replaying {what}: {frames} {self.unit}, {pace}")

    def begin(self) -> None:
        """The clock of the rates starts (after the wait for subscribers)."""
        self.t0 = self._last_t = time.monotonic()

    def frame_sent(self) -> None:
        self.sent += 1
        now = time.monotonic()
        if now - self._last_t >= self.every_s:
            hz = (self.sent - self._last_sent) / (now - self._last_t)
            self.say(f"sent {self.sent} {self.unit}, loop {self.loop}, {hz:.1f} Hz")
            self._last_t, self._last_sent = now, self.sent

    def loop_done(self, frames: int) -> None:
        """One line per loop; loops shorter than ``LOOP_LINE_MIN_S`` are said at most that often."""
        now = time.monotonic()
        if self._last_loop_line is None or now - self._last_loop_line >= LOOP_LINE_MIN_S:
            self.say(f"loop {self.loop} done: {frames} {self.unit}")
            self._last_loop_line = now
        self.loop += 1

    def stop(self) -> None:
        """The clock of the summary stops (before the final linger)."""
        if self.t_end is None:
            self.t_end = time.monotonic()

    def summary(self) -> str:
        self.stop()
        wall = self.t_end - self.t0
        loops = self.loop - 1
        mean = self.sent / wall if wall > 0 else 0.0
        return (
            f"replayed {self.sent} {self.unit} in {wall:.1f} s ({mean:.1f} Hz mean), "
            f"{loops} loop{'s' if loops != 1 else ''}"
        )


def _open(args: argparse.Namespace):
    """(reader, what it is, how it is paced) for ``source`` or ``--synthetic``."""
    synthetic = getattr(args, "synthetic", None)
    if synthetic is not None:
        if args.source:
            raise DatasetError("give either a source or --synthetic SEED, not both")
        from llava3d_ros.synthetic.sequence import SyntheticSequence

        fps = getattr(args, "fps", 5.0)
        reader = SyntheticSequence(synthetic, n_views=getattr(args, "views", 8), fps=fps)
        return reader, reader.describe(), f"{fps:g} fps x{args.rate:g}"
    if not args.source:
        raise DatasetError(
            "nothing to replay: give a dataset folder or rosbag2, or --synthetic SEED"
        )
    reader = open_dataset(args.source)
    what = f"{reader.layout or type(reader).__name__} {args.source}"
    return reader, what, f"recorded spacing x{args.rate:g}"


def _bag_as_recorded(args: argparse.Namespace) -> Path | None:
    """The rosbag2 to play as recorded (``ros.bag_replay``), or None for the frame readers."""
    from llava3d_ros.scene.readers.rosbag import is_rosbag2

    forced = bool(getattr(args, "map", None)) or getattr(args, "as_recorded", False)
    source = Path(args.source).expanduser() if args.source else None
    if source is None or getattr(args, "synthetic", None) is not None or not is_rosbag2(source):
        if forced:
            raise DatasetError("--map and --as-recorded apply to a rosbag2 source only")
        return None
    from llava3d_ros.ros.bag_replay import wants_passthrough

    return source if forced or wants_passthrough(source) else None


def main(args: argparse.Namespace, ros_args: list[str]) -> int:
    """Publish the recording; returns 0 when every frame went out."""
    if not args.rate > 0:
        print("llava3d-ros replay: --rate must be > 0", file=sys.stderr)
        return 2
    try:
        bag = _bag_as_recorded(args)
    except (DatasetError, OSError, ValueError) as exc:
        print(f"llava3d-ros replay: {exc}", file=sys.stderr)
        return 2
    if bag is not None:
        from llava3d_ros.ros import bag_replay

        progress = Progress(getattr(args, "quiet", False), unit="messages")
        return bag_replay.main(args, ros_args, bag, progress)
    try:
        reader, what, pace = _open(args)
    except (DatasetError, OSError, ValueError) as exc:
        print(f"llava3d-ros replay: {exc}", file=sys.stderr)
        return 2
    progress = Progress(getattr(args, "quiet", False))
    context = rclpy.Context()
    rclpy.init(args=["llava3d-ros", *ros_args], context=context)
    overrides = [Parameter("use_sim_time", Parameter.Type.BOOL, False)]
    node = rclpy.create_node("llava3d_replay", context=context, parameter_overrides=overrides)
    pub = FramePublisher(node, world_frame=args.world_frame, camera_frame=args.camera_frame)
    depth_info = node.create_publisher(CameraInfo, "depth/camera_info", SENSOR_PUB_QOS)
    clock = node.create_publisher(Clock, "/clock", 10) if args.use_sim_time else None
    log = node.get_logger()
    progress.start(what, len(reader), pace + (", looping" if args.loop else ""))
    if not pub.wait_for_subscribers(args.wait_subscribers):
        log.warning(
            f"no subscriber on the input topics after {args.wait_subscribers} s; publishing anyway"
        )
    offset = int(args.stamp_offset_s * 1e9)
    progress.begin()
    t_start = time.monotonic()
    try:
        while True:
            in_loop = 0
            first = last = None
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
                progress.frame_sent()
                in_loop += 1
                last = frame.stamp_ns
            progress.loop_done(in_loop)
            if not args.loop or first is None:
                break
            # keep stamps increasing across loops (the node drops time going backwards)
            step = (last - first) + max((last - first) // max(len(reader) - 1, 1), 1)
            offset += step
            t_start += step / 1e9 / args.rate  # one frame period between loops, as stamped
        progress.stop()
        time.sleep(0.5)  # let the last messages leave before the publishers go
    except KeyboardInterrupt:
        pass
    finally:
        # "replayed N frames ..." is also what scripts and tests look for
        if progress.quiet:
            log.info(f"{progress.summary()} from {reader!r}")
        else:
            progress.say(progress.summary())
        node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    return 0 if progress.sent else 1
