"""Guard: optional steps never raise, failures are counted, log lines are rate-limited per key."""

from __future__ import annotations

import pytest

from llava3d_ros.guard import Guard


class Log:
    def __init__(self, fail: bool = False) -> None:
        self.lines: list[tuple[str, str]] = []
        self.fail = fail

    def __getattr__(self, level: str):
        def emit(message: str) -> None:
            if self.fail:
                raise ValueError("Logging filter parameters cannot be changed between calls.")
            self.lines.append((level, message))

        return emit


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_failing_step_is_counted_logged_and_swallowed():
    log = Log()
    g = Guard(log)
    assert g.run("markers", lambda: 1 / 0) is None
    assert g.run("markers", lambda: 7) == 7
    assert g.failures["markers"] == 1
    assert g.last_error["markers"].startswith("ZeroDivisionError")
    assert log.lines and log.lines[0][0] == "error" and "markers failed" in log.lines[0][1]


def test_log_lines_are_rate_limited_per_key_and_count_what_was_held_back():
    log, clock = Log(), Clock()
    g = Guard(log, period_s=5.0, clock=clock)
    assert g.log("input rgb", "warning", "bad encoding")
    assert not g.log("input rgb", "warning", "bad encoding")
    assert g.log("input depth", "warning", "NaN depth"), "another key has its own budget"
    assert g.log("answer", "info", "one-second key", period_s=1.0)
    clock.t = 5.0
    assert g.log("input rgb", "warning", "bad encoding")
    assert log.lines[-1] == ("warning", "bad encoding (1 similar lines held back)")
    # two periods at one key (what broke rclpy's call-site throttle) are fine here
    assert g.log("mixed", "warning", "a", period_s=5.0)
    clock.t = 6.1
    assert g.log("mixed", "warning", "b", period_s=1.0)


@pytest.mark.parametrize("step", ["answer log", "~/answer", "diagnostics"])
def test_a_broken_logger_never_escapes(step):
    g = Guard(Log(fail=True))
    assert g.run(step, lambda: (_ for _ in ()).throw(RuntimeError("boom"))) is None
    assert not g.log("x", "warning", "y")
    failures, errors = g.snapshot()
    assert failures == {step: 1, "log": 2} and "log" in errors
