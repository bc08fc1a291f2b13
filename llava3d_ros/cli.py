"""``llava3d-ros``: run the node, replay a recording, query the node, and (when present) the demo."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Sequence

# Subcommands that live in other modules, loaded only when asked for.
EXTERNAL = {
    "demo": ("llava3d_ros.demo", "the embedded-model demo"),
    "eval-synthetic": ("llava3d_ros.synthetic.evaluate", "evaluation on synthetic scenes"),
    "soak": ("llava3d_ros.soak", "node + looping replay for --minutes M, queried; a report"),
}


def _split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(our arguments, ['--ros-args', ...]) so argparse never sees ROS arguments."""
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        return argv[:i], argv[i:]
    return argv, []


def _params_file_problem(path: str) -> str:
    """Why ``path`` cannot serve as a parameters file ('' when it can), naming the absolute path
    tried: rcl would otherwise fail with a long RCLInvalidROSArgsError traceback."""
    full = os.path.abspath(os.path.expanduser(path))
    shown = full if full == path else f"{full} (from {path!r}, relative to {os.getcwd()})"
    if not os.path.exists(full):
        return f"params file not found: {shown}"
    if not os.path.isfile(full):
        return f"params file is not a regular file: {shown}"
    try:
        with open(full, "rb"):
            pass
    except OSError as exc:
        return f"params file cannot be read ({exc.strerror or exc}): {shown}"
    return ""


def _params_files(args: argparse.Namespace, ros_args: list[str]) -> list[str]:
    """The parameters files given: ``--params-file F`` before and after ``--ros-args``."""
    files = [args.params_file] if args.params_file else []
    files += [b for a, b in zip(ros_args, ros_args[1:], strict=False) if a == "--params-file"]
    return files


def _run(args: argparse.Namespace, ros_args: list[str]) -> int:
    for path in _params_files(args, ros_args):
        problem = _params_file_problem(path)
        if problem:
            print(f"llava3d-ros run: {problem}", file=sys.stderr)
            return 2

    from llava3d_ros.ros.node import main as node_main
    from llava3d_ros.ros.rclpy_internals import InvalidROSArgsError, UnknownROSArgsError

    extra = list(ros_args)
    if args.params_file:  # first, so that -p values given on the command line win over it
        rest = extra[1:] if extra[:1] == ["--ros-args"] else extra
        path = os.path.abspath(os.path.expanduser(args.params_file))
        extra = ["--ros-args", "--params-file", path, *rest]
    try:
        return node_main(["llava3d_node", *(["--autostart"] if args.autostart else []), *extra])
    except InvalidROSArgsError as exc:
        # e.g. a params file that is not valid YAML: rcl's message, on one line
        reason = " ".join(str(exc).split(", at /")[0].split())
        print(f"llava3d-ros run: {reason}", file=sys.stderr)
        return 2
    except UnknownROSArgsError as exc:
        print(f"llava3d-ros run: unknown ROS arguments after --ros-args: {exc}", file=sys.stderr)
        return 2


def _replay(args: argparse.Namespace, ros_args: list[str]) -> int:
    from llava3d_ros.ros.replay import main as replay_main

    return replay_main(args, ros_args)


def _query(args: argparse.Namespace, ros_args: list[str]) -> int:
    from llava3d_ros.ros.client import main as client_main

    return client_main(args, ros_args)


def _external(name: str, rest: list[str]) -> int:
    module, what = EXTERNAL[name]
    if importlib.util.find_spec(module) is None:
        print(
            f"llava3d-ros {name}: {what} is not part of this build ({module} is missing)",
            file=sys.stderr,
        )
        return 2
    return int(importlib.import_module(module).main(rest) or 0)


CLICK_FORM = "U,V or U,V@STAMP (pixels in [0, width) x [0, height); STAMP in ns), e.g. 320,240"


def click_arg(text: str) -> tuple[float, float, int]:
    """``--click U,V[@STAMP]`` → (u, v, stamp_ns); a one-line argparse error otherwise."""
    uv, at, stamp = text.partition("@")
    parts = uv.split(",")
    try:
        if len(parts) != 2 or (at and not stamp.strip()):
            raise ValueError
        u, v = (float(x) for x in parts)
        stamp_ns = int(stamp) if at else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad click {text!r}: expected {CLICK_FORM}") from None
    if not (math.isfinite(u) and math.isfinite(v)) or u < 0 or v < 0 or stamp_ns < 0:
        raise argparse.ArgumentTypeError(
            f"bad click {text!r}: expected {CLICK_FORM} (finite, not negative)"
        )
    return u, v, stamp_ns


def point_arg(text: str) -> tuple[float, float, float]:
    """``--point X,Y,Z`` → (x, y, z) in metres; a one-line argparse error otherwise."""
    parts = text.split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        x, y, z = (float(c) for c in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad point {text!r}: expected X,Y,Z in metres in the world frame, e.g. 1.0,0.5,0.8"
        ) from None
    if not all(map(math.isfinite, (x, y, z))):
        raise argparse.ArgumentTypeError(f"bad point {text!r}: coordinates must be finite")
    return x, y, z


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows "(default: …)" for meaningful defaults only; keeps epilog examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if (
            default is None
            or default is False
            or default in ([], "")
            or "%(default)" in (action.help or "")
        ):
            return action.help or ""
        return super()._get_help_string(action)


RUN_EPILOG = """\
ROS arguments go after --ros-args (everything after it is passed to ROS), e.g.:
  llava3d-ros run --autostart --params-file config/default.yaml
  llava3d-ros run --autostart --ros-args -r __node:=llava3d_2 -p num_views:=4 \\
      -p max_new_tokens:=64
A relative --params-file is resolved against the current directory.
"""

REPLAY_EPILOG = """\
examples:
  llava3d-ros replay ~/data/7scenes/redkitchen/seq-01 --rate 2 --loop
  llava3d-ros replay --synthetic 3 --loop
  llava3d-ros replay robot.mcap --loop \\
      --map /camera/color/image_raw/compressed=rgb/image/compressed \\
      --map /camera/aligned_depth_to_color/image_raw/compressedDepth=depth/image/compressedDepth \\
      --map /camera/color/camera_info=rgb/camera_info
A rosbag2 (mcap or sqlite3) holding /tf, /tf_static, CompressedImage or Odometry topics, or
given --map or --as-recorded, is played as recorded: every topic whose type is known here,
bytes unchanged, on its recorded name unless --map renames it (a relative TO is in this
node's namespace); /tf_static is merged into one latched message. A bag of raw Image +
CameraInfo + PoseStamped topics only is read into frames and published on the node's inputs,
like a dataset folder.
"""

QUERY_EPILOG = """\
examples:
  llava3d-ros query "what is on the table?"
  llava3d-ros query "what is this?" --click 320,240 --action
  llava3d-ros query "" --click 320,240@1700000000123456789 --json    # caption a clicked object
  llava3d-ros query "where is the chair?" --task ground --point 1.0,0.5,0.8
Exit status: 0 answered, 1 refused or failed (the line says which code), 2 bad arguments,
3 node unreachable or no answer in time, 130/143 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava3d-ros",
        description=__doc__.splitlines()[0],
        epilog="'llava3d-ros COMMAND --help' describes each command.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the llava3d lifecycle node (no ros2 launch needed)",
        description="Run the llava3d lifecycle node in this process, without ros2 launch: it "
        "subscribes to the RGB-D + pose topics and serves ~/query and ~/ask.",
        epilog=RUN_EPILOG,
        formatter_class=_Formatter,
    )
    run.add_argument(
        "--params-file",
        metavar="FILE",
        help="a /**: ros__parameters: YAML file (see config/); checked before the node starts",
    )
    run.add_argument(
        "--autostart",
        action="store_true",
        help="configure and activate at once (otherwise wait for a lifecycle manager)",
    )

    rep = sub.add_parser(
        "replay",
        help="publish a recorded RGB-D + pose sequence as the node's inputs",
        description="Publish a recorded RGB-D + pose sequence (a dataset folder or a rosbag2) "
        "on the node's input topics.",
        epilog=REPLAY_EPILOG,
        formatter_class=_Formatter,
    )
    rep.add_argument(
        "source",
        nargs="?",
        help="dataset folder (7-Scenes, TUM, ScanNet-style) or rosbag2 (omit with --synthetic)",
    )
    rep.add_argument(
        "--synthetic",
        type=int,
        metavar="SEED",
        help="play generated room SEED (the embedded model's world) instead of a recording",
    )
    rep.add_argument(
        "--views", type=int, default=8, help="views of the --synthetic room (one frame each)"
    )
    rep.add_argument("--rate", type=float, default=1.0, help="speed factor (2 = twice as fast)")
    rep.add_argument(
        "--fps", type=float, default=5.0, help="frame rate of --synthetic (stamps 1/fps apart)"
    )
    rep.add_argument("--quiet", action="store_true", help="no progress lines or summary on stdout")
    rep.add_argument(
        "--loop",
        action="store_true",
        help="start over at the end (stamps keep increasing; a bag played as recorded repeats "
        "its own)",
    )
    rep.add_argument(
        "--use-sim-time",
        action="store_true",
        help="publish /clock from the recording (a bag played as recorded: its receive times, "
        "unless it holds /clock)",
    )
    rep.add_argument(
        "--world-frame",
        default="map",
        help="frame_id of the poses (a bag played as recorded keeps its own)",
    )
    rep.add_argument(
        "--camera-frame",
        default="camera_optical_frame",
        help="frame_id of the images (a bag played as recorded keeps its own)",
    )
    rep.add_argument(
        "--wait-subscribers", type=float, default=10.0, help="seconds to wait for the node"
    )
    rep.add_argument(
        "--stamp-offset-s",
        type=float,
        default=0.0,
        help="added to every stamp (not for a bag played as recorded)",
    )
    from llava3d_ros.ros.bag_replay import parse_map

    rep.add_argument(
        "--map",
        action="append",
        default=[],
        type=parse_map,
        metavar="FROM=TO",
        help="rosbag2 played as recorded: publish recorded topic FROM as TO; repeatable",
    )
    rep.add_argument(
        "--as-recorded",
        action="store_true",
        help="play a rosbag2 as recorded even when it holds only raw images and poses",
    )

    q = sub.add_parser(
        "query",
        help="ask the node a question (service or action)",
        description="Ask a running node a question about the scene through its ~/query service "
        "(or ~/ask action with --action) and print the answer, warnings, boxes (in the world "
        "frame, with orientation) and timings. A refusal (NO_SCENE, BUSY, ...) prints one line "
        "with its code and exits 1.",
        epilog=QUERY_EPILOG,
        formatter_class=_Formatter,
    )
    q.add_argument(
        "question", nargs="?", default="", help="the question (may be empty with clicks)"
    )
    q.add_argument("--task", default="", help="qa, caption or ground (empty = inferred)")
    q.add_argument(
        "--click",
        action="append",
        default=[],
        type=click_arg,
        metavar="U,V[@STAMP]",
        help="pixel click (full-resolution colour image, u in [0, width), v in [0, height)) in "
        "the newest keyframe or the keyframe stamped STAMP (ns); repeatable",
    )
    q.add_argument(
        "--point",
        action="append",
        default=[],
        type=point_arg,
        metavar="X,Y,Z",
        help="3D click point in the world frame (metres); repeatable",
    )
    q.add_argument(
        "--action",
        action="store_true",
        help="use the ~/ask action: shows progress (one status line on a terminal, plain "
        "lines otherwise) and can be canceled with Ctrl-C",
    )
    q.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    q.add_argument("--node", default="/llava3d", help="the node's fully qualified name")
    q.add_argument(
        "--max-new-tokens",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="most tokens the model may generate; 0 = the node's max_new_tokens parameter",
    )
    q.add_argument(
        "--temperature",
        type=float,
        default=-1.0,
        metavar="T",
        help="sampling temperature; 0 = greedy, negative = the node's temperature parameter",
    )
    q.add_argument(
        "--max-views",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="most keyframes the answer is computed from; 0 = the node's num_views parameter",
    )
    q.add_argument("--client-id", default="", help="who asks, for the node's per-client rate limit")
    q.add_argument("--json", action="store_true", help="print the answer as JSON")
    q.add_argument(
        "--server-check-s",
        type=float,
        default=2.0,
        metavar="S",
        help="after a fast answer, keep watching up to S s from discovery for a second server "
        "of the same name (warned on stderr); 0 = exit at once",
    )

    for name, (_, what) in EXTERNAL.items():
        sub.add_parser(
            name,
            help=what,
            description=f"{what[:1].upper()}{what[1:]} ('llava3d-ros {name} --help' for options).",
            add_help=False,
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llava3d-ros`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTERNAL:
        return _external(argv[0], argv[1:])
    ours, ros_args = _split_ros_args(argv)
    args = build_parser().parse_args(ours)
    handler = {"run": _run, "replay": _replay, "query": _query}[args.command]
    return int(handler(args, ros_args) or 0)


if __name__ == "__main__":
    sys.exit(main())
