"""The Frame value: one posed RGB-D capture in plain arrays (what readers and the ROS edge yield)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llava3d_ros.geometry.cameras import as_intrinsics
from llava3d_ros.geometry.depth import MM_SCALE, decode_depth
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.unproject import as_pose


@dataclass
class Frame:
    """RGB (H, W, 3) uint8, depth (h, w) float32 metres (NaN = invalid), OpenCV-optical pose.

    ``k_rgb``/``k_depth`` are 3×3 at each image's own resolution (they may differ; colour and
    depth are assumed registered, i.e. to share an optical centre). ``cam_to_world`` is
    validated on construction and kept exactly as given (float64): a ``robust`` FrameBuffer
    re-orthonormalises it when the frame comes in, ``upstream`` mode uses it as it is, like the
    released pipeline. ``frame_id`` is −1 until a buffer assigns one.
    """

    rgb: np.ndarray
    depth: np.ndarray
    k_rgb: np.ndarray
    k_depth: np.ndarray
    cam_to_world: np.ndarray
    stamp_ns: int
    frame_id: int = -1
    camera_frame: str = ""  # the optical frame of the camera that took it ("" = the only one)
    # a pixel of the image the user saw (distorted by the lens) → its place in ``rgb``
    pixel_map: Callable[[float, float], tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rgb, np.ndarray) or self.rgb.dtype != np.uint8:
            raise GeometryError("rgb must be a uint8 numpy array")
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise GeometryError(f"rgb must be (H, W, 3), got {self.rgb.shape}")
        if not isinstance(self.depth, np.ndarray) or self.depth.dtype != np.float32:
            raise GeometryError("Frame.depth must be float32 metres (use Frame.from_raw to decode)")
        if self.depth.ndim != 2:
            raise GeometryError(f"depth must be (h, w), got {self.depth.shape}")
        self.k_rgb = as_intrinsics(self.k_rgb)
        self.k_depth = as_intrinsics(self.k_depth)
        self.cam_to_world = as_pose(self.cam_to_world, reorthonormalize=False)
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, int | np.integer):
            raise GeometryError(f"stamp_ns must be an integer, got {type(self.stamp_ns).__name__}")
        self.stamp_ns = int(self.stamp_ns)
        if self.stamp_ns < 0:
            raise GeometryError(f"stamp_ns must be >= 0, got {self.stamp_ns}")
        rw, rh = self.rgb.shape[1], self.rgb.shape[0]
        dw, dh = self.depth.shape[1], self.depth.shape[0]
        # registered images must show the same field of view: compare aspect ratios
        if abs(rw / rh - dw / dh) > 0.02:
            raise GeometryError(f"rgb {rw}x{rh} and depth {dw}x{dh} have different aspect ratios")

    @classmethod
    def from_raw(
        cls,
        rgb: np.ndarray,
        depth: np.ndarray,
        k_rgb: np.ndarray,
        cam_to_world: np.ndarray,
        stamp_ns: int,
        k_depth: np.ndarray | None = None,
        depth_scale: float = MM_SCALE,
    ) -> Frame:
        """Build from sensor arrays: uint16 depth ÷ ``depth_scale`` or float metres."""
        return cls(
            rgb=rgb,
            depth=decode_depth(depth, depth_scale),
            k_rgb=k_rgb,
            k_depth=k_rgb if k_depth is None else k_depth,
            cam_to_world=cam_to_world,
            stamp_ns=stamp_ns,
        )

    @property
    def nbytes(self) -> int:
        return int(self.rgb.nbytes + self.depth.nbytes)
