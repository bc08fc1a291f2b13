"""A synced frame's way into the scene: worth decoding?, depth intrinsics, keyframe, floor alignment.

ROS-free: the ROS edge decodes the images (``ros/ingest.py``) and hands plain arrays here.
Problems with one input are raised as ``InputProblem`` (which input, what is wrong), so the
caller can report them per input; warnings that hold until fixed are kept in ``warnings``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.scene.buffer import FrameBuffer, FrameOrderError
from llava3d_ros.scene.frame import Frame

ALIGN_AT_KEYFRAMES = (3, 10, 30, 100)
# Frames that will not become keyframes are still decoded this often, so a broken stream is
# reported while the camera stands still.
VALIDATE_PERIOD_S = 1.0
ASPECT_TOLERANCE = 0.02


class InputProblem(Exception):
    """One input (``rgb/image``, ``depth/image``, ``frame`` …) is unusable, and why."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


def depth_intrinsics(
    k_color: np.ndarray,
    color_wh: tuple[int, int],
    depth_wh: tuple[int, int],
    depth_info: tuple[np.ndarray, tuple[int, int]] | None = None,
) -> tuple[np.ndarray, str]:
    """(K of the depth image, a warning or ""): from depth's own camera_info, else from colour's.

    Without a depth camera_info the depth image is taken as registered to colour: at the
    same resolution it shares colour's K; at another one with the same aspect, colour's K is
    scaled (and said so); another aspect cannot be registered and is an ``InputProblem``.
    """
    dw, dh = depth_wh
    cw, ch = color_wh
    if depth_info is not None:
        k, (iw, ih) = depth_info
        if (iw, ih) != (dw, dh):
            raise InputProblem(
                "depth/camera_info", f"camera_info is {iw}x{ih} but depth is {dw}x{dh}"
            )
        return k, ""
    if (dw, dh) == (cw, ch):
        return k_color, ""
    if abs(dw / dh - cw / ch) > ASPECT_TOLERANCE:
        raise InputProblem(
            "depth/image",
            f"colour is {cw}x{ch} but depth is {dw}x{dh} (different aspect): register depth "
            "to colour",
        )
    k = k_color.copy()
    k[0] *= dw / cw
    k[1] *= dh / ch
    return k, (
        f"colour {cw}x{ch} and depth {dw}x{dh} differ: depth intrinsics scaled from colour "
        "(publish depth/camera_info to give them)"
    )


class SceneIngest:
    """Offers frames to ``buffer`` (guarded by ``lock``) and keeps its floor alignment current."""

    def __init__(
        self,
        buffer: FrameBuffer,
        lock: threading.Lock,
        axis_align: bool = False,
        validate_period_s: float = VALIDATE_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buffer, self.lock = buffer, lock
        self.axis_align = axis_align
        self.validate_period_s = validate_period_s
        self._clock = clock
        self._last_validated = -1e9
        self.warnings: dict[str, str] = {}

    def worth_decoding(self, stamp_ns: int, cam_to_world: np.ndarray) -> bool:
        """Whether a frame's images are worth decoding: a keyframe candidate, or a check is due.

        A frame not decoded is still recorded (stamp order); an out-of-order stamp is an
        ``InputProblem`` of ``frame``.
        """
        with self.lock:
            try:
                keep = self.buffer.would_keep(stamp_ns, cam_to_world)
            except FrameOrderError as exc:
                raise InputProblem("frame", str(exc)) from exc
            except GeometryError:
                keep = True  # decode it: the full path reports the bad pose
            now = self._clock()
            if keep or now - self._last_validated >= self.validate_period_s:
                self._last_validated = now
                return True
            self.buffer.skip(stamp_ns)
            return False

    def add(self, frame: Frame, current: Callable[[], bool] = lambda: True) -> int | None:
        """Offer a decoded frame; its keyframe id, or None (not novel, or ``current()`` is False).

        ``current`` is asked under the scene lock: a frame of a time line that ended while it
        was decoded is not added.
        """
        with self.lock:
            if not current():
                return None
            try:
                fid = self.buffer.add(frame)
            except FrameOrderError as exc:
                raise InputProblem("frame", str(exc)) from exc
            except GeometryError as exc:
                raise InputProblem("depth/image", str(exc)) from exc
        if fid is not None:
            self._align_if_due()
        return fid

    def _align_if_due(self) -> None:
        """With axis_align, (re-)estimate the floor alignment as the scene grows."""
        if not self.axis_align or len(self.buffer) not in ALIGN_AT_KEYFRAMES:
            return
        try:
            with self.lock:
                self.buffer.estimate_alignment()
            self.warnings.pop("alignment", None)
        except GeometryError as exc:
            self.warnings["alignment"] = f"floor alignment not estimated: {exc}"

    def restart(self, keep: bool) -> str:
        """Time ran backwards: keep the keyframes (new time line accepted) or drop them; what was done."""
        with self.lock:
            if keep:
                self.buffer.restart_timeline()
                return f"scene kept ({len(self.buffer)} keyframes), new time line accepted"
            return f"scene reset ({self.buffer.reset()} keyframes dropped)"
