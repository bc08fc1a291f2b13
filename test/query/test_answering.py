"""SceneAnswerer without ROS: out-of-memory retries with fewer views, and the request limits."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from ros.conftest import plane_frame

from llava3d_ros.answer import QueryError, ResultCode
from llava3d_ros.model.engine import Engine
from llava3d_ros.model.tiny import random_bundle
from llava3d_ros.query.answering import AnswerDefaults, SceneAnswerer, validate
from llava3d_ros.query.queue import Job
from llava3d_ros.query.request import PointClick, QueryRequest
from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.frame import Frame


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(random_bundle(seed=2, std=0.3), max_new_tokens=4)


@pytest.fixture
def answerer(engine):
    buf = FrameBuffer(image_size=engine.image_size, patch=engine.image_size // engine.grid)
    for i in range(8):
        f = plane_frame(seed=i)
        pose = np.eye(4)
        pose[0, 3] = 0.3 * i
        buf.add(Frame.from_raw(f["rgb"], f["depth"], f["k"], pose, (i + 1) * 10**9))
    engine.fault_hook = None
    yield SceneAnswerer(buf, threading.Lock(), lambda: engine, AnswerDefaults())
    engine.fault_hook = None


def _oom_above(limit: int, seen: list[int]):
    def hook(stage: str, n_views: int) -> None:
        if stage == "encoding":
            seen.append(n_views)
        if stage == "prefill" and n_views > limit:  # after encoding: a realistic failure point
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    return hook


def test_out_of_memory_retries_with_half_the_views(answerer, engine):
    seen: list[int] = []
    stages: list[str] = []
    engine.fault_hook = _oom_above(2, seen)
    job = Job(QueryRequest("what is here?", max_views=8), lambda r: None, on_stage=stages.append)
    result = answerer.run(job)
    assert result.code == ResultCode.OK, result.message
    assert seen == [8, 4, 2] and len(result.view_stamps_ns) == 2
    assert result.parse_warnings[0] == "out of memory with 8, then 4 views; answered from 2 views"
    assert stages.count("retrying") == 2
    engine.fault_hook = None  # memory is back: the next query uses every view again
    again = answerer.run(Job(QueryRequest("what is here?", max_views=8), lambda r: None))
    assert again.code == ResultCode.OK and len(again.view_stamps_ns) == 8
    assert not again.parse_warnings


def test_out_of_memory_even_with_one_view_is_model_error(answerer, engine):
    seen: list[int] = []
    engine.fault_hook = _oom_above(0, seen)
    result = answerer.run(Job(QueryRequest("what is here?", max_views=5), lambda r: None))
    assert result.code == ResultCode.MODEL_ERROR and result.out_of_memory
    assert seen == [5, 2, 1]
    assert result.message.startswith("out of memory with 5, then 2 views, and with 1:")


def test_a_canceled_query_is_not_retried(answerer, engine):
    seen: list[int] = []
    engine.fault_hook = _oom_above(0, seen)
    job = Job(QueryRequest("what is here?", max_views=8), lambda r: None)
    job.cancel.set()
    result = answerer.run(job)
    assert seen == [8] and result.code == ResultCode.MODEL_ERROR


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (
            QueryRequest("what?", clicks=tuple(PointClick(np.zeros(3)) for _ in range(3))),
            "clicks is 3, the limit is 2 (max_clicks)",
        ),
        (QueryRequest("what?", max_views=17), "max_views is 17, the limit is 16 (max_views_limit)"),
        (
            QueryRequest("what?", max_new_tokens=101),
            "max_new_tokens is 101, the limit is 100 (max_new_tokens_limit)",
        ),
        (QueryRequest("x" * 51), "question is 51 characters, the limit is 50"),
    ],
    ids=["clicks", "views", "new-tokens", "question"],
)
def test_limits_are_bad_request(req, expected):
    d = AnswerDefaults(
        max_clicks=2, max_views_limit=16, max_new_tokens_limit=100, max_question_chars=50
    )
    with pytest.raises(QueryError) as err:
        validate(req, d)
    assert err.value.code == ResultCode.BAD_REQUEST and expected in err.value.message
    at_limit = QueryRequest("what?", max_views=16, max_new_tokens=100)
    assert validate(at_limit, d).max_views == 16
