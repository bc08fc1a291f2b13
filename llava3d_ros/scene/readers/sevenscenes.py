"""7-Scenes / tsdf-fusion layout: ``frame-XXXXXX.{color.png,depth.png,pose.txt}`` + one K file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from llava3d_ros.geometry.depth import MM_SCALE
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.readers.base import (
    DatasetError,
    DatasetReader,
    MissingFileError,
    read_depth_png,
    read_intrinsics,
    read_pose_matrix,
    read_rgb,
)

_FRAME = re.compile(r"frame-(\d+)\.pose\.txt$")
# 7-Scenes ships no K file; its documented depth-camera K is the one tsdf-fusion writes out.
SEVEN_SCENES_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])


def is_seven_scenes(root: Path) -> bool:
    """Whether ``root`` holds ``frame-*.pose.txt`` files (the 7-Scenes / tsdf-fusion layout)."""
    return root.is_dir() and any(root.glob("frame-*.pose.txt"))


class SevenScenesReader(DatasetReader):
    """Frames of a 7-Scenes sequence folder (or andyzeng/tsdf-fusion's ``data/``).

    Depth is uint16 millimetres (0 and 65535 invalid). K comes from ``camera-intrinsics.txt``
    when present, else 7-Scenes' published depth K (585, 320, 240). Colour and depth are not
    registered in 7-Scenes; like upstream and tsdf-fusion, the one K serves both (the parallax
    is a few pixels at the image edges). 7-Scenes has no timestamps: frame ``n`` is stamped
    ``n / fps`` seconds (Kinect v1: 30 Hz).
    """

    layout = "7scenes"

    def __init__(self, root: Path | str, fps: float = 30.0, depth_scale: float = MM_SCALE) -> None:
        super().__init__(Path(root))
        if not self.root.is_dir():
            raise MissingFileError(f"7-Scenes folder not found: {self.root}")
        if not fps > 0:
            raise DatasetError(f"fps must be positive, got {fps}")
        self.depth_scale = depth_scale
        # keep the digit string as written: the frame number's zero padding is the file name's
        indices = sorted(
            (int(m.group(1)), m.group(1))
            for p in self.root.iterdir()
            if (m := _FRAME.match(p.name))
        )
        if not indices:
            raise DatasetError(f"no frame-XXXXXX.pose.txt files in {self.root}")
        kfile = self.root / "camera-intrinsics.txt"
        self._k = read_intrinsics(kfile) if kfile.exists() else SEVEN_SCENES_K.copy()
        self._frames: list[tuple[str, int, np.ndarray]] = []
        for n, digits in indices:
            for suffix in ("color.png", "depth.png"):
                p = self._path(digits, suffix)
                if not p.is_file():
                    raise MissingFileError(f"frame {n}: {p.name} missing in {self.root}")
            self._frames.append((digits, n, read_pose_matrix(self._path(digits, "pose.txt"))))
        self._period_ns = 1e9 / fps

    def _path(self, digits: str, suffix: str) -> Path:
        return self.root / f"frame-{digits}.{suffix}"

    @property
    def intrinsics(self) -> np.ndarray:
        return self._k.copy()

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[Frame]:
        for digits, n, pose in self._frames:
            yield Frame.from_raw(
                read_rgb(self._path(digits, "color.png")),
                read_depth_png(self._path(digits, "depth.png")),
                self._k,
                pose,
                round(n * self._period_ns),
                depth_scale=self.depth_scale,
            )
