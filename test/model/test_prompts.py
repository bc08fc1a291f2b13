"""Prompt text, sentinel placement and token ids against a transcription of upstream's tokeniser."""

from __future__ import annotations

import re

import pytest

from llava3d_ros.answer import QueryError, ResultCode
from llava3d_ros.model.prompts import (
    BOX_TOKEN_INDEX,
    IMAGE_TOKEN_INDEX,
    build_prompt,
    scene_token_budget,
    split_at_image,
    task_query,
    tokenize_prompt,
)
from llava3d_ros.model.tiny import train_tokenizer
from llava3d_ros.model.tokenizer import SpTokenizer


class _HFStyle:
    """What upstream called: ``tokenizer(text).input_ids`` of the slow LLaMA tokenizer."""

    def __init__(self, sp: SpTokenizer) -> None:
        self.sp = sp.sp
        self.bos_token_id = sp.bos_id

    def __call__(self, text: str):
        class _Out:
            input_ids = [1] + self.sp.encode(text)

        return _Out()


def upstream_tokenizer_special_token(
    prompt, tokenizer, image_token_index=-200, box_token_index=-300
):
    """Straight transcription of LLaVA-3D's ``llava/mm_utils.py::tokenizer_special_token``."""
    separators = re.compile(r"(<image>|<boxes>)")
    input_ids = []
    offset = 0
    prompt_chunks = separators.split(prompt)
    first_chunk = tokenizer(prompt_chunks[0]).input_ids
    if first_chunk[0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(first_chunk[0])
    for prompt_chunk in prompt_chunks:
        if prompt_chunk not in ["<image>", "<boxes>"]:
            input_ids.extend(tokenizer(prompt_chunk).input_ids[offset:])
        elif prompt_chunk == "<image>":
            input_ids.extend([image_token_index])
        elif prompt_chunk == "<boxes>":
            input_ids.extend([box_token_index])
    return input_ids


UPSTREAM_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions."
)
CASES = [
    ("qa", "What is next to the sofa?", 0),
    ("qa", "Are these two objects similar in size?", 2),
    ("caption", "", 1),
    ("caption", "", 3),
    ("ground", "the brown chair under the window", 0),
    ("qa", "Is <boxes> left of <boxes>?", 2),
    ("qa", "  how many   chairs?\n", 0),
]


@pytest.fixture(scope="module")
def tok() -> SpTokenizer:
    return SpTokenizer(train_tokenizer())


@pytest.mark.parametrize(("task", "question", "n_clicks"), CASES)
def test_ids_match_upstream(tok, task, question, n_clicks) -> None:
    prompt = build_prompt(task_query(task, question, n_clicks))
    assert prompt.startswith(UPSTREAM_SYSTEM + " USER: <image>\n") and prompt.endswith(
        " ASSISTANT:"
    )
    ours = tokenize_prompt(prompt, tok)
    assert ours == upstream_tokenizer_special_token(prompt, _HFStyle(tok))
    assert ours[0] == tok.bos_id and ours.count(tok.bos_id) == 1
    assert ours.count(IMAGE_TOKEN_INDEX) == 1 and ours.count(BOX_TOKEN_INDEX) == n_clicks


def test_reference_wording() -> None:
    assert task_query("caption", "", 1) == (
        "The related object is located at <boxes>. Describe the object in detail."
    )
    assert task_query("qa", "Are these two objects similar in size?", 2) == (
        "The related objects are located at <boxes>, <boxes>. Are these two objects similar in size?"
    )
    assert task_query("ground", "a red cup", 0) == (
        '"a red cup" Which object best matches the given description? Please provide its coordinates.'
    )


def test_prefix_is_query_independent(tok) -> None:
    a, _ = split_at_image(tokenize_prompt(build_prompt("one"), tok))
    b, rest = split_at_image(tokenize_prompt(build_prompt("something else <boxes>"), tok))
    assert a == b and rest.count(BOX_TOKEN_INDEX) == 1


@pytest.mark.parametrize(
    ("task", "question", "n_clicks", "match"),
    [
        ("translate", "x", 0, "unknown task"),
        ("qa", "", 0, "empty"),
        ("qa", "a <image> b", 0, "<image>"),
        ("qa", "<boxes> and <boxes>", 1, "2 <boxes>"),
        ("caption", "", 0, "at least one click"),
        ("ground", "", 0, "description"),
        ("ground", "a cup", 1, "no click"),
    ],
)
def test_bad_requests(task, question, n_clicks, match) -> None:
    with pytest.raises(QueryError, match=match) as err:
        task_query(task, question, n_clicks)
    assert err.value.code == ResultCode.BAD_REQUEST


def test_budget_caps_scene_then_refuses() -> None:
    assert scene_token_budget(60, 0, 512, 2560, 4096) == 2560
    assert scene_token_budget(1500, 2, 512, 2560, 4096) == 4096 - 1500 - 2 - 512
    with pytest.raises(QueryError, match="no room") as err:
        scene_token_budget(3700, 0, 512, 2560, 4096)
    assert err.value.code == ResultCode.BAD_REQUEST
