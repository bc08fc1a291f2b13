"""procstats: the process sampler, stop-and-kill and the summaries soak and bench_load report."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import numpy as np
import pytest

from llava3d_ros.procstats import (
    ProcessSampler,
    latency_percentiles,
    rss_growth,
    rss_trend,
    stop_process,
)


def test_rss_growth_from_the_first_quarter_or_after_a_warm_up_quarter():
    rss = [100.0] * 4 + [110.0] * 4 + [120.0] * 4 + [130.0] * 4
    assert rss_growth(rss) == pytest.approx(0.30)  # first quarter 100 → last 130
    assert rss_growth(rss, skip_quarters=1, min_samples=8) == pytest.approx(130 / 110 - 1)
    assert math.isnan(rss_growth(rss[:3]))
    assert math.isnan(rss_growth(rss[:7], skip_quarters=1, min_samples=8))
    assert rss_growth([50.0, 50.0, 50.0, 75.0]) == pytest.approx(0.5)  # quarters of one sample


def test_latency_percentiles_and_rss_trend():
    p50, p90, p99 = latency_percentiles([float(x) for x in range(1, 101)])
    assert (p50, p90, p99) == tuple(np.percentile(np.arange(1, 101), [50, 90, 99]))
    samples = [(float(t), 10.0, 100.0 + t) for t in range(20)]
    assert rss_trend(samples, 10) == "  ".join(f"{t}s:{100 + t}" for t in range(0, 20, 2))
    assert rss_trend(samples[:3], 10) == "0s:100  1s:101  2s:102"


def test_sampler_watches_a_child_and_stop_process_ends_it():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sampler = ProcessSampler(child.pid, period=0.05)
        time.sleep(0.5)
        samples = sampler.close()
        assert len(samples) >= 3
        assert all(rss > 0 and cpu >= 0 for _, cpu, rss in samples)
        assert [t for t, _, _ in samples] == sorted(t for t, _, _ in samples)
    finally:
        code = stop_process(child, timeout=5.0)
    assert code != 0 and child.poll() is not None  # interrupted by SIGINT


def test_stop_process_kills_a_child_that_ignores_sigint():
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    child.stdout.readline()  # the handler is installed
    start = time.monotonic()
    assert stop_process(child, timeout=0.5) == -9
    assert time.monotonic() - start < 5
    child.stdout.close()
