"""A matched frame's serialized messages → pinhole, registered arrays (raw or compressed).

Shared by the ingest thread (keyframe candidates) and PIXEL clicks on held frames, so both
see one frame the same way: decoded per transport (``rgb_transport``, ``depth_transport``),
checked against camera_info, undistorted, and depth registered to colour where needed
(``geometry/rectify.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from llava3d_ros.geometry.compressed import decode_compressed_color, decode_compressed_depth
from llava3d_ros.geometry.depth import MM_SCALE, decode_depth
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.geometry.rectify import needs_registration, rectify
from llava3d_ros.ros import convert, serialized
from llava3d_ros.scene.ingest import InputProblem, depth_intrinsics
from llava3d_ros.scene.sync import SyncedFrame

# transport → (subscription topic suffix, message type)
COLOR_TRANSPORTS = {"raw": ("", Image), "compressed": ("/compressed", CompressedImage)}
DEPTH_TRANSPORTS = {"raw": ("", Image), "compressedDepth": ("/compressedDepth", CompressedImage)}

# (colour frame, depth frame, stamp) → colour_T_depth, or why it is unknown
Extrinsic = Callable[[str, str, int], "np.ndarray | str"]


@dataclass
class DecodedFrame:
    """One frame as the scene takes it (``rgb`` None when only depth was asked for)."""

    rgb: np.ndarray | None
    depth: np.ndarray  # float32 metres, NaN invalid, registered to colour, pinhole
    k_rgb: np.ndarray
    k_depth: np.ndarray
    size: tuple[int, int]  # colour (w, h)
    pixel_map: Callable[[float, float], tuple[float, float]] | None
    warnings: dict[str, str] = field(default_factory=dict)


class FrameDecoder:
    """Decodes matched frames of every camera (calibrations cached per camera)."""

    def __init__(
        self,
        rgb_transport: str,
        depth_transport: str,
        max_pixels: int,
        extrinsic: Extrinsic = lambda color, depth, stamp: "",
    ) -> None:
        self.rgb_transport, self.depth_transport = rgb_transport, depth_transport
        self.max_pixels = max_pixels
        self.extrinsic = extrinsic
        self._infos: dict[str, tuple[serialized.SerializedCameraInfo, ...]] = {}

    def decode(self, f: SyncedFrame, with_color: bool = True) -> DecodedFrame:
        """Raises ``InputProblem`` naming the input at fault."""
        color_info, depth_info = self._infos.setdefault(
            f.camera, (serialized.SerializedCameraInfo(), serialized.SerializedCameraInfo())
        )
        cam = _converted(color_info, f.color_info, "rgb/camera_info")
        rgb, color_frame = None, cam.frame_id
        if with_color:
            rgb, color_frame = self._color(f.color)
            h, w = rgb.shape[:2]
            if (cam.width, cam.height) != (w, h):
                raise InputProblem(
                    "rgb/camera_info",
                    f"camera_info is {cam.width}x{cam.height} but rgb/image is {w}x{h}",
                )
        depth, depth_frame = self._depth(f.depth)
        dmodel = None
        if f.depth_info is not None:
            dmodel = _converted(depth_info, f.depth_info, "depth/camera_info")
        size = (cam.width, cam.height)
        dh, dw = depth.shape
        dcam = None if dmodel is None else (dmodel.k, (dmodel.width, dmodel.height))
        warnings: dict[str, str] = {}
        # the images' frames name the cameras (camera_info's may be left empty)
        color_cal = replace(cam.calibration(), frame=color_frame)
        depth_cal = None
        if dmodel is not None:
            depth_cal = replace(dmodel.calibration(), frame=depth_frame or dmodel.frame_id)
        registering = needs_registration(color_cal, depth_cal)
        if registering:
            k_depth = dmodel.k
            if (dmodel.width, dmodel.height) != (dw, dh):
                raise InputProblem(
                    "depth/camera_info",
                    f"camera_info is {dmodel.width}x{dmodel.height} but depth is {dw}x{dh}",
                )
        else:
            k_depth, warnings["resolution"] = depth_intrinsics(cam.k, size, (dw, dh), dcam)
            if color_frame and depth_frame and color_frame != depth_frame:
                warnings["frames"] = (
                    f"colour frame {color_frame!r} and depth frame {depth_frame!r} differ: "
                    "depth is assumed registered to colour (publish depth/camera_info to have "
                    "it registered)"
                )
        extrinsic = self.extrinsic(color_frame, depth_frame, f.stamp_ns) if registering else None
        try:
            out = rectify(rgb, depth, color_cal, depth_cal, k_depth, extrinsic)
        except GeometryError as exc:
            raise InputProblem(
                "depth/camera_info" if registering else "rgb/camera_info", str(exc)
            ) from exc
        return DecodedFrame(
            out.rgb, out.depth, cam.k, out.k_depth, size, out.pixel_map,
            {k: v for k, v in warnings.items() if v},
        )  # fmt: skip

    def _color(self, data: bytes) -> tuple[np.ndarray, str]:
        if self.rgb_transport == "raw":
            view = _image_view(data, "rgb/image", self.max_pixels)
            return _converted(convert.color_from_image, view, "rgb/image"), view.frame_id
        msg = _compressed(data, "rgb/image")
        try:
            rgb, _ = decode_compressed_color(msg.format, bytes(msg.data), self.max_pixels)
        except GeometryError as exc:
            raise InputProblem("rgb/image", str(exc)) from exc
        return rgb, msg.header.frame_id

    def _depth(self, data: bytes) -> tuple[np.ndarray, str]:
        if self.depth_transport == "raw":
            view = _image_view(data, "depth/image", self.max_pixels)
            return _converted(convert.depth_from_image, view, "depth/image"), view.frame_id
        msg = _compressed(data, "depth/image")
        try:
            arr, _ = decode_compressed_depth(msg.format, bytes(msg.data), self.max_pixels)
            return decode_depth(arr, MM_SCALE), msg.header.frame_id
        except GeometryError as exc:
            raise InputProblem("depth/image", str(exc)) from exc


def _image_view(data: bytes, source: str, max_pixels: int) -> serialized.ImageView:
    """A raw image message, read in place and size-checked."""
    try:
        view = serialized.image_view_from_serialized(data)
        convert.check_image_size(view, max_pixels)
    except convert.ConversionError as exc:
        raise InputProblem(source, str(exc)) from exc
    return view


def _compressed(data: bytes, source: str) -> CompressedImage:
    try:
        return serialized.deserialize(data, CompressedImage, "compressed image")
    except convert.ConversionError as exc:
        raise InputProblem(source, str(exc)) from exc


def _converted(fn: Callable, arg: object, source: str) -> object:
    try:
        return fn(arg)
    except convert.ConversionError as exc:
        raise InputProblem(source, str(exc)) from exc
