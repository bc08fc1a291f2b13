"""Readers for recorded posed RGB-D sequences; ``open_dataset`` picks the layout of a path.

Layouts: 7-Scenes / tsdf-fusion, TUM RGB-D (list files, and the two-frame pairs of the shared
test data), ScanNet-style exports, rosbag2. Every reader yields ``scene.frame.Frame`` values in
stamp order and exposes ``intrinsics``, ``depth_intrinsics``, ``alignment`` and ``len()``.
"""

from __future__ import annotations

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
    raise UnknownLayoutError(
        f"{p} matches no known layout: expected a rosbag2 (metadata.yaml, .mcap, .db3), "
        "TUM RGB-D (rgb.txt + depth.txt + groundtruth.txt), ScanNet-style (color/, depth/, "
        "pose/, intrinsic/), 7-Scenes (frame-XXXXXX.pose.txt ...) or TUM pairs (img_/dep_/"
        "pose_X files)"
    )


def open_dataset(path: Path | str, layout: str | None = None, **options: Any) -> DatasetReader:
    """A reader for the sequence at ``path``: iterate it for Frames.

    ``layout`` forces one of ``LAYOUTS`` instead of detecting it; ``options`` go to that
    reader's constructor (e.g. rosbag2 topic names, TUM ``intrinsics``, ScanNet ``stride``).
    """
    name = detect_layout(path) if layout is None else layout
    if name not in LAYOUTS:
        raise UnknownLayoutError(f"unknown layout {name!r}; known: {sorted(LAYOUTS)}")
    return LAYOUTS[name][1](Path(path), **options)
