"""The research probes run as modules of the package (``python -m llava3d_ros.synthetic.probe_*``)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["probe_position_binding", "probe_token_features"])
def test_probe_module_runs_and_explains_itself(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", f"llava3d_ros.synthetic.{module}", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"python -m llava3d_ros.synthetic.{module}" in out.stdout
