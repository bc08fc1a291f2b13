"""Position binding, the wiring proof's second half: the click must be bound to 3D positions.

One room seen from one camera path, trained on 512 colourings of its two objects, asked the
colour of the clicked object in 64 colourings it never saw. Only the 3D positions tell the two
objects apart there: scene tokens carry them through the position MLP, the click through its
encoder. If either path, the voxel pooling of positions, or the click splicing were mis-wired
the answers would stay at chance (50 %); zeroing the position embedding or the click must
bring them back to it.
"""

from __future__ import annotations

import time

import pytest
import torch

from llava3d_ros.synthetic.evaluate import evaluate
from llava3d_ros.synthetic.probes import PROBE_DATA, binding_config, probe_samples
from llava3d_ros.synthetic.train import train

STEPS = 1000


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_click_binds_to_3d_positions_in_unseen_colourings():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and faster than two for a model this small
    try:
        samples = probe_samples("recolour", 512 + 64, objects=2)
        start = time.perf_counter()
        # with the click-binding loss: without it the rise is late and CPU-dependent (an AMD EPYC
        # stayed at 46 % after 6,000 steps, bit-identical before and after the Dec 3 changes).
        # Both objects' questions in each sequence (the probe asks one) and lr 4e-3 (the probe's
        # 2e-3): twice the answers per step for ~20 % more tokens. The training loss then drops
        # below 0.05 by step 630-700 for five training seeds; with one question, mostly above
        # 0.1 until step 1,000-1,450 (1,500 steps left one seed of five at 77 % held-out). In
        # training the second answer could be guessed without positions (the scene's other
        # colour); the held-out questions are asked one per query, where it cannot.
        cfg = binding_config(STEPS, bind_loss=1.0, questions=2, lr=4e-3)
        bundle, _ = train(cfg, samples[:512], PROBE_DATA, None, progress=False)
        seconds = time.perf_counter() - start
        res = {
            k: r["click_color"] for k, r in evaluate(bundle, samples[512:], progress=False).items()
        }
    finally:
        torch.set_num_threads(threads)
    print(f"trained {STEPS} steps in {seconds:.0f} s; held-out click colour {res}")
    # measured (Intel Xeon, Dec 7): 100 % / 38 % / 20 %, and 100 % for training seeds 1-4 too
    # (position zeroed 12-45 %, click zeroed 16-21 %); 6,000 steps with one question per
    # sequence and lr 2e-3 gave 100 % / 23 % / 20 % (AMD EPYC, Dec 3). 75 % of 128 questions is
    # > 5 standard deviations above chance.
    assert res["none"] >= 0.75, res
    assert res["zero_position"] <= 0.65, res
    assert res["zero_click"] <= 0.65, res
