"""What box-constrained decoding costs: decode time per token with the box grammar on vs off.

Run: .venv/bin/python bench/bench_box_grammar.py [--seeds 200000-200009] [--repeats 3]
Embedded model, the box-writing questions (captions, grounding) of held-out synthetic scenes;
baseline in the same run: the same questions decoded without the grammar, runs interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# runnable as a plain script from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llava3d_ros.model.box_grammar import BoxState, feed
from llava3d_ros.model.engine import Engine
from llava3d_ros.model.loader import load_bundle
from llava3d_ros.synthetic.dataset import generate, parse_seeds
from llava3d_ros.synthetic.evaluate import EMBEDDED_MODEL, data_config_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="200000-200009")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bundle = load_bundle(EMBEDDED_MODEL, EMBEDDED_MODEL / "vision_tower", dtype="fp32")
    samples = generate(parse_seeds(args.seeds), data_config_for(bundle, clicks="surface"))
    engines = {on: Engine(bundle, max_new_tokens=40, constrain_boxes=on) for on in (False, True)}
    per_token: dict[bool, list[float]] = {False: [], True: []}
    overruled = answers = 0
    for rep in range(args.repeats):
        for sample in samples:
            views = sample.model_views()
            for task in sample.tasks:
                if task.kind not in ("caption", "ground"):
                    continue
                order = (False, True) if rep % 2 == 0 else (True, False)
                for on in order:
                    eng = engines[on]
                    eng.forget_scenes()
                    res = eng.answer(views, task.question, "", list(task.clicks))
                    assert res.success, res.message
                    per_token[on].append(res.timings.decode_s / max(1, len(eng.last_tokens)))
                    if on and rep == 0:
                        answers += 1
                        overruled += res.box_tokens_overruled > 0
    off, on = (statistics.median(per_token[k]) * 1e3 for k in (False, True))
    grammar = engines[True].box_grammar
    assert grammar is not None
    state = feed(BoxState(), "[1.6, -1.7")
    t = time.perf_counter()
    for _ in range(200):
        grammar.allowed(state, bundle.lm.config.vocab_size, torch.device("cpu"))
    mask_ms = (time.perf_counter() - t) / 200 * 1e3
    print(
        f"embedded model ({bundle.model_id}), vocabulary {len(grammar.texts)}, "
        f"{len(samples)} scenes × {args.repeats} repeats, {answers} box answers, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("| decoding          | ms per token (median) |")
    print("|-------------------|-----------------------|")
    print(f"| free (baseline)   | {off:21.3f} |")
    print(f"| box grammar on    | {on:21.3f} |")
    print(f"ratio on/off: {on / off:.3f}×; answers the grammar steered: {overruled} of {answers}")
    print(
        f"mask inside a box (only when the model's token is refused): {mask_ms:.3f} ms over "
        f"{len(grammar.box_candidates)} candidate tokens"
    )


if __name__ == "__main__":
    main()
