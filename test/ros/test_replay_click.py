"""Evidence: 7-Scenes frames replayed into the node by `llava3d-ros replay`, then a pixel click.

Three processes over loopback DDS (node, replay, this test). The model is the tiny
random-weight one (label: random-weights): the geometry (click points, view stamps, markers,
debug image, diagnostics) is what is checked, not the text.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from llava3d_ros.geometry.unproject import unproject_pixels
from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt
from llava3d_ros.ros.convert import cloud_to_points, image_to_array, stamp_to_ns

from .conftest import SEVEN, harness, seven_scenes_frames

pytestmark = [pytest.mark.ros, pytest.mark.slow]

LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class Inbox:
    """The messages a topic delivered, thread-safe."""

    def __init__(self) -> None:
        self.msgs: list = []
        self._lock = threading.Lock()

    def __call__(self, msg) -> None:
        with self._lock:
            self.msgs.append(msg)

    def last(self):
        with self._lock:
            return self.msgs[-1] if self.msgs else None


def _diag_values(arr: DiagnosticArray) -> dict[str, str]:
    return {kv.key: kv.value for st in arr.status for kv in st.values}


def _smooth_pixel(depth_mm: np.ndarray) -> tuple[float, float]:
    """A pixel near the image centre whose 7×7 neighbourhood is valid and nearly flat."""
    h, w = depth_mm.shape
    for r in range(0, 200, 4):
        for v, u in ((h // 2 + r, w // 2 + r), (h // 2 - r, w // 2 - r), (h // 2 + r, w // 2 - r)):
            win = depth_mm[v - 3 : v + 4, u - 3 : u + 4].astype(float)
            if (win > 0).all() and (win < 65535).all() and win.std() < 5:
                return float(u), float(v)
    pytest.fail("no flat, valid pixel near the centre")


def test_replayed_7scenes_pixel_click(node_factory, spawn, ros_context, request, tmp_path):
    import rclpy

    frames = seven_scenes_frames()
    h = harness(request.config)
    node = node_factory(
        "max_new_tokens:=6",
        "world_frame:=world",
        "pose_tolerance_s:=0.02",
        "keyframe_min_translation_m:=0.02",
        name="llava3d",
    )
    client = Llava3dClient("/llava3d", ros_context)
    sub_node = rclpy.create_node("evidence_listener", context=ros_context)
    inbox = {k: Inbox() for k in ("diag", "markers", "debug", "points", "answer")}
    sub_node.create_subscription(DiagnosticArray, "/diagnostics", inbox["diag"], 10)
    sub_node.create_subscription(MarkerArray, "/llava3d/markers", inbox["markers"], LATCHED)
    sub_node.create_subscription(Image, "/llava3d/debug_image", inbox["debug"], 10)
    sub_node.create_subscription(PointCloud2, "/llava3d/scene_points", inbox["points"], LATCHED)
    sub_node.create_subscription(Answer, "/llava3d/answer", inbox["answer"], 10)
    client._executor.add_node(sub_node)
    try:
        client.wait_for_node(60)
        replay = spawn(
            "-m",
            "llava3d_ros.cli",
            "replay",
            str(SEVEN),
            "--rate",
            "0.5",
            "--world-frame",
            "world",
            name="replay",
        )

        def rates_seen() -> bool:
            d = inbox["diag"].last()
            return d is not None and float(_diag_values(d).get("rate_hz.rgb/image", 0)) > 0

        h.wait_for(rates_seen, 40, "/diagnostics to report an rgb/image input rate")
        assert replay.popen.wait(60) == 0, replay.output()
        assert "replayed 15 frames" in replay.output()
        sent = {round(f["index"] * 1e9 / 30) for f in frames}

        # Best-effort sensor QoS may lose frames on the way: click in the newest keyframe,
        # which the debug image shows, by its stamp.
        h.wait_for(lambda: inbox["debug"].last() is not None, 10, "~/debug_image")
        stamp0 = stamp_to_ns(inbox["debug"].last().header.stamp)
        assert stamp0 in sent
        first = next(f for f in frames if round(f["index"] * 1e9 / 30) == stamp0)
        u, v = _smooth_pixel(first["depth"])
        answer = client.query(make_prompt("what is this?", clicks=((u, v, stamp0),)), timeout=60)
        assert answer.code == Answer.OK, answer.message
        assert answer.model.endswith("random-weights)")
        got = np.array([[p.x, p.y, p.z] for p in answer.click_points])
        d = first["depth"][int(v), int(u)] / 1000.0
        expected = unproject_pixels(
            np.array([u]), np.array([v]), np.array([d]), first["k"], first["pose"]
        )[0]
        dist = float(np.linalg.norm(got[0] - expected))
        assert dist < 0.03, f"click landed {dist * 100:.1f} cm from the observed surface"
        stamps = {stamp_to_ns(s) for s in answer.view_stamps}
        assert stamps and stamps <= sent, (stamps, sent)
        assert stamp0 in stamps  # the clicked view is among those the model saw

        # the newest keyframe, pixel-clicked with stamp 0, also lands on its surface
        answer2 = client.query(make_prompt("", clicks=((100.0, 300.0, 0),)), timeout=60)
        assert answer2.code == Answer.OK and answer2.prompt.task == "caption", answer2.message

        h.wait_for(lambda: inbox["markers"].last() is not None, 10, "~/markers")
        markers = inbox["markers"].last()
        assert markers.markers[0].action == 3  # DELETEALL first: RViz replaces, never piles up
        clicks = [m for m in markers.markers if m.ns == "clicks"]
        assert clicks and clicks[0].header.frame_id == "world"
        dbg = inbox["debug"].last()
        assert image_to_array(dbg).shape == (480, 640, 3) and stamp_to_ns(dbg.header.stamp) in sent
        h.wait_for(lambda: inbox["points"].last() is not None, 10, "~/scene_points")
        xyz, rgb = cloud_to_points(inbox["points"].last())
        assert len(xyz) > 100 and np.isfinite(xyz).all()
        # patch centres lie in the kitchen, around the clicked point (a few metres at most)
        assert np.median(np.linalg.norm(xyz - expected, axis=1)) < 3.0
        h.wait_for(lambda: len(inbox["answer"].msgs) >= 2, 10, "~/answer for both queries")
        values = _diag_values(inbox["diag"].last())
        report = {
            k: v for k, v in values.items() if k.startswith(("rate_hz", "sync_drops", "keyframes"))
        }
        (tmp_path / "diagnostics.json").write_text(json.dumps(report, indent=1))
        assert int(values["keyframes"]) >= 2, values
        assert node.alive()
    finally:
        client._executor.remove_node(sub_node)
        sub_node.destroy_node()
        client.close()
