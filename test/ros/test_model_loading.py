"""The node's engine is built from its parameters: the box grammar follows ``constrain_boxes``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from llava3d_ros.ros.model_loading import load_engine
from llava3d_ros.ros.params import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("constrain", [True, False])
def test_constrain_boxes_reaches_the_engine(constrain: bool) -> None:
    values = yaml.safe_load((REPO / "config" / "cpu_tiny.yaml").read_text())["/**"]
    settings = replace(Settings.from_values(values["ros__parameters"]), constrain_boxes=constrain)
    engine = load_engine(settings)
    assert (engine.box_grammar is not None) == constrain
    assert values["ros__parameters"]["constrain_boxes"] is True  # on by default
