"""Load harness: N concurrent clients (service + action) against a node fed by a looping replay.

Everything runs on loopback DDS with its own domain id. Prints per-client OK/BUSY/other counts,
latency percentiles, lost requests (no answer within the timeout), and the node's CPU and RSS
over time (RSS growth after warm-up). ``python bench/bench_load.py --clients 8 --queries 25``.
Without the replay data (``../shared/data/7scenes-redkitchen`` by default) it prints
``skipped: ...`` and exits 0, so ``make bench`` passes on a checkout without it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llava3d_ros.procstats import (
    ProcessSampler,
    Sample,
    latency_percentiles,
    rss_growth,
    rss_trend,
    stop_process,
)
from llava3d_ros.ros.dds import loopback_env, profile_variable

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "7scenes-redkitchen").resolve()
QUESTIONS = (
    ("qa", "What is on the counter?"),
    ("qa", "How many chairs are there?"),
    ("ground", "the kettle"),
    ("qa", "What colour is the wall?"),
)


@dataclass
class ClientStats:
    """What one client saw: result codes by name, latencies of answered requests, lost ones."""

    codes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class LoadReport:
    """The outcome of one load run (``format()`` gives the printed report)."""

    clients: list[ClientStats]
    samples: list[Sample]  # (t s, node CPU %, node RSS MiB)
    wall_s: float
    warmup_s: float
    warmup_unanswered: int = 0  # warm-up requests with no answer (before the measured run)
    load_start_s: float = 0.0  # when the clients started (monitor time)

    @property
    def lost(self) -> int:
        return sum(c.lost for c in self.clients)

    @property
    def latencies(self) -> np.ndarray:
        return np.array([x for c in self.clients for x in c.latencies])

    def rss_growth(self) -> float:
        """Relative RSS growth from the end of warm-up to the end of the run (NaN if too short)."""
        return rss_growth([rss for t, _, rss in self.samples if t >= self.warmup_s])

    def format(self) -> str:
        lines = [
            f"load: {len(self.clients)} clients, {self.wall_s:.1f} s wall "
            f"(warm-up: {self.warmup_unanswered} requests unanswered)"
        ]
        names = sorted({n for c in self.clients for n in c.codes})
        lines.append("client  " + "  ".join(f"{n:>11}" for n in names) + "   lost")
        for i, c in enumerate(self.clients):
            row = "  ".join(f"{c.codes.get(n, 0):>11d}" for n in names)
            lines.append(f"{i:>6}  {row}  {c.lost:>5d}")
        total = Counter()
        for c in self.clients:
            total.update(c.codes)
        lines.append(
            "total   " + "  ".join(f"{total.get(n, 0):>11d}" for n in names) + f"  {self.lost:>5d}"
        )
        lat = self.latencies
        if lat.size:
            p50, p90, p99 = latency_percentiles(lat)
            lines.append(
                f"latency (all answers, n={lat.size}): p50 {p50:.2f} s  p90 {p90:.2f} s  "
                f"p99 {p99:.2f} s  max {lat.max():.2f} s"
            )
        ok = total.get("OK", 0)
        lines.append(f"throughput: {ok / max(self.wall_s, 1e-9):.2f} OK answers/s")
        if self.samples:
            cpu = np.array([s[1] for s in self.samples])
            rss = np.array([s[2] for s in self.samples])
            lines.append(
                f"node CPU %: mean {cpu.mean():.0f}  max {cpu.max():.0f}   "
                f"RSS MiB: start {rss[0]:.0f}  max {rss.max():.0f}  end {rss[-1]:.0f}"
            )
            trend = rss_trend(self.samples, 10)
            lines.append(f"RSS over time (MiB): {trend}")
            growth = self.rss_growth()
            lines.append(
                f"RSS growth after warm-up ({self.warmup_s:.0f} s): "
                + (
                    f"{100 * growth:+.1f}%"
                    if np.isfinite(growth)
                    else "n/a (fewer than 4 samples after warm-up: run longer)"
                )
            )
            before = [r for t, _, r in self.samples if t <= self.load_start_s]
            if before:
                lines.append(
                    f"RSS when the clients started {before[-1]:.0f} MiB, at the end {rss[-1]:.0f} "
                    f"MiB ({100 * (rss[-1] / before[-1] - 1):+.1f}%)"
                )
        for i, c in enumerate(self.clients):
            for e in c.errors[:3]:
                lines.append(f"client {i} error: {e}")
        return "\n".join(lines)


def start_node_and_replay(
    env: dict[str, str],
    log_dir: Path,
    data: Path,
    node_params: tuple[str, ...] = (),
    replay_rate: float = 1.0,
) -> tuple[subprocess.Popen, subprocess.Popen]:
    """The node (tiny random-weight model, 8 new tokens) and a looping replay of ``data``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    params = ("random_weights:=true", "max_new_tokens:=8", *node_params)
    node_cmd = [sys.executable, "-m", "llava3d_ros.cli", "run", "--autostart", "--ros-args"]
    node_cmd += [x for p in params for x in ("-p", p)]
    node = subprocess.Popen(
        node_cmd,
        env=env,
        cwd=REPO,
        stdout=open(log_dir / "node.log", "wb"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    replay_cmd = [sys.executable, "-m", "llava3d_ros.cli", "replay", str(data), "--loop"]
    replay_cmd += ["--rate", str(replay_rate), "--wait-subscribers", "60"]
    replay = subprocess.Popen(
        replay_cmd,
        env=env,
        cwd=REPO,
        stdout=open(log_dir / "replay.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return node, replay


def wait_for_scene(client, timeout: float) -> int:  # noqa: ANN001 - Llava3dClient
    """Block until the node answers something other than NO_SCENE/NOT_READY (frames arrived).

    Returns how many warm-up requests went unanswered (discovery still settling), reported apart
    from the measured run's lost requests.
    """
    from llava3d_ros.msg import Answer
    from llava3d_ros.ros.client import ClientError, make_prompt

    client.wait_for_node(timeout)
    deadline = time.monotonic() + timeout
    unanswered = 0
    while time.monotonic() < deadline:
        try:
            a = client.query(make_prompt("warm-up: what is here?"), timeout=10.0)
        except ClientError:
            unanswered += 1
            continue
        if a.code not in (Answer.NO_SCENE, Answer.NOT_READY):
            return unanswered
        time.sleep(0.5)
    raise TimeoutError(f"the node held no scene after {timeout} s ({unanswered} unanswered)")


def client_loop(
    client,
    index: int,
    queries: int,
    timeout: float,
    stats: ClientStats,  # noqa: ANN001
) -> None:
    """Alternate ~/query and ~/ask; a BUSY answer backs off briefly (what a polite client does)."""
    from llava3d_ros.answer import ResultCode
    from llava3d_ros.ros.client import ClientError, make_prompt

    for i in range(queries):
        task, question = QUESTIONS[(index + i) % len(QUESTIONS)]
        prompt = make_prompt(question, task=task)
        t0 = time.monotonic()
        try:
            if (index + i) % 2:
                answer, _ = client.ask(prompt, timeout=timeout)
            else:
                answer = client.query(prompt, timeout=timeout)
        except ClientError as exc:
            if "no " in str(exc) and "after" in str(exc):
                stats.lost += 1
            else:
                stats.codes["REJECTED"] += 1
            stats.errors.append(str(exc))
            continue
        stats.latencies.append(time.monotonic() - t0)
        code = ResultCode(answer.code)
        stats.codes[code.name] += 1
        if code == ResultCode.BUSY:
            time.sleep(0.2)


def run_load(
    clients: int = 8,
    queries: int = 25,
    timeout: float = 120.0,
    data: Path = DEFAULT_DATA,
    domain_id: int | None = None,
    node_params: tuple[str, ...] = (),
    log_dir: Path | None = None,
    scene_timeout: float = 90.0,
    warmup_s: float = 0.0,
) -> LoadReport:
    """Start node + replay, run the clients to completion, stop everything, return the report."""
    import tempfile

    import rclpy

    from llava3d_ros.ros.client import Llava3dClient

    if not data.exists():
        raise FileNotFoundError(f"replay data not found: {data}")
    env = loopback_env(domain_id=domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    # this process's clients must be on the same loopback domain as the node
    os.environ.update(
        {k: env[k] for k in ("ROS_DOMAIN_ID", "RMW_IMPLEMENTATION", profile_variable())}
    )
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="llava3d-load-"))
    node, replay = start_node_and_replay(env, log_dir, data, node_params)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    pool: list = []
    try:
        monitor = ProcessSampler(node.pid, period=0.5)
        pool = [Llava3dClient("/llava3d", ctx) for _ in range(clients)]
        try:
            warmup_unanswered = wait_for_scene(pool[0], scene_timeout)
        except Exception as exc:
            raise RuntimeError(
                f"{exc}\n--- node log ---\n{(log_dir / 'node.log').read_text()[-3000:]}"
            ) from exc
        for c in pool[1:]:
            c.wait_for_node(30.0)
        time.sleep(warmup_s)  # let the keyframe buffer fill before measuring memory
        warmup_s = load_start_s = time.monotonic() - monitor.t0
        stats = [ClientStats() for _ in pool]
        threads = [
            threading.Thread(target=client_loop, args=(c, i, queries, timeout, stats[i]))
            for i, c in enumerate(pool)
        ]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        samples = monitor.close(timeout=1.0)
        # warm-up: start-up, the first scene, and the first quarter of the load (buffer filling)
        warmup_s += 0.25 * wall
        if node.poll() is not None:
            raise RuntimeError(f"the node exited with {node.returncode} during the load run")
    finally:
        for c in pool:
            c.close()
        rclpy.shutdown(context=ctx)
        stop_process(replay)
        stop_process(node)
    return LoadReport(stats, samples, wall, warmup_s, warmup_unanswered, load_start_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--queries", type=int, default=25, help="per client")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a request is lost"
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="sequence to replay (looped)"
    )
    parser.add_argument("--domain-id", type=int, default=None)
    parser.add_argument(
        "--warmup-s", type=float, default=0.0, help="replay alone this long before the clients"
    )
    parser.add_argument("--param", action="append", default=[], help="extra node parameter k:=v")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"skipped: replay data not found at {args.data} (pass --data)")
        return 0
    report = run_load(
        args.clients,
        args.queries,
        args.timeout,
        args.data,
        args.domain_id,
        tuple(args.param),
        warmup_s=args.warmup_s,
    )
    print(report.format())
    return 1 if report.lost else 0


if __name__ == "__main__":
    sys.exit(main())
