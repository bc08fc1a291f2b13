"""``llava3d-ros``: run the node, replay a recording, query the node, and (when present) the demo."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
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


def _run(args: argparse.Namespace, ros_args: list[str]) -> int:
    from llava3d_ros.ros.node import main as node_main

    extra = ["--ros-args"] if (args.params_file and not ros_args) else list(ros_args)
    if args.params_file:
        extra += ["--params-file", args.params_file]
    return node_main(["llava3d_node", *(["--autostart"] if args.autostart else []), *extra])


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava3d-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the llava3d lifecycle node (no ros2 launch needed)")
    run.add_argument("--params-file", help="a /**: ros__parameters: YAML file (see config/)")
    run.add_argument("--autostart", action="store_true", help="configure and activate at once")

    rep = sub.add_parser(
        "replay", help="publish a recorded RGB-D + pose sequence as the node's inputs"
    )
    rep.add_argument("source", help="dataset folder (7-Scenes, TUM, ScanNet-style) or rosbag2")
    rep.add_argument("--rate", type=float, default=1.0, help="speed factor (2 = twice as fast)")
    rep.add_argument(
        "--fps", type=float, default=5.0, help="frame rate for datasets without stamps"
    )
    rep.add_argument(
        "--loop", action="store_true", help="start over at the end (stamps keep increasing)"
    )
    rep.add_argument(
        "--use-sim-time", action="store_true", help="publish /clock from the recording"
    )
    rep.add_argument("--world-frame", default="map", help="frame_id of the poses")
    rep.add_argument(
        "--camera-frame", default="camera_optical_frame", help="frame_id of the images"
    )
    rep.add_argument(
        "--wait-subscribers", type=float, default=10.0, help="seconds to wait for the node"
    )
    rep.add_argument("--stamp-offset-s", type=float, default=0.0, help="added to every stamp")

    q = sub.add_parser("query", help="ask the node a question (service or action)")
    q.add_argument(
        "question", nargs="?", default="", help="the question (may be empty with clicks)"
    )
    q.add_argument("--task", default="", help="qa, caption or ground (empty = inferred)")
    q.add_argument(
        "--click",
        action="append",
        default=[],
        metavar="U,V[@STAMP]",
        help="pixel click in the newest keyframe or the frame stamped STAMP (ns)",
    )
    q.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="X,Y,Z",
        help="3D click point in the world frame",
    )
    q.add_argument("--action", action="store_true", help="use the ~/ask action (streams feedback)")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    q.add_argument("--node", default="/llava3d", help="the node's fully qualified name")
    q.add_argument("--max-new-tokens", type=int, default=0)
    q.add_argument("--temperature", type=float, default=-1.0)
    q.add_argument("--max-views", type=int, default=0)
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
        sub.add_parser(name, help=what, add_help=False)
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
