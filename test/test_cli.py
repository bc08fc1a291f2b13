"""``llava3d-ros`` argument handling without a ROS graph: malformed clicks and points, help
texts and defaults, a bad ``run --params-file``, the click range, ``--action`` progress lines."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from llava3d_ros.cli import build_parser, main
from llava3d_ros.geometry.clicks import click_to_world
from llava3d_ros.geometry.errors import GeometryError

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llava3d_ros.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--click", "320"], "bad click '320': expected U,V or U,V@STAMP"),
        (["--click", "a,b"], "bad click 'a,b': expected U,V or U,V@STAMP"),
        (["--click", "1,2@soon"], "bad click '1,2@soon'"),
        (["--click", "nan,2"], "bad click 'nan,2'"),
        (["--point", "1,2"], "bad point '1,2': expected X,Y,Z"),
        (["--max-new-tokens", "-1"], "expected a whole number >= 0"),
    ],
)
def test_malformed_click_or_point_is_a_one_line_usage_error(capsys, args, expected) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["query", "x", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [err.splitlines()[-1]]


def test_clicks_and_points_parse_to_numbers() -> None:
    args = build_parser().parse_args(
        ["query", "x", "--click", "639.9,479.9", "--click", "1,2@5", "--point", "1,-2,3.5"]
    )
    assert args.click == [(639.9, 479.9, 0), (1.0, 2.0, 5)]
    assert args.point == [(1.0, -2.0, 3.5)]


def test_click_range_is_the_continuous_image() -> None:
    """A 640×480 image covers [0, 640) × [0, 480): 639.9 is a pixel of it, 640 is not."""
    depth = np.full((480, 640), 2.0, dtype=np.float32)
    k = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    for window in (1, 7):
        for u, v in [(639.9, 479.9), (0.0, 0.0), (639.5, 10.0)]:
            p = click_to_world(u, v, depth, k, k, np.eye(4), (640, 480), window)
            assert p[2] == pytest.approx(2.0)
    for u, v in [(640.0, 10.0), (10.0, 480.0), (-0.1, 10.0), (10.0, -0.01)]:
        with pytest.raises(GeometryError, match="outside the 640x480 colour image"):
            click_to_world(u, v, depth, k, k, np.eye(4), (640, 480))


def test_every_subcommand_has_a_description_and_defaults_show(capsys) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, child in sub.choices.items():
        assert child.description, name
    texts = {}
    for name in ("run", "replay", "query"):
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        texts[name] = capsys.readouterr().out
    q = " ".join(texts["query"].split())
    assert "(default: 60.0)" in q and "(default: /llava3d)" in q
    assert "0 = the node's max_new_tokens parameter" in q
    assert "0 = greedy, negative = the node's temperature parameter" in q
    assert "0 = the node's num_views parameter" in q
    assert "examples:" in texts["query"] and "llava3d-ros query" in texts["query"]
    assert "--ros-args" in texts["run"] and "llava3d-ros run --autostart --ros-args" in texts["run"]
    assert "llava3d-ros replay" in texts["replay"]
    for name in ("demo", "soak", "eval-synthetic"):
        assert name in parser.format_help()


def test_missing_params_file_is_one_line(tmp_path: Path) -> None:
    out = _cli("run", "--params-file", "no/such.yaml", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(tmp_path / "no" / "such.yaml") in lines[0] and "not found" in lines[0]
    assert "Traceback" not in out.stderr


def test_unreadable_params_file_and_one_after_ros_args(tmp_path: Path, capsys) -> None:
    assert main(["run", "--params-file", str(tmp_path)]) == 2
    assert f"not a regular file: {tmp_path}" in capsys.readouterr().err
    missing = tmp_path / "gone.yaml"
    assert main(["run", "--ros-args", "--params-file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"params file not found: {missing}" in err


def _fb(stage: str, tokens: int, text: str = "") -> SimpleNamespace:
    return SimpleNamespace(stage=stage, tokens=tokens, partial_text=text)


def test_progress_without_a_terminal_is_plain_lines() -> None:
    from llava3d_ros.ros.client import Progress

    out = io.StringIO()
    p = Progress(out)
    assert not p.tty
    for fb in [
        _fb("queued", 0),
        _fb("encoding", 0),
        *(_fb("decoding", i, "a\nb") for i in range(50)),
    ]:
        p.show(fb)
    p.end()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines()[:3] == [
        "[queued] 0 tokens",
        "[encoding] 0 tokens",
        "[decoding] 0 tokens",
    ]
    assert len(text.splitlines()) < 10  # within a stage at most one line a second


def test_progress_on_a_terminal_is_one_cleared_line() -> None:
    from llava3d_ros.ros.client import Progress

    out = io.StringIO()
    p = Progress(out, tty=True)
    p.show(_fb("decoding", 3, "one\ntwo\r"))
    p.show(_fb("decoding", 4, "one\ntwo\rthree"))
    p.end()
    p.end()  # a second end adds nothing
    p.close()
    p.show(_fb("decoding", 5, "late"))  # feedback after the result prints nothing
    text = out.getvalue()
    assert text == (
        "\r\x1b[2K[decoding] 3 tokens: one two\r\x1b[2K[decoding] 4 tokens: one two three\n"
    )


def test_params_file_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("a: [b\n")
    out = _cli("run", "--params-file", "bad.yaml", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "bad.yaml") in lines[0], out.stderr
