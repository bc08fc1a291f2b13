"""The query path between the queue and the model: validate, collect views, resolve clicks, answer.

ROS-free: it works on the plain request, the scene core's FrameBuffer and the Engine, and
returns an AnswerResult whose points and boxes are in the world frame (not the aligned one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation

from llava3d_ros.answer import AnswerResult, Box3D, QueryError, ResultCode
from llava3d_ros.geometry.boxes import euler_to_matrix
from llava3d_ros.model.prompts import task_query
from llava3d_ros.query.clicks import ClickResolver, ImageLookup
from llava3d_ros.query.queue import Job
from llava3d_ros.query.request import TASKS, PixelClick, QueryRequest
from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.sync import TransformLookup


@dataclass
class AnswerDefaults:
    """Node defaults a request may leave open, and the limits it must respect."""

    num_views: int = 8
    max_new_tokens: int = 128
    temperature: float = 0.0
    max_question_chars: int = 4000
    world_frame: str = "map"
    max_clicks: int = 8
    max_views_limit: int = 32
    max_new_tokens_limit: int = 2048


def validate(req: QueryRequest, d: AnswerDefaults) -> QueryRequest:
    """The request with defaults filled in, or QueryError(BAD_REQUEST) saying what is wrong."""
    if len(req.question) > d.max_question_chars:
        raise QueryError(
            ResultCode.BAD_REQUEST,
            f"question is {len(req.question)} characters, the limit is {d.max_question_chars}",
        )
    for what, asked, limit, param in (
        ("clicks", len(req.clicks), d.max_clicks, "max_clicks"),
        ("max_views", req.max_views, d.max_views_limit, "max_views_limit"),
        ("max_new_tokens", req.max_new_tokens, d.max_new_tokens_limit, "max_new_tokens_limit"),
    ):
        if asked > limit:
            raise QueryError(
                ResultCode.BAD_REQUEST, f"{what} is {asked}, the limit is {limit} ({param})"
            )
    if req.task not in TASKS:
        raise QueryError(
            ResultCode.BAD_REQUEST, f"unknown task {req.task!r}; expected one of {TASKS}"
        )
    if not np.isfinite(req.temperature):
        raise QueryError(ResultCode.BAD_REQUEST, "temperature must be a finite number")
    for i, c in enumerate(req.clicks):
        coords = (c.u, c.v) if isinstance(c, PixelClick) else tuple(np.ravel(c.xyz))
        if len(coords) not in (2, 3) or not np.all(np.isfinite(coords)):
            raise QueryError(ResultCode.BAD_REQUEST, f"click {i} holds non-finite coordinates")
    task = req.task or ("caption" if req.clicks and not req.question.strip() else "")
    task_query(
        task, req.question, len(req.clicks)
    )  # raises QueryError for what the model cannot take
    return replace(req, task=task).with_defaults(d.max_new_tokens, d.temperature, d.num_views)


class SceneAnswerer:
    """Answers validated requests from the keyframes in ``buffer`` (guarded by ``lock``)."""

    def __init__(
        self,
        buffer: FrameBuffer,
        lock: threading.Lock,
        engine_getter: Callable[[], object | None],
        defaults: AnswerDefaults,
        why_no_scene: Callable[[], str] = lambda: "",
        not_ready_reason: Callable[[], str] = lambda: "the model is not loaded",
        scene_warnings: Callable[[], list[str]] = list,
        images: ImageLookup | None = None,
        transforms: TransformLookup | None = None,
    ) -> None:
        """``images``/``transforms``: what places clicks beyond keyframes and the world frame."""
        self.buffer = buffer
        self.clicks = ClickResolver(buffer, defaults.world_frame, images, transforms)
        self.lock = lock
        self.engine_getter = engine_getter
        self.defaults = defaults
        self.why_no_scene = why_no_scene
        self.not_ready_reason = not_ready_reason
        self.scene_warnings = scene_warnings  # said in every answer while they hold

    def run(self, job: Job) -> AnswerResult:
        """The queue's run function: never raises for a bad request or scene, returns a coded result."""
        try:
            result = self._answer(job)
        except QueryError as exc:
            result = AnswerResult(code=exc.code, message=exc.message)
        result.parse_warnings[:0] = self.scene_warnings()
        return result

    def _answer(self, job: Job) -> AnswerResult:
        req = job.request
        engine = self.engine_getter()
        if engine is None:
            raise QueryError(ResultCode.NOT_READY, self.not_ready_reason())
        if job.on_stage is not None:
            job.on_stage("collecting")
        with self.lock:
            if len(self.buffer) == 0:
                reason = self.why_no_scene()
                raise QueryError(
                    ResultCode.NO_SCENE,
                    "no keyframe received yet" + (f" ({reason})" if reason else ""),
                )
            aligned_clicks = [self.clicks.resolve(i, c) for i, c in enumerate(req.clicks)]
            focus = np.stack(aligned_clicks) if aligned_clicks else None
            scene = self.buffer.views(req.max_views, focus)
        tried: list[int] = []
        while True:
            result = engine.answer(
                scene.views,
                req.question,
                task=req.task,
                click_points=aligned_clicks,
                max_new_tokens=req.max_new_tokens,
                temperature=req.temperature,
                on_token=job.on_token,
                cancel=job.cancel,
                on_stage=job.on_stage,
            )
            if not result.out_of_memory or len(scene.views) <= 1 or job.cancel.is_set():
                break
            # out of memory: the same question from half the views (the clicked ones first)
            tried.append(len(scene.views))
            if job.on_stage is not None:
                job.on_stage("retrying")
            with self.lock:
                scene = self.buffer.views(len(scene.views) // 2, focus)
        if tried:
            note = f"out of memory with {', then '.join(map(str, tried))} views"
            if result.out_of_memory:
                result.message = f"{note}, and with {len(scene.views)}: {result.message}"
            else:
                result.parse_warnings.insert(0, f"{note}; answered from {len(scene.views)} views")
        return to_world(result, scene.alignment)


def to_world(result: AnswerResult, alignment: np.ndarray) -> AnswerResult:
    """Move click points and boxes from the aligned world (the model's frame) to the world frame."""
    if np.array_equal(alignment, np.eye(4)):
        return result
    inv = np.linalg.inv(alignment)
    rot, t = inv[:3, :3], inv[:3, 3]
    result.click_points = [rot @ np.asarray(p, dtype=np.float64) + t for p in result.click_points]
    boxes = []
    for b in result.boxes:
        r = rot @ euler_to_matrix(b.euler)
        euler = Rotation.from_matrix(r).as_euler("ZYX")  # (yaw, pitch, roll) as Box3D stores
        boxes.append(
            Box3D(rot @ np.asarray(b.center, dtype=np.float64) + t, b.size, euler, b.label, b.score)
        )
    result.boxes = boxes
    return result
