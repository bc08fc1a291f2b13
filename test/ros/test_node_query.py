"""Two processes over loopback DDS: the node serves ~/query and ~/ask with the custom types.

The node runs the tiny random-weight model (label: random-weights), so answers are noise but
every field of the Answer must be well-formed.
"""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt
from llava3d_ros.ros.convert import stamp_to_ns

from .conftest import harness, plane_frame

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def node(node_factory):
    return node_factory("max_new_tokens:=8", "max_pending_queries:=2", name="llava3d")


@pytest.fixture(scope="module")
def client(node, ros_context, request):
    c = Llava3dClient("/llava3d", ros_context)
    try:
        c.wait_for_node(60.0)
    except Exception:
        pytest.fail(f"node did not come up:\n{node.output()[-4000:]}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def publisher(ros_context, client):
    import rclpy

    from llava3d_ros.ros.publish import FramePublisher

    pub_node = rclpy.create_node("test_frame_publisher", context=ros_context)
    pub = FramePublisher(pub_node)
    assert pub.wait_for_subscribers(20.0), "the node never subscribed to its inputs"
    yield pub
    pub_node.destroy_node()


def _well_formed(answer: Answer) -> None:
    assert isinstance(answer, Answer)
    assert answer.header.frame_id == "map"
    assert answer.success == (answer.code == Answer.OK)
    assert answer.code <= Answer.NOT_READY
    assert answer.success or answer.message  # a failure always says why
    assert answer.model.endswith("random-weights)"), answer.model
    assert all(
        math.isfinite(x)
        for x in (answer.encode_s, answer.prefill_s, answer.decode_s, answer.total_s)
    )


def test_query_before_any_frame_is_no_scene(client):
    answer = client.query(make_prompt("what is on the table?"), timeout=30)
    _well_formed(answer)
    assert answer.code == Answer.NO_SCENE
    assert "no keyframe" in answer.message
    assert answer.prompt.question == "what is on the table?"


def test_query_with_frames_is_ok(client, publisher, request):
    wait_for = harness(request.config).wait_for
    stamp = 1_000_000_000
    f = plane_frame()
    answers = []

    def try_query() -> bool:
        publisher.publish(f["rgb"], f["depth"], f["k"], f["pose"], stamp)
        a = client.query(make_prompt("what is in front of me?"), timeout=30)
        answers.append(a)
        return a.code != Answer.NO_SCENE

    wait_for(try_query, 30, "the node to hold a keyframe", interval=0.2)
    answer = answers[-1]
    _well_formed(answer)
    assert answer.code == Answer.OK, answer.message
    views = [stamp_to_ns(s) for s in answer.view_stamps]
    assert stamp in views and set(views) <= {stamp, 2_000_000_000}  # frames this module sent
    assert stamp_to_ns(answer.header.stamp) == max(views)
    assert answer.scene_tokens > 0
    assert answer.prompt.max_new_tokens == 8  # the node default, filled in
    assert answer.total_s > 0


def test_ask_feedback_in_order_and_cancel(client, publisher, request):
    test_query_with_frames_is_ok(client, publisher, request)  # a scene is present
    order = ["queued", "collecting", "encoding", "prefill", "decoding"]
    stages: list[str] = []
    tokens: list[int] = []

    def on_fb(fb) -> None:
        if not stages or stages[-1] != fb.stage:
            stages.append(fb.stage)
        if fb.stage == "decoding" and fb.partial_text:
            tokens.append(fb.tokens)

    answer, status = client.ask(make_prompt("describe the room", max_new_tokens=12), 60, on_fb)
    _well_formed(answer)
    assert answer.code == Answer.OK, answer.message
    # the result and the feedback travel on different topics: the last feedback may still be
    # on its way when the result arrives
    deadline = time.monotonic() + 5.0
    while stages != order and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stages == order, stages
    assert tokens and tokens == sorted(tokens) and tokens[-1] >= 1

    # cancel after the 3rd streamed token of a long answer: CANCELED comes back fast
    t_cancel = []

    def cancel_when(fb) -> bool:
        if fb.stage == "decoding" and fb.tokens >= 3:
            t_cancel.append(time.monotonic())
            return True
        return False

    answer, status = client.ask(
        make_prompt("describe every object in detail", max_new_tokens=2000, temperature=1.0),
        60,
        cancel_when=cancel_when,
    )
    assert answer.code == Answer.CANCELED, answer.message
    assert status == 5  # action_msgs/GoalStatus.STATUS_CANCELED
    assert time.monotonic() - t_cancel[0] < 2.0
    # and the next query succeeds
    answer = client.query(make_prompt("and now?"), timeout=30)
    assert answer.code == Answer.OK, answer.message


def test_six_simultaneous_callers_get_answers_or_busy(client, publisher, request):
    test_query_with_frames_is_ok(client, publisher, request)
    results: list[Answer | Exception] = [None] * 6  # type: ignore[list-item]

    def call(i: int) -> None:
        try:
            results[i] = client.query(
                make_prompt(f"question {i}?", max_new_tokens=400, temperature=1.0), timeout=60
            )
        except Exception as exc:  # recorded: a hang or loss fails below
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(isinstance(r, Answer) for r in results), results
    codes = sorted(r.code for r in results)
    assert set(codes) <= {Answer.OK, Answer.BUSY}, codes
    # one runs, two wait (max_pending_queries = 2): at least three answered, the rest BUSY
    assert codes.count(Answer.OK) >= 3 and codes.count(Answer.BUSY) >= 1, codes
    assert all("max_pending_queries" in r.message for r in results if r.code == Answer.BUSY)
    np.testing.assert_equal(len(results), 6)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (make_prompt(""), "empty question"),
        (make_prompt("x" * 1_000_000), "limit is 4000"),
        (make_prompt("what?", task="dance"), "unknown task 'dance'"),
        (make_prompt("what is there?", clicks=((1e6, 5.0, 0),)), "outside the 160x120"),
        (
            make_prompt("what?", points=((1.0, 2.0, 3.0),), world_frame="base_link"),
            "no transform from 'base_link' to 'map'",  # no TF connects it here
        ),
        (make_prompt("what?", clicks=((5.0, 5.0, 123),)), "image stamped 123 ns cannot be placed"),
        (make_prompt("what?", points=((0.0, 0.0, 2.0),) * 9), "the limit is 8 (max_clicks)"),
        (make_prompt("what?", max_views=33), "the limit is 32 (max_views_limit)"),
        (make_prompt("what?", max_new_tokens=5000), "limit is 2048 (max_new_tokens_limit)"),
    ],
    ids=[
        "empty-prompt",
        "1MB-question",
        "unknown-task",
        "click-outside",
        "foreign-frame",
        "unknown-stamp",
        "too-many-clicks",
        "too-many-views",
        "too-many-tokens",
    ],
)
def test_bad_requests_get_bad_request(client, publisher, request, prompt, expected):
    test_query_with_frames_is_ok(client, publisher, request)
    t0 = time.monotonic()
    answer = client.query(prompt, timeout=30)
    _well_formed(answer)
    assert answer.code == Answer.BAD_REQUEST and expected in answer.message, answer.message
    assert time.monotonic() - t0 < 5.0  # refused up front, never waits for the model
    assert client.query(make_prompt("still there?"), timeout=30).code == Answer.OK


def test_click_on_depth_hole(client, publisher, request):
    wait_for = harness(request.config).wait_for
    f = plane_frame(seed=3)
    f["depth"][:, :80] = 0  # left half has no depth
    moved = np.eye(4)
    moved[0, 3] = 0.5  # far enough from the first frame to become a keyframe
    stamp = 2_000_000_000
    answers = []

    def is_keyframe() -> bool:
        # a frame not (yet) held is placed from the other keyframes: wait until the model
        # is answered from it, then its own depth (with the hole) decides
        publisher.publish(f["rgb"], f["depth"], f["k"], moved, stamp)
        answers.append(client.query(make_prompt("what?", max_views=8), timeout=30))
        return stamp in {stamp_to_ns(s) for s in answers[-1].view_stamps}

    wait_for(is_keyframe, 30, "the holed frame to become a keyframe", interval=0.2)
    hole = client.query(make_prompt("what?", clicks=((10.0, 60.0, stamp),)), timeout=30)
    assert hole.code == Answer.BAD_REQUEST and "depth hole" in hole.message
    ok = client.query(make_prompt("what?", clicks=((120.0, 60.0, stamp),)), timeout=30)
    assert ok.code == Answer.OK, ok.message
    p = ok.click_points[0]
    assert (p.x, p.z) == (
        pytest.approx(0.5 + (120 - 79.5) / 100 * 2.0, abs=0.02),
        pytest.approx(2.0, abs=0.01),
    )


def test_query_command_line_client(client, publisher, request, ros_env):
    test_query_with_frames_is_ok(client, publisher, request)
    run_cli = harness(request.config).run_cli
    out = run_cli(["query", "what is this?", "--click", "80,60@1000000000", "--json"], ros_env, 60)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["code"] == 0 and answer["view_stamps_ns"] and answer["click_points"]
    assert answer["click_points"][0][2] == pytest.approx(2.0, abs=0.01)  # the wall 2 m ahead
    out = run_cli(["query", "", "--action"], ros_env, 60)
    assert out.returncode == 1 and "BAD_REQUEST: empty question" in out.stdout
    out = run_cli(["query", "x", "--click", "nonsense"], ros_env, 60)
    assert out.returncode == 2 and "bad click" in out.stderr
