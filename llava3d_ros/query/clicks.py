"""Where a click lands: a pixel of any recent image, or a point in any TF-connected frame.

ROS-free. A PIXEL click is resolved, in this order, from: the keyframe with its stamp (its
own depth); the frame itself when the node still holds it (its depth, at its pose); the
camera's pose at that stamp with the held keyframes' depth rendered into it. Only when none
of these covers the pixel is it a BAD_REQUEST, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llava3d_ros.answer import QueryError, ResultCode
from llava3d_ros.geometry.clicks import click_to_world
from llava3d_ros.geometry.errors import GeometryError, NoValidDepthError
from llava3d_ros.geometry.render import surface_depth
from llava3d_ros.geometry.unproject import unproject_pixels
from llava3d_ros.query.request import PixelClick, PointClick
from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.sync import TransformLookup


@dataclass
class CameraView:
    """One camera at one stamp: pose, colour calibration and, if the node holds it, depth."""

    cam_to_world: np.ndarray  # (4, 4) world frame (not aligned)
    k_rgb: np.ndarray
    size_wh: tuple[int, int]
    depth_m: np.ndarray | None = None  # the frame's own depth (registered to colour)
    k_depth: np.ndarray | None = None
    # the operator's (distorted) pixel → the pinhole image's pixel; None: no lens distortion
    undistort: Callable[[float, float], tuple[float, float]] | None = None


class ImageLookup(Protocol):
    """The edge's memory of recent images: a camera at a stamp, or why it cannot be had."""

    def camera_at(self, camera_frame: str, stamp_ns: int) -> CameraView | str: ...


class ClickResolver:
    """Aligned-world positions of clicks (call under the scene lock: it reads ``buffer``)."""

    def __init__(
        self,
        buffer: FrameBuffer,
        world_frame: str,
        images: ImageLookup | None = None,
        transforms: TransformLookup | None = None,
    ) -> None:
        self.buffer, self.world_frame = buffer, world_frame
        self.images, self.transforms = images, transforms

    def resolve(self, i: int, click: PixelClick | PointClick) -> np.ndarray:
        """QueryError(BAD_REQUEST) when it cannot be placed."""
        try:
            world = (
                self._point(i, click) if isinstance(click, PointClick) else self._pixel(i, click)
            )
        except NoValidDepthError as exc:
            raise QueryError(
                ResultCode.BAD_REQUEST, f"click {i} is on a depth hole: {exc}"
            ) from exc
        except GeometryError as exc:
            raise QueryError(ResultCode.BAD_REQUEST, f"click {i}: {exc}") from exc
        a = self.buffer.alignment
        return (a[:3, :3] @ world + a[:3, 3]).astype(np.float64)

    def _point(self, i: int, click: PointClick) -> np.ndarray:
        xyz = np.asarray(click.xyz, dtype=np.float64).reshape(3)
        if click.frame_id in ("", self.world_frame):
            return xyz
        if self.transforms is None:
            raise QueryError(
                ResultCode.BAD_REQUEST,
                f"click {i} is in frame {click.frame_id!r}, not the world frame "
                f"{self.world_frame!r}, and the node has no TF",
            )
        try:
            m = self.transforms.lookup(self.world_frame, click.frame_id, click.stamp_ns)
        except Exception as exc:  # TransformError or tf2's own, behind the adapter
            raise QueryError(
                ResultCode.BAD_REQUEST,
                f"click {i}: no transform from {click.frame_id!r} to {self.world_frame!r}: {exc}",
            ) from exc
        return m[:3, :3] @ xyz + m[:3, 3]

    def _pixel(self, i: int, click: PixelClick) -> np.ndarray:
        b = self.buffer
        if click.stamp_ns == 0:
            fid = b.newest_keyframe(click.camera_frame)
            if fid is None:
                raise QueryError(
                    ResultCode.BAD_REQUEST,
                    f"click {i}: no keyframe from camera {click.camera_frame!r} yet",
                )
            return self._on_keyframe(fid, click)
        fid = b.keyframe_at(click.stamp_ns, click.camera_frame)
        if fid is not None:
            return self._on_keyframe(fid, click)
        view = (
            self.images.camera_at(click.camera_frame, click.stamp_ns)
            if self.images is not None
            else "the node keeps no images beyond its keyframes"
        )
        if isinstance(view, str):
            raise QueryError(
                ResultCode.BAD_REQUEST,
                f"click {i}: image stamped {click.stamp_ns} ns cannot be placed: {view} "
                f"(nearest keyframes: {b.nearest_stamps(click.stamp_ns)}; stamp 0 = newest "
                "keyframe)",
            )
        u, v = click.u, click.v
        w, h = view.size_wh
        if not (0.0 <= u < w and 0.0 <= v < h):
            raise GeometryError(
                f"click ({u}, {v}) is outside the {w}x{h} colour image "
                f"(u in [0, {w}), v in [0, {h}))"
            )
        if view.undistort is not None:
            u, v = view.undistort(u, v)
            if not (0.0 <= u < w and 0.0 <= v < h):
                raise GeometryError(
                    f"click ({click.u}, {click.v}) lies outside the image once undistorted "
                    f"({u:.1f}, {v:.1f}): the lens shows no pinhole pixel there"
                )
        if view.depth_m is not None:
            k_depth = view.k_rgb if view.k_depth is None else view.k_depth
            return click_to_world(
                u, v, view.depth_m, k_depth, view.k_rgb, view.cam_to_world, view.size_wh
            )
        rendered = b.render_depth(view.cam_to_world, view.k_rgb, view.size_wh)
        d = surface_depth(rendered, u, v)
        return unproject_pixels(
            np.array([u]), np.array([v]), np.array([d]), view.k_rgb, view.cam_to_world
        )[0]

    def _on_keyframe(self, fid: int, click: PixelClick) -> np.ndarray:
        """World point of a click on a keyframe (its own depth)."""
        inv = np.linalg.inv(self.buffer.alignment)
        p = self.buffer.click(fid, click.u, click.v)
        return inv[:3, :3] @ p + inv[:3, 3]
