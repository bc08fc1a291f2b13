"""Deactivating while a ~/query call is in flight: the node lives on and answers after reactivation."""

from __future__ import annotations

import threading
import time

import pytest

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import ClientError, make_prompt

from .test_client_and_lifecycle_faults import _change_state, _scene

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# what the in-flight caller got, for the second test
_IN_FLIGHT: list[object] = []


def test_deactivate_during_query_in_flight(rig, request):
    from lifecycle_msgs.msg import Transition

    _scene(rig, request, 100.0)

    def long_query() -> None:
        try:
            prompt = make_prompt("describe it all", max_new_tokens=1500)
            _IN_FLIGHT.append(rig["client"].query(prompt, timeout=15))
        except ClientError as exc:
            _IN_FLIGHT.append(exc)

    caller = threading.Thread(target=long_query)
    caller.start()
    # Early: a fast machine finishes this query (the random model stops at its first </s>) in
    # about 1.3 s; a deactivate that lands before the call reaches the node is answered too.
    time.sleep(0.3)
    assert _change_state(rig, Transition.TRANSITION_DEACTIVATE)
    caller.join(20)
    time.sleep(1.0)
    assert rig["node"].alive(), "the node process exited after deactivate"
    assert _change_state(rig, Transition.TRANSITION_ACTIVATE)
    rig["client"].wait_for_node(30.0)
    _scene(rig, request, 200.0)  # answers OK again
    # callbacks queued on destroyed interfaces fail once each (a short burst), then stop
    dropped = rig["node"].output().count("reply dropped")
    time.sleep(2.0)
    assert rig["node"].output().count("reply dropped") == dropped, "the failure keeps repeating"


def test_in_flight_query_gets_a_coded_answer_on_deactivate():
    assert _IN_FLIGHT, "the first test did not run"
    got = _IN_FLIGHT[0]
    assert isinstance(got, Answer), f"the in-flight query was lost: {got}"
    assert got.code in (Answer.NOT_READY, Answer.CANCELED), got.message
