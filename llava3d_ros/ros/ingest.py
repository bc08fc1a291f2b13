"""The ingest thread: synced frames arrive as serialized messages, are decoded here, enter the scene.

Sensor callbacks only match stamps (``scene/sync.py``) and queue the matched sets; this
thread decodes the images of the frames worth it (``SceneIngest.worth_decoding``), checks
sizes and calibration, and offers them to the scene. One bad frame is reported as an input
error and never stops the thread.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.ros import convert, serialized
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.ingest import InputProblem, SceneIngest, depth_intrinsics
from llava3d_ros.scene.sync import SyncedFrame
from llava3d_ros.threads import named_thread

QUEUE_DEPTH = 3  # frames matched but not yet decoded: the newest win (the scene wants few)


class IngestWorker:
    """Decodes queued ``SyncedFrame``s on a thread of its own and offers them to ``scene``.

    ``report(source, message)`` gets each input problem; ``on_keyframe()`` runs after a frame
    became a keyframe; ``epoch()`` is the synchroniser's current time line (frames of an
    older one are dropped); ``on_exit`` learns how the thread ended.
    """

    def __init__(
        self,
        scene: SceneIngest,
        max_image_pixels: int,
        report: Callable[[str, str], None],
        on_keyframe: Callable[[], None],
        epoch: Callable[[], int],
        on_exit: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.scene = scene
        self.max_image_pixels = max_image_pixels
        self._report = report
        self._on_keyframe = on_keyframe
        self._epoch = epoch
        self._on_exit = on_exit
        self._cv = threading.Condition()
        self._frames: collections.deque[SyncedFrame] = collections.deque(maxlen=QUEUE_DEPTH)
        # per camera: each calibration decoded once
        self._infos: dict[str, tuple[serialized.SerializedCameraInfo, ...]] = {}
        self._running = False
        self._thread: threading.Thread | None = None
        self.warnings: dict[str, str] = {}  # hold until the input changes (frames, timing, size)

    def __len__(self) -> int:
        return len(self._frames)

    def start(self) -> None:
        self._running = True
        self._thread = named_thread(self._loop, "llava3d-ingest", on_exit=self._on_exit)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cv:
            self._running = False
            self._frames.clear()
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def put(self, frames: list[SyncedFrame]) -> None:
        with self._cv:
            self._frames.extend(frames)
            self._cv.notify_all()

    def clear(self) -> None:
        """Drop the frames still queued (their time line ended)."""
        with self._cv:
            self._frames.clear()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._frames and self._running:
                    self._cv.wait()
                if not self._running:
                    return
                synced = self._frames.popleft()
            pre = f"{synced.camera}/" if synced.camera else ""  # inputs named per camera
            try:
                self._ingest(synced)
            except InputProblem as exc:
                self._report(pre + exc.source, exc.message)
            except Exception as exc:  # a bad frame must never stop ingestion
                self._report(pre + "frame", f"{type(exc).__name__}: {exc}")

    def _ingest(self, f: SyncedFrame) -> None:
        if f.epoch != self._epoch() or not self.scene.worth_decoding(
            f.stamp_ns, f.cam_to_world, f.camera_frame
        ):
            return
        color_info, depth_info = self._infos.setdefault(
            f.camera, (serialized.SerializedCameraInfo(), serialized.SerializedCameraInfo())
        )
        color = self._decode(f.color, "rgb/image")
        rgb = _converted(convert.color_from_image, color, "rgb/image")
        depth_msg = self._decode(f.depth, "depth/image")
        depth = _converted(convert.depth_from_image, depth_msg, "depth/image")
        cam = _converted(color_info, f.color_info, "rgb/camera_info")
        h, w = rgb.shape[:2]
        if (cam.width, cam.height) != (w, h):
            raise InputProblem(
                "rgb/camera_info",
                f"camera_info is {cam.width}x{cam.height} but rgb/image is {w}x{h}",
            )
        dcam = None
        if f.depth_info is not None:
            d = _converted(depth_info, f.depth_info, "depth/camera_info")
            dcam = (d.k, (d.width, d.height))
        dh, dw = depth.shape
        k_depth, warning = depth_intrinsics(cam.k, (w, h), (dw, dh), dcam)
        self._hold("resolution", warning)
        self._hold(
            "frames",
            f"colour frame {color.frame_id!r} and depth frame {depth_msg.frame_id!r} differ: "
            "depth is assumed registered to colour"
            if color.frame_id != depth_msg.frame_id
            else "",
        )
        if f.pose_dt_ns:
            self.warnings["pose_dt"] = (
                f"pose taken {f.pose_dt_ns / 1e6:+.0f} ms from the image stamp (nearest, not "
                "interpolated)"
            )
        try:
            frame = Frame(
                rgb, depth, cam.k, k_depth, f.cam_to_world, f.stamp_ns, camera_frame=f.camera_frame
            )
        except GeometryError as exc:
            raise InputProblem("depth/image", str(exc)) from exc
        if self.scene.add(frame, current=lambda: f.epoch == self._epoch()) is not None:
            self._on_keyframe()

    def _decode(self, data: bytes, source: str) -> serialized.ImageView:
        """A raw image message, read in place and size-checked."""
        try:
            view = serialized.image_view_from_serialized(data)
            convert.check_image_size(view, self.max_image_pixels)
        except convert.ConversionError as exc:
            raise InputProblem(source, str(exc)) from exc
        return view

    def _hold(self, key: str, warning: str) -> None:
        if warning:
            self.warnings[key] = warning


def _converted(fn: Callable, arg: object, source: str) -> object:
    try:
        return fn(arg)
    except convert.ConversionError as exc:
        raise InputProblem(source, str(exc)) from exc
