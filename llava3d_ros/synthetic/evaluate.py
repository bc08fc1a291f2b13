"""Held-out synthetic scenes through the full pipeline (scene core → engine → parsing), scored.

    python -m llava3d_ros.synthetic.evaluate --model tiny_ckpt --seeds 100000-100049

Every question goes through ``model.engine.Engine`` exactly as a node query would; the
ablations zero the 3D position embedding or the click embedding with forward hooks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from llava3d_ros.geometry.boxes import iou_aabb
from llava3d_ros.model.engine import Engine
from llava3d_ros.model.loader import ModelBundle, load_bundle
from llava3d_ros.model.quantize import QUANTIZE_MODES
from llava3d_ros.synthetic.dataset import (
    CLICK_MODES,
    DataConfig,
    SceneSample,
    generate,
    parse_seeds,
)

ABLATIONS = ("none", "zero_position", "zero_click")
METRICS = (
    "click_color",
    "click_category",
    "caption_name",
    "count",
    "ground_acc25",
    "ground_acc50",
    "parseable_boxes",
)
# What the shares above do not say: which object a grounding answer picked and how far off
# its box is, and what always giving the commonest count would score on the same questions.
DIAGNOSTICS = (
    "ground_right_object",  # share of parsed boxes whose centre is nearest the described object
    "ground_centre_err_m",  # median distance of predicted to true centre
    "ground_size_err_m",  # median of the mean absolute error of the three sizes
    "count_majority",  # share the commonest true count gets: counting's baseline
    "caption_box_acc25",  # caption boxes with IoU >= 0.25: reading a place the click gives
    "boxes_enforced",  # box answers in which the box grammar replaced a token of the model's
)

# the node's embedded default (shipped with the package)
EMBEDDED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "tiny_model"


@contextlib.contextmanager
def ablation(bundle: ModelBundle, name: str) -> Iterator[None]:
    """Zero the position MLP's output, or every click token, while inside the block.

    With ``click_encoding="shared_position"`` the position MLP also feeds the click tokens, so
    zeroing it leaves a click only its own encoder's part.
    """
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; known: {ABLATIONS}")
    lm = bundle.lm
    handle = None
    if name == "zero_position":
        handle = lm.patch_pos_mlp.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    elif name == "zero_click":
        hidden, dtype = lm.config.hidden_size, lm.model.embed_tokens.weight.dtype
        lm.click_tokens = lambda clicks: torch.zeros(  # instance attribute shadows the method
            len(clicks), hidden, dtype=dtype, device=clicks.device
        )
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
        lm.__dict__.pop("click_tokens", None)


def data_config_for(
    bundle: ModelBundle, n_views: int = 0, clicks: str = DataConfig.clicks
) -> DataConfig:
    """Render at the tower's own image size and patch grid (what the model was trained on)."""
    vcfg = bundle.vision.config
    views = n_views or int(getattr(bundle.lm.config, "num_frames", 8))
    return DataConfig(
        n_views=views, resolution=vcfg.image_size, patch=vcfg.patch_size, clicks=clicks
    )


def _norm(text: str) -> str:
    return text.strip().lower().rstrip(".").strip()


def _first_iou(boxes: list, truth: np.ndarray) -> float:
    """3D IoU of an answer's first box with the true (cx, cy, cz, dx, dy, dz); 0 without one."""
    if not boxes:
        return 0.0
    return iou_aabb(boxes[0].center, boxes[0].size, truth[:3], truth[3:])


def score_sample(
    engine: Engine, sample: SceneSample, max_new_tokens: int, answers: list[dict] | None = None
) -> dict[str, list]:
    """Ask every question of one scene; per-metric lists of hits (and parse successes).

    With ``answers`` each question's answer is appended to it as a record (seed, kind,
    question, truth, answer text, parsed boxes) for looking at answers one by one.
    """
    views = sample.model_views()
    engine.forget_scenes()  # frame ids restart at 0 in every scene
    hits: dict[str, list] = {m: [] for m in METRICS + DIAGNOSTICS}
    for task in sample.tasks:
        res = engine.answer(
            views, task.question, "", list(task.clicks), max_new_tokens=max_new_tokens
        )
        if not res.success:
            raise RuntimeError(f"seed {sample.seed}: engine failed: {res.code.name} {res.message}")
        text = _norm(res.text)
        if answers is not None:
            answers.append(
                {
                    "seed": sample.seed,
                    "kind": task.kind,
                    "question": task.question,
                    "truth": task.answer,
                    "answer": res.text,
                    "boxes": [[*map(float, b.center), *map(float, b.size)] for b in res.boxes],
                    "overruled": res.box_tokens_overruled,
                }
            )
        if task.kind in ("caption", "ground"):
            hits["boxes_enforced"].append(res.box_tokens_overruled > 0)
        if task.kind == "color":
            hits["click_color"].append(text == task.answer)
        elif task.kind == "category":
            hits["click_category"].append(text == task.answer)
        elif task.kind == "count":
            hits["count"].append(text == task.answer)
            hits["count_majority"].append(task.answer)  # aggregated in ``summarise``
        elif task.kind == "caption":
            hits["caption_name"].append(text.startswith(_norm(task.answer.split(".")[0])))
            hits["parseable_boxes"].append(bool(res.boxes))
            hits["caption_box_acc25"].append(_first_iou(res.boxes, task.box) >= 0.25)
        elif task.kind == "ground":
            hits["parseable_boxes"].append(bool(res.boxes))
            iou = _first_iou(res.boxes, task.box)
            if res.boxes:
                b = res.boxes[0]
                centre = np.asarray(b.center, float)
                dist = np.linalg.norm(sample.boxes[:, :3] - centre, axis=1)
                hits["ground_right_object"].append(int(np.argmin(dist)) == task.target)
                hits["ground_centre_err_m"].append(float(np.linalg.norm(centre - task.box[:3])))
                size_err = np.abs(np.asarray(b.size, float) - task.box[3:]).mean()
                hits["ground_size_err_m"].append(float(size_err))
            hits["ground_acc25"].append(iou >= 0.25)
            hits["ground_acc50"].append(iou >= 0.5)
    return hits


def evaluate(
    bundle: ModelBundle,
    samples: list[SceneSample],
    ablations: tuple[str, ...] = ABLATIONS,
    voxel_size: float = 0.2,
    max_new_tokens: int = 40,
    progress: bool = True,
    answers: list[dict] | None = None,
    constrain_boxes: bool = True,
) -> dict[str, dict[str, float]]:
    """Metric → share of hits, per ablation (NaN where a scene set had no such question).

    With ``answers``, every answer is appended to it as a record tagged with its ablation.
    ``constrain_boxes`` decodes as the node does by default (box grammar on); off, the
    model's own choices stand and ``parseable_boxes`` measures the model alone.
    """
    out: dict[str, dict[str, float]] = {}
    for name in ablations:
        # A fresh engine per ablation: its scene-prefix cache must not outlive the hook.
        engine = Engine(
            bundle,
            voxel_size=voxel_size,
            max_new_tokens=max_new_tokens,
            constrain_boxes=constrain_boxes,
        )
        totals: dict[str, list] = {m: [] for m in METRICS + DIAGNOSTICS}
        first = len(answers or [])
        with ablation(bundle, name):
            for sample in tqdm(samples, desc=name, disable=not progress):
                for m, v in score_sample(engine, sample, max_new_tokens, answers).items():
                    totals[m] += v
        for record in (answers or [])[first:]:
            record["ablation"] = name
        out[name] = summarise(totals)
    return out


def summarise(totals: dict[str, list]) -> dict[str, float]:
    """Per-question lists from ``score_sample`` → shares, medians and the count baseline."""
    shares = METRICS + ("ground_right_object", "caption_box_acc25", "boxes_enforced")
    out = {m: float(np.mean(totals[m])) if totals[m] else float("nan") for m in shares}
    for m in ("ground_centre_err_m", "ground_size_err_m"):
        out[m] = float(np.median(totals[m])) if totals[m] else float("nan")
    counts = totals["count_majority"]
    commonest = np.unique(counts, return_counts=True)[1].max() if counts else 0
    out["count_majority"] = float(commonest / len(counts)) if counts else float("nan")
    out["questions"] = float(sum(len(totals[m]) for m in METRICS))
    return out


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Metrics as rows, ablations as columns (percentages)."""
    names = list(results)
    lines = [f"{'metric':<18}" + "".join(f"{n:>15}" for n in names)]
    for m in METRICS:
        cells = "".join(f"{100 * results[n][m]:>14.1f}%" for n in names)
        lines.append(f"{m:<18}{cells}")
    for m in DIAGNOSTICS:
        metres = m.endswith("_m")
        cells = "".join(
            f"{results[n][m]:>13.2f} m" if metres else f"{100 * results[n][m]:>14.1f}%"
            for n in names
        )
        lines.append(f"{m:<18}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        type=Path,
        default=EMBEDDED_MODEL,
        help="checkpoint dir (from train.py); default: the embedded model",
    )
    p.add_argument("--vision", type=Path, default=None, help="default: MODEL/vision_tower")
    p.add_argument("--seeds", required=True, help="held-out seeds, e.g. 100000-100049")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ablations", default=",".join(ABLATIONS))
    p.add_argument(
        "--clicks",
        choices=CLICK_MODES,
        default=DataConfig.clicks,
        help="click points inside the object, or on its seen surface (as a click on an image gives)",
    )
    p.add_argument(
        "--views",
        type=int,
        default=0,
        help="views per scene (default 0: the model's num_frames, what it was trained on)",
    )
    p.add_argument(
        "--free-decoding",
        action="store_true",
        help="decode without the box grammar (the node's default has it on): parseable_boxes "
        "then measures the model alone",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        default="none",
        help="weight-only quantisation of the language model's Linear layers, as the node's "
        "quantize parameter (model/quantize.py); the figures are then the quantised model's",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--answers",
        type=Path,
        default=None,
        help="also write every answer here, one JSON object per line (with its truth and boxes)",
    )
    a = p.parse_args(argv)
    if a.views < 0:
        p.error(f"--views must be 0 (the model's own) or positive, not {a.views}")
    bundle = load_bundle(
        a.model,
        a.vision or a.model / "vision_tower",
        dtype="fp32",
        device=a.device,
        quantize=a.quantize,
    )
    data = data_config_for(bundle, n_views=a.views, clicks=a.clicks)
    samples = generate(parse_seeds(a.seeds), data, a.workers)
    answers: list[dict] | None = [] if a.answers else None  # kept only when asked for
    results = evaluate(
        bundle,
        samples,
        tuple(a.ablations.split(",")),
        answers=answers,
        constrain_boxes=not a.free_decoding,
    )
    decoding = "free (no box grammar)" if a.free_decoding else "box grammar on"
    print(
        f"model: {bundle.model_id}; {len(samples)} held-out scenes ({a.seeds}), "
        f"{data.n_views} views, clicks: {a.clicks}, decoding: {decoding}"
    )
    print(format_table(results))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    if a.answers and answers is not None:
        a.answers.write_text("".join(json.dumps(r) + "\n" for r in answers))


if __name__ == "__main__":
    main()
