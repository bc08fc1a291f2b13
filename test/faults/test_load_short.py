"""The load harness in CI: 3 clients × 4 queries against a node fed by a looping 7-Scenes replay."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _load_module():
    spec = importlib.util.spec_from_file_location("bench_load", REPO / "bench" / "bench_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_load_short_loses_nothing(request, tmp_path, capsys):
    h = request.config.pluginmanager.get_plugin(str(REPO / "test" / "conftest.py"))
    data = h.shared_data("7scenes-redkitchen")
    load = _load_module()
    report = load.run_load(
        clients=3, queries=4, timeout=60.0, data=data, domain_id=h.DOMAIN_ID, log_dir=tmp_path
    )
    text = report.format()
    with capsys.disabled():
        print("\n" + text)
    assert report.lost == 0, text
    answered = sum(sum(c.codes.values()) for c in report.clients)
    assert answered == 12, text  # every request came back with a coded answer
    assert set().union(*(c.codes for c in report.clients)) <= {"OK", "BUSY"}, text
    assert sum(c.codes["OK"] for c in report.clients) >= 3, text
    assert report.samples and all(rss > 0 for _, _, rss in report.samples)
