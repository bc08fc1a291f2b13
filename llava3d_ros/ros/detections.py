"""An Answer's grounded boxes as ``vision_msgs/Detection3DArray``, for perception consumers.

Built from the very GroundedObjects the Answer carries (world frame), so both always agree.
Only the converter lives here; publishing it is the node's business.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox3D,
    Detection3D,
    Detection3DArray,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
)

from llava3d_ros.answer import Box3D
from llava3d_ros.msg import GroundedObject
from llava3d_ros.ros.convert import grounded_object


def hypothesis_score(score: float) -> float:
    """``GroundedObject.score`` as a vision_msgs score in [0, 1]: NaN (no score) → 0.0."""
    if math.isnan(score):
        return 0.0
    return min(1.0, max(0.0, float(score)))


def detections_msg(header: Header, objects: Sequence[GroundedObject | Box3D]) -> Detection3DArray:
    """One Detection3D per object, in order, all stamped with ``header`` (the Answer's).

    ``id`` = the object's index in the Answer; one hypothesis: ``class_id`` = label,
    ``score`` = :func:`hypothesis_score`, ``pose.pose`` = the box centre (covariance left
    zero: unknown); ``bbox`` = centre pose (with orientation) and full extents. World-frame
    ``Box3D`` values are converted exactly as the Answer converts them.
    """
    out = Detection3DArray(header=copy.deepcopy(header))
    for i, obj in enumerate(objects):
        if isinstance(obj, Box3D):
            obj = grounded_object(obj)
        hyp = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=obj.label, score=hypothesis_score(obj.score))
        )
        hyp.pose.pose = copy.deepcopy(obj.center)
        det = Detection3D(
            header=copy.deepcopy(header),
            results=[hyp],
            bbox=BoundingBox3D(center=copy.deepcopy(obj.center), size=copy.deepcopy(obj.size)),
            id=str(i),
        )
        out.detections.append(det)
    return out
