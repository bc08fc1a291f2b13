"""Boxes written in the model's text (``[cx, cy, cz, dx, dy, dz]``, optionally + 3 angles) → ``Box3D``."""

from __future__ import annotations

import math
import re

import numpy as np

from llava3d_ros.answer import Box3D

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def parse_boxes(text: str) -> tuple[list[Box3D], list[str]]:
    """Every bracket group with 6 or 9 numbers becomes a world-frame box; anything else is a warning.

    Upstream read only the first bracket group; we read all of them, in order. Extents must be
    positive and finite; angles (9-value form) are yaw, pitch, roll in radians.
    """
    boxes: list[Box3D] = []
    warnings: list[str] = []
    for k, match in enumerate(_BRACKETS.finditer(text)):
        body = match.group(1).strip()
        parts = [p.strip() for p in body.split(",")] if body else []
        values: list[float] = []
        bad = None
        for p in parts:
            try:
                v = float(p)
            except ValueError:
                bad = p
                break
            if not math.isfinite(v):
                bad = p
                break
            values.append(v)
        where = f"bracket {k + 1} {match.group(0)!r}"
        if bad is not None:
            warnings.append(f"{where}: not a finite number: {bad!r}")
            continue
        if len(values) not in (6, 9):
            warnings.append(f"{where}: expected 6 or 9 numbers, got {len(values)}")
            continue
        size = np.asarray(values[3:6], dtype=np.float64)
        if np.any(size <= 0):
            warnings.append(f"{where}: box extents must be positive")
            continue
        euler = np.asarray(values[6:9], dtype=np.float64) if len(values) == 9 else np.zeros(3)
        boxes.append(Box3D(center=np.asarray(values[:3], dtype=np.float64), size=size, euler=euler))
    return boxes, warnings
