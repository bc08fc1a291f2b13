"""``llava3d-ros soak``: node + looping replay for M minutes, queried periodically; a one-screen report.

Everything runs on loopback DDS (its own domain id). The node runs as a child process so that
its CPU and memory can be watched from outside, as an operator would.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
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
from llava3d_ros.ros.dds import use_loopback

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "7scenes-redkitchen"
QUESTIONS = (
    ("qa", "What is on the counter?"),
    ("ground", "the kettle"),
    ("qa", "Is there a chair?"),
)


@dataclass
class SoakResult:
    """What the soak saw: codes by name, answer latencies, lost requests, (t, CPU %, RSS MiB)."""

    minutes: float
    wall_s: float = 0.0
    codes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    samples: list[Sample] = field(default_factory=list)
    node_exit: int | None = None
    first_ok_s: float = float("nan")

    def rss_growth(self) -> float:
        """Relative RSS growth from the end of warm-up (first quarter) to the end (last quarter)."""
        return rss_growth([r for _, _, r in self.samples], skip_quarters=1, min_samples=8)

    def report(self) -> str:
        sent = sum(self.codes.values()) + self.lost
        ok = self.codes.get("OK", 0)
        lines = [
            f"llava3d-ros soak: {self.minutes:g} min requested, {self.wall_s:.0f} s run",
            f"node: {'alive at the end' if self.node_exit is None else f'EXITED with {self.node_exit}'}"
            f"; first OK answer after {self.first_ok_s:.1f} s",
            f"requests: {sent} sent, {ok} OK, {self.lost} lost (no answer within the timeout)",
            f"throughput: {ok / max(self.wall_s, 1e-9) * 60:.1f} OK answers/min",
            "answers by code: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.codes.items())) or "none"),
        ]
        if self.latencies:
            p50, p90, p99 = latency_percentiles(self.latencies)
            lines.append(f"latency: p50 {p50:.2f} s  p90 {p90:.2f} s  p99 {p99:.2f} s")
        if self.samples:
            cpu = np.array([c for _, c, _ in self.samples])
            trend = rss_trend(self.samples, 8)
            lines += [
                f"node CPU: mean {cpu.mean():.0f}%  max {cpu.max():.0f}%",
                f"node RSS (MiB) over time: {trend}  end:{self.samples[-1][2]:.0f}",
                f"RSS growth after warm-up: {100 * self.rss_growth():+.1f}%",
            ]
        return "\n".join(lines)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "llava3d_ros.cli", *args],
        stdout=open(log, "wb"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def soak(
    minutes: float,
    data: Path = DEFAULT_DATA,
    interval_s: float = 1.0,
    timeout_s: float = 60.0,
    node_params: tuple[str, ...] = ("random_weights:=true", "max_new_tokens:=8"),
    log_dir: Path | None = None,
) -> SoakResult:
    """Run the soak and return what it saw (the node and replay are stopped before returning)."""
    import rclpy

    from llava3d_ros.answer import ResultCode
    from llava3d_ros.ros.client import ClientError, Llava3dClient, make_prompt

    if not data.exists():
        raise FileNotFoundError(f"sequence to replay not found: {data}")
    use_loopback()  # this process and its children share the loopback domain
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="llava3d-soak-"))
    run = ["run", "--autostart", "--ros-args", *[x for p in node_params for x in ("-p", p)]]
    node = _start(run, log_dir / "node.log")
    replay = _start(
        ["replay", str(data), "--loop", "--wait-subscribers", "60"], log_dir / "replay.log"
    )
    result = SoakResult(minutes)
    t0 = time.monotonic()
    period = max(0.5, minutes * 60 / 60)  # about 60 samples whatever the length
    sampler = ProcessSampler(node.pid, period, t0)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    client = Llava3dClient("/llava3d", ctx)
    try:
        client.wait_for_node(60.0)
        end = time.monotonic() + minutes * 60
        i = 0
        while time.monotonic() < end and node.poll() is None:
            task, question = QUESTIONS[i % len(QUESTIONS)]
            prompt = make_prompt(question, task=task)
            sent = time.monotonic()
            try:
                answer = (
                    client.ask(prompt, timeout_s)[0] if i % 2 else client.query(prompt, timeout_s)
                )
            except ClientError:
                result.lost += 1
            else:
                result.latencies.append(time.monotonic() - sent)
                code = ResultCode(answer.code)
                result.codes[code.name] += 1
                if code == ResultCode.OK and np.isnan(result.first_ok_s):
                    result.first_ok_s = time.monotonic() - t0
            i += 1
            time.sleep(max(0.0, interval_s - (time.monotonic() - sent)))
        result.wall_s = time.monotonic() - t0
    finally:
        result.samples = sampler.close(timeout=5.0)
        result.node_exit = node.poll()
        client.close()
        rclpy.shutdown(context=ctx)
        stop_process(replay)
        stop_process(node)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``llava3d-ros soak``; exit 1 when a request was lost or the node died."""
    p = argparse.ArgumentParser(prog="llava3d-ros soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="sequence replayed in a loop")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between queries")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a request is lost")
    p.add_argument(
        "--param", action="append", default=[], help="extra node parameter k:=v (repeatable)"
    )
    args = p.parse_args(argv)
    if args.minutes <= 0:
        p.error("--minutes must be > 0")
    params = ("random_weights:=true", "max_new_tokens:=8", *args.param)
    result = soak(args.minutes, args.data.resolve(), args.interval, args.timeout, params)
    print(result.report())
    return 1 if (result.lost or result.node_exit is not None) else 0
