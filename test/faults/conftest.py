"""Fault tests: a node per module, an in-process client, a frame publisher and a /diagnostics reader."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ros.conftest import (  # noqa: F401 - fixtures
    node_factory,
    node_rig,
    plane_frame,
    ros_context,
)

REPO = Path(__file__).resolve().parents[2]


def harness(config: pytest.Config):
    """The root conftest module (ProcessHandle, wait_for, DOMAIN_ID, shared_data)."""
    return config.pluginmanager.get_plugin(str(REPO / "test" / "conftest.py"))


@dataclass(frozen=True)
class Report:
    """One /diagnostics report of the node: every key/value of its statuses, stamped."""

    stamp_ns: int
    values: dict[str, str]
    messages: dict[str, str]

    def get(self, key: str, default: str = "0") -> str:
        return self.values.get(key, default)

    def count(self, key: str) -> int:
        return int(self.values.get(key, "0"))

    def drops(self, prefix: str = "") -> int:
        """Synchroniser drops whose reason starts with ``prefix`` (all of them by default)."""
        return sum(int(v) for k, v in self.values.items() if k.startswith("sync_drops." + prefix))


class Reports:
    """The node's /diagnostics reports, whole; ``fresh()`` waits for one gathered after the call.

    The node gathers a report, then stamps it with its clock (system time, no sim time), one
    report after the other: the second report stamped after a moment was gathered after it.
    """

    def __init__(self, node) -> None:  # noqa: ANN001 - rclpy Node
        from diagnostic_msgs.msg import DiagnosticArray

        self._cv = threading.Condition()
        self._recent: deque[Report] = deque(maxlen=16)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg) -> None:  # noqa: ANN001
        report = Report(
            msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
            {kv.key: kv.value for status in msg.status for kv in status.values},
            {status.name.split(": ")[-1]: status.message for status in msg.status},
        )
        with self._cv:
            self._recent.append(report)
            self._cv.notify_all()

    def fresh(self, timeout: float = 10.0) -> Report:
        """A report of the node's state after this call (fails the test after ``timeout``)."""
        since = time.time_ns()
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                after = [r for r in self._recent if r.stamp_ns > since]
                if len(after) >= 2:
                    return after[1]
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no /diagnostics report from the node in {timeout:.1f} s")
                self._cv.wait(left)

    def wait_for(self, predicate: Callable[[Report], bool], timeout: float, what: str) -> Report:
        """The first fresh report that satisfies ``predicate``; fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.fresh(max(deadline - time.monotonic(), 0.0) + 2.0)
            if predicate(report):
                return report
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}")


@pytest.fixture(scope="module")
def rig(node_factory, ros_context, request) -> Iterator[dict]:  # noqa: F811
    """A node (tiny random model, 8 tokens, fast diagnostics) + client + publisher + diagnostics.

    Every frame is taken (``ingest_rate_hz:=0``): the fault tests count frames and drops.
    ``diag`` holds the newest values; ``reports`` (``Reports``) gives whole, fresh reports.
    """
    with node_rig(
        node_factory,
        ros_context,
        "ingest_rate_hz:=0.0",
        "max_new_tokens:=8",
        "diagnostics_period_s:=0.2",
        "max_pending_queries:=4",
        name="llava3d",
    ) as r:
        r["reports"] = Reports(r["side"])
        yield r
