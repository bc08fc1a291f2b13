"""Watching a child process from outside (ROS-free): CPU/RSS sampling, stopping, summaries.

Shared by ``llava3d-ros soak`` (``llava3d_ros/soak.py``) and the load benchmark
(``bench/bench_load.py``): a background sampler of a process's CPU % and RSS, SIGINT-then-SIGKILL,
RSS growth after warm-up, latency percentiles and the RSS-over-time line of their reports.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Sequence

import numpy as np
import psutil

Sample = tuple[float, float, float]
"""One sample: (seconds since the sampler's ``t0``, CPU %, RSS MiB)."""


class ProcessSampler:
    """Samples a process's CPU % and RSS once per ``period`` seconds on a background thread.

    Sampling ends by itself when the process is gone; ``close()`` stops it and returns the
    samples. ``t0`` (a ``time.monotonic()`` value, default now) is the zero of the samples' times.
    """

    def __init__(self, pid: int, period: float = 1.0, t0: float | None = None) -> None:
        self.proc = psutil.Process(pid)
        self.period = period
        self.t0 = time.monotonic() if t0 is None else t0
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.proc.cpu_percent(None)  # the first call only starts psutil's CPU interval
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                cpu = self.proc.cpu_percent(None)
                rss = self.proc.memory_info().rss / 2**20
            except psutil.Error:
                return
            self.samples.append((time.monotonic() - self.t0, cpu, rss))

    def close(self, timeout: float = 5.0) -> list[Sample]:
        """Stop sampling (waiting up to ``timeout`` s for the thread) and return the samples."""
        self._stop.set()
        self._thread.join(timeout)
        return self.samples


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT, then SIGKILL if it does not exit within ``timeout`` seconds; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def rss_growth(rss: Sequence[float], skip_quarters: int = 0, min_samples: int = 4) -> float:
    """Relative RSS growth between two quarters of ``rss`` (MiB over time); NaN when too short.

    The start is the mean of quarter ``skip_quarters`` (0: the first quarter, 1: the second,
    leaving the first as warm-up), the end the mean of the last quarter.
    """
    if len(rss) < max(min_samples, 4 * (skip_quarters + 1)):
        return float("nan")
    q = len(rss) // 4
    start = float(np.mean(rss[skip_quarters * q : (skip_quarters + 1) * q]))
    end = float(np.mean(rss[-q:]))
    return (end - start) / start


def latency_percentiles(latencies: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p90, p99) of ``latencies`` in their unit (raises on an empty sequence)."""
    p50, p90, p99 = np.percentile(np.asarray(latencies, dtype=float), [50, 90, 99])
    return float(p50), float(p90), float(p99)


def rss_trend(samples: Sequence[Sample], points: int) -> str:
    """About ``points`` samples of RSS over time, ``"12s:345  24s:350 …"`` (seconds, MiB)."""
    step = max(1, len(samples) // points)
    return "  ".join(f"{t:.0f}s:{r:.0f}" for t, _, r in samples[::step])
