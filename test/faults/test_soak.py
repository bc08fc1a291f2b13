"""``llava3d-ros soak --minutes 0.2`` runs node + replay, queries, and prints its report."""

from __future__ import annotations

import re

import pytest

from .conftest import harness

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_soak_short_reports(request, ros_env):
    h = harness(request.config)
    data = h.shared_data("7scenes-redkitchen")
    done = h.run_cli(["soak", "--minutes", "0.2", "--data", str(data)], ros_env, timeout=120)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "node: alive at the end" in out, out
    sent, ok, lost = map(
        int, re.search(r"requests: (\d+) sent, (\d+) OK, (\d+) lost", out).groups()
    )
    assert sent >= 5 and lost == 0 and ok >= 1, out
    assert re.search(r"answers by code: .*OK \d+", out), out
    assert re.search(r"RSS growth after warm-up: [+-]\d+\.\d%", out), out
    assert len(out.strip().splitlines()) <= 24  # one screen


def test_soak_refuses_a_non_positive_duration(request, ros_env):
    done = harness(request.config).run_cli(["soak", "--minutes", "0"], ros_env, timeout=60)
    assert done.returncode == 2 and "--minutes must be > 0" in done.stderr
