"""Fuzz prompt building, tokenisation and answer parsing on random unicode with sentinels."""

from __future__ import annotations

import functools
import math
import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from llava3d_ros.answer import QueryError, ResultCode
from llava3d_ros.model.answers import parse_boxes
from llava3d_ros.model.prompts import (
    BOX_TOKEN_INDEX,
    IMAGE_TOKEN_INDEX,
    build_prompt,
    split_at_image,
    task_query,
    tokenize_prompt,
)
from llava3d_ros.model.tiny import train_tokenizer
from llava3d_ros.model.tokenizer import SpTokenizer

from .profile import check_rejection, count, fuzz

_FRAGMENTS = ["<image>", "<boxes>", "<image", "boxes>", "<", ">", " ", "\n", "\x00", "ASSISTANT:"]
_text = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(_FRAGMENTS)), max_size=8).map(
    "".join
)


@functools.cache
def tokenizer() -> SpTokenizer:
    return SpTokenizer(train_tokenizer())


@fuzz
@given(
    task=st.one_of(st.sampled_from(["", "qa", "caption", "ground"]), st.text(max_size=6)),
    question=_text,
    n_clicks=st.integers(0, 6),
)
def test_prompt_builds_and_tokenises_or_is_a_bad_request(
    task: str, question: str, n_clicks: int
) -> None:
    count("task_query → prompt → token ids")
    try:
        query = task_query(task, question, n_clicks)
    except QueryError as exc:
        check_rejection(exc)
        assert exc.code == ResultCode.BAD_REQUEST
        return
    tok = tokenizer()
    ids = tokenize_prompt(build_prompt(query), tok)
    before, after = split_at_image(ids)  # exactly one scene placeholder, whatever was asked
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert ids.count(BOX_TOKEN_INDEX) == (0 if (task or "qa") == "ground" else n_clicks)
    vocab = tok.sp.GetPieceSize()
    assert all(0 <= i < vocab for i in ids if i not in (IMAGE_TOKEN_INDEX, BOX_TOKEN_INDEX))
    assert before[0] == tok.bos_id and tok.bos_id not in before[1:] + after


_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["nan", "inf", "-0", "1e999", "", " ", "0x10", "1_0", "١٢"]),
    st.text(max_size=4),
)
_bracket = st.lists(_number, max_size=10).map(lambda xs: "[" + ", ".join(xs) + "]")
_answer = st.lists(
    st.one_of(st.text(max_size=10), _bracket, st.sampled_from(["[", "]", ","])), max_size=8
).map("".join)


@fuzz
@given(text=_answer)
def test_answer_parsing_never_fails_and_keeps_only_valid_boxes(text: str) -> None:
    count("parse_boxes(answer text)")
    boxes, warnings = parse_boxes(text)
    for b in boxes:
        assert np.isfinite(b.center).all() and np.isfinite(b.euler).all()
        assert np.all(b.size > 0) and np.isfinite(b.size).all()
    assert all(w.strip() for w in warnings), "every skipped bracket says why"
    # every innermost [...] group is either a box or a warning, none silently dropped
    assert len(boxes) + len(warnings) == len(re.findall(r"\[[^\[\]]*\]", text))


@fuzz
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=6, max_size=6), angles=st.booleans())
def test_well_formed_boxes_parse_exactly(values: list[float], angles: bool) -> None:
    count("parse_boxes(well-formed box)")
    values[3:6] = [abs(x) + 1e-3 for x in values[3:6]]
    full = values + ([0.1, -0.2, 0.3] if angles else [])
    boxes, warnings = parse_boxes("It is at " + "[" + ", ".join(repr(x) for x in full) + "].")
    assert not warnings and len(boxes) == 1
    np.testing.assert_array_equal(boxes[0].center, values[:3])
    np.testing.assert_array_equal(boxes[0].size, values[3:6])
    assert math.isclose(boxes[0].euler[1], -0.2 if angles else 0.0)
