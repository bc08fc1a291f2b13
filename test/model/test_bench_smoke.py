"""The GPU benchmark's CPU smoke path runs end to end (tiny model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_tiny_smoke() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_7b.py"),
            "--tiny",
            "--views",
            "4",
            "--new-tokens",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| cold" in out.stdout and "| warm 2" in out.stdout and "random-weights" in out.stdout
