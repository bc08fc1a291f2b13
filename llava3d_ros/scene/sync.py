"""Approximate-time matching of colour, depth, camera_info and pose streams (no ROS types).

Written here because message_filters is not installable in this environment; it is kept
small: colour is the pivot, depth and camera_info must lie within ``slop`` of its stamp, and
the camera pose is taken *at the colour stamp* from a pose history (interpolated between
the poses around it, or the nearest within the tolerance), never "the latest pose".
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    ) -> None:
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
        self.poses = PoseHistory(time_jump_ns=None)  # time restarts are judged here
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

    def add_color(self, stamp_ns: int, msg: Any) -> list[SyncedFrame]:
        return self._add("color", stamp_ns, msg)

    def add_depth(self, stamp_ns: int, msg: Any) -> list[SyncedFrame]:
        return self._add("depth", stamp_ns, msg)

    def add_color_info(self, stamp_ns: int, msg: Any) -> list[SyncedFrame]:
        return self._add("color_info", stamp_ns, msg)

    def add_depth_info(self, stamp_ns: int, msg: Any) -> list[SyncedFrame]:
        return self._add("depth_info", stamp_ns, msg)

    def add_pose(self, stamp_ns: int, cam_to_world: np.ndarray) -> list[SyncedFrame]:
        self._follow_time("pose", stamp_ns)
        status = self.poses.add(stamp_ns, cam_to_world)
        if status in ("out_of_order", "duplicate"):
            self._drop(f"pose {status.replace('_', ' ')}", f"stamp {stamp_ns} ns")
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
            self._awaiting_pose.append(
                SyncedFrame(stamp, color, depth[1], info, depth_info, np.eye(4), 0, self.epoch)
            )

    def _resolve_poses(self) -> list[SyncedFrame]:
        out: list[SyncedFrame] = []
        newest_image = self._awaiting_pose[-1].stamp_ns if self._awaiting_pose else None
        while self._awaiting_pose:
            frame = self._awaiting_pose[0]
            final = newest_image - frame.stamp_ns >= self.pose_wait_ns or (
                len(self._awaiting_pose) > self.queue_size
            )
            status, value = self.poses.at(frame.stamp_ns, self.pose_tolerance_ns, final=final)
            if status == "wait":
                break
            self._awaiting_pose.popleft()
            if status == "fail":
                self._drop("no pose at the image stamp", value)
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
