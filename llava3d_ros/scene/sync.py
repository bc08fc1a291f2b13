"""Approximate-time matching of colour, depth, camera_info and pose streams (no ROS types).

Written here because message_filters is not installable in this environment; it is kept
small: colour is the pivot, depth and camera_info must lie within ``slop`` of its stamp, and
the camera pose is taken *at the colour stamp*, never "the latest pose", from a pose source:
``TopicPoses`` (a PoseStamped/Odometry history, interpolated between the poses around the
stamp or the nearest within the tolerance, moved into the world frame through TF when it is
given in another frame) or ``TfPoses`` (the image's own frame looked up in TF).
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

# A stamp this far behind the newest one means the source restarted (a bag replayed again, a
# simulator or sim time reset): the default of the node's time_jump_threshold_s.
TIME_JUMP_BACK_NS = 500_000_000


@dataclass
class SyncedFrame:
    """One matched set: the raw payloads (converted later, off the callback) and the pose."""

    stamp_ns: int
    color: Any
    depth: Any
    color_info: Any
    depth_info: Any | None
    cam_to_world: np.ndarray  # (4, 4) float64
    pose_dt_ns: int  # pose stamp used − image stamp (0 when interpolated)
    epoch: int = 0  # the synchroniser's time line (counts time jumps) when it was matched
    camera_frame: str = ""  # the colour image's header.frame_id (its optical frame)
    camera: str = ""  # the camera's name (namespace) in the node's ``cameras``


class PoseHistory:
    """Stamped camera-to-world poses in stamp order, looked up at an exact time."""

    def __init__(self, capacity: int = 2000, time_jump_ns: int | None = TIME_JUMP_BACK_NS) -> None:
        """``time_jump_ns``: a pose this far behind the newest clears the history (None: never)."""
        if capacity < 2:
            raise ValueError(f"pose history capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self.time_jump_ns = time_jump_ns
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self.out_of_order = 0
        self.duplicates = 0
        self.resets = 0

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._poses.clear()

    def add(self, stamp_ns: int, cam_to_world: np.ndarray) -> str:
        """Insert a pose; returns "ok", "out_of_order" (still inserted), "duplicate" or "reset"."""
        status = "ok"
        jump = self.time_jump_ns
        if jump is not None and self._stamps and stamp_ns < self._stamps[-1] - jump:
            self.clear()
            self.resets += 1
            status = "reset"
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            self.duplicates += 1
            return "duplicate"
        if i < len(self._stamps):
            self.out_of_order += 1
            status = "out_of_order"
        self._stamps.insert(i, stamp_ns)
        self._poses.insert(i, np.asarray(cam_to_world, dtype=np.float64))
        if len(self._stamps) > self.capacity:
            del self._stamps[0], self._poses[0]
        return status

    def at(self, stamp_ns: int, tolerance_ns: int, final: bool = False) -> tuple[str, Any]:
        """The pose at ``stamp_ns``: ("ok", (4×4, dt_ns)), ("wait", reason) or ("fail", reason).

        Interpolates (lerp + slerp) when poses lie on both sides within the tolerance; else
        the nearest within the tolerance. Without a later pose it waits (one may still come)
        unless ``final``, when the nearest earlier pose within the tolerance is used.
        """
        if not self._stamps:
            return ("fail" if final else "wait"), "no pose received yet"
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            return "ok", (self._poses[i], 0)
        before = i - 1 if i > 0 else None
        after = i if i < len(self._stamps) else None
        d_before = stamp_ns - self._stamps[before] if before is not None else None
        d_after = self._stamps[after] - stamp_ns if after is not None else None
        if d_before is not None and d_after is not None and max(d_before, d_after) <= tolerance_ns:
            return "ok", (_interpolate(self, before, after, stamp_ns), 0)
        candidates = [
            (d, j, s) for d, j, s in ((d_before, before, -1), (d_after, after, 1)) if d is not None
        ]
        d, j, sign = min(candidates)
        if after is None and not final and d_before <= tolerance_ns:
            return "wait", "waiting for a pose after the image stamp"
        if d <= tolerance_ns:
            return "ok", (self._poses[j], sign * d)
        if after is None and not final:
            return "wait", "no pose near the image stamp yet"
        return "fail", (
            f"no pose within {tolerance_ns / 1e6:.0f} ms of the image stamp "
            f"(nearest is {d / 1e6:.0f} ms {'before' if sign < 0 else 'after'})"
        )


def _interpolate(h: PoseHistory, i: int, j: int, stamp_ns: int) -> np.ndarray:
    t0, t1 = h._stamps[i], h._stamps[j]
    a = (stamp_ns - t0) / (t1 - t0)
    p0, p1 = h._poses[i], h._poses[j]
    rots = Rotation.from_matrix(np.stack([_orthonormal(p0[:3, :3]), _orthonormal(p1[:3, :3])]))
    out = np.eye(4)
    out[:3, :3] = Slerp([0.0, 1.0], rots)([a]).as_matrix()[0]
    out[:3, 3] = (1 - a) * p0[:3, 3] + a * p1[:3, 3]
    return out


def _orthonormal(r: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(r)
    return u @ vt


class TransformLookup(Protocol):
    """What a pose source needs of TF: ``target_T_source`` at a stamp (0 = latest common).

    Raises ``scene.transforms.TransformError`` (``reason``: unknown_frame, no_path, too_old or
    extrapolation). Implemented by the project's ``TransformBuffer`` and, on a full ROS 2
    install, by the tf2_ros adapter in ``ros/tf.py``.
    """

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray: ...


class PoseSource(Protocol):
    """The camera pose (camera → world 4×4) at an image stamp, or why not (yet)."""

    def at(self, stamp_ns: int, camera_frame: str, final: bool) -> tuple[str, Any]:
        """("ok", (4×4, dt_ns)), ("wait", reason) or ("fail", reason)."""
        ...

    @property
    def newest_ns(self) -> int | None: ...

    def clear(self) -> None: ...


TF_REASONS = ("unknown_frame", "no_path", "too_old", "extrapolation")


def _tf_status(exc: Exception, final: bool) -> tuple[str, str]:
    """A TF failure as a pose status: the future and unknown frames may still arrive.

    A failure reads ``"TF <reason>: <message>"`` so a drop is counted by its reason.
    """
    reason = getattr(exc, "reason", "")
    reason = reason if reason in TF_REASONS else "error"
    if reason in ("extrapolation", "unknown_frame", "no_path") and not final:
        return "wait", f"TF {reason}: {exc}"
    return "fail", f"TF {reason}: {exc}"


class TfPoses:
    """Poses from TF: ``world_frame ← camera_frame`` looked up at the image stamp."""

    def __init__(self, transforms: TransformLookup, world_frame: str) -> None:
        self.transforms, self.world_frame = transforms, world_frame
        self.newest_ns: int | None = None  # of the frames posed (TF has no single stream)

    def at(self, stamp_ns: int, camera_frame: str, final: bool) -> tuple[str, Any]:
        if not camera_frame:
            return "fail", "the image has no header.frame_id to look up in TF"
        try:
            mat = self.transforms.lookup(self.world_frame, camera_frame, stamp_ns)
        except Exception as exc:  # TransformError, or tf2's own exceptions behind the adapter
            return _tf_status(exc, final)
        self.newest_ns = max(stamp_ns, self.newest_ns or 0)
        return "ok", (mat, 0)

    def clear(self) -> None:
        self.newest_ns = None


class TopicPoses:
    """Camera poses from a topic (PoseStamped, or Odometry × camera_in_base), in any frame.

    Poses are kept per frame they were given in; one given in a frame other than the world
    is moved into it with TF at the image stamp (``odom`` under ``map``), so a correction of
    ``map → odom`` applies to every image after it.
    """

    def __init__(
        self,
        tolerance_ns: int,
        world_frame: str = "",
        transforms: TransformLookup | None = None,
        capacity: int = 2000,
    ) -> None:
        self.tolerance_ns = tolerance_ns
        self.world_frame = world_frame
        self.transforms = transforms
        self.capacity = capacity
        self.histories: dict[str, PoseHistory] = {}
        self._frame = ""  # the frame of the newest pose: the one images are posed from

    @property
    def history(self) -> PoseHistory:
        """The history of the frame poses currently arrive in."""
        return self.histories.setdefault(self._frame, PoseHistory(self.capacity, time_jump_ns=None))

    @property
    def newest_ns(self) -> int | None:
        return self.history.newest_ns

    def add(self, stamp_ns: int, cam_to_frame: np.ndarray, frame: str = "") -> str:
        frame = "" if frame == self.world_frame else frame
        self._frame = frame
        return self.history.add(stamp_ns, cam_to_frame)

    def clear(self) -> None:
        for h in self.histories.values():
            h.clear()

    def at(self, stamp_ns: int, camera_frame: str, final: bool) -> tuple[str, Any]:
        status, value = self.history.at(stamp_ns, self.tolerance_ns, final=final)
        if status != "ok" or not self._frame:
            return status, value
        if self.transforms is None:
            return "fail", (
                f"pose is in frame {self._frame!r}, not the world frame {self.world_frame!r}, "
                "and no TF is available to connect them"
            )
        try:
            world_t_frame = self.transforms.lookup(self.world_frame, self._frame, stamp_ns)
        except Exception as exc:
            return _tf_status(exc, final)
        mat, dt = value
        return "ok", (world_t_frame @ mat, dt)


class AutoPoses:
    """``pose_source: auto``: the pose topic once it has spoken, TF until then.

    A robot that publishes its camera pose keeps today's behaviour; one that gives it only
    through TF (most do) needs no parameter.
    """

    def __init__(self, topic: TopicPoses, tf: TfPoses) -> None:
        self.topic, self.tf = topic, tf

    @property
    def active(self) -> TopicPoses | TfPoses:
        return self.topic if self.topic.newest_ns is not None else self.tf

    @property
    def newest_ns(self) -> int | None:
        return self.active.newest_ns

    def add(self, stamp_ns: int, cam_to_frame: np.ndarray, frame: str = "") -> str:
        return self.topic.add(stamp_ns, cam_to_frame, frame)

    def at(self, stamp_ns: int, camera_frame: str, final: bool) -> tuple[str, Any]:
        status, value = self.active.at(stamp_ns, camera_frame, final)
        if status != "ok" and self.active is self.tf:
            value = f"no pose received yet on the pose topic, and {value}"
        return status, value

    def clear(self) -> None:
        self.topic.clear()
        self.tf.clear()


class FrameSynchronizer:
    """Matches streams by stamp; ``add_*`` return the frames completed by that message.

    Drops are counted by reason in ``drops`` and reported through ``on_drop(reason)``. An image
    or pose stamped more than ``time_jump_ns`` before the newest one of its own stream, followed
    by a second such message moving forward from it, starts a new time line (a camera or a pose
    source never steps back that far; one stray old message is only a drop; streams are
    compared each with itself, as they arrive interleaved): everything unmatched is forgotten (calibration kept), ``epoch`` counts up and
    ``on_time_jump(old_ns, new_ns)`` is told, so the owner can reset or re-time its scene.
    """

    def __init__(
        self,
        slop_ns: int,
        pose_tolerance_ns: int,
        queue_size: int = 10,
        pose_wait_ns: int = 500_000_000,
        use_depth_info: bool = False,
        on_drop: Callable[[str], None] | None = None,
        time_jump_ns: int = TIME_JUMP_BACK_NS,
        on_time_jump: Callable[[int, int], None] | None = None,
        poses: PoseSource | None = None,
        camera: str = "",
    ) -> None:
        """``poses``: where camera poses come from (default: a ``TopicPoses`` fed by ``add_pose``)."""
        if slop_ns < 0 or pose_tolerance_ns < 0 or pose_wait_ns < 0:
            raise ValueError("slop, pose tolerance and pose wait must be >= 0")
        if time_jump_ns <= 0:
            raise ValueError(f"time_jump_ns must be > 0, got {time_jump_ns}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.slop_ns = slop_ns
        self.pose_tolerance_ns = pose_tolerance_ns
        self.pose_wait_ns = pose_wait_ns
        self.use_depth_info = use_depth_info
        self.queue_size = queue_size
        self.time_jump_ns = time_jump_ns
        # time restarts are judged here, not in the pose history
        self.poses: PoseSource = poses if poses is not None else TopicPoses(pose_tolerance_ns)
        self.camera = camera
        self._streams: dict[str, collections.deque[tuple[int, Any]]] = {
            name: collections.deque(maxlen=queue_size)
            for name in ("color", "depth", "color_info", "depth_info")
        }
        self._awaiting_pose: collections.deque[SyncedFrame] = collections.deque()
        self._last_emitted_ns = -1
        self.drops: collections.Counter[str] = collections.Counter()
        self.last_drop = ""
        self._on_drop = on_drop
        self._on_time_jump = on_time_jump
        self._newest_ns: dict[str, int] = {}  # per stream (colour, depth, pose)
        self._behind_ns: dict[str, int] = {}  # per stream: a stamp far behind, awaiting a second
        self.epoch = 0
        self.emitted = 0

    def _drop(self, reason: str, detail: str = "") -> None:
        self.drops[reason] += 1
        self.last_drop = f"{reason}: {detail}" if detail else reason
        if self._on_drop is not None:
            self._on_drop(self.last_drop)

    def add_color(self, stamp_ns: int, msg: Any, frame_id: str = "") -> list[SyncedFrame]:
        """A colour image; ``frame_id`` (its optical frame) is what TF poses are looked up for."""
        return self._add("color", stamp_ns, (msg, frame_id))

    def add_depth(self, stamp_ns: int, msg: Any) -> list[SyncedFrame]:
        return self._add("depth", stamp_ns, msg)

    def add_color_info(self, stamp_ns: int, msg: Any) -> list[SyncedFrame]:
        return self._add("color_info", stamp_ns, msg)

    def add_depth_info(self, stamp_ns: int, msg: Any) -> list[SyncedFrame]:
        return self._add("depth_info", stamp_ns, msg)

    def add_pose(
        self, stamp_ns: int, cam_to_world: np.ndarray, frame: str = ""
    ) -> list[SyncedFrame]:
        """A camera pose in ``frame`` ("" = the world frame); needs a ``TopicPoses`` source."""
        if not isinstance(self.poses, TopicPoses | AutoPoses):
            raise TypeError("add_pose needs a pose source fed by a topic")
        self._follow_time("pose", stamp_ns)
        status = self.poses.add(stamp_ns, cam_to_world, frame)
        if status in ("out_of_order", "duplicate"):
            self._drop(f"pose {status.replace('_', ' ')}", f"stamp {stamp_ns} ns")
        return self._resolve_poses()

    def resolve(self) -> list[SyncedFrame]:
        """Frames whose pose can be taken now (call when transforms arrived)."""
        return self._resolve_poses()

    def _add(self, name: str, stamp_ns: int, msg: Any) -> list[SyncedFrame]:
        stream = self._streams[name]
        if name in ("color", "depth"):  # camera_info may carry any stamp (0, latched, static)
            self._follow_time(name, stamp_ns)
        if any(s == stamp_ns for s, _ in stream):
            if name in ("color", "depth"):
                self._drop(f"duplicate {name} stamp")
            return []
        if len(stream) == stream.maxlen and name == "color":
            self._drop(self._missing(stream[0][0]))
        stream.append((stamp_ns, msg))
        self._match()
        return self._resolve_poses()

    def _follow_time(self, stream: str, stamp_ns: int) -> None:
        newest = self._newest_ns.get(stream)
        if newest is not None and stamp_ns < newest - self.time_jump_ns:
            first = self._behind_ns.get(stream)
            if first is None or stamp_ns < first:
                self._behind_ns[stream] = stamp_ns  # one old message: wait for a second
                return
            self.reset()  # a second one, moving on from the first: time restarted
            self.epoch += 1
            self._newest_ns[stream] = stamp_ns
            if self._on_time_jump is not None:
                self._on_time_jump(newest, first)
            return
        self._behind_ns.pop(stream, None)
        if newest is None or stamp_ns > newest:
            self._newest_ns[stream] = stamp_ns

    def reset(self) -> None:
        """Forget the unmatched images and the poses (a new time line); calibration stays."""
        for name, stream in self._streams.items():
            if name.endswith("_info") and stream:
                newest = stream[-1]
                stream.clear()
                stream.append(newest)
            else:
                stream.clear()
        self._awaiting_pose.clear()
        self.poses.clear()
        self._last_emitted_ns = -1
        self._newest_ns.clear()
        self._behind_ns.clear()

    def _nearest(self, name: str, stamp_ns: int) -> tuple[int, Any] | None:
        best = None
        for s, m in self._streams[name]:
            d = abs(s - stamp_ns)
            if d <= self.slop_ns and (best is None or d < abs(best[0] - stamp_ns)):
                best = (s, m)
        return best

    def _info(self, name: str, stamp_ns: int) -> Any | None:
        # Calibration is static: the info nearest the stamp, else the newest one received.
        hit = self._nearest(name, stamp_ns)
        if hit is not None:
            return hit[1]
        stream = self._streams[name]
        return stream[-1][1] if stream else None

    def _missing(self, stamp_ns: int) -> str:
        """Why the colour image stamped ``stamp_ns`` found no partner (a drop reason)."""
        if not self._streams["color_info"]:
            return "no rgb/camera_info received"
        if self.use_depth_info and not self._streams["depth_info"]:
            return "no depth/camera_info received"
        if not self._streams["depth"]:
            return "no depth received"
        return "no depth within slop"

    def _match(self) -> None:
        colors = self._streams["color"]
        depths = self._streams["depth"]
        newest_depth = depths[-1][0] if depths else None
        for stamp, color in list(colors):
            depth = self._nearest("depth", stamp)
            info = self._info("color_info", stamp)
            depth_info = self._info("depth_info", stamp)  # optional unless use_depth_info
            if depth is None:
                if newest_depth is not None and newest_depth > stamp + self.slop_ns:
                    colors.remove((stamp, color))
                    self._drop(self._missing(stamp))
                continue
            if info is None or (self.use_depth_info and depth_info is None):
                continue
            colors.remove((stamp, color))
            depths.remove(depth)
            if stamp <= self._last_emitted_ns:
                self._drop("colour stamp not newer than the last frame")
                continue
            self._last_emitted_ns = stamp
            msg, frame_id = color
            self._awaiting_pose.append(
                SyncedFrame(
                    stamp,
                    msg,
                    depth[1],
                    info,
                    depth_info,
                    np.eye(4),
                    0,
                    self.epoch,
                    frame_id,
                    self.camera,
                )
            )

    def _resolve_poses(self) -> list[SyncedFrame]:
        out: list[SyncedFrame] = []
        newest_image = self._awaiting_pose[-1].stamp_ns if self._awaiting_pose else None
        while self._awaiting_pose:
            frame = self._awaiting_pose[0]
            final = newest_image - frame.stamp_ns >= self.pose_wait_ns or (
                len(self._awaiting_pose) > self.queue_size
            )
            status, value = self.poses.at(frame.stamp_ns, frame.camera_frame, final)
            if status == "wait":
                break
            self._awaiting_pose.popleft()
            if status == "fail":
                kind = next((f"TF {r}" for r in TF_REASONS if f"TF {r}:" in value), "")
                self._drop(f"no pose at the image stamp{f' ({kind})' if kind else ''}", value)
                continue
            frame.cam_to_world, frame.pose_dt_ns = value
            self.emitted += 1
            out.append(frame)
        return out

    @property
    def last_emitted_ns(self) -> int:
        """Stamp of the newest frame matched (−1 before the first, and after a time jump)."""
        return self._last_emitted_ns

    def waiting(self) -> dict[str, int]:
        """How many messages each stream holds unmatched (for diagnostics)."""
        out = {name: len(s) for name, s in self._streams.items()}
        out["awaiting_pose"] = len(self._awaiting_pose)
        return out
