"""7B-shaped LLaVA-3D with random weights (bf16, 20 views, CLIP-L/336-shaped tower): TTFT cold and
warm, decode tokens/s, peak memory, for each weight format (bf16, and the language model's
Linear layers quantised to int8 and int4, model/quantize.py) and each decode path (eager:
generate.decode over a growing DynamicCache; static: static KV cache, step compiled into a CUDA
graph on CUDA); whether the two paths gave the same greedy tokens, and how many of the
quantised models' tokens are bf16's. Designed to finish in about 5 minutes on one H100.

GPU:     python bench/bench_gpu_7b.py                  (needs ~16 GB of GPU memory)
Smoke:   python bench/bench_gpu_7b.py --tiny           (tiny model; on CUDA if there is one, else
                                                        the CPU, where the static step runs
                                                        uncompiled)
Weights: python bench/bench_gpu_7b.py --weights-only   (CPU, no GPU needed: bytes the 7B-shaped
                                                        bundle's weights take in bf16, int8, int4)

Each path first answers one untimed warm-up query about another scene (on CUDA this is where
the static step is compiled and captured), then the timed cold query and warm follow-ups.
Without a CUDA device (and without ``--tiny`` or ``--weights-only``) it prints ``skipped: no
CUDA device`` and exits 0, so ``make bench`` passes on CPU-only machines.

``--weights-only`` builds the model on the meta device and materialises, on the CPU, one target
Linear layer at a time (random bf16 values: the sizes do not depend on them), quantises it as
``quantize_language_model`` would and counts the bytes of the tensors it then holds
(``quantize.weight_bytes``: packed data, scales, zero points), then lets it go; a 7B model in
fp32 would not fit a 24 GB machine. Decoder layer 0 is measured and the count scaled by the
layer count (every layer has the same shapes, which is checked; ``--all-layers`` measures all
32, ~15 minutes on 2 cores); layers that are not quantised count as their bf16 size.
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
from llava3d_ros.model.quantize import QUANTIZE_MODES, quantize_bundle, weight_bytes
from llava3d_ros.model.tiny import random_bundle, random_views

QUESTIONS = ["What is next to the sofa?", "How many chairs are there?", "Where is the lamp?"]


def _label(quant: str, tiny: bool = False) -> str:
    """A weight format's name in the tables: the quantize value; "none" is the model's dtype."""
    return quant if quant != "none" else ("fp32" if tiny else "bf16")


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


def _run_path(bundle, views, warmup_views, path: str, args, device: str) -> dict:
    """Warm-up, then cold + warm queries on one decode path; its rows and tokens."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    eng = Engine(bundle, max_new_tokens=args.new_tokens, decode_path=path)
    t = time.perf_counter()
    r = eng.answer(warmup_views, QUESTIONS[0])
    _sync()
    warmup_s = time.perf_counter() - t
    if not r.success:
        raise SystemExit(f"{path}: warm-up query failed: {r.code.name}: {r.message}")
    eng.forget_scenes()
    rows, tokens = [], []
    for i, q in enumerate(QUESTIONS):
        clock = _Clock()
        r = eng.answer(views, q, on_token=clock)
        _sync()
        if not r.success:
            raise SystemExit(f"{path}: query failed: {r.code.name}: {r.message}")
        ttft = (clock.first or time.perf_counter()) - clock.start
        tps = (clock.n - 1) / (clock.last - clock.first) if clock.n > 1 else float("nan")
        rows.append(("cold" if i == 0 else f"warm {i}", ttft, tps, clock.n, r))
        tokens.append(list(eng.last_tokens))
    out = {
        "rows": rows,
        "tokens": tokens,
        "note": eng.decode_path_note,
        "warmup_s": warmup_s,
        "hits": eng.prefix_hits,
    }
    if device.startswith("cuda"):
        out["peak"] = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
    eng.release()
    return out


def _compare(
    eager: list[list[int]], static: list[list[int]], names: tuple[str, str] = ("eager", "static")
) -> str:
    """``yes (N tokens)`` or where the first difference is."""
    n = sum(len(t) for t in eager)
    for q, (a, b) in enumerate(zip(eager, static, strict=True)):
        if a != b:
            n_common = min(len(a), len(b))
            at = next((i for i in range(n_common) if a[i] != b[i]), n_common)
            return (
                f"no (query {q + 1}: first difference at token {at}; "
                f"{len(a)} {names[0]} vs {len(b)} {names[1]} tokens)"
            )
    return f"yes ({n} tokens)"


def _agreement(ref: list[list[int]], other: list[list[int]]) -> str:
    """Tokens of ``other`` equal to ``ref``'s up to each answer's first difference."""
    same = total = 0
    for a, b in zip(ref, other, strict=True):
        total += len(a)
        same += next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return f"{same}/{total} tokens before the first difference"


def _build(args, device: str, quant: str):
    """The benchmark's model (random weights: the same values for every weight format)."""
    if args.tiny:
        # std 0.3: outputs that depend on the input, so a cache bug shows as changed tokens
        bundle = random_bundle(seed=1, device=device, std=0.3)
    else:
        bundle = random_bundle(
            released_7b_config(),
            clip_l14_336_config(),
            seed=1,
            dtype=torch.bfloat16,
            device=device,
            name="LLaVA-3D-7B-shaped",
        )
    quantize_bundle(bundle, quant)
    return bundle


def _layer_of(name: str) -> int | None:
    """``model.layers.<i>.…`` → i; None for a layer outside the decoder blocks."""
    parts = name.split(".")
    return int(parts[2]) if parts[:2] == ["model", "layers"] else None


def _weights_only(args) -> int:
    """Bytes of the 7B-shaped bundle's weights per format, measured from quantised tensors (CPU)."""
    from transformers import CLIPVisionModel

    from llava3d_ros.model.config import clip_config, llava_config
    from llava3d_ros.model.llava3d import Llava3DForCausalLM
    from llava3d_ros.model.quantize import quantize_linear, targets
    from llava3d_ros.model.tiny import init_random_

    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("meta"):
        lm = Llava3DForCausalLM(llava_config(released_7b_config())).to(torch.bfloat16)
        vision = CLIPVisionModel(clip_config(clip_l14_336_config())).to(torch.bfloat16)
    layers = lm.model.layers
    shapes = [[(n, tuple(p.shape)) for n, p in layer.named_parameters()] for layer in layers]
    if any(s != shapes[0] for s in shapes):
        raise SystemExit("decoder layers differ in shape: run with --all-layers")
    measured = range(len(layers)) if args.all_layers else range(1)
    scale = 1 if args.all_layers else len(layers)
    plan = [(n, lin, role) for n, lin, role in targets(lm) if _layer_of(n) in (None, *measured)]
    vision_bytes = weight_bytes(vision)  # never quantised: its bf16 size
    rows = {}
    for quant in args.quantize:
        # every target layer's bytes minus its bf16 size on meta, layer 0's times the layer count
        delta = 0
        for n, lin, role in plan:
            meta_w = lin.weight
            before = weight_bytes(lin)
            lin.to_empty(device="cpu")
            init_random_(lin, 0.02, seed=len(n))
            if quant != "none":
                quantize_linear(lin, quant if role == "block" else "int8")
            d = weight_bytes(lin) - before
            delta += d * (scale if _layer_of(n) is not None else 1)
            lin.weight = torch.nn.Parameter(meta_w, requires_grad=False)  # back to meta: freed
            if lin.bias is not None:
                lin.bias = torch.nn.Parameter(torch.empty_like(lin.bias, device="meta"))
        lm_bytes = weight_bytes(lm) + delta
        rows[quant] = (lm_bytes, vision_bytes)
    how = "every decoder layer" if args.all_layers else f"decoder layer 0, x {len(layers)}"
    print(
        "model: LLaVA-3D-7B-shaped (random weights; weight sizes do not depend on the values), "
        f"CLIP-L/336-shaped tower; CPU; measured from the quantised tensors ({how})"
    )
    print("| weights | language model GB | vision tower GB | total GB | total GiB | vs bf16 |")
    print("|---------|-------------------|-----------------|----------|-----------|---------|")
    ref = sum(rows.get("none", next(iter(rows.values()))))
    for quant, (lm_b, vis_b) in rows.items():
        total = lm_b + vis_b
        print(
            f"| {_label(quant):<7} | {lm_b / 1e9:17.3f} | {vis_b / 1e9:15.3f} | "
            f"{total / 1e9:8.3f} | {total / 2**30:9.3f} | {total / ref:7.3f} |"
        )
    print(f"total wall time {time.perf_counter() - t0:.1f} s")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="smoke run with the tiny model")
    ap.add_argument(
        "--weights-only",
        action="store_true",
        help="CPU: print the 7B-shaped bundle's weight bytes per format, measured from the "
        "quantised tensors, and exit (no GPU, no queries)",
    )
    ap.add_argument(
        "--all-layers",
        action="store_true",
        help="--weights-only: quantise and count every decoder layer (default: layer 0, scaled)",
    )
    ap.add_argument(
        "--quantize",
        default="none,int8,int4",
        help="weight formats to run, comma-separated quantize values (none = bf16 on the 7B "
        "shape, the tiny model's fp32 with --tiny)",
    )
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--paths",
        default="eager,static",
        help="decode paths to run, comma-separated (eager, static); both = a token comparison",
    )
    args = ap.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - {"eager", "static"}:
        ap.error("--paths takes eager and/or static")
    args.quantize = list(dict.fromkeys(q.strip() for q in args.quantize.split(",") if q.strip()))
    if not args.quantize or set(args.quantize) - set(QUANTIZE_MODES):
        ap.error(f"--quantize takes {', '.join(QUANTIZE_MODES)}")
    if args.weights_only:
        return _weights_only(args)
    # --tiny: on whatever device there is
    device = "cpu" if args.tiny and not torch.cuda.is_available() else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device (run with --tiny for the CPU smoke check)")
        return 0
    t0 = time.perf_counter()
    views = random_views(args.views, seed=0)
    warmup_views = random_views(args.views, seed=1, first_id=10_000)
    dev_name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    label = {q: _label(q, args.tiny) for q in args.quantize}
    runs: dict[tuple[str, str], dict] = {}
    for quant in args.quantize:  # one weight format at a time: its model is freed after it
        t = time.perf_counter()
        bundle = _build(args, device, quant)
        _sync()
        build_s = time.perf_counter() - t
        gb = weight_bytes(bundle.lm, bundle.vision) / 1e9
        for p in paths:
            runs[quant, p] = _run_path(bundle, views, warmup_views, p, args, device)
        first = runs[quant, paths[0]]["rows"][0][4]
        print(
            f"model: {bundle.model_id}; device: {dev_name}; views {args.views}; "
            f"scene tokens {first.scene_tokens}; weights {gb:.3f} GB; build {build_s:.1f} s"
        )
        for p in paths:
            run = runs[quant, p]
            print(f"{label[quant]} {p}: {run['note']}; warm-up query {run['warmup_s']:.1f} s")
        del bundle
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    head = (
        "| weights | path   | query  | TTFT ms  | encode ms | prefill ms | decode tok/s | tokens |"
    )
    print(head)
    print("".join(c if c == "|" else "-" for c in head))
    for (quant, p), run in runs.items():
        for name, ttft, tps, n, r in run["rows"]:
            print(
                f"| {label[quant]:<7} | {p:<6} | {name:<6} | {ttft * 1e3:8.1f} | "
                f"{r.timings.encode_s * 1e3:9.1f} | {r.timings.prefill_s * 1e3:10.1f} | "
                f"{tps:12.1f} | {n:6d} |"
            )
    for (quant, p), run in runs.items():
        rows = run["rows"]
        warm = [row for row in rows[1:] if row[2] == row[2]]  # tok/s of the warm queries
        tps = sum(row[2] for row in warm) / len(warm) if warm else float("nan")
        print(
            f"{label[quant]} {p} on {dev_name}: TTFT cold {rows[0][1] * 1e3:.1f} ms, warm "
            f"{min(row[1] for row in rows[1:]) * 1e3:.1f} ms; decode {tps:.1f} tok/s (warm mean)"
        )
        if "peak" in run:
            alloc, reserved = run["peak"]
            print(
                f"{label[quant]} {p}: peak GPU memory allocated {alloc / 2**30:.2f} GiB "
                f"(weights included); reserved {reserved / 2**30:.2f} GiB"
            )
    for quant in args.quantize:
        if {"eager", "static"} <= set(paths):
            same = _compare(runs[quant, "eager"]["tokens"], runs[quant, "static"]["tokens"])
            print(f"{label[quant]} tokens identical (static vs eager): {same} on {dev_name}")
        if quant != "none" and "none" in args.quantize:
            agree = _agreement(runs["none", paths[0]]["tokens"], runs[quant, paths[0]]["tokens"])
            print(
                f"{label[quant]} vs {label['none']} greedy tokens ({paths[0]}): {agree} "
                f"on {dev_name}"
            )
    print(f"total wall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
