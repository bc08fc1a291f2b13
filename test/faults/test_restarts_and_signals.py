"""Sensor time that restarts (a replay run twice) and SIGTERM, over real DDS with node processes.

Replaying a recording twice without ``--loop`` sends its stamps again from the start. The
node says so in one WARN line with both stamps and, by ``time_jump_policy``, resets the scene
(default) or keeps it; either way the second pass is ingested, never dropped in silence.
SIGTERM (docker stop, systemd, launch) is handled like Ctrl-C: the running query is
answered CANCELED, queued ones NOT_READY, then the node exits.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import ClientError, Llava3dClient, make_prompt
from llava3d_ros.ros.publish import FramePublisher

from .conftest import REPO, harness, plane_frame

pytestmark = [pytest.mark.ros, pytest.mark.slow]
SEVEN = REPO / ".." / "shared" / "data" / "7scenes-redkitchen"


class NodeDiagnostics:
    """The newest /diagnostics values of one node (others on the graph are ignored)."""

    def __init__(self, node, fqn: str) -> None:  # noqa: ANN001 - rclpy Node
        from diagnostic_msgs.msg import DiagnosticArray

        self.fqn, self.values = fqn, {}
        self._lock = threading.Lock()
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg) -> None:  # noqa: ANN001
        with self._lock:
            for status in msg.status:
                if status.hardware_id == self.fqn:
                    self.values.update({kv.key: kv.value for kv in status.values})

    def int(self, key: str) -> int:
        with self._lock:
            return int(self.values.get(key, "0"))


@pytest.fixture(scope="module")
def side(ros_context):
    """A node of this process, spinning, for subscriptions and publishers."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("restarts_side", context=ros_context)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    yield node
    ex.shutdown(timeout_sec=2.0)
    node.destroy_node()


def _start(node_factory, ns: str, *params: str):
    args = ("-m", "llava3d_ros.cli", "run", "--autostart", "--ros-args", "-r", f"__ns:=/{ns}")
    return node_factory(*params, name=f"llava3d-{ns}", args=args)


def _replay(request, ns: str) -> None:
    h = harness(request.config)
    env = h.loopback_env(domain_id=h.DOMAIN_ID)
    cmd = [sys.executable, "-m", "llava3d_ros.cli", "replay", str(SEVEN), "--rate", "3"]
    cmd += ["--wait-subscribers", "30", "--ros-args", "-r", f"__ns:=/{ns}"]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("policy", ["reset", "keep"])
def test_a_replay_run_twice_is_ingested_and_said(policy, node_factory, side, request):
    if not SEVEN.exists():
        pytest.skip(f"real RGB-D data not found at {SEVEN}")
    h = harness(request.config)
    ns = f"jump_{policy}"
    node = _start(
        node_factory, ns, f"time_jump_policy:={policy}", "ingest_rate_hz:=0.0",
        "diagnostics_period_s:=0.2", "max_new_tokens:=2",
        "sensor_qos:=reliable",  # every frame counted: best effort may lose the first ones
    )  # fmt: skip
    diag = NodeDiagnostics(side, f"/{ns}/llava3d")
    client = Llava3dClient(f"/{ns}/llava3d", side.context)
    try:
        client.wait_for_node(60.0)
        _replay(request, ns)
        h.wait_for(lambda: diag.int("frames_synced") >= 15, 30, "the first pass ingested")
        h.wait_for(lambda: diag.int("keyframes") >= 1, 30, "keyframes from the first pass")
        first_keyframes = diag.int("keyframes")
        _replay(request, ns)
        h.wait_for(lambda: diag.int("frames_synced") >= 29, 30, "the second pass ingested")
        h.wait_for(lambda: diag.int("time_jumps") == 1, 10, "the time jump counted")
        assert diag.int("sync_drops.colour stamp not newer than the last frame") <= 1
        log = node.output()
        lines = [x for x in log.splitlines() if "sensor time jumped back" in x]
        assert len(lines) == 1, log[-3000:]
        assert "WARN" in lines[0] and " s to " in lines[0] and f"policy={policy}" in lines[0]
        if policy == "reset":
            assert "scene reset" in lines[0]
        else:
            assert "scene kept" in lines[0]
            assert diag.int("keyframes") >= first_keyframes
        answer = client.query(make_prompt("what is here?"), timeout=60)
        assert answer.code == Answer.OK, answer.message
    finally:
        client.close()


def test_sigterm_answers_what_is_in_flight_then_exits(node_factory, side, request):
    h = harness(request.config)
    node = _start(
        node_factory, "term", "max_new_tokens:=1500", "max_pending_queries:=4",
        "diagnostics_period_s:=0.1",
    )  # fmt: skip
    diag = NodeDiagnostics(side, "/term/llava3d")
    client = Llava3dClient("/term/llava3d", side.context)
    pub = FramePublisher(side, prefix="/term")
    f = plane_frame()
    stamps = iter(range(1, 10_000))

    def scene_ok() -> bool:
        pub.publish(f["rgb"], f["depth"], f["k"], f["pose"], int(next(stamps) * 1e8))
        q = make_prompt("what is here?", max_new_tokens=2)
        try:
            return client.query(q, timeout=10).code == Answer.OK
        except ClientError:  # a request sent while the service was still matching: again
            return False

    got: dict[str, Answer] = {}
    decoding = threading.Event()
    try:
        client.wait_for_node(60.0)
        assert pub.wait_for_subscribers(20.0)
        h.wait_for(scene_ok, 60, "a scene and an OK answer", interval=0.2)

        def long_ask() -> None:
            try:
                got["running"] = client.ask(
                    make_prompt("describe everything you see", temperature=1.0),
                    timeout=60,
                    on_feedback=lambda fb: decoding.set() if fb.stage == "decoding" else None,
                )[0]
            except Exception as exc:  # noqa: BLE001 - shown by the assertion below
                got["running"] = exc

        def queued() -> None:
            try:
                got["queued"] = client.query(make_prompt("and now?"), timeout=60)
            except Exception as exc:  # noqa: BLE001 - shown by the assertion below
                got["queued"] = exc

        threads = [threading.Thread(target=long_ask)]
        threads[0].start()
        assert decoding.wait(30), "the long goal never started decoding"
        threads.append(threading.Thread(target=queued))
        threads[1].start()
        h.wait_for(lambda: diag.int("queries_pending") >= 1, 20, "the second query queued")
        node.popen.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        try:
            code = node.popen.wait(20)
        except subprocess.TimeoutExpired:  # the node dumps its threads' stacks after 15 s
            pytest.fail(f"no exit 20 s after SIGTERM:\n{node.output()[-8000:]}")
        assert code == 0, node.output()[-3000:]
        running, queued_answer = got.get("running"), got.get("queued")
        assert isinstance(running, Answer), f"the running goal got no answer: {running!r}"
        assert running.code == Answer.CANCELED, running.message
        assert isinstance(queued_answer, Answer), (
            f"the queued call got no answer: {queued_answer!r}"
        )
        assert queued_answer.code in (Answer.NOT_READY, Answer.CANCELED), queued_answer.message
        assert "SIGTERM received" in node.output()
    finally:
        client.close()


def test_a_second_node_with_the_same_name_is_warned_about(node_factory, request):
    h = harness(request.config)
    first = _start(node_factory, "twin")
    h.wait_for(lambda: "active:" in first.output(), 60, "the first node active")
    second = _start(node_factory, "twin")
    warned = "another node named /twin/llava3d is on the graph (2 in all)"
    h.wait_for(lambda: warned in second.output(), 60, "the second node's warning")
    assert first.alive() and second.alive()
