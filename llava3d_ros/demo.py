"""``llava3d-ros demo``: the main job on the embedded default model, in one ROS graph over loopback.

A scene player publishes a generated scene (RGB-D + camera_info + pose topics), the node runs
as a separate process with the embedded default model, and a client asks a click caption, a
counting and a grounding question; answers are printed next to the ground truth and a picture
(views with projected boxes, a top-down map) is written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llava3d_ros.ros.dds import use_loopback

HELD_OUT_SEED = 900_001  # training uses low seeds; the demo scene is never trained on


@dataclass
class Asked:
    kind: str
    question: str
    truth: str
    truth_box: np.ndarray | None
    text: str = ""
    boxes: list[np.ndarray] | None = None
    code: int = -1
    seconds: float = 0.0


def _model_image_size() -> int:
    """The embedded model's input size: render at it so the node sees what training saw."""
    from llava3d_ros.model.tiny import tiny_vision_config
    from llava3d_ros.ros.model_loading import EMBEDDED_MODEL_DIR

    cfg = EMBEDDED_MODEL_DIR / "vision_tower" / "config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text())["image_size"])
    return int(tiny_vision_config()["image_size"])


def _pick_tasks(scene, rendered) -> list:
    from llava3d_ros.synthetic.tasks import make_tasks, visible_pixels

    rng = np.random.default_rng([HELD_OUT_SEED, 3])
    visible = visible_pixels(rendered, len(scene.objects))
    # Clicks on the seen surface: a clicked pixel unprojected with its depth, as a user's gives.
    tasks = make_tasks(scene, rng, ("caption", "count", "ground"), visible, surface=rendered)
    chosen = []
    for kind in ("caption", "count", "ground"):
        of_kind = [t for t in tasks if t.kind == kind]
        if kind == "count":  # ask about a category that is present
            of_kind = [t for t in of_kind if t.answer != "0"] or of_kind
        if of_kind:
            chosen.append(of_kind[0])
    return chosen


def _publish_until_taken(pub, client, rendered, timeout: float, rounds: int = 4) -> int:
    """Publish every view, then again (later stamps) any the node's scene lacks; views resent.

    Sensor topics are best-effort, so on a loaded machine a frame can be lost; a probe query's
    ``view_stamps`` tell which views the node holds.
    """
    from llava3d_ros.answer import ResultCode
    from llava3d_ros.ros.client import make_prompt
    from llava3d_ros.ros.convert import stamp_to_ns

    view_of: dict[int, int] = {}  # stamp → view index
    todo, stamp = list(range(len(rendered.rgb))), 1_000_000_000
    for _ in range(rounds):
        for i in todo:
            pub.publish(
                rendered.rgb[i],
                rendered.depth[i].astype(np.float32),
                rendered.intrinsics,
                rendered.cam_to_world[i],
                stamp_ns=stamp,
            )
            view_of[stamp] = i
            stamp += 100_000_000
            time.sleep(0.1)
        time.sleep(0.5)
        probe = client.query(make_prompt(question="How many rooms?", max_new_tokens=1), timeout)
        if probe.code != ResultCode.OK:  # e.g. no scene yet: look again, resend nothing
            todo = []
            time.sleep(1.0)
            continue
        held = {view_of.get(stamp_to_ns(t)) for t in probe.view_stamps}
        todo = [i for i in range(len(rendered.rgb)) if i not in held]
        if not todo:
            break
    return len(view_of) - len(rendered.rgb)  # views published more than once


def _picture(path: Path, scene, rendered, asked: list[Asked]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llava3d_ros.geometry.boxes import BOX_EDGES, box_corners, project_points

    n = min(4, len(rendered.rgb))
    fig, axes = plt.subplots(1, n + 1, figsize=(4 * (n + 1), 4.2))
    predicted = [b for a in asked for b in (a.boxes or [])]
    for ax, i in zip(axes[:n], np.linspace(0, len(rendered.rgb) - 1, n).astype(int), strict=True):
        ax.imshow(rendered.rgb[i])
        s = rendered.rgb.shape[1]
        for boxes, colour in ((scene.boxes, "lime"), (predicted, "red")):
            for b in boxes:
                corners = box_corners(np.asarray(b[:3]), np.asarray(b[3:6]))
                uv, ok = project_points(
                    corners, rendered.intrinsics, rendered.cam_to_world[i], s, s
                )
                for a, c in BOX_EDGES:
                    if ok[a] and ok[c]:
                        ax.plot(uv[[a, c], 0], uv[[a, c], 1], color=colour, lw=1)
        ax.set_title(f"view {i}")
        ax.axis("off")
    top = axes[n]
    for boxes, colour, label in (
        (scene.boxes, "lime", "ground truth"),
        (predicted, "red", "predicted"),
    ):
        for j, b in enumerate(boxes):
            cx, cy, _, dx, dy, _ = (float(v) for v in b[:6])
            top.add_patch(
                plt.Rectangle(
                    (cx - dx / 2, cy - dy / 2),
                    dx,
                    dy,
                    fill=False,
                    color=colour,
                    lw=1.5,
                    label=label if j == 0 else None,
                )
            )
    for k, name in enumerate(getattr(scene, "objects", [])):
        top.annotate(name.name, scene.boxes[k][:2], fontsize=7, ha="center")
    cams = rendered.cam_to_world[:, :3, 3]
    top.plot(cams[:, 0], cams[:, 1], "b.", label="cameras")
    top.set_aspect("equal")
    top.autoscale()
    top.legend(fontsize=7, loc="upper right")
    top.set_title("top-down (x, y), metres")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="llava3d-ros demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--seed", type=int, default=HELD_OUT_SEED, help="scene seed (held out from training)"
    )
    p.add_argument("--views", type=int, default=8, help="views the player publishes")
    p.add_argument("--out", type=Path, default=Path("out/demo.png"), help="picture to write")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node")
    args = p.parse_args(argv)

    domain = use_loopback()  # loopback-only DDS, a domain id of this run, before rclpy starts
    import rclpy

    from llava3d_ros.answer import ResultCode
    from llava3d_ros.ros.client import Llava3dClient, make_prompt
    from llava3d_ros.ros.publish import FramePublisher
    from llava3d_ros.synthetic.render import render_scene
    from llava3d_ros.synthetic.scenes import make_scene

    t0 = time.monotonic()
    scene = make_scene(args.seed)
    size = _model_image_size()
    rendered = render_scene(scene, args.views, size, 70.0, 0.0, 0.0)
    print(
        f"scene {args.seed}: {len(scene.objects)} objects: "
        + ", ".join(o.name for o in scene.objects)
    )
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llava3d_ros.cli",
            "run",
            "--autostart",
            "--ros-args",
            "-p",
            "keyframe_min_translation_m:=0.0",
            "-p",  # every published view is a keyframe and is taken in (as in eval-synthetic)
            "keyframe_min_rotation_deg:=0.0",
            "-p",
            "ingest_rate_hz:=0.0",
            "-p",
            f"num_views:={args.views}",
            "--log-level",
            "warn",
        ],
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    client = None
    try:
        player = rclpy.create_node("llava3d_scene_player", context=context)
        pub = FramePublisher(player)
        if not pub.wait_for_subscribers(args.timeout):
            print(
                f"demo: the node did not subscribe within {args.timeout} s (domain {domain})",
                file=sys.stderr,
            )
            return 1
        client = Llava3dClient(context=context)
        client.wait_for_node(args.timeout)
        resent = _publish_until_taken(pub, client, rendered, args.timeout)
        if resent:
            print(f"(sent {resent} views again: the node had not taken them in the first time)")
        asked = []
        for task in _pick_tasks(scene, rendered):
            a = Asked(task.kind, task.question, task.answer, task.box)
            prompt = make_prompt(
                question=task.question,
                task="caption" if task.kind == "caption" else "",
                points=tuple(tuple(float(v) for v in c) for c in task.clicks),
            )
            start = time.monotonic()
            answer = client.query(prompt, timeout=args.timeout)
            a.seconds = time.monotonic() - start
            a.code, a.text = answer.code, answer.text
            a.boxes = [
                np.array(
                    [
                        o.center.position.x,
                        o.center.position.y,
                        o.center.position.z,
                        o.size.x,
                        o.size.y,
                        o.size.z,
                    ]
                )
                for o in answer.objects
            ]
            asked.append(a)
            print(f"\n[{task.kind}] {task.question}")
            if answer.code != ResultCode.OK:
                print(f"  -> {ResultCode(answer.code).name}: {answer.message}")
                continue
            print(
                f"  model ({answer.model}): {answer.text!r}  [{a.seconds:.2f} s, "
                f"{answer.scene_tokens} scene tokens from {len(answer.view_stamps)} views]"
            )
            print(f"  truth: {task.answer}")
            for w in answer.warnings:  # e.g. a box the box grammar had to steer
                print(f"  warning: {w}")
            for b, o in zip(a.boxes, answer.objects, strict=True):
                line = f"  box {np.round(b, 2).tolist()}"
                if task.box is not None:
                    from llava3d_ros.geometry.boxes import iou_aabb

                    line += (
                        f"  IoU with truth {iou_aabb(b[:3], b[3:], task.box[:3], task.box[3:]):.2f}"
                    )
                print(line + (f" ({o.label})" if o.label else ""))
        _picture(args.out, scene, rendered, asked)
        print(f"\npicture: {args.out}   ({time.monotonic() - t0:.1f} s in all)")
        return 0 if asked and all(a.code == ResultCode.OK for a in asked) else 1
    finally:
        if client is not None:
            client.close()
        rclpy.shutdown(context=context)
        node.terminate()
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()


if __name__ == "__main__":
    sys.exit(main())
