"""The Answer's boxes as vision_msgs/Detection3DArray."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

pytest.importorskip("vision_msgs.msg")

from vision_msgs.msg import Detection3DArray  # noqa: E402

from llava3d_ros.answer import AnswerResult, Box3D, ResultCode  # noqa: E402
from llava3d_ros.query.request import QueryRequest  # noqa: E402
from llava3d_ros.ros import convert  # noqa: E402
from llava3d_ros.ros.detections import detections_msg, hypothesis_score  # noqa: E402

BOXES = [
    Box3D(
        np.array([1.0, 2.0, 0.5]),
        np.array([0.4, 0.6, 1.0]),
        np.array([math.pi / 2, 0, 0]),
        "chair",
        0.8,
    ),
    Box3D(np.array([-1.0, 0.0, 0.3]), np.array([1.2, 0.8, 0.75]), label="table"),  # no score
]


@pytest.fixture
def answer():
    res = AnswerResult(
        code=ResultCode.OK, text="...", boxes=BOXES, view_stamps_ns=[7, 9_000_000_001]
    )
    return convert.answer_to_msg(res, QueryRequest("q"), "map")


def _quat(pose) -> list[float]:
    q = pose.orientation
    return [q.x, q.y, q.z, q.w]


def test_one_detection_per_object_with_the_answers_header(answer) -> None:
    msg = detections_msg(answer.header, answer.objects)
    assert isinstance(msg, Detection3DArray) and len(msg.detections) == 2
    assert msg.header == answer.header and msg.header.frame_id == "map"
    assert convert.stamp_to_ns(msg.header.stamp) == 9_000_000_001
    assert all(d.header == answer.header for d in msg.detections)
    assert [d.id for d in msg.detections] == ["0", "1"]
    assert msg.header is not answer.header  # a copy: later edits of one leave the other alone
    assert len(detections_msg(answer.header, []).detections) == 0


def test_box_label_score_and_orientation(answer) -> None:
    chair, table = detections_msg(answer.header, answer.objects).detections
    assert len(chair.results) == 1
    hyp = chair.results[0]
    assert hyp.hypothesis.class_id == "chair" and hyp.hypothesis.score == pytest.approx(0.8)
    assert table.results[0].hypothesis.class_id == "table"
    assert table.results[0].hypothesis.score == 0.0  # NaN (no score) → 0
    c = chair.bbox.center
    assert (c.position.x, c.position.y, c.position.z) == pytest.approx((1.0, 2.0, 0.5))
    assert (chair.bbox.size.x, chair.bbox.size.y, chair.bbox.size.z) == pytest.approx(
        (0.4, 0.6, 1.0)
    )
    # yaw 90°: the box's x axis points along world y
    rot = Rotation.from_quat(_quat(c)).as_matrix()
    np.testing.assert_allclose(rot @ [1, 0, 0], [0, 1, 0], atol=1e-9)
    assert hyp.pose.pose == c and _quat(hyp.pose.pose) == _quat(answer.objects[0].center)
    np.testing.assert_allclose(_quat(table.bbox.center), [0, 0, 0, 1], atol=1e-12)  # axis-aligned


def test_boxes_convert_like_the_answer(answer) -> None:
    from_boxes = detections_msg(answer.header, BOXES)
    assert from_boxes == detections_msg(answer.header, answer.objects)


@pytest.mark.parametrize(("score", "want"), [(math.nan, 0.0), (0.3, 0.3), (1.2, 1.0), (-0.1, 0.0)])
def test_hypothesis_score_is_in_unit_range(score: float, want: float) -> None:
    assert hypothesis_score(score) == pytest.approx(want)
