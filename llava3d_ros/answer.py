"""The one result value every query produces, built in the core and converted at the ROS edge."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np


class ResultCode(enum.IntEnum):
    """Mirrors the constants of ``llava3d_ros/msg/Answer``."""

    OK = 0
    NO_SCENE = 1
    BUSY = 2
    BAD_REQUEST = 3
    MODEL_ERROR = 4
    TIMEOUT = 5
    CANCELED = 6
    NOT_READY = 7


class QueryError(Exception):
    """A query failed in a way the caller must be told about, with its code."""

    def __init__(self, code: ResultCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Box3D:
    """A box in the world frame: centre, full extents (metres), yaw/pitch/roll in radians."""

    center: np.ndarray  # (3,)
    size: np.ndarray  # (3,)
    euler: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,), zeros = axis-aligned
    label: str = ""
    score: float = math.nan


@dataclass
class Timings:
    encode_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0


@dataclass
class AnswerResult:
    """What came back from one query (see ``msg/Answer.msg`` for the field meanings)."""

    code: ResultCode
    message: str = ""
    text: str = ""
    boxes: list[Box3D] = field(default_factory=list)
    click_points: list[np.ndarray] = field(default_factory=list)
    view_stamps_ns: list[int] = field(default_factory=list)
    view_frames: list[str] = field(default_factory=list)  # each view's camera frame
    model: str = ""
    scene_tokens: int = 0
    timings: Timings = field(default_factory=Timings)
    parse_warnings: list[str] = field(default_factory=list)
    out_of_memory: bool = False  # MODEL_ERROR because memory ran out (worth a smaller retry)
    box_tokens_overruled: int = 0  # tokens the box grammar replaced (constrained decoding)

    @property
    def success(self) -> bool:
        return self.code == ResultCode.OK
