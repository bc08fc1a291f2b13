"""The rclpy internals of ``ros/rclpy_internals``, checked on the distribution this venv runs.

CI runs test/ros on both distributions (Jazzy and Kilted): a name or signature that changes in
either fails here, not deep in the sensor loop.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import rclpy
import rclpy.utilities
from rclpy.guard_condition import GuardCondition
from std_msgs.msg import String

from llava3d_ros.ros.rclpy_internals import (
    InvalidROSArgsError,
    SubscriptionWaitSet,
    UnknownROSArgsError,
    take_message,
)


def _matched(pub, timeout_s: float = 10.0) -> None:  # noqa: ANN001 - rclpy Publisher
    deadline = time.monotonic() + timeout_s
    while not pub.get_subscription_count():
        assert time.monotonic() < deadline, "publisher and subscription never matched"
        time.sleep(0.05)


def test_the_wait_set_wakes_on_a_message_and_take_gives_it_with_its_sequence_number(ctx):
    node = rclpy.create_node("internals_msg", context=ctx)
    sub = node.create_subscription(String, "words", lambda _: None, 10)
    pub = node.create_publisher(String, "words", 10)
    wake = GuardCondition(None, None, context=ctx)
    try:
        _matched(pub)
        waitables = list(node.waitables)  # the subscription's QoS event handlers
        with SubscriptionWaitSet(ctx, [sub], [wake], waitables) as ws:
            assert ws.wait([sub], [wake], [], 0) == ([False], [])  # nothing yet: at once
            pub.publish(String(data="one"))
            pub.publish(String(data="two"))
            deadline = time.monotonic() + 10
            ready: list[bool] = [False]
            while not ready[0] and time.monotonic() < deadline:
                ready, events = ws.wait([sub], [wake], waitables, 1_000_000_000)
                assert len(events) == len(waitables)
            assert ready == [True]
        first, second = take_message(sub), take_message(sub)
        assert first is not None and second is not None
        assert (first[0].data, second[0].data) == ("one", "two")
        assert second[1] == first[1] + 1 and first[1] > 0, (first[1], second[1])
        assert take_message(sub) is None
    finally:
        wake.destroy()
        node.destroy_node()


def test_a_guard_condition_wakes_the_wait_with_no_subscription_ready(ctx):
    node = rclpy.create_node("internals_guard", context=ctx)
    sub = node.create_subscription(String, "quiet", lambda _: None, 10)
    wake = GuardCondition(None, None, context=ctx)
    try:
        with SubscriptionWaitSet(ctx, [sub], [wake], []) as ws:
            wake.trigger()
            t0 = time.monotonic()
            assert ws.wait([sub], [wake], [], 60_000_000_000) == ([False], [])
            assert time.monotonic() - t0 < 30.0  # woken, not timed out
            # a subset: the subscription left out (a shut ingest gate) is not watched
            assert ws.wait([], [wake], [], 0) == ([], [])
    finally:
        wake.destroy()
        node.destroy_node()


def test_bad_ros_args_raise_the_errors_the_cli_turns_into_one_line(tmp_path):
    # the node's main parses its arguments first (remove_ros_args), before rclpy.init
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [b\n")
    with pytest.raises(InvalidROSArgsError, match="Couldn't parse params file"):
        rclpy.utilities.remove_ros_args(["x", "--ros-args", "--params-file", str(bad)])
    with pytest.raises(UnknownROSArgsError, match="--no-such-flag"):
        rclpy.utilities.remove_ros_args(["x", "--ros-args", "--no-such-flag"])


def test_no_other_module_uses_rclpy_internals():
    root = Path(__file__).resolve().parents[2] / "llava3d_ros"
    private = re.compile(r"rclpy\.impl|rclpy\._|_rclpy_pybind11|implementation_singleton")
    users = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "rclpy_internals.py" and private.search(p.read_text())
    ]
    assert users == []
