"""A sensor frame made pinhole and registered: undistorted colour and depth in the colour camera.

LLaVA-3D's unprojection assumes a pinhole camera whose depth is registered to colour. Robot
cameras often give neither: a lens with distortion coefficients, and depth from its own
camera (own camera_info, own frame). This is where both are fixed, before the resize and crop,
so the model sees a pinhole image with the intrinsics camera_info holds (see ``distortion``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llava3d_ros.geometry.distortion import Undistorter
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.registration import register_depth


@dataclass(frozen=True)
class Calibration:
    """One camera_info, as plain values: K (3×3), size (w, h), D, distortion model, frame."""

    k: np.ndarray
    size: tuple[int, int]
    d: tuple[float, ...] = ()
    model: str = ""
    frame: str = ""

    def undistorter(self, size: tuple[int, int] | None = None) -> Undistorter | None:
        """Its undistorter (at ``size``, K scaled to it), or None when the lens is pinhole."""
        if not any(self.d):
            return None
        w, h = size or self.size
        k = self.k.copy()
        k[0] *= w / self.size[0]
        k[1] *= h / self.size[1]
        return Undistorter(w, h, k, self.d, self.model)


@dataclass
class Rectified:
    """Colour and depth of one frame, pinhole and registered, and how to map a user's pixel."""

    rgb: np.ndarray | None  # None when only depth was asked for
    depth: np.ndarray  # float32 metres, NaN invalid
    k_depth: np.ndarray
    # a pixel of the (distorted) image the user saw → the same point in ``rgb``; None: same
    pixel_map: Callable[[float, float], tuple[float, float]] | None


def needs_registration(color: Calibration, depth: Calibration | None) -> bool:
    """Depth from a camera of its own: its own calibration and a frame other than colour's."""
    return (
        depth is not None and bool(depth.frame) and bool(color.frame) and depth.frame != color.frame
    )


def rectify(
    rgb: np.ndarray | None,
    depth_m: np.ndarray,
    color: Calibration,
    depth: Calibration | None,
    k_depth: np.ndarray,
    color_t_depth: np.ndarray | str | None = None,
) -> Rectified:
    """Undistort colour (bilinear) and depth (nearest), and register depth into colour if needed.

    ``k_depth``: the depth image's K as the caller derived it (its own, or colour's scaled).
    ``color_t_depth``: the depth camera's pose in the colour camera (TF or a parameter), or
    why it is not known; needed only when ``needs_registration``, else ignored.
    """
    und = color.undistorter()
    if und is not None and rgb is not None:
        rgb = und.color(rgb)
    pixel_map = und.undistort_pixel if und is not None else None
    if needs_registration(color, depth):
        if not isinstance(color_t_depth, np.ndarray):
            why = f": {color_t_depth}" if color_t_depth else ""
            raise GeometryError(
                f"depth is in frame {depth.frame!r} and colour in {color.frame!r}: depth must "
                f"be registered to colour, and their extrinsic is unknown{why} (publish TF "
                "between the two frames, or set depth_to_color)"
            )
        d_und = depth.undistorter((depth_m.shape[1], depth_m.shape[0]))
        if d_und is not None:
            depth_m = d_und.depth(depth_m)
        registered = register_depth(depth_m, k_depth, color.size, color.k, color_t_depth).astype(
            np.float32
        )
        return Rectified(rgb, registered, color.k, pixel_map)
    # registered already: depth shares colour's lens (its own calibration's, if it has one)
    lens = depth if depth is not None and any(depth.d) else color
    d_und = lens.undistorter((depth_m.shape[1], depth_m.shape[0]))
    if d_und is not None:
        depth_m = d_und.depth(depth_m)
    return Rectified(rgb, depth_m, k_depth, pixel_map)
