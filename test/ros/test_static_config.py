"""Static checks of what cannot run here: launch file, RViz config, YAML presets, parameter table.

The launch file needs launch_ros (not installable here) and is meant for full ROS 2 installs;
it is checked by reading its source. The node's real topic and parameter names come from an
in-process node (its model factory fails on purpose, so no model is loaded).
"""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from llava3d_ros.ros.params import PARAMS, Settings, descriptor

REPO = Path(__file__).resolve().parents[2]


def _failing_factory(settings):
    raise RuntimeError("no model in static checks")


@pytest.fixture(scope="module")
def live_node():
    """(published topics, subscribed topics, declared parameters) of an activated node."""
    import rclpy

    from llava3d_ros.ros.node import Llava3dNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Llava3dNode(engine_factory=_failing_factory, context=ctx)
    try:
        node.trigger_configure()
        node.trigger_activate()
        pubs = {p.topic_name for p in node.publishers}
        subs = {s.topic_name for s in node.all_subscriptions}
        params = set(node._parameters)
        node.trigger_deactivate()
        node.trigger_cleanup()
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return pubs, subs, params


def _launch_dicts() -> dict[str, dict]:
    tree = ast.parse((REPO / "launch" / "llava3d.launch.py").read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("PARAM_ARGS", "REMAP_ARGS"):
                d = {}
                for k, v in zip(node.value.keys, node.value.values, strict=True):
                    d[ast.literal_eval(k)] = (
                        ast.literal_eval(v.elts[0])
                        if isinstance(v, ast.Tuple)
                        else ast.literal_eval(v)
                    )
                out[name] = d
    return out


def test_every_launch_argument_maps_to_a_declared_parameter(live_node):
    _, subs, params = live_node
    d = _launch_dicts()
    assert d["PARAM_ARGS"], "launch file lost its parameter arguments"
    unknown = {arg: p for arg, p in d["PARAM_ARGS"].items() if p not in params}
    assert not unknown, (
        f"launch arguments mapped to parameters the node does not declare: {unknown}"
    )
    # and the interfaces.md minimum set of parameters is mirrored
    for p in (
        "model_path",
        "device",
        "dtype",
        "world_frame",
        "pose_source",
        "num_views",
        "max_pending_queries",
    ):
        assert p in d["PARAM_ARGS"].values()
    remapped = {"/" + t for t in d["REMAP_ARGS"].values()}
    assert remapped <= subs | {"/odom", "/depth/camera_info"}, remapped - subs


def test_launch_declares_namespace_and_autostart(live_node):
    _, _, params = live_node
    src = (REPO / "launch" / "llava3d.launch.py").read_text()
    literal = {
        ast.literal_eval(call.args[0])
        for call in ast.walk(ast.parse(src))
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", "") == "DeclareLaunchArgument"
        and isinstance(call.args[0], ast.Constant)
    }
    assert literal == {"namespace", "params_file", "autostart", "use_sim_time"}
    assert "use_sim_time" in params  # rclpy declares it on every node
    assert "LifecycleNode(" in src and 'executable="llava3d_node"' in src


def test_every_rviz_topic_is_published_by_the_node(live_node):
    pubs, subs, _ = live_node
    cfg = yaml.safe_load((REPO / "config" / "llava3d.rviz").read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert {"/llava3d/markers", "/llava3d/scene_points", "/llava3d/debug_image"} <= topics
    assert topics <= pubs, f"RViz shows topics the node does not publish: {topics - pubs}"
    tools = cfg["Visualization Manager"]["Tools"]
    point_topics = {t["Topic"]["Value"] for t in tools if "Topic" in t}
    assert point_topics <= subs, point_topics - subs


def test_node_publishes_the_contract_topics(live_node):
    pubs, subs, _ = live_node
    assert {
        "/llava3d/answer",
        "/llava3d/markers",
        "/llava3d/scene_points",
        "/llava3d/debug_image",
        "/llava3d/detections",
        "/diagnostics",
    } <= pubs
    assert {
        "/rgb/image",
        "/rgb/camera_info",
        "/depth/image",
        "/depth/camera_info",
        "/pose",
        "/clicked_point",
        "/tf",
        "/tf_static",
        "/keyframe_corrections",
    } <= subs


@pytest.mark.parametrize("preset", ["default", "cpu_tiny", "jetson_orin"])
def test_presets_hold_every_parameter_with_valid_values(preset):
    data = yaml.safe_load((REPO / "config" / f"{preset}.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    assert set(values) == {p.name for p in PARAMS}
    Settings.from_values(values)  # choices and shapes
    for p in PARAMS:
        v = values[p.name]
        assert type(v) is type(p.default), (p.name, v)
        if p.range is not None:
            assert p.range[0] <= v <= p.range[1], (p.name, v)
    if preset == "jetson_orin":
        assert values["dtype"] == "fp16" and values["num_views"] < 20


def test_parameter_table():
    assert {f.name for f in fields(Settings)} == {p.name for p in PARAMS}
    for p in PARAMS:
        assert p.description
        numeric = isinstance(p.default, int | float) and not isinstance(p.default, bool)
        assert numeric == (p.range is not None), f"{p.name}: numbers need a range, others none"
    contract = [
        "model_path",
        "vision_tower_path",
        "device",
        "dtype",
        "world_frame",
        "pose_source",
        "sync_slop_s",
        "num_views",
        "keyframe_min_translation_m",
        "keyframe_min_rotation_deg",
        "buffer_capacity",
        "voxel_size_m",
        "max_scene_tokens",
        "max_new_tokens",
        "temperature",
        "max_pending_queries",
        "axis_align",
    ]
    assert set(contract) <= {p.name for p in PARAMS}


def test_axis_align_is_a_choice_and_the_old_booleans_still_work():
    p = next(p for p in PARAMS if p.name == "axis_align")
    assert p.default == "auto" and p.choices == ("auto", "on", "off")
    assert descriptor(p).dynamic_typing, "YAML/launch booleans must get past ROS's type check"
    assert not any(descriptor(q).dynamic_typing for q in PARAMS if q is not p)
    base = {q.name: q.default for q in PARAMS}
    for old, new in ((True, "on"), (False, "off"), ("true", "on"), ("False", "off"), ("on", "on")):
        assert Settings.from_values({**base, "axis_align": old}).axis_align == new
    with pytest.raises(ValueError, match="axis_align"):
        Settings.from_values({**base, "axis_align": 1})


def test_a_legacy_boolean_override_configures_and_diagnostics_show_alignment():
    import rclpy
    from rclpy.parameter import Parameter

    from llava3d_ros.ros.diagnostics import diagnostic_array
    from llava3d_ros.ros.node import Llava3dNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Llava3dNode(
        engine_factory=_failing_factory,
        context=ctx,
        parameter_overrides=[Parameter("axis_align", value=True)],
    )
    try:
        node.trigger_configure()
        assert node.settings.axis_align == "on"
        h = node.health()
        assert h.alignment == "identity (no keyframes yet)"
        assert h.newest_keyframe_age_s is None and not h.ingestion_alive
        node.trigger_activate()
        h = node.health()
        assert h.ingestion_alive
        statuses = {s.name.rsplit(": ", 1)[1]: s for s in diagnostic_array(h, "n", 0).status}
        scene = {kv.key: kv.value for kv in statuses["scene"].values}
        inputs = {kv.key: kv.value for kv in statuses["inputs"].values}
        assert scene["alignment"] == "identity (no keyframes yet)"
        assert scene["newest_keyframe_age_s"] == "n/a"
        assert inputs["ingestion_alive"] == "True"
        node.trigger_deactivate()
        assert not node.health().ingestion_alive
        node.trigger_cleanup()
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
