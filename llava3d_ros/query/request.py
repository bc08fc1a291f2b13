"""The plain query request the edge hands to the answering path (no ROS types)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

TASKS = ("", "qa", "caption", "ground")


@dataclass(frozen=True)
class PixelClick:
    """A pixel (column ``u``, row ``v``, full resolution) in the image stamped ``stamp_ns``.

    ``stamp_ns`` 0 = the newest keyframe; ``camera_frame`` is the image's optical frame
    ("" = the only camera, or whichever camera has an image at that stamp).
    """

    u: float
    v: float
    stamp_ns: int = 0
    camera_frame: str = ""


@dataclass(frozen=True)
class PointClick:
    """A 3D point in ``frame_id`` (empty = the world frame) at ``stamp_ns`` (0 = latest)."""

    xyz: np.ndarray
    frame_id: str = ""
    stamp_ns: int = 0


@dataclass(frozen=True)
class QueryRequest:
    """What is asked (see ``msg/Prompt.msg``); zero/negative numbers mean "node default"."""

    question: str = ""
    task: str = ""
    clicks: tuple[PixelClick | PointClick, ...] = field(default_factory=tuple)
    max_new_tokens: int = 0
    temperature: float = -1.0
    max_views: int = 0
    client_id: str = ""

    def with_defaults(
        self, max_new_tokens: int, temperature: float, max_views: int
    ) -> QueryRequest:
        """The request with the node's defaults filled in where the caller left them open."""
        return replace(
            self,
            max_new_tokens=self.max_new_tokens or max_new_tokens,
            temperature=temperature if self.temperature < 0 else self.temperature,
            max_views=self.max_views or max_views,
        )
