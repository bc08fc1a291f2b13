"""Locating the shared real RGB-D frames for tests (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SEVEN = DATA / "7scenes-redkitchen"
TUM = DATA / "tum-fr1-xyz"


def need(path: Path) -> Path:
    """The path, or skip the test saying which data is missing."""
    if not path.exists():
        pytest.skip(f"shared real data not found at {path.resolve()}")
    return path


def seven_frame(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """rgb, raw uint16 depth, pose (4×4) and K (3×3) of 7-Scenes redkitchen frame ``n``."""
    root = need(SEVEN)
    rgb = np.asarray(Image.open(root / f"frame-{n:06d}.color.png").convert("RGB"))
    depth = np.asarray(Image.open(root / f"frame-{n:06d}.depth.png"))
    pose = np.loadtxt(root / f"frame-{n:06d}.pose.txt")
    k = np.loadtxt(root / "camera-intrinsics.txt")
    return rgb, depth, pose, k
