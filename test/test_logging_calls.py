"""Lint: no logging call that can raise at run time.

rclpy's deprecated ``warn`` is a wrapper, so every ``warn(...)`` in a process shares one call
site; the first ``throttle_duration_sec`` used there fixes that site's filter, and any other
period then raises ``ValueError`` (issue 25: lost replies, a dead ingest thread). The package
rate-limits through ``llava3d_ros.guard.Guard.log`` instead, so neither may come back.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    p
    for folder in ("llava3d_ros", "bench", "tools", "test")
    for p in sorted((REPO / folder).rglob("*.py"))
    if "msg" not in p.relative_to(REPO).parts[:2]
]


def _offences(source: str, name: str) -> list[str]:
    tree = ast.parse(source, filename=name)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{name}:{node.lineno}"
        if isinstance(node.func, ast.Attribute) and node.func.attr == "warn":
            out.append(f"{where}: .warn( (use .warning()")
        if any(k.arg == "throttle_duration_sec" for k in node.keywords):
            out.append(f"{where}: throttle_duration_sec (use Guard.log)")
    return out


def test_no_deprecated_warn_or_call_site_throttles() -> None:
    assert SOURCES, "no sources found"
    offences = [o for p in SOURCES for o in _offences(p.read_text(), str(p.relative_to(REPO)))]
    assert not offences, "\n".join(offences)


def test_the_lint_sees_both_patterns() -> None:
    bad = "log.warn('x')\nlog.info('y', throttle_duration_sec=1.0)\n"
    assert len(_offences(bad, "probe.py")) == 2
