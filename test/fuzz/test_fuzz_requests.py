"""Fuzz the request path a caller reaches: Prompt message → plain request → validation and limits."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from llava3d_ros.answer import QueryError, ResultCode
from llava3d_ros.msg import Click, Prompt
from llava3d_ros.query.answering import AnswerDefaults, validate
from llava3d_ros.ros.convert import ConversionError, prompt_from_msg

from .profile import check_rejection, count, fuzz

_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
_doubles = st.floats(allow_nan=True, allow_infinity=True)
_uint32 = st.integers(0, 2**32 - 1)


@st.composite
def clicks(draw) -> Click:
    c = Click(kind=draw(st.integers(0, 255)), u=draw(_floats), v=draw(_floats))
    c.stamp.sec = draw(st.integers(-(2**31), 2**31 - 1))
    c.stamp.nanosec = draw(st.integers(0, 2**32 - 1))
    c.point.header.frame_id = draw(st.sampled_from(["", "map", "base_link", "\x00"]))
    c.point.point.x, c.point.point.y, c.point.point.z = (draw(_doubles) for _ in range(3))
    return c


@fuzz
@given(
    question=st.one_of(st.text(max_size=60), st.just("x" * 5000)),
    task=st.one_of(st.sampled_from(["", "qa", "caption", "ground"]), st.text(max_size=6)),
    clicks=st.lists(clicks(), max_size=12),
    max_new_tokens=_uint32,
    temperature=_floats,
    max_views=_uint32,
    client_id=st.text(max_size=20),
)
def test_prompt_is_a_valid_request_or_a_coded_refusal(
    question, task, clicks, max_new_tokens, temperature, max_views, client_id
) -> None:
    count("Prompt → request → validate")
    msg = Prompt(
        question=question,
        task=task,
        clicks=clicks,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        max_views=max_views,
        client_id=client_id,
    )
    d = AnswerDefaults()
    try:
        req = validate(prompt_from_msg(msg), d)
    except (ConversionError, QueryError) as exc:
        check_rejection(exc)
        if isinstance(exc, QueryError):
            assert exc.code == ResultCode.BAD_REQUEST
        return
    # accepted: every limit holds and every number the model will see is usable
    assert len(req.question) <= d.max_question_chars and len(req.clicks) <= d.max_clicks
    assert 1 <= req.max_views <= d.max_views_limit
    assert 1 <= req.max_new_tokens <= d.max_new_tokens_limit
    assert math.isfinite(req.temperature) and req.temperature >= 0  # < 0 became the default
    assert req.task in ("qa", "caption", "ground", "") and req.client_id == client_id
    assert all(math.isfinite(x) for c in req.clicks for x in _coords(c))


def _coords(c) -> tuple[float, ...]:
    return (c.u, c.v) if hasattr(c, "u") else tuple(float(x) for x in c.xyz)
