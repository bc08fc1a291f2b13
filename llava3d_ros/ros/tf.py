"""TF at the edge: one ``lookup(target, source, stamp_ns)`` whichever TF the install has.

On a full ROS 2 install, tf2_ros's ``Buffer`` + ``TransformListener`` do the work. Where
tf2_ros cannot be installed (PyPI wheels), the project's own ``TransformBuffer`` is fed from
``/tf`` and ``/tf_static`` (``tf2_msgs/TFMessage``) by the sensor helper node. Both raise
``TransformError`` with tf2's failure kinds, so the node cannot tell them apart.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from llava3d_ros.ros.diagnostics import Health, RateMeter
from llava3d_ros.scene.transforms import TransformBuffer, TransformError

# tf2_ros's own listener profiles: /tf reliable and volatile, /tf_static transient-local
TF_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE
)
TF_STATIC_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def tf2_ros_available() -> bool:
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def _strip(frame: str) -> str:
    return frame[1:] if frame.startswith("/") else frame  # tf2 ignores a leading slash


class TfInput:
    """The node's TF: lookups plus what /diagnostics says of it.

    ``on_update()`` runs after each /tf message was applied (frames waiting for their pose
    can be resolved then). ``time_jump_ns``: a dynamic transform this far behind the newest
    one means the source restarted (a bag looped): the dynamic history is cleared.
    """

    def __init__(
        self,
        cache_s: float,
        on_update: Callable[[], None] = lambda: None,
        time_jump_ns: int = 500_000_000,
        use_tf2_ros: bool | None = None,
    ) -> None:
        self.cache_s = cache_s
        self._on_update = on_update
        self.time_jump_ns = time_jump_ns
        self.backend = "tf2_ros" if (use_tf2_ros is None and tf2_ros_available()) else "own"
        if use_tf2_ros is not None:
            self.backend = "tf2_ros" if use_tf2_ros else "own"
        self.buffer = TransformBuffer(cache_s=cache_s)
        self._tf2: Any = None  # (tf2_ros.Buffer, TransformListener) on a full install
        self._lock = threading.Lock()
        self._newest_ns = 0
        self.rates = {"tf": RateMeter(), "tf_static": RateMeter()}
        self.errors: collections.Counter[str] = collections.Counter()
        self.last_error = ""
        self.clears = 0

    # ------------------------------------------------------------------ wiring
    def subscribe(self, sensors: Any, node_for_tf2: Callable[[], Any]) -> None:
        """/tf and /tf_static on ``sensors`` (own buffer), or a tf2_ros listener on its own node."""
        if self.backend == "tf2_ros":
            import tf2_ros
            from rclpy.duration import Duration

            buffer = tf2_ros.Buffer(cache_time=Duration(nanoseconds=int(self.cache_s * 1e9)))
            node = node_for_tf2()  # its own node: the listener's thread spins all of it
            self._tf2 = (buffer, tf2_ros.TransformListener(buffer, node, spin_thread=True), node)
            return
        from tf2_msgs.msg import TFMessage

        sensors.subscribe("tf", TFMessage, "/tf", self.on_tf, TF_QOS, False, False)
        sensors.subscribe(
            "tf_static", TFMessage, "/tf_static", self.on_tf_static, TF_STATIC_QOS, False, False
        )

    def close(self) -> None:
        if self._tf2 is not None:
            _, listener, node = self._tf2
            listener.unregister()
            node.destroy_node()
        self._tf2 = None

    # ------------------------------------------------------------------ input
    def on_tf(self, msg: Any) -> None:
        self.rates["tf"].tick()
        self._apply(msg, static=False)
        self._on_update()

    def on_tf_static(self, msg: Any) -> None:
        self.rates["tf_static"].tick()
        self._apply(msg, static=True)
        self._on_update()

    def _apply(self, msg: Any, static: bool) -> None:
        for t in msg.transforms:
            stamp = int(t.header.stamp.sec) * 1_000_000_000 + int(t.header.stamp.nanosec)
            if not static:
                with self._lock:
                    if stamp < self._newest_ns - self.time_jump_ns:
                        self.buffer.clear()  # time restarted: statics stay
                        self.clears += 1
                        self._newest_ns = stamp
                    self._newest_ns = max(self._newest_ns, stamp)
            tr, q = t.transform.translation, t.transform.rotation
            try:
                self.buffer.set_transform(
                    _strip(t.header.frame_id),
                    _strip(t.child_frame_id),
                    stamp,
                    np.array([tr.x, tr.y, tr.z]),
                    np.array([q.x, q.y, q.z, q.w]),
                    static=static,
                )
            except ValueError as exc:
                self.errors["bad transform"] += 1
                self.last_error = (
                    f"{'/tf_static' if static else '/tf'} {t.header.frame_id!r} → "
                    f"{t.child_frame_id!r}: {exc}"
                )

    def clear(self) -> None:
        """Forget dynamic transforms (sensor time restarted); static ones stay."""
        with self._lock:
            self.buffer.clear()
            if self._tf2 is not None:
                self._tf2[0].clear()
            self._newest_ns = 0
            self.clears += 1

    # ------------------------------------------------------------------ lookups
    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """``target_T_source`` (4×4) at ``stamp_ns`` (0 = latest); raises ``TransformError``."""
        target, source = _strip(target), _strip(source)
        if self._tf2 is not None:
            return _tf2_lookup(self._tf2[0], target, source, stamp_ns)
        return self.buffer.lookup(target, source, stamp_ns)

    def report(self, h: Health) -> None:
        h.rates_hz.update({k: round(m.rate(), 3) for k, m in self.rates.items()})
        h.tf = {
            "backend": self.backend,
            "frames": len(self.buffer.frames()) if self._tf2 is None else -1,
            "clears": self.clears,
            "errors": dict(self.errors),
            "last_error": self.last_error,
        }


def _tf2_lookup(buffer: Any, target: str, source: str, stamp_ns: int) -> np.ndarray:
    """tf2_ros lookup, its exceptions mapped onto ``TransformError`` kinds.

    Written against tf2_ros's documented Python API; this environment cannot install tf2_ros,
    so this path is exercised only on a full ROS 2 install.
    """
    import tf2_ros
    from rclpy.time import Time
    from scipy.spatial.transform import Rotation

    try:
        t = buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns))
    except tf2_ros.ExtrapolationException as exc:
        reason = "too_old" if "past" in str(exc) else "extrapolation"
        raise TransformError(reason, target, source, stamp_ns, str(exc)) from exc
    except tf2_ros.ConnectivityException as exc:
        raise TransformError("no_path", target, source, stamp_ns, str(exc)) from exc
    except tf2_ros.LookupException as exc:
        raise TransformError("unknown_frame", target, source, stamp_ns, str(exc)) from exc
    except tf2_ros.TransformException as exc:
        raise TransformError("no_path", target, source, stamp_ns, str(exc)) from exc
    tr, q = t.transform.translation, t.transform.rotation
    m = np.eye(4)
    m[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    m[:3, 3] = (tr.x, tr.y, tr.z)
    return m
