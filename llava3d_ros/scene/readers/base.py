"""Shared pieces of the dataset readers: errors, the reader interface, file and pose parsing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from llava3d_ros.geometry.cameras import as_intrinsics
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import as_pose, pose_from_tum
from llava3d_ros.scene.frame import Frame


class DatasetError(ValueError):
    """A recorded sequence that cannot be read (the message names the file and the problem)."""


class UnknownLayoutError(DatasetError):
    """A path that matches none of the supported dataset layouts."""


class MissingFileError(DatasetError, FileNotFoundError):
    """A file the layout requires (image, pose, intrinsics, list file) is absent."""


class PoseFileError(DatasetError):
    """A pose file or pose list that does not hold valid camera-to-world poses."""


class DatasetReader(ABC):
    """A recorded posed RGB-D sequence: iterate it for ``Frame`` values in stamp order.

    ``intrinsics`` is the colour K (3×3, colour resolution), ``depth_intrinsics`` the depth K;
    ``alignment`` is the dataset's own world → z-up 4×4 when it has one (ScanNet's
    ``axisAlignment``), else None. Files are listed and poses parsed when the reader is built,
    so a broken sequence fails at once; images are decoded lazily while iterating.
    """

    layout: str = ""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.alignment: np.ndarray | None = None

    @property
    @abstractmethod
    def intrinsics(self) -> np.ndarray:
        """Colour intrinsics (3×3) at the colour image's resolution."""

    @property
    def depth_intrinsics(self) -> np.ndarray:
        """Depth intrinsics (3×3) at the depth image's resolution (colour K unless overridden)."""
        return self.intrinsics

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames the iteration yields."""

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Frames in increasing stamp order."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} frames)"


class PngSequenceReader(DatasetReader):
    """A reader that lists (colour PNG, depth PNG, stamp ns, pose) up front, with one colour K."""

    depth_scale: float
    _k: np.ndarray
    _frames: list[tuple[Path, Path, int, np.ndarray]]

    @property
    def intrinsics(self) -> np.ndarray:
        return self._k.copy()

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[Frame]:
        for cpath, dpath, stamp, pose in self._frames:
            yield Frame.from_raw(
                read_rgb(cpath),
                read_depth_png(dpath),
                self._k,
                pose,
                stamp,
                depth_scale=self.depth_scale,
            )


def require_file(path: Path, what: str) -> Path:
    """The path if it is a file, else ``MissingFileError`` saying what it should have held."""
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a colour image file (PNG/JPEG; grey or alpha converted)."""
    img = cv2.imread(str(require_file(path, "colour image")), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot decode colour image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth_png(path: Path) -> np.ndarray:
    """(H, W) uint16 raw depth from a 16-bit PNG (OpenCV keeps the 16 bits; an 8-bit PNG is
    refused because it cannot hold metric depth)."""
    img = cv2.imread(str(require_file(path, "depth image")), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot decode depth image {path}")
    if img.dtype != np.uint16 or img.ndim != 2:
        raise DatasetError(
            f"depth image {path} must be a single-channel 16-bit PNG, got {img.dtype} {img.shape}"
        )
    return img


def read_matrix(path: Path, what: str) -> np.ndarray:
    """A whitespace-separated numeric matrix from a text file, as float64."""
    require_file(path, what)
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise DatasetError(f"{what} {path} is not a numeric matrix: {err}") from err
    return m


def read_intrinsics(path: Path) -> np.ndarray:
    """A 3×3 K from a text file holding a 3×3 or 4×4 matrix."""
    m = read_matrix(path, "intrinsics file")
    try:
        return as_intrinsics(m)
    except GeometryError as err:
        raise DatasetError(f"intrinsics file {path}: {err}") from err


def load_pose_text(path: Path) -> np.ndarray:
    """The raw 4×4 of a pose text file, shape-checked but not yet validated as rigid."""
    require_file(path, "pose file")
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise PoseFileError(f"pose file {path} is not a numeric 4x4 matrix: {err}") from err
    if m.shape != (4, 4):
        raise PoseFileError(f"pose file {path} must hold a 4x4 matrix, got shape {m.shape}")
    return m


def checked_pose(m: np.ndarray, where: str) -> np.ndarray:
    """A validated, re-orthonormalised 4×4 (``PoseFileError`` naming ``where`` when invalid)."""
    try:
        return as_pose(m)
    except GeometryError as err:
        raise PoseFileError(f"{where}: {err}") from err


def read_pose_matrix(path: Path) -> np.ndarray:
    """A validated 4×4 camera-to-world from a text file (``PoseFileError`` when it is not)."""
    return checked_pose(load_pose_text(path), f"pose file {path}")


def tum_pose(values: np.ndarray | list[float], where: str) -> np.ndarray:
    """Validated 4×4 from ``tx ty tz qx qy qz qw`` (``where`` names the file/line for errors)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size != 7:
        raise PoseFileError(
            f"{where}: a TUM pose needs 7 numbers (tx ty tz qx qy qz qw), got {v.size}"
        )
    try:
        return checked_pose(pose_from_tum(*v), where)
    except GeometryError as err:
        raise PoseFileError(f"{where}: {err}") from err


def stamp_to_ns(text: str, where: str) -> int:
    """Integer nanoseconds from a decimal seconds string, exactly (no float rounding)."""
    sec, _, frac = text.strip().partition(".")
    if not sec.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise DatasetError(
            f"{where}: bad timestamp {text!r} (expected seconds like 1305031102.1753)"
        )
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0") or 0)
