"""CPU, tiny random-weight model: cold vs follow-up query latency and the encode/prefill/decode split.

Run: /tmp/v1/bin/python bench/bench_model.py [--views 20] [--new-tokens 16] [--repeats 3]
Baseline in the same run: the same follow-up with KV-prefix reuse switched off (features still cached).
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
from llava3d_ros.model.engine import Engine
from llava3d_ros.model.tiny import random_bundle, random_views

QUESTIONS = ["What is next to the sofa?", "How many chairs are there?", "Where is the lamp?"]


def _row(name: str, results) -> str:
    med = {
        k: statistics.median(getattr(r.timings, k) for r in results) * 1e3
        for k in ("encode_s", "prefill_s", "decode_s", "total_s")
    }
    return (
        f"| {name:<34} | {med['encode_s']:8.1f} | {med['prefill_s']:8.1f} | "
        f"{med['decode_s']:8.1f} | {med['total_s']:8.1f} |"
    ), med["total_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    bundle = random_bundle(seed=1)
    views = random_views(args.views, seed=0)
    cold, follow, norefuse = [], [], []
    for _rep in range(args.repeats):
        eng = Engine(bundle, max_new_tokens=args.new_tokens)
        cold.append(eng.answer(views, QUESTIONS[0]))
        follow.extend(eng.answer(views, q) for q in QUESTIONS[1:])
        base = Engine(bundle, max_new_tokens=args.new_tokens, reuse_prefix=False)
        base.answer(views, QUESTIONS[0])  # warms the feature cache only
        norefuse.extend(base.answer(views, q) for q in QUESTIONS[1:])
        assert all(r.success for r in cold + follow + norefuse), [r.message for r in cold + follow]
    print(
        f"tiny LLaVA-3D ({bundle.model_id}), {args.views} views, "
        f"{cold[0].scene_tokens} scene tokens, ≤{args.new_tokens} new tokens, "
        f"torch threads {torch.get_num_threads()}, medians in ms"
    )
    print("| query                              | encode   | prefill  | decode   | total    |")
    print("|------------------------------------|----------|----------|----------|----------|")
    line, t_cold = _row("cold (CLIP + scene prefix)", cold)
    print(line)
    line, t_follow = _row("follow-up (cached features + KV)", follow)
    print(line)
    line, t_base = _row("baseline: features cached, no KV", norefuse)
    print(line)
    print(
        f"follow-up / cold = {t_follow / t_cold:.1%} (goal ≤ 20%); "
        f"follow-up / no-KV baseline = {t_follow / t_base:.1%}"
    )
    ttft_cold = statistics.median(r.timings.encode_s + r.timings.prefill_s for r in cold)
    ttft_follow = statistics.median(r.timings.encode_s + r.timings.prefill_s for r in follow)
    print(
        f"time to first token: cold {ttft_cold * 1e3:.1f} ms, follow-up {ttft_follow * 1e3:.1f} ms "
        f"({ttft_follow / ttft_cold:.1%})"
    )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"bench wall time {time.perf_counter() - t0:.1f} s")
