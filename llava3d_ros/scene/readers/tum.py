"""TUM RGB-D layouts: the benchmark's ``rgb.txt``/``depth.txt``/``groundtruth.txt`` sequences,
and the two-frame ``img_/dep_/pose_{prev,curr}`` pairs of the shared test data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from llava3d_ros.geometry.cameras import as_intrinsics
from llava3d_ros.geometry.depth import TUM_SCALE
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.scene.readers.base import (
    DatasetError,
    MissingFileError,
    PngSequenceReader,
    PoseFileError,
    read_intrinsics,
    read_matrix,
    require_file,
    stamp_to_ns,
    tum_pose,
)

# TUM recommends the ROS default K for its pre-registered depth (undistorting registered depth
# is not trivial): https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats
TUM_DEFAULT_K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
_K_FILES = ("camera-intrinsics.txt", "kinect_params.txt", "intrinsics.txt")


def is_tum(root: Path) -> bool:
    """Whether ``root`` is a TUM RGB-D sequence folder (``rgb.txt`` and ``depth.txt``)."""
    return (root / "rgb.txt").is_file() and (root / "depth.txt").is_file()


def is_tum_pair(root: Path) -> bool:
    """Whether ``root`` holds ``img_X.png``/``dep_X.png``/``pose_X.txt`` frames (a TUM pair)."""
    return root.is_dir() and any(root.glob("pose_*.txt")) and any(root.glob("dep_*.png"))


def _find_intrinsics(folders: list[Path], given: np.ndarray | None) -> np.ndarray:
    """Given K, else the first K file found in ``folders``, else TUM's recommended default."""
    if given is not None:
        try:
            return as_intrinsics(given)
        except GeometryError as err:
            raise DatasetError(f"given intrinsics: {err}") from err
    for folder in folders:
        for name in _K_FILES:
            if (folder / name).is_file():
                return read_intrinsics(folder / name)
    return TUM_DEFAULT_K.copy()


def read_list(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    """Rows of a TUM list file as (stamp ns, remaining fields); ``#`` lines are comments."""
    require_file(path, "TUM list file")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{path}:{lineno}"
        if len(fields) != columns:
            raise DatasetError(f"{where}: expected {columns} fields, got {len(fields)}: {line!r}")
        rows.append((stamp_to_ns(fields[0], where), fields[1:]))
    if not rows:
        raise DatasetError(f"TUM list file {path} holds no entries")
    stamps = [r[0] for r in rows]
    if any(b <= a for a, b in zip(stamps, stamps[1:], strict=False)):
        raise DatasetError(f"timestamps in {path} are not strictly increasing")
    return rows


def associate(a: np.ndarray, b: np.ndarray, max_dt_ns: int) -> list[tuple[int, int]]:
    """Index pairs (i, j) matching stamps ``a[i]`` ↔ ``b[j]`` within ``max_dt_ns``, one-to-one.

    TUM's ``associate.py`` rule (closest pairs first, each stamp used once), restricted to the
    two neighbours of each stamp in the other list so it stays O(n log n).
    """
    cand = []
    pos = np.searchsorted(b, a)
    for i, p in enumerate(pos):
        for j in (p - 1, p):
            if 0 <= j < len(b) and abs(int(a[i]) - int(b[j])) <= max_dt_ns:
                cand.append((abs(int(a[i]) - int(b[j])), i, int(j)))
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in sorted(cand):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


class TumReader(PngSequenceReader):
    """Frames of a TUM RGB-D sequence (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``).

    Colour and depth are associated one-to-one within ``max_dt`` seconds (TUM's 0.02 s); the
    pose at each depth stamp is interpolated between the two ground-truth samples around it
    (linear translation, slerp rotation) when they are at most ``max_pose_gap`` apart. Frames
    outside the ground truth (TUM sequences start recording before motion capture does) are
    skipped and counted in ``skipped``. Depth is uint16 ÷ 5000. K: ``intrinsics`` if given,
    else a K file in the folder, else TUM's recommended default (525, 525, 319.5, 239.5).
    """

    layout = "tum"

    def __init__(
        self,
        root: Path | str,
        intrinsics: np.ndarray | None = None,
        max_dt: float = 0.02,
        max_pose_gap: float = 0.1,
        depth_scale: float = TUM_SCALE,
    ) -> None:
        super().__init__(Path(root))
        self.depth_scale = depth_scale
        self._k = _find_intrinsics([self.root], intrinsics)
        rgb = read_list(self.root / "rgb.txt", 2)
        depth = read_list(self.root / "depth.txt", 2)
        gt_path = self.root / "groundtruth.txt"
        if not gt_path.is_file():
            raise MissingFileError(f"TUM ground truth not found: {gt_path}")
        try:
            gt = read_list(gt_path, 8)
        except DatasetError as err:
            raise PoseFileError(str(err)) from err
        gt_t = np.array([s for s, _ in gt], dtype=np.int64)
        gt_pose = np.stack(
            [tum_pose([float(x) for x in f], f"{gt_path}:{i}") for i, (_, f) in enumerate(gt, 1)]
        )
        pairs = associate(
            np.array([s for s, _ in rgb], dtype=np.int64),
            np.array([s for s, _ in depth], dtype=np.int64),
            round(max_dt * 1e9),
        )
        if not pairs:
            raise DatasetError(f"no colour/depth pair in {self.root} is within {max_dt} s")
        self._frames: list[tuple[Path, Path, int, np.ndarray]] = []
        self.skipped = 0
        gap_ns = round(max_pose_gap * 1e9)
        for i, j in pairs:
            stamp = depth[j][0]
            pose = interpolate_pose(gt_t, gt_pose, stamp, gap_ns)
            if pose is None:
                self.skipped += 1
                continue
            cpath, dpath = self.root / rgb[i][1][0], self.root / depth[j][1][0]
            require_file(cpath, "colour image listed in rgb.txt")
            require_file(dpath, "depth image listed in depth.txt")
            self._frames.append((cpath, dpath, stamp, pose))
        if not self._frames:
            raise PoseFileError(f"no frame of {self.root} falls inside its ground truth")


def interpolate_pose(
    t: np.ndarray, poses: np.ndarray, stamp: int, gap_ns: int
) -> np.ndarray | None:
    """Pose at ``stamp`` between its bracketing samples, or None outside / across a gap."""
    hi = int(np.searchsorted(t, stamp))
    if hi < len(t) and t[hi] == stamp:
        return poses[hi].copy()
    if hi == 0 or hi == len(t) or t[hi] - t[hi - 1] > gap_ns:
        return None
    lo = hi - 1
    w = (stamp - t[lo]) / (t[hi] - t[lo])
    rot = Slerp([0.0, 1.0], Rotation.from_matrix(poses[[lo, hi], :3, :3]))(w)
    out = np.eye(4)
    out[:3, :3] = rot.as_matrix()
    out[:3, 3] = (1 - w) * poses[lo, :3, 3] + w * poses[hi, :3, 3]
    return out


class TumPairReader(PngSequenceReader):
    """Frames ``img_X.png``/``dep_X.png``/``pose_X.txt`` of a folder (X = ``prev``, ``curr``…).

    Order: ``prev`` before ``curr``, other names alphabetically after; frame ``i`` is stamped
    ``i / fps`` s (the pairs carry no time). Poses are TUM ``tx ty tz qx qy qz qw`` lines; depth
    is ÷ 5000; K from a K file in the folder or its parent (``kinect_params.txt``), else given,
    else TUM's default.
    """

    layout = "tum-pair"

    def __init__(
        self,
        root: Path | str,
        intrinsics: np.ndarray | None = None,
        fps: float = 30.0,
        depth_scale: float = TUM_SCALE,
    ) -> None:
        super().__init__(Path(root))
        if not self.root.is_dir():
            raise MissingFileError(f"TUM pair folder not found: {self.root}")
        self.depth_scale = depth_scale
        self._k = _find_intrinsics([self.root, self.root.parent], intrinsics)
        names = [p.name[len("pose_") : -len(".txt")] for p in self.root.glob("pose_*.txt")]
        if not names:
            raise DatasetError(f"no pose_X.txt files in {self.root}")
        order = {"prev": 0, "curr": 1}
        names.sort(key=lambda n: (order.get(n, 2), n))
        self._frames = []
        for idx, name in enumerate(names):
            cpath = require_file(self.root / f"img_{name}.png", "colour image")
            dpath = require_file(self.root / f"dep_{name}.png", "depth image")
            ppath = self.root / f"pose_{name}.txt"
            try:
                values = read_matrix(ppath, "pose file").reshape(-1)
            except MissingFileError:
                raise
            except DatasetError as err:
                raise PoseFileError(str(err)) from err
            self._frames.append(
                (cpath, dpath, round(idx * 1e9 / fps), tum_pose(values, str(ppath)))
            )
