"""The lifecycle node ``llava3d``: posed RGB-D in, answers, boxes, markers and diagnostics out.

configure reads parameters and loads the model; activate creates subscriptions, the query
service, the ask action and publishers; deactivate destroys them and frees model memory.
Sensor callbacks only match stamps and enqueue; an ingest thread converts and buffers frames,
and one worker thread runs queries on the model (see ``queries``), so the executor never waits.

Two minimal helper nodes in the same context keep per-message work off the lifecycle node's
executor (whose wait set spans ~40 parameter, lifecycle and event entities): the sensor
subscriptions (``<name>_sensors``) are served by a wait loop on a thread of their own
(``SensorInputs``), and ~/query, ~/ask and clicked_point (``<name>_queries``) by a
single-threaded executor of their own (``QueryInterfaces``). Their names are resolved by the
lifecycle node itself, so namespaces and remappings (global or ``llava3d:``-targeted) apply
as before. ``main`` also tunes malloc for image-sized buffers (see ``malloc``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseStamped
from nav_msgs.msg import Odometry
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from llava3d_ros.action import Ask
from llava3d_ros.answer import AnswerResult, QueryError, ResultCode
from llava3d_ros.geometry.boxes import BOX_EDGES, box_corners, project_points
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.guard import Guard
from llava3d_ros.msg import Answer
from llava3d_ros.ros import convert, serialized
from llava3d_ros.ros.answering import AnswerDefaults, SceneAnswerer, validate
from llava3d_ros.ros.diagnostics import Health, RateMeter, diagnostic_array
from llava3d_ros.ros.helper_nodes import QueryInterfaces, SensorInputs
from llava3d_ros.ros.ingest_gate import IngestGate
from llava3d_ros.ros.malloc import tune_malloc
from llava3d_ros.ros.params import PARAMS, Settings, descriptor
from llava3d_ros.ros.queries import Job, QueryQueue
from llava3d_ros.ros.rate_limit import ClientRateLimiter
from llava3d_ros.ros.request import PointClick, QueryRequest
from llava3d_ros.ros.sync import FrameSynchronizer, SyncedFrame
from llava3d_ros.ros.threads import named_thread
from llava3d_ros.scene.buffer import FrameBuffer, FrameOrderError
from llava3d_ros.scene.frame import Frame
from llava3d_ros.srv import Query

NODE_NAME = "llava3d"
INPUTS = ("rgb/image", "rgb/camera_info", "depth/image", "depth/camera_info", "pose", "odom")
RESULT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
ALIGN_AT_KEYFRAMES = (3, 10, 30, 100)
SCENE_POINTS_PERIOD_S = 1.0  # the cloud only changes with keyframes; RViz needs no more
FEEDBACK_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
# Images arrive serialized and are decoded only for frames that may become keyframes; others
# are still decoded this often, so a broken stream is reported while the camera stands still.
VALIDATE_PERIOD_S = 1.0
NAME_CHECK_AFTER_S = 2.0  # discovery on loopback takes ~0.3 s; other transports longer
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
        self.settings: Settings | None = None
        self.engine: Any = None
        self._model_state, self._model_error = "unconfigured", ""
        self._scene_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self.buffer: FrameBuffer | None = None
        self.sync: FrameSynchronizer | None = None
        self.queue: QueryQueue | None = None
        self._rate_limiter = ClientRateLimiter(0.0, 1)
        self._rates = {name: RateMeter() for name in INPUTS}
        self._errors: dict[str, str] = {}
        self._error_counts: collections.Counter[str] = collections.Counter()
        self._warnings: dict[str, str] = {}
        self._pose_failures = 0
        self._frames_synced = 0
        self._not_taken: collections.Counter[str] = collections.Counter()
        self._last_result: AnswerResult | None = None
        self._jobs_by_goal: dict[bytes, Job] = {}
        self._sensors: SensorInputs | None = None
        self._queries: QueryInterfaces | None = None
        self._action: ActionServer | None = None
        self._pubs: dict[str, Any] = {}
        self._active = False
        self._calls_cv = threading.Condition()
        self._calls_in_flight = 0
        self._ingest_cv = threading.Condition()
        self._ingest: collections.deque[SyncedFrame] = collections.deque(maxlen=3)
        self._ingest_thread: threading.Thread | None = None
        self._diag_pub = None
        self._diag_timer = None
        self._points_published = -1e9
        self._points_cache: dict[int, tuple] = {}
        self._last_validated = -1e9
        self._guard = Guard(self.get_logger())
        self._stopped: dict[str, str] = {}  # worker → why it stopped (diagnostics ERROR)
        self._time_jumps = 0
        self._jump: tuple[int, int] | None = None
        self._name_check: Any = None  # a time jump the sync saw, not yet applied

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = {p.name: self.get_parameter(p.name).value for p in PARAMS}
        try:
            s = Settings.from_values(values)
        except ValueError as exc:
            self.get_logger().error(f"configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        if s.pose_source == "tf":
            self.get_logger().error(
                "configure: pose_source 'tf' needs tf2_ros, which this build does not support; "
                "publish a PoseStamped on 'pose' or an Odometry on 'odom'"
            )
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
        self.sync = FrameSynchronizer(
            slop_ns=int(s.sync_slop_s * 1e9),
            pose_tolerance_ns=int(s.pose_tolerance_s * 1e9),
            pose_wait_ns=int(s.pose_wait_s * 1e9),
            queue_size=max(s.sensor_queue_size, 2),
            use_depth_info=s.use_depth_camera_info,
            on_drop=self._on_sync_drop,
            time_jump_ns=int(s.time_jump_threshold_s * 1e9),
            on_time_jump=self._on_time_jump,
        )
        self._color_info = serialized.SerializedCameraInfo()
        self._depth_info = serialized.SerializedCameraInfo()
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
        if s.publish_debug_image:
            self._pubs["debug_image"] = self.create_publisher(Image, "~/debug_image", RESULT_QOS)
        self._pubs["answer"] = self.create_publisher(Answer, "~/answer", RESULT_QOS)
        self._pubs["markers"] = self.create_publisher(MarkerArray, "~/markers", LATCHED_QOS)
        if s.publish_scene_points:
            self._pubs["scene_points"] = self.create_publisher(
                PointCloud2, "~/scene_points", LATCHED_QOS
            )
        answerer = SceneAnswerer(
            self.buffer,
            self._scene_lock,
            lambda: self.engine,
            self._defaults(),
            why_no_scene=self._why_no_scene,
            not_ready_reason=self._not_ready_reason,
            scene_warnings=self._scene_warnings,
        )
        self.queue = QueryQueue(
            answerer.run,
            s.max_pending_queries,
            s.query_timeout_s,
            on_exit=self._worker_exit("query worker", then=self._refuse_queued),
            on_done_error=lambda exc: self._guard.failed("reply", exc),
        )
        self._rate_limiter = ClientRateLimiter(s.client_rate_hz, s.client_burst)
        queries = ReentrantCallbackGroup()
        qos = self._sensor_qos()
        gate = IngestGate(s.ingest_rate_hz)
        # gated inputs: only the newest waits in DDS while the gate is shut
        image_qos = self._sensor_qos(depth=1) if gate.gating else qos
        self._not_taken.clear()
        self._sensors = sensors = SensorInputs(
            self, self._on_callback_error, gate, self._on_untaken
        )
        topic = self.resolve_topic_name  # this node's namespace and remapping rules
        pose = (
            ("pose", PoseStamped, self._on_pose)
            if s.pose_source == "pose"
            else ("odom", Odometry, self._on_odom)
        )
        for name, msg_type, callback in (
            ("rgb/image", Image, self._on_color),
            ("rgb/camera_info", CameraInfo, self._on_color_info),
            ("depth/image", Image, self._on_depth),
            ("depth/camera_info", CameraInfo, self._on_depth_info),
            pose,
        ):
            # Raw (serialized) where it pays: images are deserialised only for the frames kept
            # (a 640×480 frame costs more than everything else here), camera_info once per
            # calibration, PoseStamped read in place (ros/serialized.py).
            raw = msg_type in (Image, CameraInfo, PoseStamped)
            # images and camera_info (static calibration: the newest one serves) wait behind
            # the ingest gate; poses never do, the pose at an image stamp needs their history
            gated = msg_type in (Image, CameraInfo)
            sensors.subscribe(
                name, msg_type, topic(name), callback, image_qos if gated else qos, raw, gated
            )
        self._queries = q = QueryInterfaces(self)
        q.node.create_subscription(
            PointStamped,
            topic("clicked_point"),
            self._on_clicked_point,
            RESULT_QOS,
            callback_group=queries,
        )
        q.node.create_service(
            Query, self.resolve_service_name("~/query"), self._on_query, callback_group=queries
        )
        self._action = ActionServer(
            q.node,
            Ask,
            topic("~/ask"),
            execute_callback=self._on_ask,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=self._on_ask_cancel,
            callback_group=queries,
            # stages and tokens come in bursts; a deep history keeps early feedback from being overwritten
            feedback_pub_qos_profile=FEEDBACK_QOS,
        )
        self._active = True
        self._stopped.clear()
        self._ingest_thread = named_thread(
            self._ingest_loop, "llava3d-ingest", on_exit=self._worker_exit("ingestion")
        )
        self._ingest_thread.start()
        sensors.start()
        q.start()
        self._name_check = self.create_timer(NAME_CHECK_AFTER_S, self._check_name_is_unique)
        self.get_logger().info(
            "active: waiting for rgb/image, depth/image, rgb/camera_info and poses"
        )
        return super().on_activate(state)

    def _check_name_is_unique(self) -> None:
        """Once, after discovery had time: warn when another node has this node's full name.

        Two nodes with one name both serve ``~/query``; a caller cannot tell which answers.
        """
        timer, self._name_check = self._name_check, None
        if timer is not None:
            self.destroy_timer(timer)
        mine = self.get_fully_qualified_name()
        same = [
            n for n, ns in self.get_node_names_and_namespaces() if f"{ns.rstrip('/')}/{n}" == mine
        ]
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
        with self._ingest_cv:
            self._ingest.clear()
            self._ingest_cv.notify_all()
        if self._ingest_thread is not None:
            self._ingest_thread.join(5.0)
        # answer every accepted query (waiting: NOT_READY, running: CANCELED) and let their
        # handlers send the replies before the services and the action they came on go away
        if self.queue is not None:
            self.queue.stop(reason)
        self._wait_for_replies(self.REPLY_GRACE_S)
        self._close_interfaces()
        pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self.destroy_publisher(pub)

    @contextlib.contextmanager
    def _handling_call(self) -> Iterator[None]:
        """Count a ~/query or ~/ask handler as in flight while it runs."""
        with self._calls_cv:
            self._calls_in_flight += 1
        try:
            yield
        finally:
            with self._calls_cv:
                self._calls_in_flight -= 1
                self._calls_cv.notify_all()

    def _wait_for_replies(self, timeout_s: float) -> None:
        """Wait until no handler is in flight, then a moment for rclpy to send the last reply.

        rclpy sends a service reply (and an action result) right after the handler coroutine
        returns, with no hook after the send; the short sleep covers that step.
        """
        deadline = time.monotonic() + timeout_s
        with self._calls_cv:
            busy = self._calls_in_flight > 0
            while self._calls_in_flight > 0 and time.monotonic() < deadline:
                self._calls_cv.wait(deadline - time.monotonic())
            left = self._calls_in_flight
        if left:
            self.get_logger().warning(f"{left} query handlers still running after {timeout_s} s")
        elif busy:
            time.sleep(0.2)

    def _close_interfaces(self) -> None:
        """Destroy the action server and the helper nodes (with what they hold)."""
        if self._sensors is not None:
            self._sensors.close()
            self._sensors = None
        if self._action is not None:
            self._action.destroy()
            self._action = None
        if self._queries is not None:
            self._queries.close()
            self._queries = None

    def _helper_nodes(self) -> list[Node]:
        return [h.node for h in (self._sensors, self._queries) if h is not None]

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
        self.buffer, self.sync, self.settings = None, None, None
        self._model_state = "unconfigured"

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

    def _sensor_qos(self, depth: int | None = None) -> QoSProfile:
        s = self.settings
        depth = s.sensor_queue_size if depth is None else depth
        if s.sensor_qos == "sensor_data":
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=depth,
                reliability=qos_profile_sensor_data.reliability,
                durability=qos_profile_sensor_data.durability,
            )
        else:
            qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        return qos

    # ---------------------------------------------------------------- sensor input
    def _input_error(self, name: str, message: str) -> None:
        self._errors[name] = message
        self._error_counts[name] += 1
        self._guard.log(f"input {name}", "warning", f"{name}: {message}")

    def _on_sync_drop(self, reason: str) -> None:
        """A frame the synchroniser dropped: said in the log too, once per reason and period."""
        self._guard.log(f"drop {reason.split(':')[0]}", "warning", f"frame dropped: {reason}")

    def _on_time_jump(self, old_ns: int, new_ns: int) -> None:
        """The synchroniser saw time run backwards; ``_feed`` handles it once the lock is free.

        (The scene lock is never taken under the sync lock: a query holds the scene lock while
        it asks the synchroniser why there is no scene.)
        """
        self._jump = (old_ns, new_ns)

    def _apply_time_jump(self, old_ns: int, new_ns: int) -> None:
        """Sensor time ran backwards (a restarted bag or simulator): reset or re-time the scene.

        Frames of the old time line still queued for ingest are dropped; frames of the new one
        are queued only after this (see ``_feed``).
        """
        self._time_jumps += 1
        with self._ingest_cv:
            self._ingest.clear()
        keep = self.settings.time_jump_policy == "keep"
        with self._scene_lock:
            if keep:
                self.buffer.restart_timeline()
                what = f"scene kept ({len(self.buffer)} keyframes), new time line accepted"
            else:
                what = f"scene reset ({self.buffer.reset()} keyframes dropped)"
        self._warnings["time_jump"] = (
            f"sensor time jumped back from {old_ns / 1e9:.3f} s to {new_ns / 1e9:.3f} s: {what}"
        )
        self._guard.log(
            "time jump",
            "warning",
            f"sensor time jumped back from {old_ns / 1e9:.3f} s to {new_ns / 1e9:.3f} s "
            f"(a restarted bag or simulator, or a sim-time reset): {what} "
            f"(time_jump_policy={self.settings.time_jump_policy})",
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
        ]

    def _on_callback_error(self, name: str, exc: Exception) -> None:
        self._input_error(name, f"callback failed: {type(exc).__name__}: {exc}")

    def _feed(self, add: Callable[[], list[SyncedFrame]]) -> None:
        with self._sync_lock:
            if self.sync is None:
                return
            before = sum(self.sync.drops[k] for k in self.sync.drops if k.startswith("no pose"))
            frames = add()
            after = sum(self.sync.drops[k] for k in self.sync.drops if k.startswith("no pose"))
            self._pose_failures += after - before
            jump, self._jump = self._jump, None
        if jump is not None:
            self._apply_time_jump(*jump)
        if frames:
            sensors = self._sensors
            if sensors is not None:
                sensors.gate.frame_synced(time.monotonic())
            with self._ingest_cv:
                self._frames_synced += len(frames)
                self._ingest.extend(frames)
                self._ingest_cv.notify_all()

    def _on_untaken(self, topic: str, n: int) -> None:
        """Messages the ingest gate left in DDS: counted at the rate they were sent."""
        self._rates[topic].untaken(n)
        self._not_taken[topic] += n

    def _on_color(self, data: bytes) -> None:
        self._on_raw("rgb/image", Image, data, self.sync.add_color)

    def _on_depth(self, data: bytes) -> None:
        self._on_raw("depth/image", Image, data, self.sync.add_depth)

    def _on_color_info(self, data: bytes) -> None:
        self._on_raw("rgb/camera_info", CameraInfo, data, self.sync.add_color_info)

    def _on_depth_info(self, data: bytes) -> None:
        self._on_raw("depth/camera_info", CameraInfo, data, self.sync.add_depth_info)

    def _on_raw(
        self, topic: str, msg_type: type, data: bytes, add: Callable[[int, bytes], Any]
    ) -> None:
        """A raw image or camera_info: stamp peeked, an image's size bounded, then synchronised.

        Decoding waits for ingest, and only for the frames worth it (``_worth_decoding``).
        """
        self._rates[topic].tick()
        try:
            stamp = serialized.serialized_stamp_ns(data, msg_type)
            if msg_type is Image:
                serialized.check_serialized_size(data, self.settings.max_image_pixels)
        except convert.ConversionError as exc:
            return self._input_error(topic, str(exc))
        self._feed(lambda: add(stamp, data))

    def _on_pose(self, data: bytes) -> None:
        self._rates["pose"].tick()
        try:
            stamp, frame, mat = serialized.pose_stamped_from_serialized(data)
        except convert.ConversionError as exc:
            self._input_error("pose", str(exc))
            return
        self._add_pose("pose", stamp, frame, mat)

    def _on_odom(self, msg: Odometry) -> None:
        self._rates["odom"].tick()
        try:
            stamp, frame, mat = convert.odometry_to_matrix(msg)
        except convert.ConversionError as exc:
            self._input_error("odom", str(exc))
            return
        self._add_pose("odom", stamp, frame, mat @ self._camera_in_base())

    def _camera_in_base(self) -> np.ndarray:
        x, y, z, qx, qy, qz, qw = self.settings.camera_in_base
        from geometry_msgs.msg import Point, Pose, Quaternion

        return convert.pose_to_matrix(
            Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
        )

    def _add_pose(self, name: str, stamp: int, frame: str, mat: np.ndarray) -> None:
        world = self.settings.world_frame
        if frame and frame != world:
            self._input_error(
                name, f"pose is in frame {frame!r}, not the world frame {world!r}: dropped"
            )
            return
        self._feed(lambda: self.sync.add_pose(stamp, mat))

    # ---------------------------------------------------------------- ingest thread
    def _ingest_loop(self) -> None:
        while True:
            with self._ingest_cv:
                while not self._ingest and self._active:
                    self._ingest_cv.wait()
                if not self._active:
                    return
                synced = self._ingest.popleft()
            try:
                self._ingest_frame(synced)
            except Exception as exc:  # a bad frame must never stop ingestion
                self._input_error("frame", f"{type(exc).__name__}: {exc}")

    def _worth_decoding(self, f: SyncedFrame) -> bool:
        """Whether to decode a frame's images: a keyframe candidate, or a validation is due."""
        with self._scene_lock:
            if f.epoch != self.sync.epoch:
                return False  # matched before a time jump: its time line is gone
            try:
                keep = self.buffer.would_keep(f.stamp_ns, f.cam_to_world)
            except FrameOrderError as exc:
                self._input_error("frame", str(exc))
                return False
            except GeometryError:
                keep = True  # decode it: the full path reports the bad pose as before
            now = time.monotonic()
            if keep or now - self._last_validated >= VALIDATE_PERIOD_S:
                self._last_validated = now
                return True
            self.buffer.skip(f.stamp_ns)
            return False

    def _ingest_frame(self, f: SyncedFrame) -> None:
        if not self._worth_decoding(f):
            return
        limit = self.settings.max_image_pixels
        try:
            color = serialized.image_view_from_serialized(f.color)
            convert.check_image_size(color, limit)
            rgb = convert.color_from_image(color)
        except convert.ConversionError as exc:
            return self._input_error("rgb/image", str(exc))
        try:
            depth_msg = serialized.image_view_from_serialized(f.depth)
            convert.check_image_size(depth_msg, limit)
            depth = convert.depth_from_image(depth_msg)
        except convert.ConversionError as exc:
            return self._input_error("depth/image", str(exc))
        try:
            cam = self._color_info(f.color_info)
        except convert.ConversionError as exc:
            return self._input_error("rgb/camera_info", str(exc))
        h, w = rgb.shape[:2]
        if (cam.width, cam.height) != (w, h):
            return self._input_error(
                "rgb/camera_info",
                f"camera_info is {cam.width}x{cam.height} but rgb/image is {w}x{h}",
            )
        k_depth = self._depth_intrinsics(f, cam, depth.shape)
        if k_depth is None:
            return
        if color.frame_id != depth_msg.frame_id:
            self._warnings["frames"] = (
                f"colour frame {color.frame_id!r} and depth frame "
                f"{depth_msg.frame_id!r} differ: depth is assumed registered to colour"
            )
        if abs(f.pose_dt_ns) > 0:
            self._warnings["pose_dt"] = (
                f"pose taken {f.pose_dt_ns / 1e6:+.0f} ms from the image stamp (nearest, not interpolated)"
            )
        try:
            frame = Frame(rgb, depth, cam.k, k_depth, f.cam_to_world, f.stamp_ns)
            with self._scene_lock:
                if f.epoch != self.sync.epoch:
                    return None  # time jumped back while it was decoded
                fid = self.buffer.add(frame)
        except FrameOrderError as exc:
            return self._input_error("frame", str(exc))
        except GeometryError as exc:
            return self._input_error("depth/image", str(exc))
        if fid is not None:
            self._errors.pop("depth/image", None)
            self._maybe_align()
            self._publish_scene()

    def _maybe_align(self) -> None:
        """With axis_align, (re-)estimate the floor alignment as the scene grows."""
        if not self.settings.axis_align or len(self.buffer) not in ALIGN_AT_KEYFRAMES:
            return
        try:
            with self._scene_lock:
                self.buffer.estimate_alignment()
            self._warnings.pop("alignment", None)
        except GeometryError as exc:
            self._warnings["alignment"] = f"floor alignment not estimated: {exc}"

    def _depth_intrinsics(
        self, f: SyncedFrame, cam: convert.CameraModel, shape: tuple
    ) -> np.ndarray | None:
        dh, dw = shape
        if f.depth_info is not None:
            try:
                dcam = self._depth_info(f.depth_info)
            except convert.ConversionError as exc:
                self._input_error("depth/camera_info", str(exc))
                return None
            if (dcam.width, dcam.height) != (dw, dh):
                self._input_error(
                    "depth/camera_info",
                    f"camera_info is {dcam.width}x{dcam.height} but depth is {dw}x{dh}",
                )
                return None
            return dcam.k
        if (dw, dh) == (cam.width, cam.height):
            return cam.k
        if abs(dw / dh - cam.width / cam.height) > 0.02:
            self._input_error(
                "depth/image",
                f"colour is {cam.width}x{cam.height} but depth is {dw}x{dh} (different aspect): "
                "register depth to colour",
            )
            return None
        self._warnings["resolution"] = (
            f"colour {cam.width}x{cam.height} and depth {dw}x{dh} differ: depth intrinsics scaled "
            "from colour (publish depth/camera_info to give them)"
        )
        k = cam.k.copy()
        k[0] *= dw / cam.width
        k[1] *= dh / cam.height
        return k

    # ---------------------------------------------------------------- outputs
    def _publish(self, name: str, msg: Any) -> None:
        """Publish on an output that exists now (callers guard it: see ``_reply``)."""
        pub = self._pubs.get(name)
        if pub is not None:
            pub.publish(msg)

    def _publish_scene(self) -> None:
        if "scene_points" not in self._pubs and "debug_image" not in self._pubs:
            return
        with self._scene_lock:
            kfs = [self.buffer.keyframe(i) for i in self.buffer.frame_ids()]
        if not kfs:
            return
        self._guard.run("debug_image", lambda: self._publish_debug_image(kfs[-1].frame))
        self._guard.run("scene_points", lambda: self._publish_scene_points(kfs))

    def _publish_scene_points(self, kfs: list) -> None:
        now = time.monotonic()
        if "scene_points" not in self._pubs or now - self._points_published < SCENE_POINTS_PERIOD_S:
            return
        self._points_published = now
        cache, self._points_cache = self._points_cache, {}
        for kf in kfs:  # per keyframe once (again only when its pose was corrected)
            fid, pose = kf.frame.frame_id, kf.frame.cam_to_world
            hit = cache.get(fid)
            if hit is None or not np.array_equal(hit[0], pose):
                g = kf.points.valid.shape[0]
                p = kf.image.shape[0] // g
                # patch means (floored), rows first: ~10× faster than mean(axis=(1, 3))
                sums = kf.image.reshape(g, p, g, p, 3).sum(axis=1, dtype=np.uint32).sum(axis=2)
                colours = (sums // (p * p)).astype(np.uint8)
                cam = kf.points.cam_xyz[kf.points.valid].astype(np.float64)
                hit = (pose.copy(), cam @ pose[:3, :3].T + pose[:3, 3], colours[kf.points.valid])
            self._points_cache[fid] = hit
        xyz = np.concatenate([v[1] for v in self._points_cache.values()])
        rgb = np.concatenate([v[2] for v in self._points_cache.values()])
        cloud = convert.cloud_from_points(
            xyz, rgb, kfs[-1].frame.stamp_ns, self.settings.world_frame
        )
        self._publish("scene_points", cloud)

    def _publish_debug_image(self, frame: Frame) -> None:
        if "debug_image" not in self._pubs:
            return
        img = self._draw_debug_image(frame)
        self._publish(
            "debug_image",
            convert.array_to_image(
                img, "rgb8", frame.stamp_ns, self.settings.world_frame + "_debug"
            ),
        )

    def _draw_debug_image(self, frame: Frame) -> np.ndarray:
        """The frame's colour image with the last answer's boxes drawn in."""
        import cv2  # only needed for drawing

        img = np.ascontiguousarray(frame.rgb.copy())
        result = self._last_result
        if result is not None:
            h, w = img.shape[:2]
            for i, box in enumerate(result.boxes):
                corners = box_corners(box.center, box.size, box.euler)
                uv, inside = project_points(corners, frame.k_rgb, frame.cam_to_world, w, h)
                cam = (corners - frame.cam_to_world[:3, 3]) @ frame.cam_to_world[:3, :3]
                if (cam[:, 2] <= 0.05).any():
                    continue
                pts = np.round(uv).astype(np.int32)
                for a, b in BOX_EDGES:
                    cv2.line(
                        img, tuple(map(int, pts[a])), tuple(map(int, pts[b])), (255, 60, 60), 2
                    )
                if inside.any():
                    anchor = tuple(map(int, pts[inside][0]))
                    cv2.putText(
                        img,
                        box.label or f"object {i}",
                        anchor,
                        cv2.FONT_HERSHEY_SIMPLEX,
                        0.6,
                        (255, 255, 0),
                        2,
                    )
        return img

    def _reply(
        self, result: AnswerResult, req: QueryRequest, done: Callable[[Answer], None]
    ) -> None:
        """Send the reply first, then the optional outputs, each guarded (never the reply's loss).

        The reply is the only step that must happen; a log line, ``~/answer``, the markers or
        the debug image that fail are counted in /diagnostics and logged, never propagated.
        """
        msg = self._answer_msg(result, req)
        try:
            done(msg)
        except Exception as exc:  # the caller's end failed (e.g. its goal is gone); go on
            self._guard.failed("reply", exc)
        self._guard.run("answer log", lambda: self._log_answer(result))
        self._guard.run("~/answer", lambda: self._publish("answer", msg))
        if result.code == ResultCode.BUSY:
            return
        if result.success:
            self._last_result = result
        self._guard.run("markers", lambda: self._publish_markers(result, msg))
        if result.success:
            self._guard.run("debug_image", self._publish_newest_debug_image)

    def _answer_msg(self, result: AnswerResult, req: QueryRequest) -> Answer:
        """The Answer message of ``result``; a result that cannot be converted becomes MODEL_ERROR."""
        world = self.settings.world_frame if self.settings else ""
        if not result.model and self.engine is not None:
            result.model = self.engine.model_id  # say which model even when it was not run
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

    def _newest_frame(self) -> Frame | None:
        with self._scene_lock:
            if self.buffer is None or not len(self.buffer):
                return None
            return self.buffer.keyframe(self.buffer.frame_ids()[-1]).frame

    def _publish_markers(self, result: AnswerResult, msg: Answer) -> None:
        from llava3d_ros.ros.markers import answer_markers

        newest = self._newest_frame()
        camera = newest.cam_to_world[:3, 3] if newest is not None else None
        world = self.settings.world_frame if self.settings else ""
        stamp = convert.stamp_to_ns(msg.header.stamp)
        self._publish("markers", answer_markers(result, world, stamp, camera))

    def _publish_newest_debug_image(self) -> None:
        newest = self._newest_frame()
        if newest is not None:
            self._publish_debug_image(newest)

    def _log_answer(self, result: AnswerResult) -> None:
        """Failures and warnings go to the log too (the caller has them in the Answer)."""
        if result.code == ResultCode.MODEL_ERROR:
            self.get_logger().error(f"query failed: MODEL_ERROR: {result.message}")
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

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        h = self.health()
        self._diag_pub.publish(
            diagnostic_array(h, self.get_fully_qualified_name(), self.get_clock().now().nanoseconds)
        )

    def health(self) -> Health:
        """What /diagnostics reports now."""
        s = self.settings
        h = Health(
            rates_hz={k: round(m.rate(), 3) for k, m in self._rates.items()},
            input_errors=dict(self._errors),
            input_error_counts=dict(self._error_counts),
            pose_failures=self._pose_failures,
            frames_synced=self._frames_synced,
            warnings=list(self._warnings.values()),
            model_state=self._model_state,
            model_id=self.engine.model_id if self.engine is not None else "",
            model_error=self._model_error,
            ingest_queue=len(self._ingest),
            not_taken=dict(self._not_taken),
            stopped=dict(self._stopped),
            time_jumps=self._time_jumps,
        )
        h.output_failures, h.output_errors = self._guard.snapshot()
        if self.sync is not None:
            with self._sync_lock:
                h.sync_drops = dict(self.sync.drops)
                h.sync_waiting = self.sync.waiting()
                lag = None
                newest_pose = self.sync.poses.newest_ns
                if self.sync._last_emitted_ns > 0 and newest_pose is not None:
                    lag = self.sync._last_emitted_ns - newest_pose
            if lag is not None and s is not None and lag > s.pose_tolerance_s * 1e9:
                h.warnings.append(
                    f"stale poses: newest pose is {lag / 1e6:.0f} ms older than the newest image"
                )
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

    def _why_no_scene(self) -> str:
        parts = [f"{k}: {v}" for k, v in sorted(self._errors.items())]
        if self.sync is not None:
            with self._sync_lock:
                if self.sync.last_drop:
                    parts.append(f"last sync drop: {self.sync.last_drop}")
                waiting = {k: v for k, v in self.sync.waiting().items() if v}
            if waiting:
                parts.append(f"unmatched messages: {waiting}")
        silent = [
            k for k in ("rgb/image", "depth/image", "rgb/camera_info") if self._rates[k].count == 0
        ]
        if silent:
            parts.append(f"nothing received on {', '.join(silent)}")
        return "; ".join(parts)

    # ---------------------------------------------------------------- queries
    def _completion(self) -> Future:
        fut = Future(executor=self._queries.executor)
        fut.add_done_callback(lambda _: None)  # schedules a task, which wakes the executor
        return fut

    def _start(
        self,
        prompt: Any,
        done: Callable[[Answer], None],
        on_stage: Callable[[str], None] | None = None,
        on_token: Callable[[str, int], None] | None = None,
    ) -> Job | None:
        """Convert, validate and queue a prompt; ``done`` gets the Answer (at once when refused)."""
        req = QueryRequest()
        try:
            req = (
                convert.prompt_from_msg(prompt) if not isinstance(prompt, QueryRequest) else prompt
            )
            if not self._active or self.queue is None or self.settings is None:
                raise QueryError(ResultCode.NOT_READY, "the node is not active")
            if "query worker" in self._stopped:
                raise QueryError(
                    ResultCode.NOT_READY,
                    f"query worker stopped: {self._stopped['query worker']}; reactivate the node",
                )
            req = validate(req, self._defaults())
            if not self._rate_limiter.allow(req.client_id):
                who = repr(req.client_id) if req.client_id else "anonymous callers"
                raise QueryError(
                    ResultCode.BUSY,
                    f"{who} exceeded client_rate_hz={self.settings.client_rate_hz:g} "
                    f"(burst {self.settings.client_burst}); try again later",
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

    async def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        with self._handling_call():
            fut = self._completion()
            self._start(request.prompt, fut.set_result)
            response.answer = await fut
            return response

    async def _on_ask(self, goal_handle: Any) -> Ask.Result:
        with self._handling_call():
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

        job = self._start(goal_handle.request.prompt, fut.set_result, stage, token)
        if job is not None:
            self._jobs_by_goal[bytes(goal_handle.goal_id.uuid)] = job
        answer = await fut
        self._jobs_by_goal.pop(bytes(goal_handle.goal_id.uuid), None)
        if answer.code == Answer.CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif answer.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return Ask.Result(answer=answer)

    def _on_ask_cancel(self, goal_handle: Any) -> CancelResponse:
        job = self._jobs_by_goal.get(bytes(goal_handle.goal_id.uuid))
        if job is not None and self.queue is not None:
            self.queue.cancel(job)
        return CancelResponse.ACCEPT

    def _on_clicked_point(self, msg: PointStamped) -> None:
        p = msg.point
        click = PointClick(np.array([p.x, p.y, p.z]), msg.header.frame_id)
        self._start(QueryRequest(task="caption", clicks=(click,)), lambda answer: None)


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
