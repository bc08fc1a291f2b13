"""Box parsing from generated text, including malformed numbers, and the sampling helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llava3d_ros.answer import QueryError
from llava3d_ros.model.answers import parse_boxes
from llava3d_ros.model.generate import SamplingConfig, pick_token


def test_six_and_nine_value_boxes() -> None:
    text = (
        "The chair is localized at [1.0, -2.5, 0.45, 0.6, 0.5, 0.9]. "
        "The bed is at [0, 1, 0.3, 2.0, 1.6, 0.6, 1.57, 0, 0]."
    )
    boxes, warnings = parse_boxes(text)
    assert warnings == [] and len(boxes) == 2
    np.testing.assert_allclose(boxes[0].center, [1.0, -2.5, 0.45])
    np.testing.assert_allclose(boxes[0].size, [0.6, 0.5, 0.9])
    np.testing.assert_allclose(boxes[0].euler, 0.0)
    np.testing.assert_allclose(boxes[1].euler, [1.57, 0, 0])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("at [1.0, 2.0, x, 1, 1, 1]", "not a finite number: 'x'"),
        ("at [1.0, 2.0, 3.0]", "expected 6 or 9 numbers, got 3"),
        ("at [1, 2, 3, 0, 1, 1]", "positive"),
        ("at [1, 2, 3, nan, 1, 1]", "finite"),
        ("at [cx, cy, cz, dx, dy, dz]", "not a finite number"),
        ("at []", "got 0"),
    ],
)
def test_malformed_boxes_become_warnings(text, needle) -> None:
    boxes, warnings = parse_boxes(text)
    assert boxes == [] and len(warnings) == 1 and needle in warnings[0]


def test_good_box_survives_a_bad_neighbour() -> None:
    boxes, warnings = parse_boxes("[1,2,3,1,1,1] and [1,2,,3] and [4, 5, 6, 0.1, 0.2, 0.3]")
    assert len(boxes) == 2 and len(warnings) == 1
    np.testing.assert_allclose(boxes[1].center, [4, 5, 6])


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("[]0123456789.,-e +naif"), max_size=60))
def test_parser_never_crashes(text) -> None:
    boxes, warnings = parse_boxes(text)
    assert all(np.all(b.size > 0) and np.all(np.isfinite(b.center)) for b in boxes)
    assert isinstance(warnings, list)


def test_greedy_and_top_p() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    assert pick_token(logits, SamplingConfig(temperature=0.0), None) == 1
    # top_p small enough keeps only the best token, whatever the seed
    cfg = SamplingConfig(temperature=1.0, top_p=0.3)
    for seed in range(20):
        assert pick_token(logits, cfg, torch.Generator().manual_seed(seed)) == 1
    cfg = SamplingConfig(temperature=1.0, top_p=0.9)
    seen = {pick_token(logits, cfg, torch.Generator().manual_seed(s)) for s in range(60)}
    assert seen == {1, 2}


def test_sampling_config_is_validated() -> None:
    with pytest.raises(QueryError):
        SamplingConfig(max_new_tokens=0)
    with pytest.raises(QueryError):
        SamplingConfig(top_p=0.0)
