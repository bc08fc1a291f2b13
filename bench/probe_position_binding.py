"""Probe for issue #6: does the tiny model bind a click to a 3D position within minutes on a CPU?

Two data recipes, colour questions only, the wiring test's tiny config, one torch thread:
  recolour  one room (``--geometry``) and camera path, ``--train`` recolourings
  boxes     the room's objects replaced by identical boxes; colours and camera path drawn anew
            per variant
Evaluated on 16 training variants and ``--held-out`` new ones.
Prints click-colour accuracy with nothing, the position path or the click embedding zeroed.

Run: .venv/bin/python bench/probe_position_binding.py boxes --train 64 --steps 600 \
        [--click-encoding shared_position]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava3d_ros.synthetic.dataset import DataConfig, sample_from_scene  # noqa: E402
from llava3d_ros.synthetic.evaluate import evaluate  # noqa: E402
from llava3d_ros.synthetic.scenes import Box, SceneObject, make_scene, recolored  # noqa: E402
from llava3d_ros.synthetic.train import TrainConfig, train  # noqa: E402


def identical_boxes(seed: int, half: float = 0.3):
    """The room of ``seed`` with each object replaced by the same 0.6×0.6×0.9 m box."""
    base = make_scene(seed)
    objects = [
        SceneObject(
            "cabinet",
            o.color,
            "small",
            [Box(np.array([*(o.box[:2] - half), 0.0]), np.array([*(o.box[:2] + half), 0.9]))],
        )
        for o in base.objects
    ]
    return replace(base, objects=objects)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", choices=["recolour", "boxes"])
    ap.add_argument("--geometry", type=int, default=0)
    ap.add_argument("--train", type=int, default=64, help="variants to train on")
    ap.add_argument("--held-out", type=int, default=16)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--click-encoding", default="mlp", choices=["mlp", "shared_position"])
    ap.add_argument("--objects", type=int, default=0, help="keep only the first N (0 = all)")
    ap.add_argument("--questions", type=int, default=8, help="packed per sequence")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--fourier-freqs", type=int, default=4)
    ap.add_argument("--fourier-wavelength", type=float, default=2.0, help="metres")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = DataConfig(n_views=4, resolution=56, patch=8, kinds=("color",))
    rng = np.random.default_rng([args.geometry, 7])
    room = (
        make_scene(args.geometry) if args.recipe == "recolour" else identical_boxes(args.geometry)
    )
    if args.objects:
        room = replace(room, objects=room.objects[: args.objects])

    def variant(i: int):
        if args.recipe == "recolour":  # same room and camera path, new colours
            return sample_from_scene(recolored(room, rng), data, 1000 * args.geometry + i)
        # new colours and a new camera path (the path follows the seed)
        scene = replace(recolored(room, rng), seed=10_000 + i)
        return sample_from_scene(scene, data, 10_000 + i)

    held = args.held_out
    samples = [variant(i) for i in range(args.train + held)]
    train_set, held_out = samples[: args.train], samples[args.train :]
    cfg = TrainConfig(
        steps=args.steps,
        batch=4,
        questions=args.questions,
        lr=2e-3,
        warmup=20,
        curriculum=0.0,
        kinds=data.kinds,
        hidden=64,
        layers=2,
        heads=4,
        mm_hidden=32,
        vision_hidden=32,
        click_encoding=args.click_encoding,
        rope_theta=args.rope_theta,
        fourier_freqs=args.fourier_freqs,
        fourier_wavelength=args.fourier_wavelength,
    )
    t0 = time.perf_counter()
    bundle, log = train(cfg, train_set, data, None, progress=False)
    print(
        f"{args.recipe} (click encoding {args.click_encoding}, rope_theta {args.rope_theta:g}, "
        f"{args.fourier_freqs} Fourier octaves from {args.fourier_wavelength:g} m): {len(room.objects)} objects, {args.train} variants, {args.steps} steps "
        f"in {time.perf_counter() - t0:.0f} s, final loss {log[-1]['loss']:.4f}"
    )
    for name, subset in (("train", train_set[:16]), ("held-out", held_out)):
        if subset:
            res = evaluate(bundle, subset, progress=False)
            print(name, json.dumps({k: round(r["click_color"], 3) for k, r in res.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
