"""What an operator sees: a grounding answer's boxes lie where the scene's points are.

7-Scenes (a world that is not z-up) replayed into a node with the embedded model and every
parameter at its default (``axis_align: auto``), a grounding question, then ``~/markers`` and
``~/scene_points`` as RViz would get them: every box centre must lie inside the cloud's bounds
(in the aligned frame, where up is up), at the height of the scene's points (along the aligned up) and near them. The test draws both
(top and side views) into ``operator_view.png`` (in its tmp folder, and in
``$LLAVA3D_PICTURES`` when set).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import PointCloud2
from transforms3d.quaternions import quat2mat
from visualization_msgs.msg import MarkerArray

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt
from llava3d_ros.ros.convert import cloud_to_points, stamp_to_ns

from .conftest import SEVEN, harness
from .test_replay_click import LATCHED, Inbox, _diag_values

pytestmark = [pytest.mark.ros, pytest.mark.slow]
PANEL = 400  # pixels per view


def _box_centres(markers: MarkerArray) -> list[np.ndarray]:
    edges = [m for m in markers.markers if m.ns == "boxes"]
    return [np.mean([[p.x, p.y, p.z] for p in m.points], axis=0) for m in edges]


def _draw(
    xyz: np.ndarray,
    rgb: np.ndarray,
    markers: MarkerArray,
    path: Path,
    axes: np.ndarray | None = None,
) -> None:
    """Top (x-y) and side (x-z) views of the cloud with the boxes' edges, side by side; in the
    columns of ``axes`` (world → those axes: ``p @ axes``) when given, else world axes."""
    import cv2

    axes = np.eye(3) if axes is None else axes
    xyz = xyz @ axes

    lo, hi = xyz.min(axis=0) - 0.5, xyz.max(axis=0) + 0.5
    scale = (PANEL - 20) / float((hi - lo).max())
    img = np.full((PANEL, 2 * PANEL, 3), 255, np.uint8)
    boxes = [m for m in markers.markers if m.ns == "boxes"]
    for panel, (a, b) in enumerate(((0, 1), (0, 2))):

        def px(p: np.ndarray, a: int = a, b: int = b, panel: int = panel) -> tuple[int, int]:
            u = 10 + (p[a] - lo[a]) * scale + panel * PANEL
            return int(u), int(PANEL - 10 - (p[b] - lo[b]) * scale)

        for p, c in zip(xyz, rgb, strict=True):
            cv2.circle(img, px(p), 2, tuple(int(v) for v in c[::-1]), -1)
        for m in boxes:
            pts = [np.array([q.x, q.y, q.z]) @ axes for q in m.points]
            for i in range(0, len(pts) - 1, 2):
                cv2.line(img, px(pts[i]), px(pts[i + 1]), (0, 0, 230), 2)
        label = "top (x right, y up)" if panel == 0 else "side (x right, z up)"
        if not np.allclose(axes, np.eye(3)):
            label = label.replace("top", "aligned top").replace("side", "aligned side")
        cv2.putText(img, label, (panel * PANEL + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1)
    cv2.imwrite(str(path), img)


def test_grounded_boxes_sit_on_the_scene_points(
    node_factory, spawn, ros_context, request, tmp_path
):
    if not SEVEN.exists():
        pytest.skip(f"real RGB-D data not found at {SEVEN}")
    import rclpy

    h = harness(request.config)
    node = node_factory("random_weights:=false", "ingest_rate_hz:=0.0", name="operator")
    client = Llava3dClient("/llava3d", ros_context)
    sub_node = rclpy.create_node("operator_view_probe", context=ros_context)
    inbox = {k: Inbox() for k in ("diag", "markers", "points")}
    sub_node.create_subscription(DiagnosticArray, "/diagnostics", inbox["diag"], 10)
    sub_node.create_subscription(MarkerArray, "/llava3d/markers", inbox["markers"], LATCHED)
    sub_node.create_subscription(PointCloud2, "/llava3d/scene_points", inbox["points"], LATCHED)
    client._executor.add_node(sub_node)
    try:
        client.wait_for_node(60)
        # looped: best-effort frames sent before discovery settles may be lost on a loaded machine
        args = ("-m", "llava3d_ros.cli", "replay", str(SEVEN), "--rate", "0.5", "--loop")
        spawn(*args, name="replay")

        def aligned() -> bool:
            d = inbox["diag"].last()
            return d is not None and _diag_values(d).get("alignment", "").startswith("estimated")

        h.wait_for(aligned, 60, "the floor alignment to be estimated (axis_align: auto)")
        answer = client.query(make_prompt("the kettle", task="ground"), timeout=120)
        assert answer.code == Answer.OK, answer.message
        assert "random-weights" not in answer.model
        assert answer.objects, f"no box in the grounding answer: {answer.text!r}"
        h.wait_for(lambda: _box_centres(inbox["markers"].last() or MarkerArray()), 10, "boxes")
        newest = max(stamp_to_ns(s) for s in answer.view_stamps)
        h.wait_for(
            lambda: (
                inbox["points"].last() is not None
                and stamp_to_ns(inbox["points"].last().header.stamp) >= newest
            ),
            10,
            "~/scene_points of the whole room",
        )
        markers = inbox["markers"].last()
        xyz, rgb = cloud_to_points(inbox["points"].last())
        centres = _box_centres(markers)
        # The aligned frame (up is up; world axes of 7-Scenes are arbitrary): the axes of the
        # answer's boxes, which the embedded model writes axis-aligned in it.
        q = answer.objects[0].center.orientation
        axes = quat2mat([q.w, q.x, q.y, q.z])
        pictures = [tmp_path] + [Path(p) for p in [os.environ.get("LLAVA3D_PICTURES")] if p]
        for folder in pictures:
            folder.mkdir(parents=True, exist_ok=True)
            _draw(xyz, rgb, markers, folder / "operator_view.png", axes)
        # Where the operator sees the boxes: inside the cloud's bounds in the aligned frame
        # (the bug: boxes at z 0-1 m under points at 1.4-3.2 m; and with a box grammar that
        # did not hold centres among the scene's points, the embedded model, trained on
        # synthetic rooms, put its kettle 0.5 m past this cloud), and along the aligned up
        # (the direction the labels stand off the boxes in) within the height range of the
        # scene's points, by them.
        lo, hi = (xyz @ axes).min(axis=0), (xyz @ axes).max(axis=0)
        for c in centres:
            assert ((c @ axes >= lo) & (c @ axes <= hi)).all(), (
                f"box centre {np.round(c @ axes, 2)} (aligned) outside the scene points "
                f"{np.round(lo, 2)}..{np.round(hi, 2)} ({tmp_path / 'operator_view.png'})"
            )
        labels = {m.id: m for m in markers.markers if m.ns == "labels"}
        edges = [m for m in markers.markers if m.ns == "boxes"]
        for m, c in zip(edges, centres, strict=True):
            p = labels[m.id].pose.position
            up = np.array([p.x, p.y, p.z]) - c
            up /= np.linalg.norm(up)
            heights = xyz @ up
            where = f"box centre {np.round(c, 2)} ({tmp_path / 'operator_view.png'})"
            assert heights.min() <= c @ up <= heights.max(), f"{where}: not at the points' height"
            nearest = float(np.linalg.norm(xyz - c, axis=1).min())
            assert nearest < 1.0, f"{where}: {nearest:.2f} m from the nearest scene point"
        # the label says the same world-frame numbers
        labels = [m.text for m in markers.markers if m.ns == "labels"]
        assert labels and all(" c(" in t and "yaw" in t for t in labels), labels
        assert node.alive()
        node.stop()  # the next test's node has the same name and topics
    finally:
        client._executor.remove_node(sub_node)
        sub_node.destroy_node()
        client.close()


def test_in_the_readme_flow_boxes_lie_inside_the_scene_points(
    node_factory, spawn, ros_context, request, tmp_path
):
    """`replay --synthetic 0` (the README's flow, no download) + a grounding question: every
    box centre lies inside the scene cloud's bounds (the room the embedded model knows)."""
    import rclpy

    from llava3d_ros.synthetic.sequence import SyntheticSequence

    h = harness(request.config)
    name = SyntheticSequence(0, n_views=1).object_names[0]
    node = node_factory("random_weights:=false", "ingest_rate_hz:=0.0", name="readme")
    client = Llava3dClient("/llava3d", ros_context)
    sub_node = rclpy.create_node("readme_view_probe", context=ros_context)
    inbox = {k: Inbox() for k in ("markers", "points")}
    sub_node.create_subscription(MarkerArray, "/llava3d/markers", inbox["markers"], LATCHED)
    sub_node.create_subscription(PointCloud2, "/llava3d/scene_points", inbox["points"], LATCHED)
    client._executor.add_node(sub_node)
    try:
        client.wait_for_node(60)
        spawn("-m", "llava3d_ros.cli", "replay", "--synthetic", "0", "--loop", name="replay")
        got: list[Answer] = []

        def answered() -> bool:
            # the README's user asks once the room is seen: all 8 views (under load, the
            # first answers may come from one view only, and the model needs the room)
            got.append(client.query(make_prompt(f"the {name}", task="ground"), timeout=120))
            return got[-1].code == Answer.OK and len(got[-1].view_stamps) >= 8

        h.wait_for(answered, 90, "the whole synthetic room in the scene", interval=0.5)
        answer = got[-1]
        assert answer.code == Answer.OK and answer.objects, (answer.message, answer.text)
        h.wait_for(lambda: _box_centres(inbox["markers"].last() or MarkerArray()), 10, "boxes")
        newest = max(stamp_to_ns(s) for s in answer.view_stamps)
        h.wait_for(
            lambda: (
                inbox["points"].last() is not None
                and stamp_to_ns(inbox["points"].last().header.stamp) >= newest
            ),
            10,
            "~/scene_points of the whole room",
        )
        markers = inbox["markers"].last()
        xyz, rgb = cloud_to_points(inbox["points"].last())
        _draw(xyz, rgb, markers, tmp_path / "readme_view.png")
        if os.environ.get("LLAVA3D_PICTURES"):
            _draw(xyz, rgb, markers, Path(os.environ["LLAVA3D_PICTURES"]) / "readme_view.png")
        lo, hi = xyz.min(axis=0), xyz.max(axis=0)
        for c in _box_centres(markers):
            assert ((c >= lo) & (c <= hi)).all(), (
                f"box centre {np.round(c, 2)} outside the scene points {np.round(lo, 2)}.."
                f"{np.round(hi, 2)} ({tmp_path / 'readme_view.png'})"
            )
        assert node.alive()
    finally:
        client._executor.remove_node(sub_node)
        sub_node.destroy_node()
        client.close()
