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

from llava3d_ros.geometry.align import Z_UP_TOLERANCE_DEG, alignment_tilt_deg
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.scene.buffer import FrameBuffer, FrameOrderError
from llava3d_ros.scene.frame import Frame

ALIGN_AT_KEYFRAMES = (1, 2, 3, 5, 10, 30, 100)  # early: a first view often shows the floor
# axis_align: auto = estimate only when the cameras say the world is not z-up, on = always
# estimate, off = keep the world frame as it is (warning when it looks tilted)
AXIS_ALIGN_MODES = ("auto", "on", "off")
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


def axis_align_mode(value: str | bool) -> str:
    """``auto``, ``on`` or ``off``; the old boolean parameter maps true → on, false → off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in AXIS_ALIGN_MODES:
        raise ValueError(f"axis_align={value!r} must be one of {', '.join(AXIS_ALIGN_MODES)}")
    return value


class SceneIngest:
    """Offers frames to ``buffer`` (guarded by ``lock``) and keeps its floor alignment current.

    ``axis_align`` (see ``AXIS_ALIGN_MODES``) decides, at ``ALIGN_AT_KEYFRAMES`` keyframes,
    whether the floor alignment is estimated: ``auto`` when the keyframe cameras' mean up is
    more than ``Z_UP_TOLERANCE_DEG`` from world +z, ``on`` always, ``off`` never (a tilted
    world is then a warning, passed once to ``log_warning`` as well). A given alignment
    (``FrameBuffer(alignment=...)``, ``set_alignment``) is never replaced.
    """

    def __init__(
        self,
        buffer: FrameBuffer,
        lock: threading.Lock,
        axis_align: str | bool = "auto",
        validate_period_s: float = VALIDATE_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
        log_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.buffer, self.lock = buffer, lock
        self.axis_align = axis_align_mode(axis_align)
        self.validate_period_s = validate_period_s
        self._clock = clock
        self._log_warning = log_warning
        self._last_validated = -1e9
        self.warnings: dict[str, str] = {}
        # kept at add()/restart() under the lock, read lock-free by alignment_state()
        self._newest_keyframe_t: float | None = None
        self._camera_tilt: float | None = None

    def worth_decoding(self, stamp_ns: int, cam_to_world: np.ndarray, camera: str = "") -> bool:
        """Whether a frame's images are worth decoding: a keyframe candidate, or a check is due.

        A frame not decoded is still recorded (stamp order); an out-of-order stamp is an
        ``InputProblem`` of ``frame``.
        """
        with self.lock:
            try:
                keep = self.buffer.would_keep(stamp_ns, cam_to_world, camera)
            except FrameOrderError as exc:
                raise InputProblem("frame", str(exc)) from exc
            except GeometryError:
                keep = True  # decode it: the full path reports the bad pose
            now = self._clock()
            if keep or now - self._last_validated >= self.validate_period_s:
                self._last_validated = now
                return True
            self.buffer.skip(stamp_ns, camera)
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
                self._newest_keyframe_t = self._clock()
                self._camera_tilt = self.buffer.camera_tilt_deg()
        if fid is not None:
            self._align_if_due()
        return fid

    def _tilted(self) -> bool:
        return self._camera_tilt is not None and self._camera_tilt > Z_UP_TOLERANCE_DEG

    def _align_if_due(self) -> None:
        """Per ``axis_align``, (re-)estimate the floor alignment or warn as the scene grows."""
        if len(self.buffer) not in ALIGN_AT_KEYFRAMES or self.buffer.alignment_source == "given":
            return
        if self.axis_align == "off":
            if self._tilted():
                self._warn(
                    f"axis_align is off but the cameras' mean up is {self._camera_tilt:.0f}° "
                    "from world +z: the world frame looks not z-up, so scene tokens and boxes "
                    "are misplaced (set axis_align to auto or on, or publish z-up poses)"
                )
            else:
                self.warnings.pop("alignment", None)
            return
        if self.axis_align == "auto" and self._camera_tilt is not None and not self._tilted():
            with self.lock:
                self.buffer.clear_alignment()  # the world is z-up (again): nothing to estimate
            self.warnings.pop("alignment", None)
            return
        try:
            with self.lock:
                self.buffer.estimate_alignment()
            self.warnings.pop("alignment", None)
        except GeometryError as exc:
            self._warn(f"floor alignment not estimated: {exc}")

    def _warn(self, message: str) -> None:
        """Record the alignment warning; the first one (after none) also goes to the log."""
        if "alignment" not in self.warnings and self._log_warning is not None:
            self._log_warning(message)
        self.warnings["alignment"] = message

    def alignment_state(self) -> str:
        """The alignment in words, for /diagnostics (lock-free: reads what add() kept).

        ``given``; ``estimated (tilt N°)`` (N: world +z to the aligned up); ``identity (world
        is z-up)``; ``identity (axis_align off; world looks tilted by N°)``; ``identity (not
        estimated yet; world looks tilted by N°)`` (auto/on before the first estimate or when
        it failed); ``identity (no keyframes yet)``; ``identity (cameras give no consistent
        up)``.
        """
        source, alignment, tilt = (
            self.buffer.alignment_source,
            self.buffer.alignment,
            self._camera_tilt,
        )
        if source == "given":
            return "given"
        if source == "estimated":
            return f"estimated (tilt {alignment_tilt_deg(alignment):.0f}°)"
        if tilt is None:
            if self._newest_keyframe_t is None:
                return "identity (no keyframes yet)"
            return "identity (cameras give no consistent up)"
        if tilt <= Z_UP_TOLERANCE_DEG:
            return "identity (world is z-up)"
        if self.axis_align == "off":
            return f"identity (axis_align off; world looks tilted by {tilt:.0f}°)"
        return f"identity (not estimated yet; world looks tilted by {tilt:.0f}°)"

    def newest_keyframe_age_s(self) -> float | None:
        """Seconds (of ``clock``) since the newest keyframe was added; None: none since reset."""
        t = self._newest_keyframe_t
        return None if t is None else max(self._clock() - t, 0.0)

    def restart(self, keep: bool) -> str:
        """Time ran backwards: keep the keyframes (new time line accepted) or drop them; what was done."""
        with self.lock:
            if keep:
                self.buffer.restart_timeline()
                return f"scene kept ({len(self.buffer)} keyframes), new time line accepted"
            dropped = self.buffer.reset()
            self._newest_keyframe_t = self._camera_tilt = None
            return f"scene reset ({dropped} keyframes dropped)"
