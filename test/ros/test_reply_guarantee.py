"""Every accepted request gets exactly one reply, whatever optional output fails after it.

An in-process node (a model stand-in that answers at once, with a box and a warning) and an
in-process client over real DDS. Each optional step is broken in turn: logging, each
publisher, marker building, debug-image drawing, diagnostics. Every caller must still get
its reply, the failure must be counted in the node's health, and once the step is healthy
again the node answers as before. A worker that dies is reported, never silent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from llava3d_ros.answer import AnswerResult, Box3D, ResultCode
from llava3d_ros.msg import Answer
from llava3d_ros.ros import markers, visuals
from llava3d_ros.ros.client import Llava3dClient, make_prompt
from llava3d_ros.ros.diagnostics import diagnostic_array
from llava3d_ros.ros.node import Llava3dNode
from llava3d_ros.scene.frame import Frame

pytestmark = pytest.mark.ros

WARNING = "box format enforced: 1 of 6 tokens were not the model's first choice"


class InstantModel:
    """Answers at once with one box and a warning (the reply path is under test, not a model)."""

    model_id = "instant stand-in (random-weights)"
    image_size, grid = 336, 24

    def answer(self, views, question, **kw) -> AnswerResult:  # noqa: ANN001 - engine's signature
        return AnswerResult(
            ResultCode.OK,
            text="it is here [0.0, 0.0, 2.0, 0.4, 0.4, 0.4]",
            boxes=[Box3D(np.array([0.0, 0.0, 2.0]), np.array([0.4, 0.4, 0.4]))],
            parse_warnings=[WARNING],
        )

    def release(self) -> None:
        pass


class Broken:
    """A publisher whose publish raises."""

    def publish(self, msg: object) -> None:
        raise RuntimeError("injected: publisher broken")


def _raise(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected failure")


@pytest.fixture(scope="module")
def served(ros_context) -> Iterator[tuple[Llava3dNode, Llava3dClient]]:
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Llava3dNode(
        engine_factory=lambda s: InstantModel(),
        context=ctx,
        parameter_overrides=[
            Parameter("diagnostics_period_s", Parameter.Type.DOUBLE, 0.1),
            Parameter("max_pending_queries", Parameter.Type.INTEGER, 8),
        ],
    )
    ex = MultiThreadedExecutor(num_threads=2, context=ctx)
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    client = None
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        spinner.start()
        rng = np.random.default_rng(0)
        k = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])
        frame = Frame(
            rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
            np.full((120, 160), 2.0, dtype=np.float32),
            k,
            k,
            np.eye(4),
            1_000_000_000,
        )
        with node._scene_lock:
            assert node.buffer.add(frame) is not None
        client = Llava3dClient("/llava3d", ros_context)
        client.wait_for_node(30.0)
        yield node, client
    finally:
        if client is not None:
            client.close()
        node.trigger_shutdown()
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def _ask_all(client: Llava3dClient, n_queries: int = 3) -> list[Answer]:
    """n ~/query calls and one ~/ask goal at the same moment; the replies (None = lost)."""
    replies: list[Answer | None] = [None] * (n_queries + 1)

    def call(i: int) -> None:
        prompt = make_prompt("where is the chair?", client_id=f"caller-{i}")
        if i < n_queries:
            replies[i] = client.query(prompt, timeout=20.0)
        else:
            replies[i] = client.ask(prompt, timeout=20.0)[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n_queries + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30.0)
    return replies


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _break_logging(node: Llava3dNode, mp: pytest.MonkeyPatch) -> None:
    mp.setattr(node._server, "_log_answer", _raise)

    class FailingLogger:
        def __getattr__(self, level: str) -> Callable[..., None]:
            return _raise

    mp.setattr(node._guard, "_logger", FailingLogger())


def _break_publisher(name: str) -> Callable[[Llava3dNode, pytest.MonkeyPatch], None]:
    def brk(node: Llava3dNode, mp: pytest.MonkeyPatch) -> None:
        if name == "answer":
            mp.setattr(node, "_answer_pub", Broken())
            return
        pubs = node._visuals._pubs
        assert name in pubs, f"the node has no {name} publisher"
        mp.setitem(pubs, name, Broken())

    return brk


CASES: dict[str, tuple[Callable[[Llava3dNode, pytest.MonkeyPatch], None], str]] = {
    "logging": (_break_logging, "answer log"),
    "~/answer publisher": (_break_publisher("answer"), "~/answer"),
    "~/markers publisher": (_break_publisher("markers"), "markers"),
    "~/debug_image publisher": (_break_publisher("debug_image"), "debug_image"),
    "marker building": (lambda n, mp: mp.setattr(markers, "answer_markers", _raise), "markers"),
    "debug-image drawing": (lambda n, mp: mp.setattr(visuals, "draw_boxes", _raise), "debug_image"),
    "diagnostics": (lambda n, mp: mp.setattr(n, "health", _raise), "diagnostics"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_caller_gets_one_reply_whatever_optional_step_fails(served, case):
    node, client = served
    brk, step = CASES[case]
    before = node._guard.snapshot()[0].get(step, 0)
    with pytest.MonkeyPatch.context() as mp:
        brk(node, mp)
        if step == "diagnostics":  # a timer step: fails without any query
            assert _wait(lambda: node._guard.snapshot()[0].get(step, 0) > before)
        replies = _ask_all(client)
        assert all(r is not None for r in replies), f"replies lost with {case} broken: {replies}"
        assert [r.code for r in replies] == [Answer.OK] * len(replies), [
            (r.code, r.message) for r in replies
        ]
        assert all(WARNING in r.warnings for r in replies)
        assert _wait(lambda: node._guard.snapshot()[0].get(step, 0) > before), (
            f"{case}: the failure was not counted under {step!r}: {node._guard.snapshot()}"
        )
    # healthy again: the node answers as before and reports what failed
    assert [r.code for r in _ask_all(client, 1)] == [Answer.OK, Answer.OK]
    outputs = diagnostic_array(node.health(), "/llava3d", 0).status[-1]
    assert outputs.level == outputs.WARN and step in outputs.message


def test_a_stopped_ingest_thread_is_an_error_and_answers_say_the_scene_is_stale(served):
    node, client = served

    class Exploding(list):
        def popleft(self) -> object:
            raise RuntimeError("injected: ingest worker broken")

    worker = node._ingest
    with worker._cv:
        worker._frames = Exploding([object()])
        worker._cv.notify_all()
    assert _wait(lambda: "ingestion" in node.health().stopped)
    assert not worker.alive
    inputs = diagnostic_array(node.health(), "/llava3d", 0).status[0]
    assert inputs.level == inputs.ERROR
    assert inputs.message.startswith("ingestion stopped: RuntimeError: injected")
    (answer,) = _ask_all(client, 1)[:1]
    assert answer.code == Answer.OK
    assert any(w.startswith("the scene is stale: ingestion stopped") for w in answer.warnings)


def test_a_stopped_query_worker_answers_what_waits_and_refuses_the_rest(served, monkeypatch):
    """(Runs last: it leaves the module's node without a worker, as a real failure would.)"""
    node, client = served
    release = threading.Event()
    slow = InstantModel()
    monkeypatch.setattr(slow, "answer", lambda *a, **kw: release.wait(20) and 1 / 0)
    monkeypatch.setattr(node, "engine", slow)
    queue = node.queue

    def broken_next_job() -> object:
        raise RuntimeError("injected: query worker broken")

    replies: list[Answer | None] = [None, None]

    def call(i: int) -> None:
        replies[i] = client.query(make_prompt("where?", client_id=f"c{i}"), timeout=20.0)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert _wait(lambda: queue.busy)  # the first query runs (and blocks in the model)
    monkeypatch.setattr(queue, "_next_job", broken_next_job)
    second = threading.Thread(target=call, args=(1,))
    second.start()
    assert _wait(lambda: queue.pending == 1)
    release.set()  # the first answer fails (MODEL_ERROR); the worker then dies taking the next
    first.join(30)
    second.join(30)
    assert replies[0] is not None and replies[0].code == Answer.MODEL_ERROR
    assert replies[1] is not None and replies[1].code == Answer.NOT_READY
    assert "query worker stopped: RuntimeError: injected" in replies[1].message
    model = diagnostic_array(node.health(), "/llava3d", 0).status[2]
    assert model.level == model.ERROR and "query worker stopped" in model.message
    (after,) = _ask_all(client, 0)  # refused at once, not left waiting
    assert after.code == Answer.NOT_READY and "query worker stopped" in after.message
