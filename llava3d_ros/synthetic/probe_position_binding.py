"""Probe for issue #6: does the tiny model bind a click to a 3D position, and what makes it?

Recipes (``llava3d_ros/synthetic/probes.py``): ``recolour`` (one room and camera path, new
colourings) and ``boxes`` (identical boxes, colours and camera path drawn anew). Colour
questions only, the wiring test's model size, one torch thread. Defaults are the CI test's
configuration (``probes.binding_config``); the flags switch its parts back one by one.
Prints click-colour accuracy on 16 training variants and on ``--held-out`` new ones with
nothing, the position path or the click embedding zeroed, and with ``--curve N`` the held-out
accuracy (teacher-forced) every N steps.

``--clicks surface`` puts clicks on the object's seen surface (a clicked pixel unprojected with
its depth, as in the node) instead of inside it; ``--bind-loss W`` adds the training-only
click-binding loss (``synthetic/binding.py``) with weight W.

Run: .venv/bin/python -m llava3d_ros.synthetic.probe_position_binding recolour --objects 2 \
         --steps 6000 --curve 500
     .venv/bin/python -m llava3d_ros.synthetic.probe_position_binding recolour --objects 2 \
         --steps 6000 --click-encoding mlp --rope-theta 1e4 --fourier-freqs 4 \
         --fourier-wavelength 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import torch

from llava3d_ros.synthetic.dataset import CLICK_MODES
from llava3d_ros.synthetic.evaluate import evaluate
from llava3d_ros.synthetic.probes import PROBE_DATA, RECIPES, binding_config, probe_samples
from llava3d_ros.synthetic.train import train

TUNABLE = (
    "lr",
    "batch",
    "questions",  # packed per sequence
    "click_encoding",  # mlp | shared_position
    "rope_theta",
    "fourier_freqs",
    "fourier_wavelength",  # metres
    "bind_loss",  # weight of the click-binding attention loss (0 = off)
    "bind_margin",  # metres around the clicked object's box whose tokens count as it
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m llava3d_ros.synthetic.probe_position_binding",
        description=__doc__.splitlines()[0],
    )
    ap.add_argument("recipe", choices=RECIPES)
    ap.add_argument("--geometry", type=int, default=0)
    ap.add_argument("--objects", type=int, default=0, help="keep only the first N (0 = all)")
    ap.add_argument("--train", type=int, default=512, help="variants to train on")
    ap.add_argument("--held-out", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--clicks", choices=CLICK_MODES, default=PROBE_DATA.clicks)
    ap.add_argument("--curve", type=int, default=0, help="held-out accuracy every N steps")
    # the parts of the CI test's configuration a run may switch (flag per TrainConfig field)
    base = binding_config(0)
    for field in TUNABLE:
        default = getattr(base, field)
        ap.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    samples = probe_samples(
        args.recipe,
        args.train + args.held_out,
        geometry=args.geometry,
        objects=args.objects,
        data=replace(PROBE_DATA, clicks=args.clicks),
    )
    train_set, held_out = samples[: args.train], samples[args.train :]
    cfg = binding_config(args.steps, **{f: getattr(args, f) for f in TUNABLE})
    t0 = time.perf_counter()
    curve = dict(val_samples=held_out, eval_every=args.curve) if args.curve and held_out else {}
    bundle, log = train(cfg, train_set, PROBE_DATA, None, progress=False, **curve)
    print(
        f"{args.recipe}: {len(samples[0].names)} objects, {args.train} variants, "
        f"{args.steps} steps in {time.perf_counter() - t0:.0f} s, final loss {log[-1]['loss']:.4f}"
    )
    print(
        f"  click encoding {cfg.click_encoding}, rope_theta {cfg.rope_theta:g}, "
        f"{cfg.fourier_freqs} Fourier octaves from {cfg.fourier_wavelength:g} m, "
        f"{cfg.questions} question(s) per sequence, lr {cfg.lr:g}, batch {cfg.batch}"
    )
    if curve:  # teacher-forced, one question per sequence (train.answer_accuracy)
        points = [(r["step"], r["val_color"]) for r in log if "val_color" in r]
        print("held-out curve", " ".join(f"{st}:{100 * a:.0f}%" for st, a in points))
    for name, subset in (("train", train_set[:16]), ("held-out", held_out)):
        if subset:
            res = evaluate(bundle, subset, progress=False)
            print(name, json.dumps({k: round(r["click_color"], 3) for k, r in res.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
