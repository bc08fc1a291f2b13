"""``llava3d-ros replay BAG``: a robot's rosbag2 played back as recorded (a passthrough).

Every connection whose message type is importable here is republished with its recorded CDR
bytes unchanged (``rosbags`` reads mcap and sqlite3 storage; rclpy publishes the bytes), so
``/tf``, ``/tf_static``, ``compressed`` and ``compressedDepth`` images, ``camera_info``,
``PoseStamped`` and ``Odometry`` reach the node exactly as the robot sent them. Types that are
not importable here are skipped, one stderr line each.

* Names: a topic keeps its recorded name unless ``--map FROM=TO`` (repeatable) renames it; a
  relative TO resolves in the replay node's namespace (``--ros-args -r __ns:=/robot``), and
  ``--ros-args -r`` remaps apply on top, as for any node.
* QoS: TFMessage topics named ``…tf_static`` reliable + transient-local depth 1, other
  TFMessage topics reliable depth 100 (tf2_ros's broadcaster profiles), everything else
  reliable depth 10 (``publish.SENSOR_PUB_QOS``).
* ``/tf_static``: a bag may hold several messages (one per static broadcaster, or repeats).
  They are merged, per child frame (the last recorded wins), into one latched message sent
  before playback, which is what a TF listener ends up holding. They are not sent again.
* Pacing: the bag's receive (log) timestamps, scaled by ``--rate``. ``--loop`` plays the bag
  again with the same stamps (the node treats the jump back as a restarted source).
  ``--use-sim-time`` publishes ``/clock`` from the receive timestamps when the bag has no
  ``/clock`` of its own (one that it has is played like any topic).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# light at import (the CLI's argument parser uses parse_map): rosbags and rclpy load on use

TF_MESSAGE = "tf2_msgs/msg/TFMessage"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
ODOMETRY = "nav_msgs/msg/Odometry"
# what a robot bag holds that only a passthrough can play (the frame reader knows none of it)
ROBOT_TYPES = (TF_MESSAGE, COMPRESSED_IMAGE, ODOMETRY)
SUBSCRIBER_SETTLE_S = 1.0  # after a first input is matched, how long the others may take


class BagError(ValueError):
    """A rosbag2 that cannot be played as asked (the message says why)."""


def parse_map(text: str) -> tuple[str, str]:
    """``FROM=TO`` → (absolute FROM, TO); argparse type of ``--map``."""
    src, sep, dst = text.partition("=")
    src, dst = src.strip(), dst.strip()
    if not sep or not src or not dst or "=" in dst:
        raise argparse.ArgumentTypeError(
            f"expected FROM=TO (a recorded topic and a name), got {text!r}"
        )
    return ("/" + src.lstrip("/"), dst)


def msg_class(msgtype: str) -> type | None:
    """The Python class of ``pkg/msg/Name`` (``rosidl_runtime_py`` when present), or None."""
    try:
        from rosidl_runtime_py.utilities import get_message  # full installs
    except ImportError:
        get_message = None
    if get_message is not None:
        try:
            return get_message(msgtype)
        except (AttributeError, ImportError, ValueError):
            return None
    parts = msgtype.split("/")
    if len(parts) == 2:  # ROS 1 style "pkg/Name"
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        return None
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name, None)
    except ImportError:
        return None


@contextmanager
def open_bag(path: Path) -> Iterator[object]:
    """An open ``rosbags`` AnyReader (mcap or sqlite3; the Kilted typestore by default)."""
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    try:
        bag = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED))
        bag.open()
    except AnyReaderError as err:
        raise BagError(f"cannot open rosbag2 {path}: {err}") from err
    try:
        yield bag
    finally:
        bag.close()


def bag_msgtypes(path: Path) -> dict[str, str]:
    """{topic: message type} of a rosbag2."""
    with open_bag(path) as bag:
        return {c.topic: c.msgtype for c in bag.connections}


def wants_passthrough(path: Path) -> bool:
    """Whether a rosbag2 holds robot topics (TF, compressed images, Odometry)."""
    return any(m in ROBOT_TYPES for m in bag_msgtypes(path).values())


@dataclass
class Track:
    """One recorded topic and where it goes."""

    topic: str
    msgtype: str
    cls: type
    to: str
    count: int = 0
    connections: list = field(default_factory=list)

    @property
    def latched(self) -> bool:
        return self.msgtype == TF_MESSAGE and self.topic.rstrip("/").endswith("tf_static")


def plan(bag, remaps: list[tuple[str, str]]) -> tuple[dict[str, Track], list[str]]:
    """The tracks to play and one line per topic skipped; unknown ``--map`` FROMs raise."""
    topics: dict[str, Track] = {}
    skipped: list[str] = []
    dest = dict(remaps)
    recorded = {c.topic for c in bag.connections}
    unknown = [src for src in dest if src not in recorded]
    if unknown:
        raise BagError(
            f"--map names topics the bag does not hold: {', '.join(unknown)} "
            f"(topics: {', '.join(sorted(recorded))})"
        )
    for conn in bag.connections:
        track = topics.get(conn.topic)
        if track is not None:
            if track.msgtype == conn.msgtype:
                track.connections.append(conn)
                track.count += conn.msgcount
            else:
                skipped.append(
                    f"skipping {conn.topic} as {conn.msgtype}: already played as {track.msgtype}"
                )
            continue
        cls = msg_class(conn.msgtype)
        if cls is None:
            if not any(s.startswith(f"skipping {conn.topic}:") for s in skipped):
                skipped.append(
                    f"skipping {conn.topic}: message type {conn.msgtype} is not available here"
                )
            continue
        topics[conn.topic] = Track(
            conn.topic, conn.msgtype, cls, dest.get(conn.topic, conn.topic), conn.msgcount, [conn]
        )
    return topics, skipped


def merged_static(bag, tracks: dict[str, Track]) -> dict[str, object]:
    """{latched topic: one TFMessage holding every recorded static transform, per child frame}."""
    from rclpy.serialization import deserialize_message

    out = {}
    for track in tracks.values():
        if not track.latched:
            continue
        by_child: dict[str, object] = {}
        for _, _, raw in bag.messages(connections=track.connections):
            msg = deserialize_message(bytes(raw), track.cls)
            for t in msg.transforms:
                by_child[t.child_frame_id] = t
        out[track.topic] = track.cls(transforms=list(by_child.values()))
    return out


class BagPlayer:
    """Publishers for a bag's tracks on ``node``; ``play`` sends one pass."""

    def __init__(self, node, tracks: dict[str, Track], use_sim_time: bool) -> None:  # noqa: ANN001
        from rclpy.qos import QoSProfile
        from rosgraph_msgs.msg import Clock

        from llava3d_ros.ros.publish import SENSOR_PUB_QOS, TF_PUB_QOS, TF_STATIC_PUB_QOS

        self.node, self.tracks = node, tracks
        self.pubs = {}
        for t in tracks.values():
            if t.latched:
                qos = TF_STATIC_PUB_QOS
            elif t.msgtype == TF_MESSAGE:
                qos = TF_PUB_QOS
            else:
                qos = QoSProfile(depth=SENSOR_PUB_QOS.depth, reliability=SENSOR_PUB_QOS.reliability)
            self.pubs[t.topic] = node.create_publisher(t.cls, t.to, qos)
        has_clock = any(p.topic_name == "/clock" for p in self.pubs.values())
        self.clock = None
        if use_sim_time and not has_clock:
            self._clock_msg = Clock
            self.clock = node.create_publisher(Clock, "/clock", 10)

    def names(self) -> dict[str, str]:
        """{recorded topic: resolved name it is published on}."""
        return {topic: pub.topic_name for topic, pub in self.pubs.items()}

    def wait_for_subscribers(self, timeout: float) -> bool:
        """True once a subscriber is matched on a non-TF topic (and the others had a moment).

        A robot bag holds topics nobody here subscribes to, so all-of-them would never come;
        once one input is matched, the other publishers get ``SUBSCRIBER_SETTLE_S`` to match.
        """
        inputs = [p for t, p in self.pubs.items() if self.tracks[t].msgtype != TF_MESSAGE]
        inputs = inputs or list(self.pubs.values())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.get_subscription_count() > 0 for p in inputs):
                settle = min(deadline, time.monotonic() + SUBSCRIBER_SETTLE_S)
                while time.monotonic() < settle and not all(
                    p.get_subscription_count() > 0 for p in inputs
                ):
                    time.sleep(0.05)
                return True
            time.sleep(0.05)
        return False

    def publish_static(self, static: dict[str, object]) -> None:
        for topic, msg in static.items():
            self.pubs[topic].publish(msg)

    def play(self, bag, t_start: float, rate: float, progress) -> tuple[int, int]:  # noqa: ANN001
        """One pass, paced from ``t_start`` (monotonic); returns (messages sent, log-time span ns)."""
        from llava3d_ros.ros.convert import ns_to_stamp

        conns = [c for t in self.tracks.values() if not t.latched for c in t.connections]
        by_id = {c.id: self.tracks[c.topic].topic for c in conns}
        sent, first, last = 0, None, None
        for conn, t_log, raw in bag.messages(connections=conns):
            first = t_log if first is None else first
            due = t_start + (t_log - first) / 1e9 / rate
            time.sleep(max(0.0, due - time.monotonic()))
            if self.clock is not None:
                self.clock.publish(self._clock_msg(clock=ns_to_stamp(t_log)))
            self.pubs[by_id[conn.id]].publish(bytes(raw))
            progress.frame_sent()
            sent += 1
            last = t_log
        return sent, (last - first) if sent else 0


def main(args: argparse.Namespace, ros_args: list[str], path: Path, progress) -> int:  # noqa: ANN001
    """Play the rosbag2 at ``path``; ``progress`` is replay's ``Progress`` (unit: messages)."""
    if getattr(args, "stamp_offset_s", 0.0):
        print(
            "llava3d-ros replay: --stamp-offset-s does not apply to a rosbag2 played as recorded",
            file=sys.stderr,
        )
        return 2
    try:
        with open_bag(path) as bag:
            return _play(args, ros_args, path, progress, bag)
    except BagError as exc:
        print(f"llava3d-ros replay: {exc}", file=sys.stderr)
        return 2


def _play(args: argparse.Namespace, ros_args: list[str], path: Path, progress, bag) -> int:  # noqa: ANN001
    import rclpy
    from rclpy.parameter import Parameter

    context = None
    node = None
    try:
        tracks, skipped = plan(bag, list(getattr(args, "map", None) or []))
        for line in skipped:
            print(line, file=sys.stderr, flush=True)
        if not tracks:
            print(f"llava3d-ros replay: no topic of {path} can be played here", file=sys.stderr)
            return 2
        static = merged_static(bag, tracks)
        context = rclpy.Context()
        rclpy.init(args=["llava3d-ros", *ros_args], context=context)
        overrides = [Parameter("use_sim_time", Parameter.Type.BOOL, False)]
        node = rclpy.create_node("llava3d_replay", context=context, parameter_overrides=overrides)
        player = BagPlayer(node, tracks, args.use_sim_time)
        n_msgs = sum(t.count for t in tracks.values() if not t.latched)
        pace = f"recorded spacing x{args.rate:g}" + (", looping" if args.loop else "")
        progress.start(f"rosbag2 {path} as recorded", n_msgs, f"{len(tracks)} topics, {pace}")
        for topic, name in player.names().items():
            t = tracks[topic]
            arrow = f" -> {name}" if name != topic else ""
            extra = (
                f", {len(static[topic].transforms)} transforms merged" if topic in static else ""
            )
            progress.say(f"  {topic}{arrow} ({t.msgtype}, {t.count} messages{extra})")
        if not player.wait_for_subscribers(args.wait_subscribers):
            node.get_logger().warning(
                f"no subscriber on the bag's topics after {args.wait_subscribers} s; "
                "publishing anyway"
            )
        player.publish_static(static)
        progress.begin()
        t_start = time.monotonic()
        try:
            while True:
                sent, span = player.play(bag, t_start, args.rate, progress)
                progress.loop_done(sent)
                if not args.loop or not sent:
                    break
                # the next pass starts one mean message period after this one's last message
                gap = max(span // max(sent - 1, 1), 1)
                t_start += (span + gap) / 1e9 / args.rate
            progress.stop()
            time.sleep(0.5)  # let the last messages leave before the publishers go
        except KeyboardInterrupt:
            pass
        if progress.quiet:
            node.get_logger().info(f"{progress.summary()} from {path}")
        else:
            progress.say(progress.summary())
        return 0 if progress.sent else 1
    finally:
        if node is not None:
            node.destroy_node()
        if context is not None and context.ok():
            rclpy.shutdown(context=context)
