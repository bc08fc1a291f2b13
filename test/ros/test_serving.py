"""RepliesInFlight: the teardown waits for handlers in flight and for the last reply to go out."""

from __future__ import annotations

import threading
import time

import pytest

from llava3d_ros.ros import serving
from llava3d_ros.ros.serving import RepliesInFlight


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)


@pytest.fixture
def send_s(monkeypatch) -> float:
    monkeypatch.setattr(serving, "REPLY_SEND_S", 0.4)
    return 0.4


def test_a_reply_returned_just_before_still_gets_its_send_time(send_s):
    # the SIGTERM case: the shutdown cancels the running goal, whose handler returns its
    # result an instant before the teardown asks; the teardown must not destroy the action
    # server under that result (it did: no handler in flight was taken as nothing to send)
    replies = RepliesInFlight(Log())
    with replies.handling():
        pass
    t0 = time.monotonic()
    assert replies.wait(5.0)
    assert time.monotonic() - t0 >= send_s * 0.9


def test_no_reply_ever_sent_waits_for_nothing(monkeypatch):
    monkeypatch.setattr(serving, "REPLY_SEND_S", 30.0)
    t0 = time.monotonic()
    assert RepliesInFlight(Log()).wait(5.0)
    assert time.monotonic() - t0 < 10.0


def _handler_in_flight(replies: RepliesInFlight) -> threading.Event:
    """A handler running on a thread of its own until the returned event is set."""
    entered, release = threading.Event(), threading.Event()

    def handler() -> None:
        with replies.handling():
            entered.set()
            release.wait(10)

    threading.Thread(target=handler).start()
    assert entered.wait(10)
    return release


def test_a_handler_in_flight_is_waited_for_then_its_send_time(send_s):
    replies = RepliesInFlight(Log())
    release = _handler_in_flight(replies)
    t0 = time.monotonic()
    threading.Timer(0.3, release.set).start()
    assert replies.wait(10.0)
    assert time.monotonic() - t0 >= 0.3 + send_s * 0.9


def test_a_handler_that_never_returns_is_given_up_on_and_said(send_s):
    log = Log()
    replies = RepliesInFlight(log)
    release = _handler_in_flight(replies)
    try:
        assert not replies.wait(0.2)
        assert log.warnings == ["1 query handlers still running after 0.2 s"]
    finally:
        release.set()
