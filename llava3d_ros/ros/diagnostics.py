"""Input rates and the node's health as diagnostic_msgs (diagnostic_updater is not installable here)."""

from __future__ import annotations

import collections
import resource
import threading
import time
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from llava3d_ros.ros.convert import ns_to_stamp


class RateMeter:
    """Messages per second over a sliding wall-clock window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self.count = 0
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self.count += 1
            self._trim(now)

    def untaken(self, n: int, now: float | None = None) -> None:
        """Count ``n`` messages that arrived since the last tick but were never taken.

        Their arrival times are unknown; they are spread evenly between the last tick and now,
        which is what a steady stream would have shown.
        """
        if n <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            start = self._times[-1] if self._times else now - self.window_s
            step = (now - start) / (n + 1)
            self._times.extend(start + step * (i + 1) for i in range(n))
            self.count += n
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclass
class Health:
    """A snapshot of what /diagnostics reports, gathered by the node."""

    rates_hz: dict[str, float] = field(default_factory=dict)
    input_errors: dict[str, str] = field(default_factory=dict)  # input → last error
    input_error_counts: dict[str, int] = field(default_factory=dict)
    sync_drops: dict[str, int] = field(default_factory=dict)
    frames_synced: int = 0
    sync_waiting: dict[str, int] = field(default_factory=dict)  # unmatched, per stream
    ingest_queue: int = 0  # synced frames not yet decoded into the scene
    # per input: messages left in DDS by the ingest_rate_hz gate (counted, never received)
    not_taken: dict[str, int] = field(default_factory=dict)
    pose_failures: int = 0
    warnings: list[str] = field(default_factory=list)
    keyframes: int = 0
    capacity: int = 0
    buffer_mb: float = 0.0
    model_state: str = "unconfigured"  # unconfigured | loaded | failed | released
    model_id: str = ""
    model_error: str = ""
    queries_pending: int = 0
    queries_done: int = 0
    queries_busy: int = 0
    last_latency_s: float = 0.0
    stopped: dict[str, str] = field(default_factory=dict)  # worker → why it stopped
    time_jumps: int = 0  # times sensor time ran backwards (restarted bag, simulator)
    # optional outputs (log, publishers, markers, debug image, diagnostics) that raised
    output_failures: dict[str, int] = field(default_factory=dict)
    output_errors: dict[str, str] = field(default_factory=dict)  # step → last error
    alignment: str = "n/a"  # SceneIngest.alignment_state(): identity (why) | given | estimated
    newest_keyframe_age_s: float | None = None  # wall-clock seconds; None: no keyframe yet
    ingestion_alive: bool = False  # the ingest worker thread is running
    tf: dict[str, object] = field(default_factory=dict)  # backend, frames, clears, errors
    cameras: dict[str, str] = field(default_factory=dict)  # camera name → optical frame seen
    corrections: dict[str, object] = field(default_factory=dict)  # keyframe_corrections


def process_memory_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gpu_memory_mb() -> float | None:
    """Memory held by torch's CUDA allocator, or None without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.memory_allocated() / 2**20


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return KeyValue(key=key, value=str(value))


def diagnostic_array(h: Health, node_name: str, stamp_ns: int) -> DiagnosticArray:
    """Four statuses: inputs, scene buffer, model + queries, optional outputs."""
    prefix = f"{node_name}: "
    inputs = DiagnosticStatus(name=prefix + "inputs", hardware_id=node_name)
    inputs.values = [_kv(f"rate_hz.{k}", v) for k, v in sorted(h.rates_hz.items())]
    inputs.values += [_kv(f"sync_drops.{k}", v) for k, v in sorted(h.sync_drops.items())]
    inputs.values += [_kv(f"errors.{k}", v) for k, v in sorted(h.input_error_counts.items())]
    inputs.values += [_kv(f"last_error.{k}", v) for k, v in sorted(h.input_errors.items())]
    inputs.values += [_kv("frames_synced", h.frames_synced), _kv("pose_failures", h.pose_failures)]
    inputs.values += [_kv(f"sync_waiting.{k}", v) for k, v in sorted(h.sync_waiting.items())]
    inputs.values += [_kv("ingest_queue", h.ingest_queue)]
    inputs.values += [_kv(f"not_taken.{k}", v) for k, v in sorted(h.not_taken.items())]
    inputs.values += [_kv(f"warning.{i}", w) for i, w in enumerate(h.warnings)]
    inputs.values += [_kv("time_jumps", h.time_jumps)]
    inputs.values += [_kv("cameras", len(h.cameras))]
    inputs.values += [_kv(f"camera_frame.{k or '.'}", v) for k, v in sorted(h.cameras.items())]
    inputs.values += [_kv(f"tf.{k}", v) for k, v in sorted(h.tf.items())]
    inputs.values += [_kv(f"corrections.{k}", v) for k, v in sorted(h.corrections.items())]
    inputs.values += [_kv("ingestion_alive", h.ingestion_alive)]
    inputs.values += [_kv(f"stopped.{k}", v) for k, v in sorted(h.stopped.items())]
    problems = list(h.warnings) + [f"{k}: {v}" for k, v in sorted(h.input_errors.items())]
    if "ingestion" in h.stopped:
        inputs.level = DiagnosticStatus.ERROR
        inputs.message = f"ingestion stopped: {h.stopped['ingestion']}"[:500]
    elif problems:
        inputs.level, inputs.message = DiagnosticStatus.WARN, "; ".join(problems)[:500]
    elif not any(h.rates_hz.values()):
        inputs.level, inputs.message = DiagnosticStatus.WARN, "no sensor input"
    else:
        inputs.level, inputs.message = DiagnosticStatus.OK, "receiving"

    scene = DiagnosticStatus(name=prefix + "scene", hardware_id=node_name)
    scene.values = [
        _kv("keyframes", h.keyframes),
        _kv("capacity", h.capacity),
        _kv("fill", h.keyframes / h.capacity if h.capacity else 0.0),
        _kv("buffer_mb", h.buffer_mb),
        _kv("alignment", h.alignment),
        _kv(
            "newest_keyframe_age_s",
            "n/a" if h.newest_keyframe_age_s is None else h.newest_keyframe_age_s,
        ),
    ]
    scene.level = DiagnosticStatus.OK if h.keyframes else DiagnosticStatus.WARN
    scene.message = f"{h.keyframes}/{h.capacity} keyframes" if h.keyframes else "no keyframe yet"

    model = DiagnosticStatus(name=prefix + "model", hardware_id=node_name)
    gpu = gpu_memory_mb()
    model.values = [
        _kv("state", h.model_state),
        _kv("model", h.model_id),
        _kv("error", h.model_error),
        _kv("process_peak_rss_mb", process_memory_mb()),
        _kv("gpu_allocated_mb", "n/a" if gpu is None else gpu),
        _kv("queries_pending", h.queries_pending),
        _kv("queries_done", h.queries_done),
        _kv("queries_busy", h.queries_busy),
        _kv("last_latency_s", h.last_latency_s),
    ]
    workers = {k: v for k, v in h.stopped.items() if k != "ingestion"}
    if workers:
        model.level = DiagnosticStatus.ERROR
        model.message = "; ".join(f"{k} stopped: {v}" for k, v in sorted(workers.items()))[:500]
    elif h.model_state == "failed":
        model.level, model.message = (
            DiagnosticStatus.ERROR,
            f"model failed to load: {h.model_error}",
        )
    elif h.model_state == "loaded":
        model.level, model.message = DiagnosticStatus.OK, h.model_id
    else:
        model.level, model.message = DiagnosticStatus.WARN, f"model {h.model_state}"
    outputs = DiagnosticStatus(name=prefix + "outputs", hardware_id=node_name)
    outputs.values = [_kv(f"output_failures.{k}", v) for k, v in sorted(h.output_failures.items())]
    outputs.values += [_kv(f"output_error.{k}", v) for k, v in sorted(h.output_errors.items())]
    if h.output_failures:
        outputs.level = DiagnosticStatus.WARN
        outputs.message = "failed (replies unaffected): " + "; ".join(
            f"{k} ×{n}" for k, n in sorted(h.output_failures.items())
        )
    else:
        outputs.level, outputs.message = DiagnosticStatus.OK, "all published"
    header = Header(stamp=ns_to_stamp(stamp_ns))
    return DiagnosticArray(header=header, status=[inputs, scene, model, outputs])
