"""``~/query``, ``~/ask`` and ``clicked_point``: a request in, exactly one reply out, then the rest.

The interfaces live on the queries helper node (``helper_nodes.QueryInterfaces``), whose own
executor runs the handlers; they await the query worker (``query/queue``). A request is
converted, validated, rate-limited and queued, or refused at once with a coded answer. Its
reply (service response or action result) is sent before anything optional: the log line,
then ``after_reply`` (``~/answer``, markers, debug image), each step guarded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from llava3d_ros.action import Ask
from llava3d_ros.answer import AnswerResult, QueryError, ResultCode
from llava3d_ros.guard import Guard
from llava3d_ros.msg import Answer
from llava3d_ros.query.answering import AnswerDefaults, validate
from llava3d_ros.query.queue import Job, QueryQueue
from llava3d_ros.query.rate_limit import ClientRateLimiter
from llava3d_ros.query.request import PointClick, QueryRequest
from llava3d_ros.ros import convert
from llava3d_ros.ros.helper_nodes import QueryInterfaces
from llava3d_ros.ros.visuals import RESULT_QOS
from llava3d_ros.srv import Query

# After the last handler returned: time for rclpy to send its reply and for DDS to deliver it
# before the interfaces (and, on SIGTERM, the process) go; 0.2 s lost a result on a loaded CI.
REPLY_SEND_S = 1.0
# stages and tokens come in bursts; a deep history keeps early feedback from being overwritten
FEEDBACK_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


class RepliesInFlight:
    """The ~/query and ~/ask handlers in flight, and when the last one returned its reply.

    rclpy sends a service reply (and an action result) right after the handler coroutine
    returns, with no hook after the send: ``wait`` lets ``REPLY_SEND_S`` pass after the last
    handler returned, for that step and the delivery. Counted from that return, not from the
    call: a goal that the shutdown itself canceled returns just before ``wait`` is called, and
    its result was lost to the teardown when only handlers still running were waited for.
    """

    def __init__(self, log: Any) -> None:
        self._log = log
        self._cv = threading.Condition()
        self._in_flight = 0
        self._last_end = -1e9  # monotonic time the last handler returned

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Count a handler as in flight while it runs."""
        with self._cv:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cv:
                self._in_flight -= 1
                self._last_end = time.monotonic()
                self._cv.notify_all()

    def wait(self, timeout_s: float) -> bool:
        """Until no handler runs and the last reply had time to go out; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._in_flight > 0 and time.monotonic() < deadline:
                self._cv.wait(deadline - time.monotonic())
            left, last_end = self._in_flight, self._last_end
        if left:
            self._log.warning(f"{left} query handlers still running after {timeout_s} s")
            return False
        time.sleep(max(0.0, last_end + REPLY_SEND_S - time.monotonic()))
        return True


class QueryServer:
    """One activation's query side, created on activate and closed on deactivate.

    ``refusal()`` says why no request can be taken now (None when one can: e.g. the query
    worker stopped); ``model_id()`` names the model in every answer; ``after_reply(result,
    msg)`` publishes what follows a reply.
    """

    def __init__(
        self,
        owner: Node,
        queue: QueryQueue,
        limiter: ClientRateLimiter,
        defaults: AnswerDefaults,
        guard: Guard,
        refusal: Callable[[], str | None],
        model_id: Callable[[], str],
        after_reply: Callable[[AnswerResult, Answer], None],
        global_clicks: bool = True,
    ) -> None:
        self.queue, self._limiter, self.defaults = queue, limiter, defaults
        self._guard, self._log = guard, owner.get_logger()
        self._refusal, self._model_id, self._after_reply = refusal, model_id, after_reply
        self._jobs_by_goal: dict[bytes, Job] = {}
        self._replies = RepliesInFlight(self._log)
        self._interfaces = q = QueryInterfaces(owner)
        group = ReentrantCallbackGroup()
        topic = owner.resolve_topic_name  # the lifecycle node's namespace and remappings
        # RViz's Publish Point tool publishes the absolute /clicked_point: a namespaced node
        # listens there too (unless clicked_point_global is off), and on its own clicked_point
        click_topics = {topic("clicked_point")} | ({"/clicked_point"} if global_clicks else set())
        for name in sorted(click_topics):
            q.node.create_subscription(
                PointStamped, name, self._on_clicked_point, RESULT_QOS, callback_group=group
            )
        q.node.create_service(
            Query, owner.resolve_service_name("~/query"), self._on_query, callback_group=group
        )
        self._action: ActionServer | None = ActionServer(
            q.node,
            Ask,
            topic("~/ask"),
            execute_callback=self._on_ask,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=self._on_ask_cancel,
            callback_group=group,
            feedback_pub_qos_profile=FEEDBACK_QOS,
        )

    @property
    def node(self) -> Node:
        return self._interfaces.node

    def start(self) -> None:
        self._interfaces.start()

    def close(self, grace_s: float) -> None:
        """Let the handlers in flight send their replies (at most ``grace_s``), then destroy."""
        self._replies.wait(grace_s)
        if self._action is not None:
            self._action.destroy()
            self._action = None
        self._interfaces.close()

    # ------------------------------------------------------------------ replies
    def submit(
        self,
        prompt: Any,
        done: Callable[[Answer], None],
        on_stage: Callable[[str], None] | None = None,
        on_token: Callable[[str, int], None] | None = None,
    ) -> Job | None:
        """Convert, validate and queue a prompt; ``done`` gets the Answer (at once when refused)."""
        req = QueryRequest()
        try:
            req = prompt if isinstance(prompt, QueryRequest) else convert.prompt_from_msg(prompt)
            why_not = self._refusal()
            if why_not:
                raise QueryError(ResultCode.NOT_READY, why_not)
            req = validate(req, self.defaults)
            if not self._limiter.allow(req.client_id):
                who = repr(req.client_id) if req.client_id else "anonymous callers"
                raise QueryError(
                    ResultCode.BUSY,
                    f"{who} exceeded client_rate_hz={self._limiter.rate_hz:g} "
                    f"(burst {self._limiter.burst}); try again later",
                )
        except convert.ConversionError as exc:
            self._reply(AnswerResult(ResultCode.BAD_REQUEST, str(exc)), req, done)
            return None
        except QueryError as exc:
            self._reply(AnswerResult(exc.code, exc.message), req, done)
            return None
        job = Job(req, lambda result: self._reply(result, req, done), on_stage, on_token)
        if not self.queue.submit(job):
            busy = AnswerResult(ResultCode.BUSY, self.queue.refusal_reason(req.client_id))
            self._reply(busy, req, done)
            return None
        return job

    def _reply(
        self, result: AnswerResult, req: QueryRequest, done: Callable[[Answer], None]
    ) -> None:
        """Send the reply first, then the optional outputs, each guarded (never the reply's loss)."""
        msg = self._answer_msg(result, req)
        try:
            done(msg)
        except Exception as exc:  # the caller's end failed (e.g. its goal is gone); go on
            self._guard.failed("reply", exc)
        self._guard.run("answer log", lambda: self._log_answer(result))
        self._after_reply(result, msg)

    def _answer_msg(self, result: AnswerResult, req: QueryRequest) -> Answer:
        """The Answer message of ``result``; a result that cannot be converted becomes MODEL_ERROR."""
        world = self.defaults.world_frame
        if not result.model:
            result.model = self._model_id()  # say which model even when it was not run
        try:
            return convert.answer_to_msg(result, req, world)
        except Exception as exc:
            self._guard.failed("answer conversion", exc)
            failed = AnswerResult(
                ResultCode.MODEL_ERROR,
                f"the answer could not be converted: {type(exc).__name__}: {exc}",
                model=result.model,
            )
            return convert.answer_to_msg(failed, QueryRequest(), world)

    def _log_answer(self, result: AnswerResult) -> None:
        """Failures and warnings go to the log too (the caller has them in the Answer)."""
        if result.code == ResultCode.MODEL_ERROR:
            self._log.error(f"query failed: MODEL_ERROR: {result.message}")
        elif result.code != ResultCode.OK:
            # callers cause these (and can flood them): one line per second at most
            self._guard.log(
                "query refused",
                "info",
                f"query refused: {ResultCode(result.code).name}: {result.message}",
                period_s=1.0,
            )
        for warning in result.parse_warnings:
            self._guard.log("answer warning", "warning", f"answer warning: {warning}", 1.0)

    # ------------------------------------------------------------------ handlers
    def _completion(self) -> Future:
        fut = Future(executor=self._interfaces.executor)
        fut.add_done_callback(lambda _: None)  # schedules a task, which wakes the executor
        return fut

    async def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        with self._replies.handling():
            fut = self._completion()
            self.submit(request.prompt, fut.set_result)
            response.answer = await fut
            return response

    async def _on_ask(self, goal_handle: Any) -> Ask.Result:
        with self._replies.handling():
            return await self._run_goal(goal_handle)

    async def _run_goal(self, goal_handle: Any) -> Ask.Result:
        fut = self._completion()
        tokens = [0]

        def feedback(fb: Ask.Feedback) -> None:  # optional: a lost feedback never fails a goal
            self._guard.run("feedback", lambda: goal_handle.publish_feedback(fb))

        def stage(name: str) -> None:
            feedback(Ask.Feedback(stage=name, tokens=tokens[0]))

        def token(text: str, n: int) -> None:
            tokens[0] = n
            feedback(Ask.Feedback(stage="decoding", partial_text=text, tokens=n))

        goal = bytes(goal_handle.goal_id.uuid)
        job = self.submit(goal_handle.request.prompt, fut.set_result, stage, token)
        if job is not None:
            self._jobs_by_goal[goal] = job
        answer = await fut
        self._jobs_by_goal.pop(goal, None)
        if answer.code == Answer.CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif answer.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return Ask.Result(answer=answer)

    def _on_ask_cancel(self, goal_handle: Any) -> CancelResponse:
        job = self._jobs_by_goal.get(bytes(goal_handle.goal_id.uuid))
        if job is not None:
            self.queue.cancel(job)
        return CancelResponse.ACCEPT

    def _on_clicked_point(self, msg: PointStamped) -> None:
        p = msg.point
        # at the latest transform: RViz stamps a click with the wall time it was made
        click = PointClick(np.array([p.x, p.y, p.z]), msg.header.frame_id, 0)
        self.submit(QueryRequest(task="caption", clicks=(click,)), lambda answer: None)
