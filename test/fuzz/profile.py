"""Hypothesis settings of the fuzz suite: a small CI profile, a long one with LLAVA3D_FUZZ=long."""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings

LONG = os.environ.get("LLAVA3D_FUZZ", "").lower() == "long"

# Cases generated per test; the long run spreads >= 10,000 cases over the suite's tests.
CI_EXAMPLES = 40
LONG_EXAMPLES = 1300

fuzz = settings(
    max_examples=LONG_EXAMPLES if LONG else CI_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not LONG,  # CI is reproducible; the long run explores new seeds every time
    database=None,
)

# test name → generated cases actually run, reported by the conftest at the end of the session
CASES: Counter[str] = Counter()


def count(name: str) -> None:
    """Record one generated case of test ``name``."""
    CASES[name] += 1


def check_rejection(exc: BaseException) -> None:
    """A rejection must say why: a non-empty message (and a code for QueryError)."""
    from llava3d_ros.answer import QueryError, ResultCode

    assert str(exc).strip(), f"{type(exc).__name__} without a message"
    if isinstance(exc, QueryError):
        assert isinstance(exc.code, ResultCode) and exc.code != ResultCode.OK
        assert exc.message.strip()
