"""The GPU benchmark: its CPU smoke path runs end to end (tiny model); without CUDA it skips."""

from __future__ import annotations

import os
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
            str(ROOT / "bench" / "bench_gpu_7b.py"),
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


def test_gpu_bench_without_cuda_says_skipped_and_passes() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA device, whatever the machine
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu_7b.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skipped: no CUDA device" in out.stdout
