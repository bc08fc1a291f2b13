"""The node's helpers: the sensor input loop and the malloc settings."""

from __future__ import annotations

import threading
import time

from std_msgs.msg import String

from llava3d_ros.ros.malloc import tune_malloc
from llava3d_ros.ros.node import SensorInputs


def test_sensor_loop_reports_a_failing_callback_and_goes_on(ctx):
    import rclpy

    owner = rclpy.create_node("owner", namespace="/ns", context=ctx)
    errors: list[tuple[str, str]] = []
    got: list[str] = []
    two = threading.Event()

    def callback(msg: String) -> None:
        got.append(msg.data)
        if len(got) >= 2:
            two.set()
        if msg.data == "bad":
            raise ValueError("broken")

    inputs = SensorInputs(owner, lambda name, exc: errors.append((name, str(exc))))
    try:
        assert inputs.node.get_name() == "owner_sensors"
        assert inputs.node.get_namespace() == "/ns"
        inputs.subscribe("words", String, owner.resolve_topic_name("words"), callback, 10)
        inputs.start()
        pub = owner.create_publisher(String, "/ns/words", 10)
        for _ in range(100):  # until discovery has matched them
            if pub.get_subscription_count():
                break
            time.sleep(0.05)
        pub.publish(String(data="bad"))
        pub.publish(String(data="good"))
        assert two.wait(10), got
    finally:
        inputs.close()
        owner.destroy_node()
    assert got[:2] == ["bad", "good"]
    assert errors == [("words", "broken")]


def test_tune_malloc_leaves_user_settings_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert tune_malloc() is False
