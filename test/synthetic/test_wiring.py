"""Wiring proof: a tiny model over-fits the click task, and needs the click embedding.

Trains the project's own LLaVA-3D code (tiny config) on a handful of scenes, then asks the
same click questions through the full inference engine. If the click encoder, voxel pooling
or the sentinel splicing were mis-wired, the answers could not depend on the click.
"""

from __future__ import annotations

import time

import pytest
import torch

from llava3d_ros.model.tiny import write_checkpoint
from llava3d_ros.synthetic.dataset import DataConfig, generate
from llava3d_ros.synthetic.evaluate import evaluate
from llava3d_ros.synthetic.train import TrainConfig, train


@pytest.fixture(scope="module")
def overfit():
    """Train once for the module: (bundle, final log row, seconds, results per ablation)."""
    # One thread: for a model this small, a second one costs more in sync than it gives.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Two views per room (30 click questions; four gave 38) and lr 3e-3 over-fit in 300
        # steps (final loss 0.001-0.004 over three seeds) what four views and lr 2e-3 did in
        # 400 (0.008), in half the time: ~96 scene tokens a step instead of ~188.
        data = DataConfig(n_views=2, resolution=56, patch=8, kinds=("color", "category"))
        samples = generate([0, 1, 2, 3], data)
        cfg = TrainConfig(
            steps=300,
            batch=4,
            questions=8,
            lr=3e-3,
            warmup=20,
            curriculum=0.0,
            kinds=data.kinds,
            hidden=64,
            layers=2,
            heads=4,
            mm_hidden=32,
            vision_hidden=32,
        )
        start = time.perf_counter()
        bundle, log = train(cfg, samples, data, None, progress=False)
        seconds = time.perf_counter() - start
        return bundle, log[-1], seconds, evaluate(bundle, samples, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_model_overfits_clicks_and_needs_them(overfit, tmp_path):
    bundle, last, seconds, res = overfit
    print(f"trained in {seconds:.0f} s; accuracy {res}")
    assert last["loss"] < 0.05, last
    full, no_click = res["none"], res["zero_click"]
    assert full["click_color"] >= 0.95 and full["click_category"] >= 0.95, full
    assert (no_click["click_color"] + no_click["click_category"]) / 2 <= 0.6, no_click
    # The trained model writes the released layout the loader reads.
    out, vision = write_checkpoint(bundle, tmp_path / "ckpt", random_weights=False)
    assert (out / "config.json").is_file() and (vision / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="a handful of scenes is memorised from CLIP content + click alone (measured: "
    "100%/100% colour/category with the position MLP zeroed; 100%/89% with four views); the "
    "position path only becomes necessary when generalising to unseen scenes: "
    "test_position_binding.py shows that",
)
def test_zeroing_position_breaks_the_overfit_model(overfit):
    zero_pos = overfit[3]["zero_position"]
    assert (zero_pos["click_color"] + zero_pos["click_category"]) / 2 <= 0.6, zero_pos
