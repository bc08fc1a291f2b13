"""The command-line/test client against an in-process ~/ask server (no node, no model)."""

from __future__ import annotations

import threading
import time

import pytest

from llava3d_ros.action import Ask
from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt

pytestmark = pytest.mark.ros

FEEDBACK = 40


def test_feedback_queued_behind_the_result_still_arrives(ctx):
    """A short answer on a loaded machine: the result is handled before most feedback.

    rclpy's ActionClient forgets a goal's feedback callback once its result is handled, so
    feedback still queued then was dropped (a CI failure: only "queued" arrived). The first
    feedback callback blocks the client's executor here until the server has finished.
    """
    import rclpy
    from rclpy.action import ActionServer
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    finished = threading.Event()

    def execute(goal_handle):
        for i in range(FEEDBACK):
            goal_handle.publish_feedback(Ask.Feedback(stage="decoding", tokens=i + 1))
        goal_handle.succeed()
        finished.set()
        return Ask.Result(answer=Answer(code=Answer.OK, success=True, text="done"))

    server_node = rclpy.create_node("fake_llava3d", context=ctx)
    ActionServer(
        server_node,
        Ask,
        "/fake_llava3d/ask",
        execute,
        feedback_pub_qos_profile=QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE),
    )
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(server_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = Llava3dClient("/fake_llava3d", ctx)
    tokens: list[int] = []

    def on_feedback(fb) -> None:
        if not tokens:
            finished.wait(10.0)
            time.sleep(0.3)  # the result reaches the client while its executor is held here
        tokens.append(fb.tokens)

    try:
        answer, status = client.ask(make_prompt("hello"), 20.0, on_feedback)
        assert answer.text == "done" and status == 4  # GoalStatus.STATUS_SUCCEEDED
        deadline = time.monotonic() + 5.0
        while len(tokens) < FEEDBACK and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tokens == list(range(1, FEEDBACK + 1))
    finally:
        client.close()
        executor.shutdown(timeout_sec=2.0)
        server_node.destroy_node()
