"""rosbag2 recordings (via ``rosbags``, no ROS install): Image + CameraInfo + PoseStamped topics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.image import ImageError, message_to_cvimage
from rosbags.typesys import Stores, get_typestore

from llava3d_ros.geometry.cameras import intrinsics_from_camera_info
from llava3d_ros.geometry.depth import MM_SCALE
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import optical_from_body_pose
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.readers.base import (
    DatasetError,
    DatasetReader,
    MissingFileError,
    PoseFileError,
    tum_pose,
)
from llava3d_ros.scene.readers.tum import associate, interpolate_pose

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POSE = "geometry_msgs/msg/PoseStamped"
# REP-118 depth encodings; uint16 ones hold millimetres, 32FC1 metres.
_DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


def is_rosbag2(path: Path) -> bool:
    """Whether ``path`` is a rosbag2 folder (``metadata.yaml``) or a ``.mcap``/``.db3`` file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.is_file() and path.suffix in (".mcap", ".db3")


def _stamp(header: object) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class RosbagReader(DatasetReader):
    """Frames from a rosbag2 recording: colour + depth Image, CameraInfo and a camera pose.

    Topics default to the one topic of each type (Image topics split by "depth" in the name);
    name them when a bag has several. Colour and depth are paired one-to-one by header stamp
    within ``max_dt`` s; the pose (``PoseStamped``, camera-to-world) is interpolated at the
    depth stamp and frames outside the pose stream are skipped (``skipped``). ``pose_frame`` is
    ``"optical"`` (z forward, OpenCV) or ``"body"`` (REP-103 x forward; converted). K comes from
    the first CameraInfo on each info topic (assumed constant); without a depth info topic the
    depth image must have the colour resolution (registered depth). 16UC1/mono16 depth is ÷
    ``depth_scale`` (millimetres), 32FC1 is metres. The typestore is ROS 2 Kilted's.
    """

    layout = "rosbag2"

    def __init__(
        self,
        path: Path | str,
        color_topic: str | None = None,
        depth_topic: str | None = None,
        camera_info_topic: str | None = None,
        pose_topic: str | None = None,
        depth_camera_info_topic: str | None = None,
        pose_frame: str = "optical",
        max_dt: float = 0.02,
        max_pose_gap: float = 0.2,
        depth_scale: float = MM_SCALE,
    ) -> None:
        super().__init__(Path(path))
        if not self.root.exists():
            raise MissingFileError(f"rosbag2 not found: {self.root}")
        if pose_frame not in ("optical", "body"):
            raise DatasetError(f"pose_frame must be 'optical' or 'body', got {pose_frame!r}")
        self.pose_frame, self.depth_scale = pose_frame, depth_scale
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        with self._open() as bag:
            topics = {c.topic: c.msgtype for c in bag.connections}
            images = [t for t, m in topics.items() if m == IMAGE]
            infos = [t for t, m in topics.items() if m == CAMERA_INFO]
            self.color_topic = _pick(
                color_topic,
                [t for t in images if "depth" not in t and t != depth_topic],
                IMAGE,
                "colour",
                topics,
            )
            self.depth_topic = _pick(
                depth_topic,
                [t for t in images if "depth" in t and t != self.color_topic],
                IMAGE,
                "depth",
                topics,
            )
            colour_infos = [t for t in infos if "depth" not in t]
            self.camera_info_topic = _pick(
                camera_info_topic, colour_infos, CAMERA_INFO, "colour camera info", topics
            )
            if depth_camera_info_topic is not None:
                _pick(depth_camera_info_topic, [], CAMERA_INFO, "depth camera info", topics)
            self.depth_camera_info_topic = depth_camera_info_topic
            self.pose_topic = _pick(
                pose_topic, [t for t, m in topics.items() if m == POSE], POSE, "pose", topics
            )
            index = self._index(bag)
        self._k_rgb, self._size_rgb = index["info"][self.camera_info_topic]
        self._k_depth = None
        if depth_camera_info_topic is not None:
            self._k_depth = index["info"][depth_camera_info_topic][0]
        pose_t = np.array([s for s, _ in index["pose"]], dtype=np.int64)
        order = np.argsort(pose_t, kind="stable")
        pose_t = pose_t[order]
        if np.any(np.diff(pose_t) <= 0):
            raise PoseFileError(f"{self.pose_topic}: pose stamps repeat in {self.root}")
        poses = np.stack([index["pose"][i][1] for i in order])
        colour_t = np.array(index[self.color_topic], dtype=np.int64)
        depth_t = np.array(index[self.depth_topic], dtype=np.int64)
        pairs = associate(colour_t, depth_t, round(max_dt * 1e9))
        if not pairs:
            raise DatasetError(
                f"no {self.color_topic} / {self.depth_topic} message pair within {max_dt} s"
            )
        self.skipped = 0
        # (colour message index, depth message index, stamp, pose), in depth stamp order
        self._pairs: list[tuple[int, int, int, np.ndarray]] = []
        for i, j in sorted(pairs, key=lambda p: depth_t[p[1]]):
            pose = interpolate_pose(pose_t, poses, int(depth_t[j]), round(max_pose_gap * 1e9))
            if pose is None:
                self.skipped += 1
                continue
            if pose_frame == "body":
                pose = optical_from_body_pose(pose)
            self._pairs.append((i, j, int(depth_t[j]), pose))
        if not self._pairs:
            raise PoseFileError(f"no image pair in {self.root} falls inside the pose stream")

    @contextmanager
    def _open(self) -> Iterator[AnyReader]:
        try:
            bag = AnyReader([self.root], default_typestore=self._typestore)
            bag.open()
        except AnyReaderError as err:
            raise DatasetError(f"cannot open rosbag2 {self.root}: {err}") from err
        try:
            yield bag
        finally:
            bag.close()

    def _index(self, bag: AnyReader) -> dict:
        """Header stamps of the image topics, first K per info topic, and every pose."""
        out: dict = {self.color_topic: [], self.depth_topic: [], "info": {}, "pose": []}
        info_topics = {self.camera_info_topic, self.depth_camera_info_topic} - {None}
        wanted = {self.color_topic, self.depth_topic, self.pose_topic} | info_topics
        conns = [c for c in bag.connections if c.topic in wanted]
        for conn, _, raw in bag.messages(connections=conns):
            msg = bag.deserialize(raw, conn.msgtype)
            where = f"{self.root} {conn.topic} at {_stamp(msg.header)} ns"
            if conn.topic in (self.color_topic, self.depth_topic):
                out[conn.topic].append(_stamp(msg.header))
            elif conn.topic == self.pose_topic:
                p, q = msg.pose.position, msg.pose.orientation
                pose = tum_pose([p.x, p.y, p.z, q.x, q.y, q.z, q.w], where)
                out["pose"].append((_stamp(msg.header), pose))
            elif conn.topic not in out["info"]:
                try:
                    k = intrinsics_from_camera_info(msg.k, msg.width, msg.height)
                except GeometryError as err:
                    raise DatasetError(f"{where}: bad CameraInfo: {err}") from err
                out["info"][conn.topic] = (k, (int(msg.width), int(msg.height)))
        for topic in (self.color_topic, self.depth_topic):
            if not out[topic]:
                raise DatasetError(f"{self.root}: topic {topic} has no messages")
            if any(b <= a for a, b in zip(out[topic], out[topic][1:], strict=False)):
                raise DatasetError(f"{self.root}: header stamps on {topic} are not increasing")
        for topic in info_topics:
            if topic not in out["info"]:
                raise DatasetError(f"{self.root}: topic {topic} has no CameraInfo message")
        if not out["pose"]:
            raise PoseFileError(f"{self.root}: pose topic {self.pose_topic} has no messages")
        return out

    @property
    def intrinsics(self) -> np.ndarray:
        return self._k_rgb.copy()

    @property
    def depth_intrinsics(self) -> np.ndarray:
        return (self._k_rgb if self._k_depth is None else self._k_depth).copy()

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[Frame]:
        want_c = {p[0]: n for n, p in enumerate(self._pairs)}
        want_d = {p[1]: n for n, p in enumerate(self._pairs)}
        colour: dict[int, np.ndarray] = {}
        depth: dict[int, np.ndarray] = {}
        counts = {self.color_topic: 0, self.depth_topic: 0}
        nxt = 0
        with self._open() as bag:
            conns = [c for c in bag.connections if c.topic in counts]
            for conn, _, raw in bag.messages(connections=conns):
                idx = counts[conn.topic]
                counts[conn.topic] += 1
                is_colour = conn.topic == self.color_topic
                slot = (want_c if is_colour else want_d).get(idx)
                if slot is None:
                    continue
                msg = bag.deserialize(raw, conn.msgtype)
                if is_colour:
                    colour[slot] = self._colour(msg)
                else:
                    depth[slot] = self._depth(msg)
                # frames leave in depth-stamp order as soon as both halves have arrived
                while nxt < len(self._pairs) and nxt in colour and nxt in depth:
                    yield self._frame(nxt, colour.pop(nxt), depth.pop(nxt))
                    nxt += 1

    def _colour(self, msg: object) -> np.ndarray:
        try:
            return np.ascontiguousarray(message_to_cvimage(msg, "rgb8"))
        except ImageError as err:
            raise DatasetError(
                f"{self.color_topic}: cannot convert {msg.encoding!r}: {err}"
            ) from err

    def _depth(self, msg: object) -> np.ndarray:
        if msg.encoding not in _DEPTH_ENCODINGS:
            raise DatasetError(
                f"{self.depth_topic}: depth encoding {msg.encoding!r} is not one of "
                f"{_DEPTH_ENCODINGS}"
            )
        return np.ascontiguousarray(message_to_cvimage(msg))

    def _frame(self, n: int, rgb: np.ndarray, depth: np.ndarray) -> Frame:
        _, _, stamp, pose = self._pairs[n]
        if self._k_depth is None and depth.shape[:2] != rgb.shape[:2]:
            raise DatasetError(
                f"depth {depth.shape[1]}x{depth.shape[0]} differs from colour "
                f"{rgb.shape[1]}x{rgb.shape[0]}: name depth_camera_info_topic"
            )
        return Frame.from_raw(
            rgb,
            depth,
            self._k_rgb,
            pose,
            stamp,
            k_depth=self._k_depth,
            depth_scale=self.depth_scale,
        )


def _pick(
    given: str | None, candidates: list[str], msgtype: str, role: str, topics: dict[str, str]
) -> str:
    """The named topic (checked to exist with ``msgtype``) or the only candidate."""
    if given is not None:
        if topics.get(given) != msgtype:
            raise DatasetError(
                f"{role} topic {given!r} is not a {msgtype} topic in the bag "
                f"(topics: {sorted(topics.items())})"
            )
        return given
    if len(candidates) != 1:
        raise DatasetError(
            f"cannot choose the {role} topic: candidates {candidates} of type {msgtype}; "
            f"name it (topics: {sorted(topics.items())})"
        )
    return candidates[0]
