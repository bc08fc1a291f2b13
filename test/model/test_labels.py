"""Box labels: the grounded phrase, the object a caption names, or the words before the box."""

from __future__ import annotations

import pytest

from llava3d_ros.model.answers import parse_boxes_with_spans
from llava3d_ros.model.labels import box_labels, caption_label, grounding_label, label_before
from llava3d_ros.model.prompts import task_query

BOX = "[1, 2, 0.5, 0.4, 0.4, 0.9]"


@pytest.mark.parametrize(
    ("question", "label"),
    [
        ("the red chair next to the window", "the red chair next to the window"),
        ('  "The red chair."  ', "The red chair"),
        ("Where is the lamp?", "Where is the lamp"),  # the phrase as asked, punctuation aside
        # a client that pasted the whole reference prompt
        (task_query("ground", "a white pillow", 0), "a white pillow"),
        ('"a lamp" please provide its coordinates.', "a lamp"),
    ],
)
def test_grounding_label_is_the_description(question: str, label: str) -> None:
    assert grounding_label(question) == label


@pytest.mark.parametrize(
    ("caption", "label"),
    [
        ("This is a brown wooden chair with a soft cushion.", "brown wooden chair"),
        ("A white pillow on the bed.", "white pillow"),
        ("The object is a tall floor lamp standing in the corner.", "tall floor lamp"),
        ("There is a pair of shoes near the door.", "pair of shoes"),
        ("The chair is brown. It has four legs.", "chair"),
        (
            "It appears to be a large brown leather office chair, facing the desk.",
            "brown leather office chair",
        ),
        (f"A table {BOX} in the kitchen.", "table"),
        ("", ""),
    ],
)
def test_caption_label_is_the_named_object(caption: str, label: str) -> None:
    assert caption_label(caption) == label


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        (f"The chair is located at {BOX}.", ["chair"]),
        (
            f"There is a chair {BOX}, a table {BOX} and a big red lamp {BOX}.",
            ["chair", "table", "big red lamp"],
        ),
        (f"The 1.5 m tall lamp: {BOX}", ["1.5 m tall lamp"]),
        (f"I see a large brown leather office chair at {BOX}", ["brown leather office chair"]),
        (f"{BOX}", [""]),  # nothing before it
        (f"It is at {BOX}", [""]),  # only placing words
        (f"The sofa. {BOX}", [""]),  # another sentence
    ],
)
def test_label_before_the_bracket(text: str, labels: list[str]) -> None:
    _, spans, _ = parse_boxes_with_spans(text)
    assert [label_before(text, s) for s, _ in spans] == labels


def test_box_labels_by_task() -> None:
    text = f"The sofa is at {BOX} and a chair {BOX}."
    _, spans, _ = parse_boxes_with_spans(text)
    assert box_labels("", "Where is the sofa?", text, spans) == ["sofa", "chair"]
    assert box_labels("qa", "Where is the sofa?", text, spans) == ["sofa", "chair"]
    assert box_labels("ground", "the grey sofa", text, spans) == ["the grey sofa"] * 2
    assert box_labels("caption", "", text, spans) == ["sofa"] * 2
    # a rule that finds no words falls back to the words before each box
    placing = f"It is at {BOX}, a chair {BOX}"
    _, placing_spans, _ = parse_boxes_with_spans(placing)
    assert box_labels("caption", "", placing, placing_spans) == ["", "chair"]
    assert box_labels("ground", '""', text, spans) == ["sofa", "chair"]
