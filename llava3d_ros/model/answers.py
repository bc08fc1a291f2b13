"""Boxes written in the model's text (``[cx, cy, cz, dx, dy, dz]``, optionally + 3 angles) → ``Box3D``."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from llava3d_ros.answer import Box3D

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def parse_boxes(text: str) -> tuple[list[Box3D], list[str]]:
    """Every bracket group with 6 or 9 numbers becomes a world-frame box; anything else is a warning.

    Upstream read only the first bracket group; we read all of them, in order. Extents must be
    positive and finite; angles (9-value form) are yaw, pitch, roll in radians.
    """
    boxes, _, warnings = parse_boxes_with_spans(text)
    return boxes, warnings


def parse_boxes_with_spans(text: str) -> tuple[list[Box3D], list[tuple[int, int]], list[str]]:
    """:func:`parse_boxes`, plus each box's ``(start, end)`` in ``text``, from its ``[`` to
    just past its ``]``."""
    boxes: list[Box3D] = []
    spans: list[tuple[int, int]] = []
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
        spans.append(match.span())
    return boxes, spans, warnings


def token_ends(decode: Callable[[list[int]], str], ids: Sequence[int], upto: int) -> list[int]:
    """``ends[i]`` = length of ``decode(ids[: i + 1])``: token ``i`` wrote characters
    ``ends[i - 1]:ends[i]`` of ``decode(ids)`` (``ends[-1]`` read as 0). Stops once ``upto``
    characters are covered; the rest are left out.

    Decoding prefixes, not joining piece texts, keeps the offsets those of the decoded answer
    (sentencepiece drops the first piece's leading space and merges byte pieces). A prefix
    that ends inside a UTF-8 character may count one character too many for a token or two;
    boxes are ASCII, so their own offsets are exact.
    """
    ends: list[int] = []
    for i in range(len(ids)):
        ends.append(len(decode(list(ids[: i + 1]))))
        if ends[-1] >= upto:
            break
    return ends


def span_score(span: tuple[int, int], ends: Sequence[int], probs: Sequence[float]) -> float:
    """Geometric mean of ``probs`` over the tokens that wrote any character of ``span``
    (offsets in the decoded text); NaN when no token did."""
    start, end = span
    logs: list[float] = []
    prev = 0
    for i, e in enumerate(ends):
        if prev < end and e > start and e > prev:
            p = probs[i]
            if p <= 0.0:
                return 0.0
            logs.append(math.log(p))
        prev = max(prev, e)
    if not logs:
        return math.nan
    return math.exp(sum(logs) / len(logs))
