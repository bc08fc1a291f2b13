"""Native thread names: what top -H and the per-thread bench see."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from llava3d_ros.threads import named_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl thread names are Linux")
def test_named_thread_names_the_os_thread_and_runs_the_target():
    seen: list[str] = []
    started, release = threading.Event(), threading.Event()

    def work() -> None:
        seen.append(threading.current_thread().name)
        started.set()
        release.wait(10)

    t = named_thread(work, "llava3d-sensors-and-more")
    t.start()
    try:
        assert started.wait(10)
        comm = Path(f"/proc/self/task/{t.native_id}/comm").read_text().strip()
        assert comm == "llava3d-sensors"  # the kernel keeps 15 bytes
        assert seen == ["llava3d-sensors-and-more"] and t.daemon
    finally:
        release.set()
        t.join(10)
    assert Path("/proc/self/comm").read_text().strip() != "llava3d-sensors"  # only that thread
