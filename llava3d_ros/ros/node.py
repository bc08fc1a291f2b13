"""The lifecycle node ``llava3d``: wiring of the rooms that take posed RGB-D in and answer.

configure reads parameters, loads the model and builds the scene (``scene/buffer``,
``scene/ingest``) and the sensor feed (``ros/inputs``); activate creates the subscriptions,
``~/query``, ``~/ask``, ``clicked_point``, the answer topic and the RViz outputs
(``ros/visuals``), and starts the ingest thread (``ros/ingest``) and the query worker
(``query/queue``); deactivate destroys them and frees model memory. The executor never
waits: sensor callbacks only match stamps, the ingest thread decodes, the worker asks.

Two minimal helper nodes in the same context keep per-message work off the lifecycle node's
executor (whose wait set spans ~40 parameter, lifecycle and event entities): the sensor
subscriptions (``<name>_sensors``) are served by a wait loop on a thread of their own
(``SensorInputs``), and ~/query, ~/ask and clicked_point (``<name>_queries``) by a
single-threaded executor of their own (``QueryInterfaces``). Their names are resolved by the
lifecycle node itself, so namespaces and remappings (global or ``llava3d:``-targeted) apply
as before. Every accepted request is replied to before anything optional runs (``_reply``).
``ros/serving`` takes the requests. ``main`` also tunes malloc for image-sized buffers (see ``malloc``) and turns SIGTERM into an
orderly shutdown.
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from vision_msgs.msg import Detection3DArray

from llava3d_ros.answer import AnswerResult, ResultCode
from llava3d_ros.guard import Guard
from llava3d_ros.msg import Answer
from llava3d_ros.query.answering import AnswerDefaults, SceneAnswerer
from llava3d_ros.query.queue import QueryQueue
from llava3d_ros.query.rate_limit import ClientRateLimiter
from llava3d_ros.ros import convert, markers
from llava3d_ros.ros.corrections import CorrectionsInput
from llava3d_ros.ros.detections import detections_msg
from llava3d_ros.ros.diagnostics import Health, diagnostic_array
from llava3d_ros.ros.helper_nodes import SensorInputs, helper_node
from llava3d_ros.ros.ingest import IngestWorker
from llava3d_ros.ros.ingest_gate import IngestGate
from llava3d_ros.ros.inputs import SensorFeed
from llava3d_ros.ros.malloc import tune_malloc
from llava3d_ros.ros.params import PARAMS, Settings, descriptor
from llava3d_ros.ros.serving import QueryServer
from llava3d_ros.ros.visuals import RESULT_QOS, Visuals
from llava3d_ros.scene.buffer import FrameBuffer
from llava3d_ros.scene.frame import Frame
from llava3d_ros.scene.ingest import SceneIngest
from llava3d_ros.scene.sync import SyncedFrame
from llava3d_ros.threads import named_thread

NODE_NAME = "llava3d"
# The graph is checked for a namesake this often, this many times after activation: discovery
# takes ~0.3 s on an idle loopback, seconds on a loaded machine or another transport.
NAME_CHECK_PERIOD_S, NAME_CHECKS = 2.0, 15
EngineFactory = Callable[[Settings], Any]


def _default_engine_factory(s: Settings) -> Any:
    from llava3d_ros.ros.model_loading import load_engine  # torch import only when configuring

    return load_engine(s)


class Llava3dNode(LifecycleNode):
    """See the module docstring; parameters are listed in ``ros/params.py``."""

    REPLY_GRACE_S = 5.0  # how long deactivate waits for in-flight query handlers to reply

    def __init__(self, engine_factory: EngineFactory | None = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for p in PARAMS:
            self.declare_parameter(p.name, p.default, descriptor(p))
        self._engine_factory = engine_factory or _default_engine_factory
        self._guard = Guard(self.get_logger())
        self.settings: Settings | None = None
        self.engine: Any = None
        self._model_state, self._model_error = "unconfigured", ""
        # configured
        self._scene_lock = threading.Lock()
        self.buffer: FrameBuffer | None = None
        self._scene: SceneIngest | None = None
        self._feed: SensorFeed | None = None
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        # active
        self._active = False
        self.queue: QueryQueue | None = None
        self._rate_limiter = ClientRateLimiter(0.0, 1)
        self._ingest: IngestWorker | None = None
        self._sensors: SensorInputs | None = None
        self._corrections: CorrectionsInput | None = None
        self._server: QueryServer | None = None
        self._answer_pub: Any = None
        self._detections_pub: Any = None
        self._visuals: Visuals | None = None
        self._name_check: Any = None
        self._name_checks_left = 0
        # what /diagnostics and answers say beyond the counters of the rooms
        self._warnings: dict[str, str] = {}
        self._stopped: dict[str, str] = {}  # worker → why it stopped (diagnostics ERROR)

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        try:
            s = Settings.from_values(values)
        except ValueError as exc:
            self.get_logger().error(f"configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.settings = s
        if s.torch_threads > 0:
            import torch

            torch.set_num_threads(s.torch_threads)
        self._load_model()
        geometry = {}
        if self.engine is not None:  # the buffer prepares views at the model's input geometry
            geometry = {
                "image_size": self.engine.image_size,
                "patch": self.engine.image_size // self.engine.grid,
            }
        self.buffer = FrameBuffer(
            **geometry,
            capacity=s.buffer_capacity,
            max_bytes=s.buffer_max_mb * 2**20,
            mode=s.patch_depth_mode,
            resample=s.image_resample,
            min_translation=s.keyframe_min_translation_m,
            min_rotation_deg=s.keyframe_min_rotation_deg,
            max_interval_s=s.keyframe_max_interval_s,
        )
        self._scene = SceneIngest(
            self.buffer,
            self._scene_lock,
            axis_align=s.axis_align,
            log_warning=self.get_logger().warning,
        )
        self._feed = SensorFeed(s, self._guard, self._on_frames, self._on_time_jump)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RESULT_QOS)
        self._diag_timer = self.create_timer(
            s.diagnostics_period_s,
            lambda: self._guard.run("diagnostics", self._publish_diagnostics),
            MutuallyExclusiveCallbackGroup(),
        )
        self.get_logger().info(f"configured: model {self._model_state} {self._model_label()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        s = self.settings
        if self.engine is None and self._model_state == "released":
            self._load_model()
        self._answer_pub = self.create_publisher(Answer, "~/answer", RESULT_QOS)
        self._detections_pub = self.create_publisher(Detection3DArray, "~/detections", RESULT_QOS)
        self._visuals = Visuals(
            self, s.world_frame, self._guard, s.publish_debug_image, s.publish_scene_points
        )
        answerer = SceneAnswerer(
            self.buffer,
            self._scene_lock,
            lambda: self.engine,
            self._defaults(),
            why_no_scene=self._feed.why_no_scene,
            not_ready_reason=self._not_ready_reason,
            scene_warnings=self._scene_warnings,
            images=self._feed,
            transforms=self._feed.tf,
        )
        self.queue = QueryQueue(
            answerer.run,
            s.max_pending_queries,
            s.query_timeout_s,
            on_exit=self._worker_exit("query worker", then=self._refuse_queued),
            on_done_error=lambda exc: self._guard.failed("reply", exc),
        )
        self._rate_limiter = ClientRateLimiter(s.client_rate_hz, s.client_burst)
        self._ingest = IngestWorker(
            self._scene,
            self._feed.decoder,
            report=self._feed.input_error,
            on_keyframe=self._on_keyframe,
            epoch=lambda: self._feed.epoch,
            on_exit=self._worker_exit("ingestion"),
        )
        self._feed.not_taken.clear()
        gate = IngestGate(s.ingest_rate_hz)
        self._sensors = SensorInputs(
            self, self._feed.on_callback_error, gate, self._feed.on_untaken
        )
        self._feed.subscribe(
            self._sensors, self.resolve_topic_name, lambda: helper_node(self, "tf")
        )
        self._corrections = CorrectionsInput(
            s.world_frame,
            s.corrections_frame,
            s.corrections_tolerance_s,
            self._feed.tf,
            self.buffer,
            self._scene_lock,
            self._guard,
            on_moved=lambda: self._on_keyframe(corrected=True),
        )
        self._corrections.subscribe(self._sensors, self.resolve_topic_name)
        self._server = QueryServer(
            self,
            self.queue,
            self._rate_limiter,
            self._defaults(),
            self._guard,
            refusal=self._refusal,
            model_id=lambda: self.engine.model_id if self.engine is not None else "",
            after_reply=self._after_reply,
            global_clicks=s.clicked_point_global,
        )
        self._active = True
        self._stopped.clear()
        self._ingest.start()
        self._sensors.start()
        self._server.start()
        self._name_checks_left = NAME_CHECKS
        self._name_check = self.create_timer(NAME_CHECK_PERIOD_S, self._check_name_is_unique)
        self.get_logger().info(
            "active: waiting for rgb/image, depth/image, rgb/camera_info and poses"
        )
        return super().on_activate(state)

    def _check_name_is_unique(self) -> None:
        """For a while after activation: warn (once) when another node has this node's full name.

        Two nodes with one name both serve ``~/query``; a caller cannot tell which answers.
        """
        mine = self.get_fully_qualified_name()
        same = [
            n for n, ns in self.get_node_names_and_namespaces() if f"{ns.rstrip('/')}/{n}" == mine
        ]
        self._name_checks_left -= 1
        if (len(same) > 1 or self._name_checks_left <= 0) and self._name_check is not None:
            timer, self._name_check = self._name_check, None
            self.destroy_timer(timer)
        if len(same) > 1:
            self._warnings["name"] = f"{len(same)} nodes on the graph are named {mine}"
            self._guard.log(
                "name",
                "warning",
                f"another node named {mine} is on the graph ({len(same)} in all): both serve "
                f"{mine}/query and callers cannot tell which answers; give one a different "
                "name or namespace",
                period_s=0.0,
            )

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active("node deactivated")
        self._release_model()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_configured()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active("node shutting down")
        self._release_model()
        self._teardown_configured()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown_active("node error")
        self._release_model()
        self._teardown_configured()
        return TransitionCallbackReturn.SUCCESS

    def _teardown_active(self, reason: str) -> None:
        if self._name_check is not None:
            self.destroy_timer(self._name_check)
            self._name_check = None
        if not self._active:
            self._close_interfaces()  # an activation that failed half-way
            return
        self._active = False
        self._sensors.close()
        self._sensors = None
        self._corrections = None
        self._feed.tf.close()
        self._ingest.stop()
        # answer every accepted query (waiting: NOT_READY, running: CANCELED) and let their
        # handlers send the replies before the services and the action they came on go away
        if self.queue is not None:
            self.queue.stop(reason)
        self._close_interfaces()
        if self._visuals is not None:
            self._visuals.destroy()
            self._visuals = None
        for pub in (self._answer_pub, self._detections_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._answer_pub = self._detections_pub = None

    def _close_interfaces(self) -> None:
        """Destroy the helper nodes (with what they hold), once the replies in flight are sent."""
        if self._sensors is not None:
            self._sensors.close()
            self._sensors = None
        if self._server is not None:
            self._server.close(self.REPLY_GRACE_S)
            self._server = None

    def _helper_nodes(self) -> list[Node]:
        return [h.node for h in (self._sensors, self._server) if h is not None]

    @property
    def all_subscriptions(self) -> list[Any]:
        """The subscriptions of this node and of its helper nodes (those exist while active)."""
        return [s for n in (self, *self._helper_nodes()) for s in n.subscriptions]

    @property
    def all_services(self) -> list[Any]:
        """The services of this node and of its helper nodes (those exist while active)."""
        return [s for n in (self, *self._helper_nodes()) for s in n.services]

    def _teardown_configured(self) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        self.buffer, self._scene, self._feed, self.settings = None, None, None, None
        self._model_state = "unconfigured"

    # ---------------------------------------------------------------- model
    def _load_model(self) -> None:
        t0 = time.monotonic()
        try:
            self.engine = self._engine_factory(self.settings)
        except Exception as exc:  # any loader failure leaves the node serving NOT_READY
            self.engine = None
            self._model_state, self._model_error = "failed", f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"model failed to load: {self._model_error}")
            return
        self._model_state, self._model_error = "loaded", ""
        self.get_logger().info(
            f"model {self.engine.model_id} loaded in {time.monotonic() - t0:.1f} s"
        )

    def _release_model(self) -> None:
        if self.engine is not None:
            self.engine.release()
            self.engine = None
            self._model_state = "released"

    def _model_label(self) -> str:
        return self.engine.model_id if self.engine is not None else self._model_error

    def _not_ready_reason(self) -> str:
        if self._model_state == "failed":
            return f"the model failed to load: {self._model_error}"
        return f"the model is {self._model_state}"

    def _defaults(self) -> AnswerDefaults:
        s = self.settings
        return AnswerDefaults(
            num_views=s.num_views,
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            max_question_chars=s.max_question_chars,
            world_frame=s.world_frame,
            max_clicks=s.max_clicks,
            max_views_limit=s.max_views_limit,
            max_new_tokens_limit=s.max_new_tokens_limit,
        )

    # ---------------------------------------------------------------- scene
    def _on_frames(self, frames: list[SyncedFrame]) -> None:
        """Matched frames from the sensor feed: the gate learns of them, the ingest thread gets them."""
        sensors, ingest = self._sensors, self._ingest
        if sensors is not None:
            sensors.gate.frame_synced(time.monotonic())
        if ingest is not None:
            ingest.put(frames)

    def _on_keyframe(self, corrected: bool = False) -> None:
        """A keyframe came (or ``corrected``: keyframes were re-posed): the RViz views follow."""
        self._feed.clear_error("depth/image")
        with self._scene_lock:
            kfs = [self.buffer.keyframe(i) for i in self.buffer.frame_ids()]
        if self._visuals is not None:
            self._visuals.scene(kfs, force=corrected)

    def _on_time_jump(self, old_ns: int, new_ns: int) -> None:
        """Sensor time ran backwards (a restarted bag or simulator): reset or re-time the scene.

        Frames of the old time line still queued for ingest are dropped; frames of the new one
        are queued only after this (see ``SensorFeed._feed``).
        """
        if self._ingest is not None:
            self._ingest.clear()
        policy = self.settings.time_jump_policy
        what = self._scene.restart(keep=policy == "keep")
        jump = f"sensor time jumped back from {old_ns / 1e9:.3f} s to {new_ns / 1e9:.3f} s"
        self._warnings["time_jump"] = f"{jump}: {what}"
        self._guard.log(
            "time jump",
            "warning",
            f"{jump} (a restarted bag or simulator, or a sim-time reset): {what} "
            f"(time_jump_policy={policy})",
            period_s=0.0,
        )

    def _worker_exit(
        self, what: str, then: Callable[[str], None] | None = None
    ) -> Callable[[BaseException | None], None]:
        """How a worker thread reports that it ended: an unexpected end is an ERROR."""

        def on_exit(exc: BaseException | None) -> None:
            if exc is None and not self._active:
                return  # stopped by deactivate or shutdown
            reason = "it returned while active" if exc is None else f"{type(exc).__name__}: {exc}"
            self._stopped[what] = reason
            self._guard.log(f"stopped {what}", "error", f"{what} stopped: {reason}", period_s=0.0)
            if then is not None:
                self._guard.run(f"{what} stop", lambda: then(f"{what} stopped: {reason}"))

        return on_exit

    def _refuse_queued(self, why: str) -> None:
        """With no worker left, queued queries are answered NOT_READY (and new ones refused)."""
        if self.queue is not None:
            self.queue.stop(f"{why}; reactivate the node")

    def _scene_warnings(self) -> list[str]:
        """Warnings every answer carries while they hold (a stopped ingestion: a stale scene)."""
        return [
            f"the scene is stale: {what} stopped ({why}); answers come from the keyframes "
            "received before"
            for what, why in self._stopped.items()
            if what == "ingestion"
        ]

    def _newest_frame(self) -> Frame | None:
        with self._scene_lock:
            if self.buffer is None or not len(self.buffer):
                return None
            return self.buffer.keyframe(self.buffer.frame_ids()[-1]).frame

    # ---------------------------------------------------------------- health
    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        if self._feed is not None and self._active:
            self._guard.run("tf poll", self._feed.poll)  # frames still waiting for TF
        visuals = self._visuals
        if visuals is not None:
            visuals.flush()  # a scene cloud the rate limit held back
        h = self.health()
        self._diag_pub.publish(
            diagnostic_array(h, self.get_fully_qualified_name(), self.get_clock().now().nanoseconds)
        )

    def health(self) -> Health:
        """What /diagnostics reports now."""
        h = Health(
            warnings=list(self._warnings.values()),
            model_state=self._model_state,
            model_id=self.engine.model_id if self.engine is not None else "",
            model_error=self._model_error,
            stopped=dict(self._stopped),
            time_jumps=self._feed.epoch if self._feed is not None else 0,  # one epoch a jump
        )
        h.output_failures, h.output_errors = self._guard.snapshot()
        if self._ingest is not None:
            h.ingest_queue = len(self._ingest)
            h.warnings += list(self._ingest.warnings.values())
            h.ingestion_alive = self._ingest.alive
        if self._scene is not None:
            h.warnings += list(self._scene.warnings.values())
            h.alignment = self._scene.alignment_state()
            h.newest_keyframe_age_s = self._scene.newest_keyframe_age_s()
        if self._feed is not None:
            self._feed.report(h)
        if self._corrections is not None:
            self._corrections.report(h)
        if self.buffer is not None:
            h.keyframes, h.capacity, h.buffer_mb = (
                len(self.buffer),
                self.buffer.capacity,
                self.buffer.nbytes / 2**20,
            )
        if self.queue is not None:
            h.queries_pending = self.queue.pending
            h.queries_done = self.queue.completed
            h.queries_busy = self.queue.rejected + self.queue.displaced
            h.last_latency_s = self.queue.last_latency_s
        return h

    # ---------------------------------------------------------------- queries
    def _refusal(self) -> str | None:
        """Why no request can be taken now (None: it can)."""
        if not self._active or self.queue is None:
            return "the node is not active"
        if "query worker" in self._stopped:
            return f"query worker stopped: {self._stopped['query worker']}; reactivate the node"
        return None

    def _after_reply(self, result: AnswerResult, msg: Answer) -> None:
        """What follows a reply: ``~/answer``, then markers and the debug image (each guarded)."""
        pub, detections = self._answer_pub, self._detections_pub
        if pub is not None:
            self._guard.run("~/answer", lambda: pub.publish(msg))
        if detections is not None and result.success:
            self._guard.run(
                "~/detections",
                lambda: detections.publish(detections_msg(msg.header, msg.objects)),
            )
        visuals = self._visuals
        if result.code != ResultCode.BUSY and visuals is not None:
            stamp = convert.stamp_to_ns(msg.header.stamp)
            buf = self.buffer  # labels and text go along the aligned world's up
            self._guard.run(
                "markers",
                lambda: visuals.answer(
                    result,
                    stamp,
                    self._newest_frame(),
                    up=None if buf is None else markers.up_from_alignment(buf.alignment),
                ),
            )


# a shutdown takes a second or two (answers to what is in flight, their send time); one still
# going after this long is stuck somewhere, and says where
SHUTDOWN_STACKS_AFTER_S = 15.0


def main(argv: Sequence[str] | None = None, engine_factory: EngineFactory | None = None) -> int:
    """Console script ``llava3d_node``: ``[--autostart] [--ros-args ...]``."""
    tune_malloc()  # before any image buffer is allocated (see ros/malloc.py)
    argv = list(sys.argv if argv is None else argv)
    user_args = rclpy.utilities.remove_ros_args(argv)[1:]
    parser = argparse.ArgumentParser(prog="llava3d_node", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--autostart",
        action="store_true",
        help="configure and activate at once (no lifecycle manager)",
    )
    opts = parser.parse_args(user_args)
    context = rclpy.Context()
    # rclpy installs its SIGINT/SIGTERM handlers only for the default context, and those shut
    # the context down at once (no reply could be sent after). Ours only ask for a shutdown,
    # which the main thread then runs while the executors still send the replies.
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    rclpy.init(args=argv, context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = Llava3dNode(engine_factory=engine_factory, context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    spinner = named_thread(lambda: _spin(node, executor, stop), "llava3d-spin")
    code = 0
    try:
        if opts.autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed")
                code = 1
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed")
                code = 1
        if code == 0:
            spinner.start()
            while not stop.wait(0.5) and context.ok():
                pass
        if received:
            node.get_logger().info(
                f"{received[0]} received: answering what is queued, then exiting"
            )
            # a shutdown that hangs says where (every thread's stack on stderr), not just hangs
            faulthandler.dump_traceback_later(SHUTDOWN_STACKS_AFTER_S, exit=False)
    finally:
        if node._active or node.settings is not None:
            node.trigger_shutdown()  # answers queued (NOT_READY) and running (CANCELED) queries
        stop.set()
        executor.shutdown()
        if spinner.is_alive():
            spinner.join(5.0)
        node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
        faulthandler.cancel_dump_traceback_later()
    return code


def _spin(node: Llava3dNode, executor: MultiThreadedExecutor, stop: threading.Event) -> None:
    """Spin until shutdown (then ``stop`` is set); a reply to a destroyed interface is not fatal."""
    try:
        while not stop.is_set():
            try:
                executor.spin()
                return
            except InvalidHandle as exc:
                # a reply to a service or goal that deactivate destroyed mid-call: the caller
                # misses that one answer, the node must not exit for it
                node.get_logger().warning(f"reply dropped (interface destroyed mid-call): {exc}")
    except ExternalShutdownException:
        pass
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
