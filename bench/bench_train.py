"""Training step of the embedded model: one-pass batches vs the per-sequence path, same run.

Both paths train the same tiny LLaVA-3D (TrainConfig defaults: the shipped model's size,
batch 8, 6 questions per scene) on the same generated scenes with the same sequences drawn;
a step is batch assembly + forward + backward + AdamW. Baseline: ``train.sequence_embeds``
per sequence (voxelise, tokenise, position MLP, pool, project and embed one sequence at a
time) then ``pad_batch``; new: ``batches.build_batch`` over scenes prepared once. The paths
alternate in blocks (the machine may be shared) and each reports its median block.

Run: .venv/bin/python bench/bench_train.py [--scenes 16] [--steps 10] [--blocks 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava3d_ros.synthetic.batches import TurnEncoder, build_batch, prepare_scene  # noqa: E402
from llava3d_ros.synthetic.dataset import DataConfig, generate  # noqa: E402
from llava3d_ros.synthetic.train import (  # noqa: E402
    TrainConfig,
    batch_loss,
    build_model,
    pad_batch,
    pick_tasks,
    scene_features,
    sequence_embeds,
)
from llava3d_ros.synthetic.vocab import build_tokenizer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    cfg, data = TrainConfig(), DataConfig()
    samples = generate(list(range(900_000, 900_000 + args.scenes)), data, workers=2)
    tok = build_tokenizer([x for s in samples for t in s.tasks for x in (t.question, t.answer)])
    bundle = build_model(cfg, tok, data, args.device)
    bundle.lm.train()
    for p in bundle.vision.parameters():
        p.requires_grad_(False)
    feats = [scene_features(bundle, s) for s in samples]
    t0 = time.perf_counter()
    scenes = [
        prepare_scene(
            s, f, voxel_size=cfg.voxel_size, max_tokens=cfg.max_scene_tokens, seed=cfg.seed
        )
        for s, f in zip(samples, feats, strict=True)
    ]
    prepare_s = time.perf_counter() - t0
    encoder = TurnEncoder(tok)
    params = [p for p in bundle.lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    rng = random.Random(0)
    tokens = []

    def draw() -> tuple[list[int], list[list], list[int]]:
        picks = [rng.randrange(len(samples)) for _ in range(cfg.batch)]
        tasks = [pick_tasks(samples[i], cfg.kinds, cfg.questions, rng) for i in picks]
        return picks, tasks, [rng.randrange(2**31) for _ in picks]

    def step_baseline() -> None:
        picks, tasks, orders = draw()
        seqs = [
            sequence_embeds(bundle, feats[i], samples[i], t, cfg, o)
            for i, t, o in zip(picks, tasks, orders, strict=True)
        ]
        run(*pad_batch(bundle, seqs))

    def step_batched() -> None:
        picks, tasks, orders = draw()
        run(*build_batch(bundle, encoder, [scenes[i] for i in picks], tasks, orders))

    def run(embeds: torch.Tensor, labels: torch.Tensor) -> None:
        tokens.append(embeds.shape[0] * embeds.shape[1])
        loss, _ = batch_loss(bundle, embeds, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def block(step) -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.steps

    step_baseline(), step_batched()  # warm-up
    times: dict[str, list[float]] = {"baseline": [], "batched": []}
    for _ in range(args.blocks):
        times["baseline"].append(block(step_baseline))
        times["batched"].append(block(step_batched))
    base, new = (statistics.median(times[k]) for k in ("baseline", "batched"))
    print(
        f"tiny LLaVA-3D training step on {args.device} ({torch.get_num_threads()} threads), "
        f"batch {cfg.batch} x {cfg.questions} questions, {data.n_views} views of "
        f"{data.resolution} px, {args.scenes} scenes, median of {args.blocks} blocks of "
        f"{args.steps} steps; ~{statistics.mean(tokens):.0f} padded tokens per batch"
    )
    print(f"  per-sequence path (baseline): {base * 1e3:8.1f} ms/step = {1 / base:6.2f} steps/s")
    print(f"  one-pass batches:             {new * 1e3:8.1f} ms/step = {1 / new:6.2f} steps/s")
    print(f"  speed-up: {base / new:.2f}x  (scene preparation, once: {prepare_s * 1e3:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
