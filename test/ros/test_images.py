"""A matched frame's messages → pinhole, registered arrays: the path ingest and clicks share."""

from __future__ import annotations

import numpy as np
import pytest
from geometry.test_registration import K_COLOR, K_DEPTH, SIZE, _agreement, _pose, render
from rclpy.serialization import serialize_message

from llava3d_ros.ros.convert import array_to_image
from llava3d_ros.ros.images import FrameDecoder
from llava3d_ros.ros.publish import camera_info
from llava3d_ros.scene.ingest import InputProblem
from llava3d_ros.scene.sync import SyncedFrame

BASELINE = 0.025  # a RealSense-like 2.5 cm between the depth and colour cameras


def _frame(depth_m: np.ndarray, depth_frame: str, with_depth_info: bool = True) -> SyncedFrame:
    rgb = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    mm = np.nan_to_num(depth_m * 1000.0).astype(np.uint16)
    color = serialize_message(array_to_image(rgb, "rgb8", 1, "color_optical"))
    depth = serialize_message(array_to_image(mm, "16UC1", 1, depth_frame))
    info = serialize_message(camera_info(K_COLOR, *SIZE, 1, "color_optical"))
    dinfo = serialize_message(camera_info(K_DEPTH, *SIZE, 1, depth_frame))
    return SyncedFrame(1, color, depth, info, dinfo if with_depth_info else None, np.eye(4), 0)


def test_depth_of_its_own_camera_is_registered_into_colour() -> None:
    color_t_depth = _pose(t=(-BASELINE, 0.0, 0.0))  # the depth camera 2.5 cm to colour's left
    depth_m = render(K_DEPTH, SIZE, color_t_depth)  # what the depth camera sees
    reference = render(K_COLOR, SIZE, np.eye(4))  # what colour sees, directly
    asked = []

    def extrinsic(color: str, depth: str, stamp: int) -> np.ndarray:
        asked.append((color, depth, stamp))
        return color_t_depth

    d = FrameDecoder("raw", "raw", 640 * 480, extrinsic).decode(_frame(depth_m, "depth_optical"))
    assert asked == [("color_optical", "depth_optical", 1)]
    np.testing.assert_array_equal(d.k_depth, K_COLOR)  # registered: colour's camera now
    assert _agreement(d.depth, reference) >= 0.95
    # taken as registered instead, the box's edges would sit off by the baseline's parallax
    unregistered = FrameDecoder("raw", "raw", 640 * 480).decode(_frame(depth_m, "color_optical"))

    def gross(depth: np.ndarray) -> int:  # pixels on the wrong surface (> 10 cm off)
        return int((np.abs(depth - reference) > 0.10).sum())

    assert gross(d.depth) * 10 < gross(unregistered.depth), (
        gross(d.depth),
        gross(unregistered.depth),
    )


def test_unknown_extrinsic_is_refused_naming_both_frames() -> None:
    depth_m = render(K_DEPTH, SIZE, np.eye(4))
    decoder = FrameDecoder("raw", "raw", 640 * 480, lambda c, d, s: "TF: no path")
    with pytest.raises(InputProblem) as err:
        decoder.decode(_frame(depth_m, "depth_optical"))
    assert err.value.source == "depth/camera_info"
    assert "'depth_optical'" in err.value.message and "'color_optical'" in err.value.message
    assert "depth_to_color" in err.value.message and "TF: no path" in err.value.message
    # without a depth camera_info nothing can be registered: taken as registered, and said so
    d = decoder.decode(_frame(depth_m, "depth_optical", with_depth_info=False))
    assert "assumed registered" in d.warnings["frames"]
