"""7B-shaped LLaVA-3D with random weights (bf16, 20 views, CLIP-L/336-shaped tower): TTFT cold and
warm, decode tokens/s, peak memory. Designed to finish well under 5 minutes on one H100.

GPU:   python bench/bench_gpu_7b.py           (needs ~16 GB of GPU memory)
Smoke: python bench/bench_gpu_7b.py --tiny    (tiny model on CPU, a few seconds)

Without a CUDA device (and without ``--tiny``) it prints ``skipped: no CUDA device`` and exits 0,
so ``make bench`` passes on CPU-only machines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# runnable as a plain script from a checkout without installing the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llava3d_ros.model.config import clip_l14_336_config, released_7b_config
from llava3d_ros.model.engine import Engine
from llava3d_ros.model.tiny import random_bundle, random_views

QUESTIONS = ["What is next to the sofa?", "How many chairs are there?", "Where is the lamp?"]


class _Clock:
    """Records when the first and the last token arrived (streaming callback)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first = self.last = None
        self.n = 0

    def __call__(self, _text: str, n: int) -> None:
        _sync()
        now = time.perf_counter()
        self.first = self.first or now
        self.last, self.n = now, n


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny model")
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = "cpu" if args.tiny else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device (run with --tiny for the CPU smoke check)")
        return 0
    t0 = time.perf_counter()
    if args.tiny:
        bundle = random_bundle(seed=1, device=device)
    else:
        bundle = random_bundle(
            released_7b_config(),
            clip_l14_336_config(),
            seed=1,
            dtype=torch.bfloat16,
            device=device,
            name="LLaVA-3D-7B-shaped",
        )
    _sync()
    build_s = time.perf_counter() - t0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    views = random_views(args.views, seed=0)
    eng = Engine(bundle, max_new_tokens=args.new_tokens)
    rows = []
    for i, q in enumerate(QUESTIONS):
        clock = _Clock()
        r = eng.answer(views, q, on_token=clock)
        _sync()
        if not r.success:
            raise SystemExit(f"query failed: {r.code.name}: {r.message}")
        ttft = (clock.first or time.perf_counter()) - clock.start
        tps = (clock.n - 1) / (clock.last - clock.first) if clock.n > 1 else float("nan")
        rows.append(("cold" if i == 0 else f"warm {i}", ttft, tps, clock.n, r))
    dev_name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(
        f"model: {bundle.model_id}; device: {dev_name}; views {args.views}; "
        f"scene tokens {rows[0][4].scene_tokens}; build {build_s:.1f} s"
    )
    print("| query  | TTFT ms  | encode ms | prefill ms | decode tok/s | tokens |")
    print("|--------|----------|-----------|------------|--------------|--------|")
    for name, ttft, tps, n, r in rows:
        print(
            f"| {name:<6} | {ttft * 1e3:8.1f} | {r.timings.encode_s * 1e3:9.1f} | "
            f"{r.timings.prefill_s * 1e3:10.1f} | {tps:12.1f} | {n:6d} |"
        )
    if device.startswith("cuda"):
        print(
            f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
            f"(weights included); reserved {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB"
        )
    eng.release()
    print(f"total wall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
