"""Optional work that must never stand between a request and its reply, nor stop a thread.

A node's optional steps (log lines, publishers, markers, the debug image, diagnostics) run
through ``Guard.run``: an exception is counted by step, remembered, and logged at most once
per ``period_s`` per step, never propagated. Logging goes through ``Guard.log``, rate-limited
per key by the guard itself: rclpy's own ``throttle_duration_sec`` keys its filter by call
site and raises when one site is called with two different periods, which is exactly what a
shared helper does. A logger that fails is only counted.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Guard:
    """Runs optional steps and rate-limited log lines; failures are counted, never raised."""

    def __init__(
        self, logger: Any, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger  # anything with debug/info/warning/error(message)
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.last_error: dict[str, str] = {}

    def snapshot(self) -> tuple[dict[str, int], dict[str, str]]:
        """(failures per step, last error per step), copied consistently."""
        with self._lock:
            return dict(self.failures), dict(self.last_error)

    def run(self, step: str, fn: Callable[[], T]) -> T | None:
        """``fn()``, or None when it raised (counted under ``step`` and logged)."""
        try:
            return fn()
        except Exception as exc:  # optional work: report it, never let it escape
            self.failed(step, exc)
            return None

    def failed(self, step: str, exc: BaseException) -> None:
        """Count and log a failure of ``step`` that the caller caught itself."""
        text = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.failures[step] += 1
            self.last_error[step] = text
        self.log(f"failed:{step}", "error", f"{step} failed (the node goes on): {text}")

    def log(self, key: str, level: str, message: str, period_s: float | None = None) -> bool:
        """Log ``message`` unless ``key`` was logged less than ``period_s`` ago; True if logged.

        A line after a quiet spell says how many lines of its key were held back.
        """
        period = self.period_s if period_s is None else period_s
        now = self._clock()
        with self._lock:
            last = self._last_logged.get(key)
            if last is not None and now - last < period:
                self._suppressed[key] += 1
                return False
            self._last_logged[key] = now
            held = self._suppressed.pop(key, 0)
        if held:
            message += f" ({held} similar lines held back)"
        try:
            getattr(self._logger, level)(message)
        except Exception:  # a broken logger must not break the step that logs
            with self._lock:
                self.failures["log"] += 1
                self.last_error["log"] = f"logging {level} failed"
            return False
        return True
