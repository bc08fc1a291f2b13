"""Fuzz suite: prints how many generated cases each property test ran."""

from __future__ import annotations

import pytest

from .profile import CASES, LONG


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASES:
        return
    tr = terminalreporter
    tr.section(f"fuzz cases ({'long' if LONG else 'ci'} profile)")
    for name, n in sorted(CASES.items()):
        tr.write_line(f"{n:7d}  {name}")
    tr.write_line(f"{sum(CASES.values()):7d}  total")
