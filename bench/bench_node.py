"""Node overheads over loopback DDS, each next to a baseline measured in the same run.

1. ~/query round trip excluding the model: the node runs with an instant model stand-in (it
   returns OK at once), so what is left is conversion, validation, the queue, view collection
   and publishing. Baseline: a bare rclpy service of the same type answering at once.
2. CPU cost of ingesting 30 Hz 640×480 RGB-D + camera_info + pose (the camera moves 1 cm per
   frame, so a keyframe every ~10 frames). Baselines: bare rclpy processes subscribed to the
   same four topics with empty callbacks, one deserialising the images into Python messages,
   one taking them as raw bytes (raw=True, as the node does), and that one again with the
   node's malloc settings (ros/malloc.py). CPU = the child process's user+system time over
   the publishing window. Each row also gives the rate the publisher
   achieved and what the subscriber got (a starved publisher would under-report CPU), and the
   node's CPU is split by thread (sensor wait loop, ingest, Fast DDS shared-memory receive).
   The node runs with its defaults (images taken at ingest_rate_hz = 5, the newest each
   time), with the Jetson preset's resize, and taking every frame (ingest_rate_hz = 0); the
   keyframes each kept say what the scene got out of it.
3. The same ingest with compressed inputs, in the same run: the same frames JPEG-encoded
   (quality 95, "rgb8; jpeg compressed bgr8") on rgb/image/compressed and PNG-encoded
   ("16UC1; compressedDepth png") on depth/image/compressedDepth, the node started with
   rgb_transport:=compressed and depth_transport:=compressedDepth (defaults, and every frame
   taken); baseline: a bare subscriber taking the compressed topics as raw bytes. The ratio
   rows say what compressed input costs over raw. The node decodes only the frames worth it
   (keyframe candidates, and one a validation period), so a row also times the decoding of
   one frame in this process (JPEG + PNG, geometry/compressed.py) for scale. The colour frames are noise, JPEG's worst
   case (large files, every coefficient coded): a camera's images are smaller and decode
   faster.

Run: .venv/bin/python bench/bench_node.py [--seconds 10] [--calls 200] [--part rtt|cpu|compressed]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llava3d_ros.ros.dds import loopback_env, use_loopback  # noqa: E402


class InstantEngine:
    """Model stand-in for measuring the node alone: answers OK at once, labelled as such."""

    model_id = "instant-bench-stand-in (random-weights)"
    image_size, grid = 336, 24

    def __init__(self, settings) -> None:
        pass

    def answer(self, views, question, **kw):
        from llava3d_ros.answer import AnswerResult, ResultCode

        return AnswerResult(
            ResultCode.OK,
            text="ok",
            model=self.model_id,
            view_stamps_ns=[v.stamp_ns for v in views],
        )

    def release(self) -> None:
        pass


# node roles: the parameters each runs with, beyond publish_debug_image:=false
NODE_ROLES = {
    "node": (),
    "node1": ("torch_threads:=1",),
    "node_cv": ("image_resample:=opencv",),
    "node_all": ("ingest_rate_hz:=0.0",),
    "node_c": ("rgb_transport:=compressed", "depth_transport:=compressedDepth"),
    "node_all_c": (
        "rgb_transport:=compressed",
        "depth_transport:=compressedDepth",
        "ingest_rate_hz:=0.0",
    ),
}
COMPRESSED_ROLES = ("subscriber_raw_c", "node_c", "node_all_c")


def serve_node(params: tuple[str, ...]) -> int:
    from llava3d_ros.ros.node import main

    args = ["llava3d_node", "--autostart", "--ros-args", "-p", "publish_debug_image:=false"]
    for p in params:
        args += ["-p", p]
    return main(args, engine_factory=InstantEngine)


def serve_bare(kind: str, report: str | None) -> int:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from llava3d_ros.srv import Query

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("llava3d", context=ctx)
    received = [0]
    if kind == "service":
        node.create_service(Query, "~/query", lambda req, resp: resp)
    else:
        raw = kind.startswith("subscriber_raw")
        compressed = kind in COMPRESSED_ROLES
        if kind == "subscriber_raw_tuned":
            from llava3d_ros.ros.malloc import tune_malloc

            tune_malloc()

        def count(m) -> None:
            received[0] += 1

        rgb_topic, depth_topic, image = (
            ("rgb/image/compressed", "depth/image/compressedDepth", CompressedImage)
            if compressed
            else ("rgb/image", "depth/image", Image)
        )
        for t, topic, cb in (
            (image, rgb_topic, count),
            (image, depth_topic, lambda m: None),
            (CameraInfo, "rgb/camera_info", lambda m: None),
            (PoseStamped, "pose", lambda m: None),
        ):
            node.create_subscription(t, topic, cb, qos_profile_sensor_data, raw=raw and t is image)
    # SIGINT (stop()) ends the spin: rclpy's own handler does not wake an executor of a context
    # of its own when no message arrives, and the count was lost (a killed baseline: "nan Hz")
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        while not stopping.is_set():
            executor.spin_once(timeout_sec=0.1)
    finally:
        if report:
            Path(report).write_text(json.dumps({"rgb_received": received[0]}))
    return 0


def _stat_cpu_seconds(stat: Path) -> float:
    """user + system time of a /proc/.../stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per native thread name (llava3d threads name themselves, llava3d_ros/threads.py)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = _stat_cpu_seconds(task / "stat")
        except OSError:  # the thread ended
            continue
        name = "dds.shm" if name.startswith("dds.shm") else name
        out[name] = out.get(name, 0.0) + seconds
    return out


def start(role: str, env: dict, report: Path | None = None) -> subprocess.Popen:
    extra = ["--report", str(report)] if report else []
    return subprocess.Popen(
        [sys.executable, __file__, "--serve", role, *extra],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(p: subprocess.Popen) -> None:
    p.send_signal(2)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def round_trips(client, n: int, prompt, check: bool) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        answer = client.query(prompt, timeout=10)
        out.append(time.perf_counter() - t)
        if check and not answer.success:
            raise RuntimeError(f"bench query failed: {answer.message}")
    return out


def frame(i: int, rng) -> tuple:
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth = np.full((480, 640), 2000, dtype=np.uint16)
    depth[::7, ::5] = 0
    pose = np.eye(4)
    pose[0, 3] = 0.01 * i
    k = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    return rgb, depth, k, pose


class PrebuiltFrames:
    """The input messages of each frame built once; publishing only restamps them.

    Keeps the publisher (in this process, on the same cores) from starving: building a
    640×480 Image from an array every frame costs more than sending it.
    """

    def __init__(self, pub, frames: list[tuple]) -> None:
        from geometry_msgs.msg import PoseStamped
        from std_msgs.msg import Header

        from llava3d_ros.ros.convert import array_to_image, matrix_to_pose
        from llava3d_ros.ros.publish import camera_info

        self.pub = pub
        self.msgs = []
        for rgb, depth, k, pose in frames:
            h, w = rgb.shape[:2]
            p = PoseStamped(header=Header(frame_id=pub.world_frame), pose=matrix_to_pose(pose))
            self.msgs.append(
                (
                    p,
                    camera_info(k, w, h, 0, pub.camera_frame),
                    array_to_image(depth, "16UC1", 0, pub.camera_frame),
                    array_to_image(rgb, "rgb8", 0, pub.camera_frame),
                )
            )

    def wait_for_subscribers(self, timeout: float) -> bool:
        return self.pub.wait_for_subscribers(timeout)

    def publish(self, i: int, stamp_ns: int, x: float) -> None:
        from llava3d_ros.ros.convert import ns_to_stamp

        pose, info, depth, rgb = self.msgs[i % len(self.msgs)]
        stamp = ns_to_stamp(stamp_ns)
        for m in (pose, info, depth, rgb):
            m.header.stamp = stamp
        pose.pose.position.x = x
        self.pub.pose.publish(pose)
        self.pub.info.publish(info)
        self.pub.depth.publish(depth)
        self.pub.rgb.publish(rgb)


class PrebuiltCompressedFrames:
    """The same frames as image_transport's ``compressed`` / ``compressedDepth`` publish them.

    Topics ``rgb/image/compressed`` (JPEG, quality 95) and ``depth/image/compressedDepth``
    (12-byte header + 16-bit PNG, level 9: those plugins' defaults), with the raw frames'
    camera_info and pose publishers.
    """

    def __init__(self, node, pub, frames: list[tuple]) -> None:
        import struct

        import cv2
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CompressedImage
        from std_msgs.msg import Header

        from llava3d_ros.ros.convert import matrix_to_pose
        from llava3d_ros.ros.publish import SENSOR_PUB_QOS, camera_info

        self.pub = pub
        self.rgb = node.create_publisher(CompressedImage, "rgb/image/compressed", SENSOR_PUB_QOS)
        self.depth = node.create_publisher(
            CompressedImage, "depth/image/compressedDepth", SENSOR_PUB_QOS
        )
        self.msgs = []
        self.sizes = []
        for rgb, depth, k, pose in frames:
            h, w = rgb.shape[:2]
            header = Header(frame_id=pub.camera_frame)
            ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            ok2, png = cv2.imencode(".png", depth, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            assert ok and ok2
            c_rgb = CompressedImage(header=header, format="rgb8; jpeg compressed bgr8")
            c_rgb.data = jpg.tobytes()
            c_depth = CompressedImage(header=Header(frame_id=pub.camera_frame))
            c_depth.format = "16UC1; compressedDepth png"
            c_depth.data = struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()
            p = PoseStamped(header=Header(frame_id=pub.world_frame), pose=matrix_to_pose(pose))
            self.msgs.append((p, camera_info(k, w, h, 0, pub.camera_frame), c_depth, c_rgb))
            self.sizes.append((len(c_rgb.data), len(c_depth.data)))

    def wait_for_subscribers(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pubs = (self.rgb, self.depth, self.pub.info, self.pub.pose)
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.05)
        return False

    def publish(self, i: int, stamp_ns: int, x: float) -> None:
        from llava3d_ros.ros.convert import ns_to_stamp

        pose, info, depth, rgb = self.msgs[i % len(self.msgs)]
        stamp = ns_to_stamp(stamp_ns)
        for m in (pose, info, depth, rgb):
            m.header.stamp = stamp
        pose.pose.position.x = x
        self.pub.pose.publish(pose)
        self.pub.info.publish(info)
        self.depth.publish(depth)
        self.rgb.publish(rgb)


class DiagnosticsReader:
    """The newest /diagnostics key/values of the node under test."""

    def __init__(self, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        self.values: dict[str, str] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg) -> None:
        for status in msg.status:
            self.values.update({kv.key: kv.value for kv in status.values})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = [
        *NODE_ROLES,
        "service",
        "subscriber",
        "subscriber_raw",
        "subscriber_raw_tuned",
        "subscriber_raw_c",
    ]
    ap.add_argument("--serve", choices=roles)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument(
        "--part",
        choices=["all", "rtt", "cpu", "compressed"],
        default="all",
        help="compressed: the raw defaults and every compressed row (cpu includes them)",
    )
    args = ap.parse_args()
    if args.serve in NODE_ROLES:
        return serve_node(NODE_ROLES[args.serve])
    if args.serve:
        return serve_bare(args.serve, args.report)

    domain = use_loopback()
    env = loopback_env(domain_id=domain)
    import tempfile

    import rclpy

    from llava3d_ros.ros.client import Llava3dClient, make_prompt
    from llava3d_ros.ros.publish import FramePublisher

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    client = Llava3dClient("/llava3d", ctx)
    diagnostics = DiagnosticsReader(client.node)
    pub_node = rclpy.create_node("bench_publisher", context=ctx)
    pub = FramePublisher(pub_node)
    rng = np.random.default_rng(0)
    frames = [frame(i, rng) for i in range(30)]
    prebuilt = PrebuiltFrames(pub, frames)
    prebuilt_c = PrebuiltCompressedFrames(pub_node, pub, frames)
    rows = []

    # 1. round trip
    if args.part in ("all", "rtt"):
        rtt = {}
        for role in ("service", "node", "node1"):
            p = start(role, env)
            try:
                is_node = role.startswith("node")
                client.wait_for_node(120) if is_node else client._query.wait_for_service(60)
                if is_node:
                    pub.wait_for_subscribers(30)
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        rgb, depth, k, pose = frames[0]
                        pub.publish(rgb, depth, k, pose, 1_000_000_000)
                        if client.query(make_prompt("ready?"), timeout=10).success:
                            break
                round_trips(client, 20, make_prompt("warm up"), is_node)
                rtt[role] = round_trips(client, args.calls, make_prompt("what is here?"), is_node)
            finally:
                stop(p)
        for role, label in (
            ("service", "bare rclpy Query service (baseline)"),
            ("node", "llava3d ~/query, model excluded (defaults)"),
            ("node1", "  same, torch_threads:=1"),
        ):
            ms = [x * 1e3 for x in rtt[role]]
            rows.append(
                (label, f"{statistics.median(ms):.2f} ms", f"p90 {np.percentile(ms, 90):.2f} ms")
            )
        for role, label in (
            ("node", "node overhead over baseline (median, defaults)"),
            ("node1", "  same, torch_threads:=1"),
        ):
            overhead = statistics.median(rtt[role]) - statistics.median(rtt["service"])
            rows.append((label, f"{overhead * 1e3:.2f} ms", "goal <= 5 ms"))

    # 2. ingest CPU at 30 Hz
    if args.part in ("all", "cpu", "compressed"):
        cpu, sent, got, threads, keyframes = {}, {}, {}, {}, {}
        tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
        roles = (
            "subscriber",
            "subscriber_raw",
            "subscriber_raw_tuned",
            "node",
            "node_cv",
            "node_all",
            *COMPRESSED_ROLES,
        )
        if args.part == "compressed":
            roles = ("subscriber_raw", "node", "node_all", *COMPRESSED_ROLES)
        for role in roles:
            report = tmp / f"{role}.json"
            p = start(role, env, report)
            is_node = role.startswith("node")
            source = prebuilt_c if role in COMPRESSED_ROLES else prebuilt
            try:
                if not source.wait_for_subscribers(120):
                    raise RuntimeError(f"{role} never subscribed")
                time.sleep(2.0)  # let start-up CPU settle
                diagnostics.values.clear()
                c0, t0 = cpu_seconds(p.pid), time.monotonic()
                threads0 = thread_cpu_seconds(p.pid) if is_node else {}
                n = int(args.seconds * 30)
                stamp0 = 10_000_000_000
                for i in range(n):
                    due = t0 + i / 30
                    time.sleep(max(0.0, due - time.monotonic()))
                    source.publish(i, stamp0 + i * 33_333_333, 0.01 * i)
                wall = time.monotonic() - t0
                cpu[role] = (cpu_seconds(p.pid) - c0) / wall
                if is_node:
                    threads[role] = {
                        k: (v - threads0.get(k, 0.0)) / wall
                        for k, v in thread_cpu_seconds(p.pid).items()
                    }
                sent[role] = n / wall
                if is_node:  # frames matched by the node (all four inputs arrived)
                    time.sleep(1.5)  # the next /diagnostics (1 s period)
                    got[role] = int(diagnostics.values.get("frames_synced", 0)) / wall
                    keyframes[role] = int(diagnostics.values.get("keyframes", 0))
            finally:
                stop(p)
            if not is_node:  # written as it exits
                got[role] = (
                    json.loads(report.read_text())["rgb_received"] / wall
                    if report.exists()
                    else float("nan")
                )
        labels = {
            "subscriber": "bare subscriber, deserialising (baseline)",
            "subscriber_raw": "bare subscriber, raw images (baseline)",
            "subscriber_raw_tuned": "bare subscriber, raw images, node's malloc settings",
            "node": "llava3d node, defaults (ingest_rate_hz 5)",
            "node_cv": "  same, image_resample:=opencv (the Jetson preset)",
            "node_all": "  same, ingest_rate_hz:=0 (every frame taken)",
            "subscriber_raw_c": "bare subscriber, raw bytes, compressed topics (baseline)",
            "node_c": "llava3d node, defaults, compressed inputs (JPEG + PNG depth)",
            "node_all_c": "  same, compressed, ingest_rate_hz:=0 (every frame taken)",
        }
        for role in roles:
            goal = "goal < 10 %" if role.startswith("node") else ""
            rows.append(
                (
                    f"{labels[role]}: 30 Hz 640x480 RGB-D",
                    f"{cpu[role] * 100:.1f} % of a core",
                    f"sent {sent[role]:.1f} Hz, "
                    + ("synced" if role.startswith("node") else "received")
                    + f" {got[role]:.1f} Hz"
                    + (f", {keyframes[role]} keyframes" if role in keyframes else "")
                    + f"  {goal}".rstrip(),
                )
            )
        for role in (r for r in roles if r.startswith("node")):
            named = ("llava3d-sensors", "llava3d-ingest", "dds.shm")
            parts = [f"{n} {threads[role].get(n, 0.0) * 100:.1f}" for n in named]
            other = sum(v for k, v in threads[role].items() if k not in named)
            rows.append(
                (
                    f"  {role} per thread (% of a core)",
                    "",
                    ", ".join(parts) + f", other {other * 100:.1f}",
                )
            )
        for base in (r for r in roles if r.startswith("subscriber") and r != "subscriber_raw_c"):
            rows.append(
                (
                    f"node (defaults) over {base}",
                    f"{(cpu['node'] - cpu[base]) * 100:+.1f} % of a core",
                    "",
                )
            )
        jpg, png = (statistics.mean(x) / 1024 for x in zip(*prebuilt_c.sizes, strict=True))
        raw_kib = (640 * 480 * 3 + 640 * 480 * 2) / 1024
        rows.append(
            (
                "compressed payload per frame",
                f"{jpg + png:.0f} KiB",
                f"JPEG {jpg:.0f} + PNG depth {png:.0f} KiB (raw {raw_kib:.0f} KiB)",
            )
        )
        for c_role, r_role, label in (
            ("node_c", "node", "compressed / raw ingest CPU, defaults"),
            ("node_all_c", "node_all", "compressed / raw ingest CPU, every frame taken"),
        ):
            rows.append(
                (
                    label,
                    f"{cpu[c_role] / cpu[r_role]:.2f}x",
                    f"{cpu[c_role] * 100:.1f} vs {cpu[r_role] * 100:.1f} % of a core, "
                    f"{(cpu[c_role] - cpu[r_role]) * 100:+.1f}",
                )
            )
        from llava3d_ros.geometry.compressed import (
            decode_compressed_color,
            decode_compressed_depth,
        )

        def decode_ms(fn, msg) -> float:  # noqa: ANN001
            times = []
            for _ in range(20):
                t = time.perf_counter()
                fn(msg.format, msg.data, 640 * 480)
                times.append(time.perf_counter() - t)
            return statistics.median(times) * 1e3

        _, _, c_depth, c_rgb = prebuilt_c.msgs[0]
        jpg_ms = decode_ms(decode_compressed_color, c_rgb)
        png_ms = decode_ms(decode_compressed_depth, c_depth)
        rows.append(
            (
                "decode one compressed frame (this process)",
                f"{jpg_ms + png_ms:.2f} ms",
                f"JPEG {jpg_ms:.2f} + PNG depth {png_ms:.2f} ms; x 30 Hz = "
                f"{(jpg_ms + png_ms) * 3:.0f} % of a core if every frame were decoded",
            )
        )
        rows.append(
            (
                "node (defaults, compressed) over subscriber_raw_c",
                f"{(cpu['node_c'] - cpu['subscriber_raw_c']) * 100:+.1f} % of a core",
                "",
            )
        )

    pub_node.destroy_node()
    client.close()
    rclpy.shutdown(context=ctx)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>18}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
