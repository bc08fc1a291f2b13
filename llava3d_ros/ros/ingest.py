"""The ingest thread: synced frames arrive as serialized messages, are decoded here, enter the scene.

Sensor callbacks only match stamps (``scene/sync.py``) and queue the matched sets; this
thread decodes the images of the frames worth it (``SceneIngest.worth_decoding``) with
``ros/images.py`` (raw or compressed, undistorted, depth registered to colour), and offers
them to the scene. One bad frame is reported as an input
error and never stops the thread.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.ros.images import FrameDecoder
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.ingest import InputProblem, SceneIngest
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
        decoder: FrameDecoder,
        report: Callable[[str, str], None],
        on_keyframe: Callable[[], None],
        epoch: Callable[[], int],
        on_exit: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.scene = scene
        self.decoder = decoder
        self._report = report
        self._on_keyframe = on_keyframe
        self._epoch = epoch
        self._on_exit = on_exit
        self._cv = threading.Condition()
        self._frames: collections.deque[SyncedFrame] = collections.deque(maxlen=QUEUE_DEPTH)
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
        d = self.decoder.decode(f)
        for key in ("resolution", "frames"):
            self._hold(key, d.warnings.get(key, ""))
        if f.pose_dt_ns:
            self.warnings["pose_dt"] = (
                f"pose taken {f.pose_dt_ns / 1e6:+.0f} ms from the image stamp (nearest, not "
                "interpolated)"
            )
        try:
            frame = Frame(
                d.rgb, d.depth, d.k_rgb, d.k_depth, f.cam_to_world, f.stamp_ns,
                camera_frame=f.camera_frame, pixel_map=d.pixel_map,
            )  # fmt: skip
        except GeometryError as exc:
            raise InputProblem("depth/image", str(exc)) from exc
        if self.scene.add(frame, current=lambda: f.epoch == self._epoch()) is not None:
            self._on_keyframe()

    def _hold(self, key: str, warning: str) -> None:
        if warning:
            self.warnings[key] = warning
