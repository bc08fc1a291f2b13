"""The command-line/test client: against an in-process ~/ask server (no node, no model), and
``llava3d-ros query`` against node processes (Ctrl-C cancels, same-named servers warned)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from llava3d_ros.action import Ask
from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt

from .conftest import harness, node_rig, plane_frame

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


# A long answer: the random-weight model samples at temperature 1 and rarely stops early.
LONG = ("--max-new-tokens", "2000", "--temperature", "1.0")


@pytest.fixture(scope="module")
def rig(node_factory, ros_context):
    with node_rig(node_factory, ros_context, name="client-node") as r:
        yield r


@pytest.fixture(scope="module")
def scene(rig, request):
    """A keyframe in the node, so that queries decode (not NO_SCENE)."""
    f = plane_frame()

    def answered() -> bool:
        rig["pub"].publish(f["rgb"], f["depth"], f["k"], f["pose"], 1_000_000_000)
        return rig["client"].query(make_prompt("what is here?"), timeout=30).code == Answer.OK

    harness(request.config).wait_for(answered, 60, "an OK answer", interval=0.2)
    return rig


def _answers(rig, request) -> list[tuple[float, Answer]]:
    """(arrival time, Answer) of every ~/answer publication from now on."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    got: list[tuple[float, Answer]] = []
    sub = rig["side"].create_subscription(
        Answer,
        "/llava3d/answer",
        lambda msg: got.append((time.monotonic(), msg)),
        QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
    )
    request.addfinalizer(lambda: rig["side"].destroy_subscription(sub))
    harness(request.config).wait_for(
        lambda: sub.get_publisher_count() > 0, 20, "~/answer to match the test's subscriber"
    )
    return got


def test_ctrl_c_cancels_the_action_goal(scene, spawn, request):
    h = harness(request.config)
    answers = _answers(scene, request)
    question = "describe every object in detail (interrupted)"
    child = spawn(
        *("-m", "llava3d_ros.cli", "query", question, "--action", "--timeout", "300", *LONG),
        name="query-action",
    )
    h.wait_for(lambda: "[decoding]" in child.output(), 120, "the client to show decoding")
    t_signal = time.monotonic()
    child.popen.send_signal(signal.SIGINT)
    assert child.popen.wait(15) == 130, child.output()
    out = child.output()
    assert "Traceback" not in out, out
    assert "llava3d-ros query: interrupted: goal canceled" in out, out

    def mine() -> list[tuple[float, Answer]]:
        return [(t, a) for t, a in answers if a.prompt.question == question]

    h.wait_for(mine, 10, "the node's answer to the canceled goal on ~/answer")
    t_answer, answer = mine()[0]
    assert answer.code == Answer.CANCELED, answer.message
    assert t_answer - t_signal < 5.0  # the node stopped decoding when told, not 2000 tokens on
    assert scene["client"].query(make_prompt("still there?"), timeout=30).code == Answer.OK


def test_ctrl_c_on_a_service_call_exits_130(ctx, spawn, request):
    """A ~/query call cannot be canceled: the client says so and exits 130 all the same.

    The server is an in-process stand-in that holds the call until told, so the client is
    surely waiting when the signal comes (a model may answer before it).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from llava3d_ros.srv import Query

    h = harness(request.config)
    received, release, replied = threading.Event(), threading.Event(), threading.Event()

    def hold(req, response):
        received.set()
        release.wait(30)
        response.answer = Answer(code=Answer.OK, success=True, text="late")
        replied.set()
        return response

    server_node = rclpy.create_node("held_llava3d", context=ctx)
    server_node.create_service(Query, "/held_llava3d/query", hold)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(server_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    child = spawn(
        "-m", "llava3d_ros.cli", "query", "and this?", "--node", "/held_llava3d",
        "--server-check-s", "0", name="query-service",
    )  # fmt: skip
    try:
        h.wait_for(received.is_set, 60, "the call to reach the server")
        child.popen.send_signal(signal.SIGINT)
        assert child.popen.wait(15) == 130, child.output()
    finally:
        release.set()
        if received.is_set():
            replied.wait(10)
            time.sleep(0.2)  # rclpy sends the reply after the handler returns
        executor.shutdown(timeout_sec=2.0)
        spinner.join(5)
        server_node.destroy_node()
    out = child.output()
    assert "Traceback" not in out, out
    assert "interrupted: a service call cannot be canceled" in out, out


TWIN = "/llava3d_twin"


def test_two_servers_of_one_name_are_warned(node_factory, ros_context, ros_env, request):
    import rclpy

    h = harness(request.config)
    twin = (
        "-m",
        "llava3d_ros.cli",
        "run",
        "--autostart",
        "--ros-args",
        "-r",
        "__node:=llava3d_twin",
    )
    watcher = rclpy.create_node("twin_watcher", context=ros_context)
    try:
        node_factory(name="twin-a", args=twin)
        h.wait_for(lambda: watcher.count_services(f"{TWIN}/query") == 1, 60, "the first twin")
        node_factory(name="twin-b", args=twin)
        h.wait_for(lambda: watcher.count_services(f"{TWIN}/query") == 2, 60, "the second twin")
        h.wait_for(
            lambda: watcher.count_services(f"{TWIN}/ask/_action/send_goal") == 2,
            30,
            "both twins' ~/ask",
        )
    finally:
        watcher.destroy_node()
    # --server-check-s: a fresh process may discover the second server a second or two after
    # the first, after a fast (NO_SCENE) answer; it stops watching once it has warned
    check = ("--server-check-s", "60")
    out = h.run_cli(["query", "hello", "--node", TWIN, *check], ros_env, 120)
    assert out.returncode in (0, 1), out.stderr  # an answer from one of them
    assert out.stderr.count("warning:") == 1, out.stderr
    assert (
        f"warning: 2 servers answer {TWIN}/query; replies may come from either "
        "(is a second node running with the same name?)"
    ) in out.stderr
    out = h.run_cli(["query", "hello", "--node", TWIN, "--action", *check], ros_env, 120)
    assert out.returncode in (0, 1), out.stderr
    assert f"warning: 2 action servers answer {TWIN}/ask;" in out.stderr, out.stderr


# --- what ``llava3d-ros query`` prints, against an in-process stand-in for the node ---

FAKE = "/fake_print_llava3d"
YAW_DEG = 30.0


def _coded_answer(question: str) -> Answer:
    """What the stand-in answers: a refusal for "busy", else an answer with a yawed box."""
    import math

    from llava3d_ros.msg import GroundedObject

    if question == "busy":
        return Answer(code=Answer.BUSY, success=False, message="4 queries are waiting; retry later")
    a = Answer(code=Answer.OK, success=True, text="a chair [1.0, 2.0, 0.5, 0.4, 0.4, 0.9]")
    a.header.frame_id = "map"
    a.model = "fake"
    a.warnings = ["malformed number '1.2.3' in box 2 (skipped)"]
    obj = GroundedObject(label="chair", score=0.75)
    obj.center.position.x, obj.center.position.y, obj.center.position.z = 1.5, -0.25, 0.45
    half = math.radians(YAW_DEG) / 2
    obj.center.orientation.z, obj.center.orientation.w = math.sin(half), math.cos(half)
    obj.size.x, obj.size.y, obj.size.z = 0.4, 0.5, 0.9
    a.objects.append(obj)
    return a


@pytest.fixture
def fake_node(ctx):
    """~/query and ~/ask of FAKE in this process; ~/ask sends feedback with newlines first."""
    import rclpy
    from rclpy.action import ActionServer
    from rclpy.executors import SingleThreadedExecutor

    from llava3d_ros.srv import Query

    def on_query(req, response):
        response.answer = _coded_answer(req.prompt.question)
        return response

    def execute(goal_handle):
        goal_handle.publish_feedback(Ask.Feedback(stage="encoding"))
        for i in range(1, 6):
            fb = Ask.Feedback(stage="decoding", tokens=i, partial_text="a chair\n" * i)
            goal_handle.publish_feedback(fb)
            time.sleep(0.02)
        time.sleep(0.3)  # feedback after the result is not shown (it would follow the answer)
        goal_handle.succeed()
        return Ask.Result(answer=_coded_answer(goal_handle.request.prompt.question))

    node = rclpy.create_node("fake_print_llava3d", context=ctx)
    node.create_service(Query, f"{FAKE}/query", on_query)
    server = ActionServer(node, Ask, f"{FAKE}/ask", execute)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    yield
    executor.shutdown(timeout_sec=2.0)
    spinner.join(5)
    server.destroy()
    node.destroy_node()


def _query(request, ros_env, *args: str):
    cmd = ["query", *args, "--node", FAKE, "--server-check-s", "0", "--timeout", "60"]
    return harness(request.config).run_cli(cmd, ros_env, 120)


def test_query_prints_warnings_refusals_and_oriented_boxes(fake_node, request, ros_env):
    import json

    out = _query(request, ros_env, "what is here?")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "warning: malformed number '1.2.3' in box 2 (skipped)" in lines, out.stdout
    assert "boxes (world frame, map" in out.stdout
    box = next(line for line in lines if line.strip().startswith("box 'chair'"))
    assert "score 0.750" in box and "centre (1.500, -0.250, 0.450) m" in box, box
    assert "size (0.400, 0.500, 0.900) m" in box and "yaw 30.0 pitch 0.0 roll 0.0 deg" in box, box
    assert "quaternion x,y,z,w 0.0000, 0.0000, 0.2588, 0.9659" in box, box

    out = _query(request, ros_env, "what is here?", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["frame_id"] == "map" and got["code_name"] == "OK" and got["warnings"]
    (o,) = got["objects"]
    assert o["yaw_pitch_roll_deg"] == pytest.approx([YAW_DEG, 0.0, 0.0], abs=1e-4)
    assert o["orientation_xyzw"] == pytest.approx([0, 0, 0.258819, 0.965926], abs=1e-5)
    assert o["center"] == pytest.approx([1.5, -0.25, 0.45]) and o["label"] == "chair"

    out = _query(request, ros_env, "busy")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["BUSY: 4 queries are waiting; retry later"], out.stdout
    assert "Traceback" not in out.stderr


def test_action_feedback_without_a_terminal_is_plain_lines(fake_node, request, ros_env):
    out = _query(request, ros_env, "what is here?", "--action")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\r" not in out.stdout and "\x1b" not in out.stdout, repr(out.stdout)
    lines = out.stdout.splitlines()
    assert "[decoding] 1 tokens" in lines, out.stdout
    assert lines.index("OK") > lines.index("[decoding] 1 tokens")
    assert "answer: a chair [1.0, 2.0, 0.5, 0.4, 0.4, 0.9]" in lines
