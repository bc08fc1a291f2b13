"""Readers for recorded posed RGB-D sequences; ``open_dataset`` picks the layout of a path.

Layouts: 7-Scenes / tsdf-fusion, TUM RGB-D (list files, and the two-frame pairs of the shared
test data), ScanNet-style exports, rosbag2. Every reader yields ``scene.frame.Frame`` values in
stamp order and exposes ``intrinsics``, ``depth_intrinsics``, ``alignment`` and ``len()``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llava3d_ros.scene.readers.base import (
    DatasetError,
    DatasetReader,
    MissingFileError,
    PoseFileError,
    UnknownLayoutError,
)
from llava3d_ros.scene.readers.rosbag import RosbagReader, is_rosbag2
from llava3d_ros.scene.readers.scannet import ScanNetReader, is_scannet, read_axis_alignment
from llava3d_ros.scene.readers.sevenscenes import SevenScenesReader, is_seven_scenes
from llava3d_ros.scene.readers.tum import TumPairReader, TumReader, is_tum, is_tum_pair

__all__ = [
    "LAYOUTS",
    "DatasetError",
    "DatasetReader",
    "MissingFileError",
    "PoseFileError",
    "RosbagReader",
    "ScanNetReader",
    "SevenScenesReader",
    "TumPairReader",
    "TumReader",
    "UnknownLayoutError",
    "detect_layout",
    "open_dataset",
    "read_axis_alignment",
    "sequences_in",
]

# checked in this order: a rosbag2 folder or a TUM folder may also hold stray frame files
LAYOUTS: dict[str, tuple[Any, type[DatasetReader]]] = {
    "rosbag2": (is_rosbag2, RosbagReader),
    "tum": (is_tum, TumReader),
    "scannet": (is_scannet, ScanNetReader),
    "7scenes": (is_seven_scenes, SevenScenesReader),
    "tum-pair": (is_tum_pair, TumPairReader),
}


def detect_layout(path: Path | str) -> str:
    """The layout name of ``path`` (a key of ``LAYOUTS``); raises when none matches."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"dataset path not found: {p}")
    for name, (matches, _) in LAYOUTS.items():
        if matches(p):
            return name
    inside = sequences_in(p)
    if inside:
        raise UnknownLayoutError(
            f"{p} matches no known layout; it holds sequences: {', '.join(inside)} — replay "
            "one of them"
        )
    raise UnknownLayoutError(
        f"{p} matches no known layout: expected a rosbag2 (metadata.yaml, .mcap, .db3), "
        "TUM RGB-D (rgb.txt + depth.txt + groundtruth.txt), ScanNet-style (color/, depth/, "
        "pose/, intrinsic/), 7-Scenes (frame-XXXXXX.pose.txt ...) or TUM pairs (img_/dep_/"
        "pose_X files)"
    )


def _natural_key(name: str) -> list:
    """Sort key putting ``case_2`` before ``case_10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def sequences_in(path: Path | str) -> list[str]:
    """Names of the subfolders of ``path`` that ``open_dataset`` accepts (one level, no recursion).

    For a folder that holds sequences but is not one itself (a TUM download with ``case_1/``,
    ``case_2/`` …): the refusal lists them. A subfolder whose layout matches but whose files are
    broken is left out.
    """
    p = Path(path)
    if not p.is_dir():
        return []
    found = []
    for sub in sorted((c for c in p.iterdir() if c.is_dir()), key=lambda c: _natural_key(c.name)):
        name = next((n for n, (matches, _) in LAYOUTS.items() if matches(sub)), None)
        if name is None:
            continue
        try:
            LAYOUTS[name][1](sub)
        except (DatasetError, OSError, ValueError):
            continue
        found.append(sub.name)
    return found


def open_dataset(path: Path | str, layout: str | None = None, **options: Any) -> DatasetReader:
    """A reader for the sequence at ``path``: iterate it for Frames.

    ``layout`` forces one of ``LAYOUTS`` instead of detecting it; ``options`` go to that
    reader's constructor (e.g. rosbag2 topic names, TUM ``intrinsics``, ScanNet ``stride``).
    """
    name = detect_layout(path) if layout is None else layout
    if name not in LAYOUTS:
        raise UnknownLayoutError(f"unknown layout {name!r}; known: {sorted(LAYOUTS)}")
    return LAYOUTS[name][1](Path(path), **options)
