"""A client for the node's ``~/query`` service and ``~/ask`` action (``llava3d-ros query``, tests)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.action import ActionClient
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from unique_identifier_msgs.msg import UUID

from llava3d_ros.action import Ask
from llava3d_ros.answer import ResultCode
from llava3d_ros.msg import Answer, Click, Prompt
from llava3d_ros.ros.convert import answer_summary, ns_to_stamp
from llava3d_ros.srv import Query


class ClientError(RuntimeError):
    """The node could not be reached or did not answer in time."""


def make_prompt(
    question: str = "",
    task: str = "",
    clicks: tuple[tuple[float, float, int], ...] = (),
    points: tuple[tuple[float, float, float], ...] = (),
    world_frame: str = "",
    max_new_tokens: int = 0,
    temperature: float = -1.0,
    max_views: int = 0,
    client_id: str = "",
) -> Prompt:
    """A Prompt from plain values: pixel clicks (u, v, stamp_ns) and 3D points (x, y, z)."""
    p = Prompt(
        question=question,
        task=task,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        max_views=max_views,
        client_id=client_id,
    )
    for u, v, stamp in clicks:
        p.clicks.append(
            Click(kind=Click.PIXEL, u=float(u), v=float(v), stamp=ns_to_stamp(int(stamp)))
        )
    for x, y, z in points:
        c = Click(kind=Click.POINT)
        c.point.header.frame_id = world_frame
        c.point.point.x, c.point.point.y, c.point.point.z = float(x), float(y), float(z)
        p.clicks.append(c)
    return p


class Llava3dClient:
    """Owns a node spinning on a background thread; calls block until the answer or a timeout.

    Feedback of ``~/ask`` comes through a subscription of this client's own, not through
    rclpy's ActionClient: that one forgets a goal's feedback callback as soon as the result is
    handled, so feedback still queued behind the result (a short answer on a loaded machine)
    was dropped. Here a goal's callback stays registered for ``FEEDBACK_GRACE_S`` after its
    result, since feedback and result travel on different topics and may arrive in any order.
    """

    FEEDBACK_GRACE_S = 10.0

    def __init__(self, node_name: str = "/llava3d", context: rclpy.Context | None = None) -> None:
        self.context = context
        self.node = rclpy.create_node(f"llava3d_client_{id(self):x}", context=context)
        self._query = self.node.create_client(Query, f"{node_name}/query")
        self._ask = ActionClient(self.node, Ask, f"{node_name}/ask")
        self._feedback_lock = threading.Lock()
        # goal uuid → (callback, monotonic time of its result or None while running)
        self._feedback: dict[bytes, tuple[Callable[[Any], None], float | None]] = {}
        self._feedback_sub = self.node.create_subscription(
            Ask.Impl.FeedbackMessage,
            f"{node_name}/ask/_action/feedback",
            self._on_feedback,
            QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE),
        )
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # the context may be shut down while spinning: nothing is left to serve then
        with contextlib.suppress(ExternalShutdownException, RuntimeError):
            self._executor.spin()

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(2.0)
        self._ask.destroy()
        self.node.destroy_node()

    def wait_for_node(self, timeout: float) -> None:
        if not self._query.wait_for_service(timeout_sec=timeout):
            raise ClientError(f"service {self._query.srv_name} not available after {timeout} s")
        if not self._ask.wait_for_server(timeout_sec=max(1.0, timeout)):
            raise ClientError("action server not available")

    def _on_feedback(self, msg: Any) -> None:
        with self._feedback_lock:
            entry = self._feedback.get(bytes(msg.goal_id.uuid))
        if entry is not None:
            entry[0](msg)

    def _watch_feedback(self, goal_id: bytes, callback: Callable[[Any], None] | None) -> None:
        """Register (callback) or mark finished (None) a goal's feedback; forget old ones."""
        now = time.monotonic()
        with self._feedback_lock:
            if callback is not None:
                self._feedback[goal_id] = (callback, None)
            elif goal_id in self._feedback:
                self._feedback[goal_id] = (self._feedback[goal_id][0], now)
            for key, (_, done) in list(self._feedback.items()):
                if done is not None and now - done > self.FEEDBACK_GRACE_S:
                    del self._feedback[key]

    @staticmethod
    def _wait(future: Any, timeout: float, what: str) -> Any:
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise ClientError(f"no {what} after {timeout} s")
        return future.result()

    def query(self, prompt: Prompt, timeout: float = 60.0) -> Answer:
        """Call ``~/query`` and return the Answer; ``timeout`` covers discovery and the answer."""
        deadline = time.monotonic() + timeout
        # discovery of a node seen for the first time can take seconds on a loaded machine
        if not self._query.wait_for_service(timeout_sec=timeout):
            raise ClientError(
                f"service {self._query.srv_name} is not available after {timeout:g} s"
            )
        fut = self._query.call_async(Query.Request(prompt=prompt))
        left = max(deadline - time.monotonic(), 0.1)
        return self._wait(fut, left, "answer from ~/query").answer

    def ask(
        self,
        prompt: Prompt,
        timeout: float = 60.0,
        on_feedback: Callable[[Ask.Feedback], None] | None = None,
        cancel_when: Callable[[Ask.Feedback], bool] | None = None,
    ) -> tuple[Answer, int]:
        """Send an ``~/ask`` goal; returns (Answer, final goal status). May cancel on feedback."""
        if not self._ask.wait_for_server(timeout_sec=timeout):
            raise ClientError(f"action server ~/ask is not available after {timeout:g} s")
        handle_box: list[Any] = []
        canceled = threading.Event()

        def feedback(msg: Any) -> None:
            fb = msg.feedback
            if on_feedback is not None:
                on_feedback(fb)
            if cancel_when is not None and not canceled.is_set() and handle_box and cancel_when(fb):
                canceled.set()
                handle_box[0].cancel_goal_async()

        goal_id = UUID(uuid=list(uuid.uuid4().bytes))
        self._watch_feedback(bytes(goal_id.uuid), feedback)
        try:
            handle = self._wait(
                self._ask.send_goal_async(Ask.Goal(prompt=prompt), goal_uuid=goal_id),
                timeout,
                "goal response",
            )
            if not handle.accepted:
                raise ClientError("goal rejected")
            handle_box.append(handle)
            result = self._wait(handle.get_result_async(), timeout, "action result")
        finally:
            self._watch_feedback(bytes(goal_id.uuid), None)
        return result.result.answer, result.status


def _parse_click(text: str) -> tuple[float, float, int]:
    uv, _, stamp = text.partition("@")
    u, v = (float(x) for x in uv.split(","))
    return u, v, int(stamp) if stamp else 0


def main(args: argparse.Namespace, ros_args: list[str]) -> int:
    """``llava3d-ros query``: print the answer, boxes and timings; exit 0 only on success."""
    try:
        clicks = tuple(_parse_click(c) for c in args.click)
        points = tuple(tuple(float(x) for x in p.split(",")) for p in args.point)
        if any(len(p) != 3 for p in points):
            raise ValueError("--point needs x,y,z")
    except ValueError as exc:
        print(f"llava3d-ros query: bad click or point: {exc}", file=sys.stderr)
        return 2
    prompt = make_prompt(
        args.question,
        args.task,
        clicks,
        points,
        "",
        args.max_new_tokens,
        args.temperature,
        args.max_views,
        args.client_id,
    )
    context = rclpy.Context()
    rclpy.init(args=["llava3d-ros", *ros_args], context=context)
    client = Llava3dClient(args.node, context)
    t0 = time.monotonic()
    try:
        if args.action:

            def show(fb: Any) -> None:
                if not args.json:
                    print(
                        f"\r[{fb.stage}] {fb.tokens} tokens: {fb.partial_text[-60:]}",
                        end="",
                        flush=True,
                    )

            answer, _ = client.ask(prompt, args.timeout, show)
            if not args.json:
                print()
        else:
            answer = client.query(prompt, args.timeout)
    except ClientError as exc:
        print(f"llava3d-ros query: {exc}", file=sys.stderr)
        return 3
    finally:
        client.close()
        rclpy.shutdown(context=context)
    summary = answer_summary(answer)
    summary["round_trip_s"] = time.monotonic() - t0
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("OK" if answer.success else f"{ResultCode(answer.code).name}: {answer.message}")
        print(f"answer: {answer.text}")
        for o in summary["objects"]:
            print(f"  box {o['label']!r}: centre {o['center']} size {o['size']} score {o['score']}")
        for p in summary["click_points"]:
            print(f"  click at {p}")
        t = summary["timings_s"]
        print(
            f"model: {answer.model}; {answer.scene_tokens} scene tokens; encode {t['encode']:.3f} s, "
            f"prefill {t['prefill']:.3f} s, decode {t['decode']:.3f} s, total {t['total']:.3f} s, "
            f"round trip {summary['round_trip_s']:.3f} s"
        )
    return 0 if answer.success else 1
