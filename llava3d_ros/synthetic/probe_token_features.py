"""Probe for issue #6: do the scene tokens carry their object's category and colour?

Linear probes (``llava3d_ros/synthetic/feature_probe.py``) fitted on the voxel tokens of
``--train-seeds`` scenes and scored on ``--test-seeds``: pooled tower features ("tower") and the
scene tokens the LLM gets ("tokens", after the 3D position embedding and projector). A model
that must find "the chair" by attention can match no better than its tokens tell categories apart.

Run: .venv/bin/python -m llava3d_ros.synthetic.probe_token_features [--model DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llava3d_ros.model.loader import load_bundle
from llava3d_ros.synthetic.batches import prepare_scene
from llava3d_ros.synthetic.dataset import generate, parse_seeds
from llava3d_ros.synthetic.evaluate import EMBEDDED_MODEL, data_config_for
from llava3d_ros.synthetic.feature_probe import probe_tokens
from llava3d_ros.synthetic.train import scene_features


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m llava3d_ros.synthetic.probe_token_features",
        description=__doc__.splitlines()[0],
    )
    ap.add_argument("--model", type=Path, default=EMBEDDED_MODEL, help="checkpoint directory")
    ap.add_argument("--train-seeds", default="0-199")
    ap.add_argument("--test-seeds", default="200000-200049")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    bundle = load_bundle(a.model, a.model / "vision_tower", dtype="fp32")
    data = data_config_for(bundle)
    voxel = 0.2  # the voxel size the model was trained and is evaluated at

    def scenes(spec: str):
        samples = generate(parse_seeds(spec), data, a.workers)
        return [
            prepare_scene(s, scene_features(bundle, s), voxel_size=voxel, max_tokens=2560, seed=0)
            for s in samples
        ]

    result = probe_tokens(bundle, scenes(a.train_seeds), scenes(a.test_seeds))
    print(
        f"model {a.model} ({bundle.name}); tokens: {result['train_tokens']:.0f} train, "
        f"{result['test_tokens']:.0f} held out"
    )
    print("| attribute | tower features | scene tokens | majority |")
    print("|---|---|---|---|")
    for name in ("category", "colour"):
        print(
            f"| {name} | {100 * result[f'tower_{name}']:.1f} % | "
            f"{100 * result[f'tokens_{name}']:.1f} % | {100 * result[f'majority_{name}']:.1f} % |"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
