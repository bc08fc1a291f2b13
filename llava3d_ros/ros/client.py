"""A client for the node's ``~/query`` service and ``~/ask`` action (``llava3d-ros query``, tests)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

import rclpy
from action_msgs.msg import GoalStatus
from action_msgs.srv import CancelGoal
from rclpy.action import ActionClient
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from scipy.spatial.transform import Rotation
from unique_identifier_msgs.msg import UUID

from llava3d_ros.action import Ask
from llava3d_ros.answer import ResultCode
from llava3d_ros.msg import Answer, Click, Prompt
from llava3d_ros.ros.convert import answer_summary, ns_to_stamp
from llava3d_ros.srv import Query


class ClientError(RuntimeError):
    """The node could not be reached or did not answer in time."""


class Interrupted(Exception):
    """A signal (Ctrl-C, SIGTERM) reached the client while it waited; ``outcome`` says what
    became of the request (an ``~/ask`` goal is canceled, a ``~/query`` call cannot be)."""

    def __init__(self, signum: int, outcome: str = "nothing had been sent yet") -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.outcome = outcome


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

    Blocking calls poll every ``POLL_S`` for :meth:`interrupt` (a signal handler's hook) and
    then raise :class:`Interrupted`; an ``~/ask`` goal that is still in flight when a call
    gives up (interrupt or timeout) is canceled first, waiting at most ``CANCEL_WAIT_S``.
    ``on_warning`` gets one message per name when more than one server answers it.
    """

    FEEDBACK_GRACE_S = 10.0
    POLL_S = 0.05
    CANCEL_WAIT_S = 2.0
    SERVER_CHECK_S = 0.5

    def __init__(
        self,
        node_name: str = "/llava3d",
        context: rclpy.Context | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.context = context
        self.node = rclpy.create_node(f"llava3d_client_{id(self):x}", context=context)
        self._query = self.node.create_client(Query, f"{node_name}/query")
        self._action_name = f"{node_name}/ask"
        self._ask = ActionClient(self.node, Ask, self._action_name)
        self._on_warning = on_warning
        self._warned: set[str] = set()
        self._server_checked: dict[str, float] = {}
        self._found_at: dict[str, float] = {}  # service/action name → when first discovered
        # signal numbers from interrupt(): list.append is all a signal handler may safely do
        # (taking a lock the interrupted main thread holds would deadlock)
        self._signals: list[int] = []
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

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Make the blocking call in progress (or the next one) raise :class:`Interrupted`.

        Safe to call from a signal handler: it only appends to a list.
        """
        self._signals.append(int(signum))

    def _check_interrupt(self) -> None:
        if self._signals:
            raise Interrupted(self._signals[0])

    def _check_servers(self, name: str, force: bool = False) -> None:
        """Warn once per name when more than one server answers ``name`` (same-named nodes)."""
        if self._on_warning is None or name in self._warned:
            return
        now = time.monotonic()
        if not force and now - self._server_checked.get(name, -1e9) < self.SERVER_CHECK_S:
            return
        self._server_checked[name] = now
        is_action = name == self._action_name
        try:
            n = self.node.count_services(f"{name}/_action/send_goal" if is_action else name)
        except Exception:  # noqa: BLE001 - a graph query never fails a call
            return
        if n > 1:
            self._warned.add(name)
            kind = "action servers" if is_action else "servers"
            self._on_warning(
                f"warning: {n} {kind} answer {name}; replies may come from either "
                "(is a second node running with the same name?)"
            )

    def watch_servers(self, until_s: float) -> None:
        """Keep checking for a second server until ``until_s`` after each name was found.

        Discovery reports the servers of one name one by one, the second up to a second or
        more after the first, so an answer that comes back at once can precede it. Returns
        early once warned, and at once on :meth:`interrupt`.
        """
        for name, found in list(self._found_at.items()):
            while name not in self._warned and not self._signals:
                self._check_servers(name, force=True)
                if time.monotonic() >= found + until_s:
                    break
                time.sleep(self.POLL_S)

    def _discover(
        self, ready: Callable[[], bool], timeout: float, what: str, name: str = ""
    ) -> None:
        """Poll ``ready`` (rclpy's wait_for_* sleep 0.25 s at a time and ignore interrupts)."""
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_interrupt()
            if time.monotonic() >= deadline:
                raise ClientError(f"{what} is not available after {timeout:g} s")
            time.sleep(self.POLL_S)
        self._check_interrupt()
        if name:
            self._found_at.setdefault(name, time.monotonic())
            self._check_servers(name, force=True)

    def wait_for_node(self, timeout: float) -> None:
        self._discover(self._query.service_is_ready, timeout, f"service {self._query.srv_name}")
        self._discover(
            self._ask.server_is_ready, max(1.0, timeout), f"action server {self._action_name}"
        )

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

    def _wait(self, future: Any, timeout: float, what: str, servers: str = "") -> Any:
        """The future's result; ClientError after ``timeout``, Interrupted on interrupt()."""
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + timeout
        while not done.wait(min(self.POLL_S, max(deadline - time.monotonic(), 0.0))):
            self._check_interrupt()
            if servers:
                self._check_servers(servers)
            if time.monotonic() >= deadline:
                raise ClientError(f"no {what} after {timeout:g} s")
        return future.result()

    def _settle(self, future: Any, deadline: float, signals: int) -> bool:
        """Wait for ``future`` until ``deadline`` or a further interrupt; True when done."""
        while not future.done():
            if time.monotonic() >= deadline or len(self._signals) > signals:
                return False
            time.sleep(min(self.POLL_S / 2, max(deadline - time.monotonic(), 0.0)))
        return True

    def _cancel_goal(self, send_future: Any, result_future: Any | None) -> str:
        """Cancel a goal given up on; says how it ended (waits ``CANCEL_WAIT_S`` at most)."""
        deadline = time.monotonic() + self.CANCEL_WAIT_S
        signals = len(self._signals)  # one more signal stops the waiting
        if not self._settle(send_future, deadline, signals):
            return "the node had not accepted the goal yet; it may still run it"
        handle = send_future.result()
        if not handle.accepted:
            return "the goal was not accepted"
        cancel_future = handle.cancel_goal_async()
        if result_future is None:
            result_future = handle.get_result_async()
        if not self._settle(cancel_future, deadline, signals):
            return "cancel requested; no reply from the node"
        code = cancel_future.result().return_code
        if code == CancelGoal.Response.ERROR_GOAL_TERMINATED:
            return "the goal had already finished"
        if code != CancelGoal.Response.ERROR_NONE:
            return f"the node refused to cancel the goal (code {code})"
        if not self._settle(result_future, deadline, signals):
            return "cancel accepted; the goal had not ended yet"
        status = result_future.result().status
        if status == GoalStatus.STATUS_CANCELED:
            return "goal canceled"
        return f"the goal ended ({_STATUS.get(status, status)}) before the cancel"

    def query(self, prompt: Prompt, timeout: float = 60.0) -> Answer:
        """Call ``~/query`` and return the Answer; ``timeout`` covers discovery and the answer."""
        deadline = time.monotonic() + timeout
        name = self._query.srv_name
        # discovery of a node seen for the first time can take seconds on a loaded machine
        self._discover(self._query.service_is_ready, timeout, f"service {name}", name)
        fut = self._query.call_async(Query.Request(prompt=prompt))
        left = max(deadline - time.monotonic(), 0.1)
        try:
            answer = self._wait(fut, left, "answer from ~/query", name).answer
        except Interrupted as exc:
            self._query.remove_pending_request(fut)
            exc.outcome = "a service call cannot be canceled; the node may still answer it"
            raise
        except ClientError:
            self._query.remove_pending_request(fut)
            raise
        self._check_servers(name, force=True)
        return answer

    def ask(
        self,
        prompt: Prompt,
        timeout: float = 60.0,
        on_feedback: Callable[[Ask.Feedback], None] | None = None,
        cancel_when: Callable[[Ask.Feedback], bool] | None = None,
    ) -> tuple[Answer, int]:
        """Send an ``~/ask`` goal; returns (Answer, final goal status). May cancel on feedback.

        A goal given up on (timeout, :meth:`interrupt`) is canceled before the call raises.
        """
        name = self._action_name
        self._discover(self._ask.server_is_ready, timeout, f"action server {name}", name)
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
        send_future = result_future = None
        in_flight = False
        try:
            send_future = self._ask.send_goal_async(Ask.Goal(prompt=prompt), goal_uuid=goal_id)
            in_flight = True
            handle = self._wait(send_future, timeout, "goal response", name)
            if not handle.accepted:
                in_flight = False
                raise ClientError("goal rejected")
            handle_box.append(handle)
            result_future = handle.get_result_async()
            result = self._wait(result_future, timeout, "action result", name)
            in_flight = False
        except Interrupted as exc:
            if in_flight:
                exc.outcome = self._cancel_goal(send_future, result_future)
            raise
        except ClientError as exc:
            if not in_flight:
                raise
            raise ClientError(f"{exc}; {self._cancel_goal(send_future, result_future)}") from exc
        finally:
            self._watch_feedback(bytes(goal_id.uuid), None)
        self._check_servers(name, force=True)
        return result.result.answer, result.status


_STATUS = {
    getattr(GoalStatus, k): k.removeprefix("STATUS_")
    for k in dir(GoalStatus)
    if k.startswith("STATUS_")
}


def _parse_click(text: str | tuple) -> tuple[float, float, int]:
    """(u, v, stamp_ns) of ``U,V[@STAMP]`` (the command line parses it already: a tuple)."""
    if isinstance(text, tuple):
        return text
    uv, _, stamp = text.partition("@")
    u, v = (float(x) for x in uv.split(","))
    return u, v, int(stamp) if stamp else 0


def _parse_point(text: str | tuple) -> tuple[float, ...]:
    if isinstance(text, tuple):
        return text
    return tuple(float(x) for x in text.split(","))


class Progress:
    """``--action`` feedback: on a terminal one status line, redrawn in place (``\\r`` and the
    ANSI clear-line code); otherwise plain appended lines, on a stage change and at most every
    ``INTERVAL_S`` within a stage, never a ``\\r``. :meth:`end` finishes a status line with a
    newline (before the answer or a warning). Feedback comes on the client's spinning thread."""

    INTERVAL_S = 1.0
    CLEAR = "\r\x1b[2K"

    def __init__(self, stream: IO[str], tty: bool | None = None) -> None:
        self.stream = stream
        if tty is None:
            isatty = getattr(stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self._open = False  # a status line is on the terminal, not ended
        self._stage = ""
        self._printed_at = -math.inf
        self._closed = False  # after the result: late feedback must not print after the answer
        self._lock = threading.Lock()

    def show(self, fb: Any) -> None:
        with self._lock:
            if self._closed:
                return
            head = f"[{fb.stage}] {fb.tokens} tokens"
            if not self.tty:
                now = time.monotonic()
                if fb.stage == self._stage and now - self._printed_at < self.INTERVAL_S:
                    return
                self._stage, self._printed_at = fb.stage, now
                self.stream.write(head + "\n")
                self.stream.flush()
                return
            partial = "".join(c if c.isprintable() else " " for c in fb.partial_text).strip()
            room = shutil.get_terminal_size((80, 24)).columns - 1 - len(head) - 2
            line = head + (f": {partial[-room:]}" if partial and room > 0 else "")
            self.stream.write(self.CLEAR + line)
            self.stream.flush()
            self._open = True

    def end(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                self.stream.write("\n")
                self.stream.flush()

    def close(self) -> None:
        """:meth:`end`, and ignore feedback from now on (some may still come after the result)."""
        with self._lock:
            self._closed = True
        self.end()


def _install_signal_handlers(
    handler: Callable[[int, Any], None],
) -> dict[int, Any]:
    """SIGINT and SIGTERM → ``handler``; the previous handlers (none off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def main(args: argparse.Namespace, ros_args: list[str]) -> int:
    """``llava3d-ros query``: print the answer, boxes and timings; exit 0 only on success.

    Ctrl-C (SIGINT) or SIGTERM cancels an ``--action`` goal in flight, says so on one line
    and exits 128 + the signal number (130 for Ctrl-C), without a traceback.
    """
    try:
        clicks = tuple(_parse_click(c) for c in args.click)
        points = tuple(_parse_point(p) for p in args.point)
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
    signals: list[int] = []
    client: Llava3dClient | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        signals.append(signum)  # only appends: the main thread may hold any lock now
        if client is not None:
            client.interrupt(signum)

    previous = _install_signal_handlers(on_signal)
    progress = Progress(sys.stdout)

    def warn(message: str) -> None:
        progress.end()  # end the feedback line first
        print(f"llava3d-ros query: {message}", file=sys.stderr, flush=True)

    context = rclpy.Context()
    try:
        rclpy.init(
            args=["llava3d-ros", *ros_args],
            context=context,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        client = Llava3dClient(args.node, context, on_warning=warn)
        for signum in signals[:1]:  # a signal while the client was being built
            client.interrupt(signum)
        t0 = time.monotonic()
        try:
            if args.action:
                show = None if args.json else progress.show
                try:
                    answer, _ = client.ask(prompt, args.timeout, show)
                finally:
                    progress.close()
            else:
                answer = client.query(prompt, args.timeout)
            _print_answer(answer, time.monotonic() - t0, args.json)
            # a second server of the same name may be discovered only after a fast answer
            client.watch_servers(getattr(args, "server_check_s", 2.0))
        except Interrupted as exc:
            progress.end()
            what = "interrupted" if exc.signum == signal.SIGINT else "terminated"
            print(f"llava3d-ros query: {what}: {exc.outcome}", file=sys.stderr, flush=True)
            return 128 + exc.signum
        except ClientError as exc:
            progress.end()
            print(f"llava3d-ros query: {exc}", file=sys.stderr)
            return 3
        finally:
            client.close()
            rclpy.shutdown(context=context)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 0 if answer.success else 1


def box_summary(obj: Any) -> dict:
    """A GroundedObject as plain values: centre, size, orientation (quaternion x, y, z, w and
    yaw/pitch/roll in degrees, the Z-Y'-X'' angles the node builds it from), label, score."""
    q = obj.center.orientation
    quat = [q.x, q.y, q.z, q.w]
    norm = math.sqrt(sum(c * c for c in quat))
    if math.isfinite(norm) and norm > 1e-9:
        ypr = Rotation.from_quat([c / norm for c in quat]).as_euler("ZYX", degrees=True)
        yaw_pitch_roll = [float(a) for a in ypr]
    else:  # not a rotation: say so rather than invent one
        yaw_pitch_roll = None
    return {
        "label": obj.label,
        "score": None if math.isnan(obj.score) else float(obj.score),
        "center": [obj.center.position.x, obj.center.position.y, obj.center.position.z],
        "size": [obj.size.x, obj.size.y, obj.size.z],
        "orientation_xyzw": quat,
        "yaw_pitch_roll_deg": yaw_pitch_roll,
    }


def answer_dict(answer: Answer, round_trip_s: float) -> dict:
    """What ``--json`` prints: :func:`answer_summary` plus the code's name, the world frame
    and each box's orientation."""
    summary = answer_summary(answer)
    summary["code_name"] = _code_name(answer.code)
    summary["frame_id"] = answer.header.frame_id
    summary["objects"] = [box_summary(o) for o in answer.objects]
    summary["round_trip_s"] = round_trip_s
    return summary


def _code_name(code: int) -> str:
    try:
        return ResultCode(code).name
    except ValueError:
        return f"code {code}"


def _xyz(values: Any) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def _print_answer(answer: Answer, round_trip_s: float, as_json: bool) -> None:
    summary = answer_dict(answer, round_trip_s)
    if as_json:
        print(json.dumps(summary, indent=2), flush=True)
        return
    warnings = [f"warning: {w}" for w in summary["warnings"]]
    if answer.code != Answer.OK or not answer.success:
        # a refusal or failure: one line with the code, not an empty answer and zero timings
        print(f"{summary['code_name']}: {answer.message or '(no message)'}")
        if answer.text:
            print(f"partial answer: {answer.text}")
        for line in warnings:
            print(line)
        sys.stdout.flush()
        return
    print("OK")
    print(f"answer: {answer.text}")
    for line in warnings:
        print(line)
    frame = summary["frame_id"] or "unnamed"
    if summary["objects"]:
        print(
            f"boxes (world frame, {frame}; numbers inside the answer text are in the model's frame):"
        )
    for o in summary["objects"]:
        label = f"{o['label']!r}" if o["label"] else "(no label)"
        score = "" if o["score"] is None else f" score {o['score']:.3f}"
        ypr = o["yaw_pitch_roll_deg"]
        angles = (
            "orientation invalid"
            if ypr is None
            else ("yaw {:.1f} pitch {:.1f} roll {:.1f} deg".format(*ypr))
        )
        quat = ", ".join(f"{c:.4f}" for c in o["orientation_xyzw"])
        print(
            f"  box {label}{score}: centre {_xyz(o['center'])} m, size {_xyz(o['size'])} m, "
            f"{angles} (quaternion x,y,z,w {quat})"
        )
    if summary["click_points"]:
        print(f"click points (world frame, {frame}):")
    for p in summary["click_points"]:
        print(f"  click at {_xyz(p)}")
    t = summary["timings_s"]
    print(
        f"model: {answer.model}; {answer.scene_tokens} scene tokens; encode {t['encode']:.3f} s, "
        f"prefill {t['prefill']:.3f} s, decode {t['decode']:.3f} s, total {t['total']:.3f} s, "
        f"round trip {summary['round_trip_s']:.3f} s",
        flush=True,
    )
