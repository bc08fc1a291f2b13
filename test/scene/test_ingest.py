"""The scene side of ingest: depth intrinsics, decode-or-skip, order problems, time restarts."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.ingest import InputProblem, SceneIngest, depth_intrinsics

K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])


def frame(stamp_s: float, x: float = 0.0) -> Frame:
    pose = np.eye(4)
    pose[0, 3] = x
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    k = K.copy()
    k[:2] /= 10
    return Frame(rgb, np.full((48, 64), 2.0, np.float32), k, k, pose, int(stamp_s * 1e9))


def test_depth_intrinsics_registered_scaled_own_or_refused():
    k, warning = depth_intrinsics(K, (640, 480), (640, 480))
    assert k is K and warning == ""
    k, warning = depth_intrinsics(K, (640, 480), (320, 240))
    assert np.allclose(k[:2], K[:2] / 2) and "scaled from colour" in warning
    own = np.eye(3)
    assert depth_intrinsics(K, (640, 480), (320, 240), (own, (320, 240)))[0] is own
    with pytest.raises(InputProblem, match="different aspect") as exc:
        depth_intrinsics(K, (640, 480), (320, 320))
    assert exc.value.source == "depth/image"
    with pytest.raises(InputProblem, match="camera_info is 640x480 but depth is 320x240"):
        depth_intrinsics(K, (640, 480), (320, 240), (own, (640, 480)))


def test_frames_not_worth_decoding_are_skipped_but_validated_now_and_then():
    t = [0.0]
    scene = SceneIngest(FrameBuffer(), threading.Lock(), clock=lambda: t[0])
    assert scene.worth_decoding(int(1e9), np.eye(4))  # the first frame is a keyframe candidate
    assert scene.add(frame(1.0)) == 0
    t[0] = 0.5
    assert not scene.worth_decoding(int(1.1e9), np.eye(4)), "not novel, no check due"
    t[0] = 1.6
    assert scene.worth_decoding(int(1.2e9), np.eye(4)), "a check is due once a second"
    with pytest.raises(InputProblem, match="out-of-order") as exc:
        scene.worth_decoding(int(0.5e9), np.eye(4))
    assert exc.value.source == "frame"


def test_add_refuses_a_frame_whose_time_line_ended_and_restart_resets_or_keeps():
    scene = SceneIngest(FrameBuffer(), threading.Lock())
    assert scene.add(frame(1.0)) is not None
    assert scene.add(frame(2.0, x=1.0), current=lambda: False) is None
    assert len(scene.buffer) == 1
    assert scene.restart(keep=True).startswith("scene kept (1 keyframes)")
    assert scene.add(frame(0.1, x=2.0)) is not None and len(scene.buffer) == 2
    assert scene.restart(keep=False) == "scene reset (2 keyframes dropped)"
    assert len(scene.buffer) == 0 and scene.add(frame(0.0)) is not None
