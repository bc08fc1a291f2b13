"""Lifecycle: configure loads the model, activate creates the interfaces, deactivate frees both."""

from __future__ import annotations

import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from llava3d_ros.ros.node import Llava3dNode


class Recorder:
    """A model stand-in that records loads and releases (the lifecycle is under test, not the model)."""

    model_id = "recorder (random-weights)"
    image_size, grid = 336, 24

    def __init__(self, log: list[str]) -> None:
        self.log = log
        log.append("load")

    def release(self) -> None:
        self.log.append("release")


def test_transitions_load_create_destroy_and_free(ctx):
    log: list[str] = []
    node = Llava3dNode(engine_factory=lambda s: Recorder(log), context=ctx)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert log == ["load"] and node.health().model_state == "loaded"
        assert not any(s.topic_name == "/rgb/image" for s in node.all_subscriptions)
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert any(s.topic_name == "/rgb/image" for s in node.all_subscriptions)
        assert any(s.srv_name.endswith("/query") for s in node.all_services)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert log == ["load", "release"] and node.engine is None
        assert not any(s.topic_name == "/rgb/image" for s in node.all_subscriptions)
        assert not any(s.srv_name.endswith("/query") for s in node.all_services)
        assert node.health().model_state == "released"
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS  # reloads
        assert log == ["load", "release", "load"] and node.engine is not None
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.buffer is None and log[-1] == "release"
    finally:
        node.destroy_node()


def test_invalid_parameter_fails_configure(ctx):
    from rclpy.parameter import Parameter

    node = Llava3dNode(
        engine_factory=lambda s: Recorder([]),
        context=ctx,
        parameter_overrides=[Parameter("pose_source", Parameter.Type.STRING, "gps")],
    )
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    finally:
        node.destroy_node()


def test_out_of_range_parameter_is_refused_by_ros(ctx):
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter

    with pytest.raises(InvalidParameterValueException):
        Llava3dNode(
            context=ctx,
            parameter_overrides=[Parameter("num_views", Parameter.Type.INTEGER, 0)],
        )


def test_sensor_topics_follow_namespace_and_remapping():
    """The inputs and ~/query (on helper nodes) resolve names as the lifecycle node does."""
    import rclpy

    c = rclpy.Context()
    rclpy.init(
        args=[
            "llava3d",
            "--ros-args",
            "-r",
            "__ns:=/case",
            "-r",
            "depth/image:=/cam/depth",
            "-r",
            "llava3d:pose:=/slam/pose",  # a rule for this node only
        ],
        context=c,
    )
    node = Llava3dNode(engine_factory=lambda s: Recorder([]), context=c)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        topics = {s.topic_name for s in node.all_subscriptions}
        assert {
            "/case/rgb/image",
            "/case/rgb/camera_info",
            "/cam/depth",
            "/case/depth/camera_info",
            "/slam/pose",
            "/case/clicked_point",
        } <= topics, topics
        assert any(s.srv_name == "/case/llava3d/query" for s in node.all_services)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.all_subscriptions == []  # the helper nodes are gone too
    finally:
        node.destroy_node()
        rclpy.shutdown(context=c)
