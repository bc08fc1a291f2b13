"""``llava3d-ros replay``: stdout progress and summary, the folder-of-sequences refusal, and
``--synthetic SEED`` feeding a node whose query then answers from that room."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scene import readers_fixtures as fx

from llava3d_ros.msg import Answer
from llava3d_ros.ros.client import Llava3dClient, make_prompt
from llava3d_ros.ros.convert import stamp_to_ns

from .conftest import REPO, harness

pytestmark = [pytest.mark.ros]

TUM = REPO / ".." / "shared" / "data" / "tum-fr1-xyz"


def _tum_like(tmp_path: Path) -> Path:
    """The real TUM folder (sequences case_1, case_2), else a tmp folder shaped like it."""
    if TUM.exists():
        return TUM
    root = tmp_path / "tum-like"
    for name in ("case_1", "case_2"):
        fx.write_seven_scenes(root / name, [0, 1])
    (root / "kinect_params.txt").write_text("525 0 319.5\n0 525 239.5\n0 0 1\n")
    return root


def test_folder_of_sequences_is_refused_with_their_names(request, ros_env, tmp_path) -> None:
    done = harness(request.config).run_cli(
        ["replay", str(_tum_like(tmp_path)), "--wait-subscribers", "0.1"], ros_env, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "matches no known layout; it holds sequences: case_1, case_2 — replay one" in (
        done.stderr
    )
    assert done.stdout == ""


def test_neither_source_nor_synthetic_is_refused(request, ros_env) -> None:
    done = harness(request.config).run_cli(["replay"], ros_env, timeout=60)
    assert done.returncode == 2 and "nothing to replay" in done.stderr, done.stderr


def test_progress_loop_lines_and_summary(ros_env) -> None:
    # 6 views at 5 fps (1.2 s loops: each gets its line), looping, no subscriber: runs until SIGINT, then sums up
    popen = subprocess.Popen(
        [sys.executable, "-m", "llava3d_ros.cli", "replay", "--synthetic", "0", "--views", "6"]
        + ["--fps", "5", "--loop", "--wait-subscribers", "0.1"],
        env=ros_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert popen.stdout is not None
        first = popen.stdout.readline()  # printed (and flushed) before the wait for subscribers
        assert first.startswith("replaying synthetic room 0 ("), first
        assert "6 frames, 5 fps x1, looping" in first
        time.sleep(4.5)  # > 2 s of publishing: at least one progress line and two loops
        popen.send_signal(signal.SIGINT)
        out, err = popen.communicate(timeout=30)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    lines = out.splitlines()
    assert "loop 1 done: 6 frames" in lines, out + err
    assert "loop 2 done: 6 frames" in lines, out + err
    progress = [
        m for ln in lines if (m := re.fullmatch(r"sent (\d+) frames, loop (\d+), ([\d.]+) Hz", ln))
    ]
    assert progress, out + err
    assert 3.0 <= float(progress[0].group(3)) <= 7.0  # about the 5 fps asked for
    summary = re.fullmatch(
        r"replayed (\d+) frames in ([\d.]+) s \(([\d.]+) Hz mean\), (\d+) loops?", lines[-1]
    )
    assert summary, out + err
    sent, wall, mean, loops = (float(g) for g in summary.groups())
    assert sent >= 12 and loops >= 2 and wall > 1.0 and 3.0 <= mean <= 7.0, lines[-1]


def test_quiet_prints_nothing(request, ros_env) -> None:
    done = harness(request.config).run_cli(
        ["replay", "--synthetic", "0", "--views", "3", "--fps", "20", "--quiet"]
        + ["--wait-subscribers", "0.1"],
        ros_env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_synthetic_room_feeds_the_node(node_factory, spawn, ros_context, request) -> None:
    h = harness(request.config)
    node = node_factory(
        "max_new_tokens:=4",
        "keyframe_min_translation_m:=0.0",
        "keyframe_min_rotation_deg:=0.0",
        "ingest_rate_hz:=0.0",
        "num_views:=8",
        name="llava3d",
    )
    client = Llava3dClient("/llava3d", ros_context)
    try:
        client.wait_for_node(60)
        replay = spawn(
            "-m",
            "llava3d_ros.cli",
            "replay",
            "--synthetic",
            "0",
            "--rate",
            "2",
            "--wait-subscribers",
            "30",
            name="replay",
        )
        assert replay.popen.wait(90) == 0, replay.output()
        out = replay.output()
        assert "replaying synthetic room 0" in out and "replayed 8 frames" in out, out
        sent = {1_000_000_000 + i * 200_000_000 for i in range(8)}  # 1 s + i / 5 fps

        answer = None

        def answered() -> bool:
            nonlocal answer
            answer = client.query(make_prompt("How many chairs are there?"), timeout=60)
            return answer.code == Answer.OK

        h.wait_for(answered, 60, "an OK answer about the replayed room", interval=0.5)
        assert answer is not None and answer.model.endswith("random-weights)")
        stamps = {stamp_to_ns(s) for s in answer.view_stamps}
        # best-effort sensor topics may lose a frame; what the model saw is the replayed room
        assert stamps and stamps <= sent, (stamps, sent)
        assert answer.scene_tokens > 0
        assert node.alive()
    finally:
        client.close()
