"""Test harness: loopback-only DDS with a domain id of this run, and node processes that always stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from llava3d_ros.ros.dds import loopback_env

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

# A shell that starts pytest in the background (`make test &`) leaves SIGINT ignored, and
# child processes inherit an ignored signal: the tests that stop a node or a replay with
# SIGINT (as Ctrl-C would) would then wait in vain. A handled signal is reset to the
# default in children, so handle it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# One domain id per test run (and per xdist worker), set before anything imports rclpy.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").lstrip("gw") or "0"
DOMAIN_ID = int(os.environ.get("LLAVA3D_TEST_DOMAIN_ID", 1 + (os.getpid() + int(_worker)) % 101))
os.environ.update(loopback_env(domain_id=DOMAIN_ID))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or an explicit skip when that folder is not beside the repo."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real RGB-D data not found at {path} (expected ../shared/data beside the repo)"
        )
    return path


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for child processes: loopback DDS, this run's domain id, unbuffered output."""
    env = loopback_env(domain_id=DOMAIN_ID)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ProcessHandle:
    """A child process whose output goes to a log file that a failing test can show."""

    def __init__(self, popen: subprocess.Popen, log: Path) -> None:
        self.popen = popen
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGTERM, then SIGKILL; returns the exit code."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.popen.poll() is not None:
                break
            self.popen.send_signal(sig)
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.popen.wait()


@pytest.fixture
def spawn(
    ros_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ProcessHandle]]:
    """Start Python child processes (``spawn("-m", "llava3d_ros.cli", "run", ...)``); all stop at teardown."""
    handles: list[ProcessHandle] = []

    def _spawn(*args: str, env: dict[str, str] | None = None, name: str = "proc") -> ProcessHandle:
        log = tmp_path / f"{name}-{len(handles)}.log"
        fh = open(log, "wb")  # noqa: SIM115 - closed with the process
        popen = subprocess.Popen(
            [sys.executable, *args],
            env={**ros_env, **(env or {})},
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        handle = ProcessHandle(popen, log)
        handles.append(handle)
        return handle

    yield _spawn
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for handle in handles:
        handle.stop()
        if failed:
            sys.stderr.write(f"\n----- {handle.log.name} -----\n{handle.output()[-6000:]}\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until true or fail the test saying what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}")


def run_cli(
    args: Sequence[str], env: dict[str, str], timeout: float = 120.0
) -> subprocess.CompletedProcess:
    """Run ``python -m llava3d_ros.cli ARGS`` to completion and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "llava3d_ros.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
