"""ScanNet-style posed images: ``color/``, ``depth/``, ``pose/``, ``intrinsic/`` + axis alignment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from llava3d_ros.geometry.depth import MM_SCALE
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import as_pose
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.readers.base import (
    DatasetError,
    DatasetReader,
    MissingFileError,
    PoseFileError,
    checked_pose,
    load_pose_text,
    read_depth_png,
    read_intrinsics,
    read_rgb,
    require_file,
)

_COLOUR_EXT = (".jpg", ".png", ".jpeg")


def is_scannet(root: Path) -> bool:
    """Whether ``root`` has the ``color/``, ``depth/`` and ``pose/`` folders of ScanNet exports."""
    return all((root / d).is_dir() for d in ("color", "depth", "pose"))


def read_axis_alignment(path: Path) -> np.ndarray:
    """The 4×4 ``axisAlignment = m00 m01 … m33`` of a ScanNet scene meta file (row-major)."""
    require_file(path, "ScanNet meta file")
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "axisAlignment":
            try:
                m = np.array([float(x) for x in value.split()], dtype=np.float64)
            except ValueError as err:
                raise DatasetError(f"{path}: axisAlignment is not numeric: {err}") from err
            if m.size != 16:
                raise DatasetError(f"{path}: axisAlignment needs 16 numbers, got {m.size}")
            try:
                return as_pose(m.reshape(4, 4))
            except GeometryError as err:
                raise DatasetError(f"{path}: axisAlignment is not rigid: {err}") from err
    raise DatasetError(f"{path} has no 'axisAlignment = ...' line")


def _find_meta(root: Path) -> Path | None:
    """``<scene>.txt`` next to the folders (``scene0000_00.txt``), if there is one."""
    preferred = root / f"{root.name}.txt"
    if preferred.is_file():
        return preferred
    for p in sorted(root.glob("*.txt")):
        if "axisAlignment" in p.read_text(errors="replace"):
            return p
    return None


class ScanNetReader(DatasetReader):
    """Frames of a ScanNet export (SensReader's ``color/N.jpg``, ``depth/N.png``, ``pose/N.txt``).

    K from ``intrinsic/intrinsic_color.txt`` and ``intrinsic_depth.txt`` (4×4; the depth K drives
    unprojection, as upstream does, since ScanNet colour is 1296×968 and depth 640×480). Depth is
    uint16 millimetres. ``alignment`` is the scene meta file's ``axisAlignment`` (``meta`` path,
    else ``<root>/<root name>.txt`` or any ``*.txt`` with that key; None when there is none and
    ``require_alignment`` is False). ScanNet marks frames whose tracking was lost with an all
    ``-inf`` pose: they are skipped and counted in ``skipped``; other bad poses raise. Every
    ``stride``-th frame is read; frame ``n`` is stamped ``n / fps`` s.
    """

    layout = "scannet"

    def __init__(
        self,
        root: Path | str,
        meta: Path | str | None = None,
        require_alignment: bool = False,
        stride: int = 1,
        fps: float = 30.0,
        depth_scale: float = MM_SCALE,
    ) -> None:
        super().__init__(Path(root))
        if not is_scannet(self.root):
            raise MissingFileError(f"{self.root} lacks ScanNet's color/, depth/ and pose/ folders")
        if stride < 1 or not fps > 0:
            raise DatasetError(f"stride must be >= 1 and fps > 0, got {stride}, {fps}")
        self.depth_scale = depth_scale
        kdir = self.root / "intrinsic"
        self._k_rgb = read_intrinsics(kdir / "intrinsic_color.txt")
        self._k_depth = read_intrinsics(kdir / "intrinsic_depth.txt")
        meta_path = Path(meta) if meta is not None else _find_meta(self.root)
        if meta_path is not None:
            self.alignment = read_axis_alignment(meta_path)
        elif require_alignment:
            raise MissingFileError(f"no scene meta file with axisAlignment in {self.root}")
        poses = sorted(
            (int(p.stem), p) for p in (self.root / "pose").glob("*.txt") if p.stem.isdigit()
        )
        if not poses:
            raise DatasetError(f"no numbered pose files in {self.root / 'pose'}")
        self.skipped = 0
        self._frames: list[tuple[Path, Path, int, np.ndarray]] = []
        for n, ppath in poses[::stride]:
            pose = _scannet_pose(ppath)
            if pose is None:
                self.skipped += 1
                continue
            colour = next(
                (c for ext in _COLOUR_EXT if (c := self.root / "color" / f"{n}{ext}").is_file()),
                None,
            )
            if colour is None:
                raise MissingFileError(f"frame {n}: no color/{n}.jpg or .png in {self.root}")
            depth = require_file(self.root / "depth" / f"{n}.png", f"frame {n} depth image")
            self._frames.append((colour, depth, round(n * 1e9 / fps), pose))
        if not self._frames:
            raise PoseFileError(f"every pose in {self.root / 'pose'} is invalid (-inf)")

    @property
    def intrinsics(self) -> np.ndarray:
        return self._k_rgb.copy()

    @property
    def depth_intrinsics(self) -> np.ndarray:
        return self._k_depth.copy()

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[Frame]:
        for colour, depth, stamp, pose in self._frames:
            yield Frame.from_raw(
                read_rgb(colour),
                read_depth_png(depth),
                self._k_rgb,
                pose,
                stamp,
                k_depth=self._k_depth,
                depth_scale=self.depth_scale,
            )


def _scannet_pose(path: Path) -> np.ndarray | None:
    """The 4×4 of a ScanNet pose file; None for ScanNet's all ``-inf`` "tracking lost" pose."""
    m = load_pose_text(path)
    return None if np.isneginf(m).all() else checked_pose(m, f"pose file {path}")
