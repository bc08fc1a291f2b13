"""The README's main command: `llava3d-ros demo` on the embedded default model, over loopback DDS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava3d_ros.ros.model_loading import EMBEDDED_MODEL_DIR


@pytest.mark.ros
@pytest.mark.slow
def test_demo_runs_the_embedded_model_end_to_end(ros_env: dict[str, str], tmp_path: Path) -> None:
    picture = tmp_path / "demo.png"
    out = subprocess.run(
        [sys.executable, "-m", "llava3d_ros.cli", "demo", "--out", str(picture)],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    name = json.loads((EMBEDDED_MODEL_DIR / "config.json").read_text())["llava3d_ros_name"]
    assert "synthetic" in name and "random-weights" not in name
    for kind in ("[caption]", "[count]", "[ground]"):
        assert kind in out.stdout
    assert out.stdout.count(f"model ({name}") == 3  # every answer names the embedded model
    assert out.stdout.count("truth:") == 3
    # every published view reaches the model, as in eval-synthetic (the node's ingest-rate
    # and keyframe gates once kept about half of them)
    assert out.stdout.count("scene tokens from 8 views]") == 3
    assert picture.stat().st_size > 10_000
