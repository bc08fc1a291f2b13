"""A client that vanishes mid-action, and deactivate/activate cycles under load."""

from __future__ import annotations

import signal
import threading
import time

import psutil
import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import make_prompt

from .conftest import harness, plane_frame

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# A child process that sends a long ~/ask goal and says when decoding has started.
_VANISHING_CLIENT = """
import rclpy, sys
from llava3d_ros.ros.client import Llava3dClient, make_prompt
rclpy.init()
c = Llava3dClient("/llava3d")
c.wait_for_node(60.0)
def fb(f):
    if f.stage == "decoding":
        print("DECODING", flush=True)
c.ask(make_prompt("describe everything you see", max_new_tokens=1500), timeout=300, on_feedback=fb)
print("FINISHED", flush=True)
"""


def _scene(rig, request, start_s: float) -> None:
    f = plane_frame()
    n = [0]

    def ok() -> bool:
        n[0] += 1
        stamp = int((start_s + 0.1 * n[0]) * 1e9)
        rig["pub"].publish(f["rgb"], f["depth"], f["k"], f["pose"], stamp)
        return rig["client"].query(make_prompt("what is here?"), timeout=30).code == Answer.OK

    harness(request.config).wait_for(ok, 40, "an OK answer", interval=0.2)


def test_client_disappears_mid_action(rig, request, spawn):
    _scene(rig, request, 100.0)
    child = spawn("-c", _VANISHING_CLIENT, name="vanishing-client")
    h = harness(request.config)
    h.wait_for(lambda: "DECODING" in child.output(), 60, "the child's goal to start decoding")
    assert "FINISHED" not in child.output(), "the goal ended before the client could vanish"
    child.popen.send_signal(signal.SIGKILL)
    child.popen.wait(5)
    t0 = time.monotonic()
    answers = []

    def answered() -> bool:  # BUSY while the orphaned goal still runs is a coded answer too
        answers.append(rig["client"].query(make_prompt("what is here?"), timeout=60))
        return answers[-1].code == Answer.OK

    h.wait_for(answered, 90, "the node to answer the next client", interval=0.5)
    assert all(a.code in (Answer.OK, Answer.BUSY) for a in answers), [a.message for a in answers]
    assert rig["node"].alive()
    print(f"next client answered {time.monotonic() - t0:.1f} s after the kill")


def _change_state(rig, transition_id: int) -> bool:
    from lifecycle_msgs.srv import ChangeState

    cli = rig["side"].create_client(ChangeState, "/llava3d/change_state")
    try:
        assert cli.wait_for_service(timeout_sec=10.0), "no /llava3d/change_state service"
        req = ChangeState.Request()
        req.transition.id = transition_id
        fut = cli.call_async(req)
        done = threading.Event()
        fut.add_done_callback(lambda _: done.set())
        assert done.wait(60.0), f"transition {transition_id} got no reply"
        return bool(fut.result().success)
    finally:
        rig["side"].destroy_client(cli)


def test_deactivate_activate_cycles(rig, request):
    from lifecycle_msgs.msg import Transition

    proc = psutil.Process(rig["node"].popen.pid)
    _scene(rig, request, 200.0)
    rss = [proc.memory_info().rss / 2**20]
    for cycle in range(3):
        assert _change_state(rig, Transition.TRANSITION_DEACTIVATE), f"deactivate {cycle}"
        time.sleep(0.3)
        assert _change_state(rig, Transition.TRANSITION_ACTIVATE), f"activate {cycle}"
        rig["client"].wait_for_node(30.0)
        _scene(rig, request, 300.0 + 100.0 * cycle)  # answers OK again after every cycle
        rss.append(proc.memory_info().rss / 2**20)
    print(f"RSS before and after each cycle (MiB): {[round(r) for r in rss]}")
    assert rig["node"].alive()
    # the model is released and reloaded each cycle: memory returns to where it was
    assert rss[-1] <= 1.15 * rss[1], rss
