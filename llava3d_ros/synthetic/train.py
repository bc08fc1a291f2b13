"""Train a tiny LLaVA-3D (the project's own model code) on procedural scenes, nanoGPT-style.

    python -m llava3d_ros.synthetic.train --data train.npz --out tiny_ckpt --steps 3000

The vision tower stays frozen at its seeded random init (the release freezes CLIP too), so
its patch features are computed once per scene, unless --train-vision trains it as well;
everything after it trains: the 3D
position MLP, voxel pooling, projector, click encoder and the LLaMA-shaped LLM. Several
questions per scene are packed into one multi-turn llava_v1 conversation so the scene
tokens are paid for once. Deterministic for a given --steps; --minutes cuts short and
makes the learning-rate schedule follow the wall clock too. The training-only extra losses
(--bind-loss, --query-loss, --read-loss, --readout-loss, --token-loss, --number-loss) are
plug-ins (``extra_losses.py``) that ``train`` adds to the answer loss.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from llava3d_ros.model.llava3d import clip_patch_features
from llava3d_ros.model.loader import ModelBundle, load_bundle
from llava3d_ros.model.prompts import (
    BOX_TOKEN_INDEX,
    build_prompt,
    split_at_image,
    tokenize_prompt,
)
from llava3d_ros.model.tiny import random_bundle, tiny_config, tiny_vision_config, write_checkpoint
from llava3d_ros.model.tokenizer import SpTokenizer
from llava3d_ros.synthetic.batches import (
    PreparedScene,
    TurnEncoder,
    build_batch,
    prepare_scene,
)
from llava3d_ros.synthetic.count_balance import count_weights, rebalance_counts
from llava3d_ros.synthetic.dataset import (
    CLICK_MODES,
    DataConfig,
    SceneSample,
    generate,
    load_npz,
    parse_seeds,
)
from llava3d_ros.synthetic.extra_losses import Batch, ExtraLoss, extra_losses, hooked
from llava3d_ros.synthetic.tasks import Task
from llava3d_ros.synthetic.vocab import build_tokenizer

MODEL_NAME = "tiny-llava3d trained-on-synthetic-scenes"  # Answer.model of the embedded default
SHORT_KINDS = ("color", "category", "count")  # the curriculum's first phase


@dataclass
class TrainConfig:
    steps: int = 2000
    batch: int = 8
    questions: int = 6  # packed per scene per sequence
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    curriculum: float = 0.3  # share of steps with short answers only
    kinds: tuple[str, ...] = ("caption", "color", "category", "count", "ground")
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    mm_hidden: int = 64
    vision_hidden: int = 64
    fourier_freqs: int = 4  # 0 = the released plain MLP position embedding
    fourier_wavelength: float = 2.0  # metres per period of the lowest frequency
    click_encoding: str = "mlp"  # or "shared_position": clicks also take the scene's position path
    # LLaMA's; larger leaves more head dims free of token-order rotation
    rope_theta: float = 10000.0
    voxel_size: float = 0.2
    max_scene_tokens: int = 2560
    shuffle_tokens: bool = True  # random scene-token order: location only via 3D positions
    # weight of the click-binding loss (``binding_loss``: head 0 of layers 0 and 1); 0 = off
    bind_loss: float = 0.0
    bind_margin: float = 0.1  # metres around the clicked object's box that count as it
    # weight of the described-object loss (``query_loss``: head 1 of layer 1, for grounding
    # and counting answers); 0 = off
    query_loss: float = 0.0
    # weight of the describing-words loss (``read_loss``: head 1 of layer 0, the hop before
    # the described-object loss's); 0 = off
    read_loss: float = 0.0
    # train the CLIP-shaped tower too (its patch features are then recomputed every step); the
    # frozen random tower's features carry colour well but category poorly
    train_vision: bool = False
    # weight of the token-category loss (``token_loss``: a training-only linear head classifies
    # each object's scene tokens by category); 0 = off
    token_loss: float = 0.0
    # weight of the readout loss (``readout_loss``: training-only linear heads read the grounded
    # box centre and the count from layer 1's output); 0 = off
    readout_loss: float = 0.0
    # with probability ``focus_share`` a sequence's questions come from ``focus`` kinds only
    # (e.g. ground,count: more signal for the hard tasks); () = plain sampling
    focus: tuple[str, ...] = ()
    focus_share: float = 0.0
    # weight of the number loss (``number_loss``: box numbers against a Gaussian of width
    # ``number_sigma`` metres over the number tokens, so a near miss costs less); 0 = off
    number_loss: float = 0.0
    number_sigma: float = 0.1
    # counting questions drawn with weight freq(answer) ** -count_balance (``count_balance``:
    # rarer counts asked more often); 0 = plain draws
    count_balance: float = 0.0
    seed: int = 0


def build_model(cfg: TrainConfig, tok: SpTokenizer, data: DataConfig, device: str) -> ModelBundle:
    """The tiny model from the model package's factory, with our tokenizer and image geometry."""
    llm = tiny_config(
        max(tok.vocab_size, 1),
        hidden_size=cfg.hidden,
        intermediate_size=3 * cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        mm_hidden_size=cfg.mm_hidden,
        max_position_embeddings=2048,
        tokenizer_model_max_length=2048,
        position_encoding="fourier_mlp" if cfg.fourier_freqs else "mlp",
        position_fourier_freqs=cfg.fourier_freqs,
        position_fourier_wavelength=cfg.fourier_wavelength,
        click_encoding=cfg.click_encoding,
        rope_theta=cfg.rope_theta,
        num_frames=data.n_views,
    )
    vision = tiny_vision_config(
        hidden_size=cfg.vision_hidden,
        intermediate_size=2 * cfg.vision_hidden,
        image_size=data.resolution,
        patch_size=data.patch,
    )
    bundle = random_bundle(llm, vision, seed=cfg.seed, device=device, name=MODEL_NAME)
    if tok.vocab_size > llm["vocab_size"]:
        raise ValueError("tokenizer larger than the model's vocabulary")
    bundle.tokenizer = tok
    # The factory's N(0, 0.02) init leaves MLP(xyz) ~30x smaller than the CLIP features it is
    # added to, so a small model learns to ignore 3D positions (what the first experiment
    # saw); PyTorch's default fan-in init gives both 3D MLPs unit-scale outputs from step 0.
    for mlp in (bundle.lm.patch_pos_mlp, bundle.lm.click_encoder):
        torch.manual_seed(cfg.seed)
        for layer in mlp.position_embedding_head:
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
    return bundle


def load_initial(init: Path, data: DataConfig, device: str) -> ModelBundle:
    """A checkpoint to go on training from, in fp32, checked against the data's image geometry."""
    bundle = load_bundle(init, init / "vision_tower", dtype="fp32", device=device)
    vc = bundle.vision.config
    if (vc.image_size, vc.patch_size) != (data.resolution, data.patch):
        raise ValueError(
            f"{init}: vision tower takes {vc.image_size} px images in {vc.patch_size} px patches, "
            f"the data has {data.resolution} px and {data.patch} px"
        )
    bundle.random_weights = False
    return bundle


def patch_features(bundle: ModelBundle, images: np.ndarray) -> torch.Tensor:
    """CLIP patch features (V, G·G, C) of (V, S, S, 3) uint8 views, normalised exactly as the
    inference engine does (with gradients, for ``train_vision``)."""
    mean = torch.tensor(bundle.image_mean, device=bundle.device).view(1, 3, 1, 1)
    std = torch.tensor(bundle.image_std, device=bundle.device).view(1, 3, 1, 1)
    pix = torch.from_numpy(images).to(bundle.device).permute(0, 3, 1, 2).float() / 255.0
    return clip_patch_features(
        bundle.vision, (pix - mean) / std, bundle.lm.config.mm_vision_select_layer
    )


@torch.no_grad()
def scene_features(bundle: ModelBundle, sample: SceneSample) -> torch.Tensor:
    """Frozen CLIP patch features (V·G·G, C) of one scene."""
    feats = patch_features(bundle, sample.images)
    return feats.reshape(-1, feats.shape[-1])


def with_fresh_features(bundle: ModelBundle, scenes: list[PreparedScene]) -> list[PreparedScene]:
    """The scenes with patch features from the tower as it is now, in one tower call."""
    feats = patch_features(bundle, np.concatenate([s.sample.images for s in scenes]))
    feats = feats.reshape(len(scenes), -1, feats.shape[-1])
    return [replace(s, feats=f) for s, f in zip(scenes, feats, strict=True)]


def encode_turns(tok: SpTokenizer, tasks: list[Task]) -> tuple[list[int], list[int], list[int]]:
    """Packed conversation → (prefix ids before <image>, ids after it, labels for those ids).

    Turn 1 is exactly the inference prompt; later turns follow llava_v1 ("USER: q ASSISTANT:
    a</s>"). Only answer tokens and their </s> are supervised (label −100 elsewhere).
    """
    pre, post = split_at_image(tokenize_prompt(build_prompt(tasks[0].question), tok))
    labels = [-100] * len(post)
    for i, task in enumerate(tasks):
        if i:
            turn = tokenize_prompt(f"USER: {task.question} ASSISTANT:", tok)[1:]  # no BOS
            post += turn
            labels += [-100] * len(turn)
        answer = tok.sp.encode(task.answer) + [tok.eos_id]
        post += answer
        labels += answer
    return pre, post, labels


def sequence_embeds(
    bundle: ModelBundle,
    feats: torch.Tensor,
    sample: SceneSample,
    tasks: list[Task],
    cfg: TrainConfig,
    order_seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (T, H) of [prefix, scene tokens, turns with clicks spliced] and labels (T,).

    With ``order_seed`` the scene tokens come in a seeded random order: voxel tokens are
    sorted x-major, so their order alone would tell the LLM (via RoPE) where each one is,
    and a small model then never learns to read the 3D position embedding.
    """
    lm, dev = bundle.lm, bundle.device
    pre, post, labels = encode_turns(bundle.tokenizer, tasks)
    xyz = torch.from_numpy(sample.patch_xyz.reshape(-1, 3)).to(dev)
    valid = torch.from_numpy(sample.patch_valid.reshape(-1)).to(dev)
    xyz = torch.where(valid[:, None], xyz, torch.zeros_like(xyz))
    scene, _ = lm.scene_tokens(
        feats,
        xyz,
        valid,
        voxel_size=cfg.voxel_size,
        max_tokens=cfg.max_scene_tokens,
        seed=cfg.seed,
    )
    if order_seed is not None:
        gen = torch.Generator().manual_seed(order_seed)
        scene = scene[torch.randperm(len(scene), generator=gen).to(dev)]
    clicks = torch.from_numpy(np.concatenate([t.clicks for t in tasks])).to(dev)
    click_emb = lm.click_tokens(clicks) if len(clicks) else None
    ids = torch.tensor(post, device=dev)
    is_click = ids == BOX_TOKEN_INDEX
    text = lm.get_input_embeddings()(ids.clamp(min=0))
    if click_emb is not None:
        if int(is_click.sum()) != len(click_emb):
            raise ValueError("<boxes> sentinels and click points differ in number")
        text = text.masked_scatter(is_click[:, None], click_emb)
    prefix = lm.get_input_embeddings()(torch.tensor(pre, device=dev))
    embeds = torch.cat([prefix, scene, text])
    ignore = torch.full((len(pre) + len(scene),), -100, device=dev)
    return embeds, torch.cat([ignore, torch.tensor(labels, device=dev)])


def pad_batch(
    bundle: ModelBundle, seqs: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences from ``sequence_embeds`` → right-padded (B, T, H) embeddings, (B, T) labels."""
    dev, h = bundle.device, seqs[0][0].shape[1]
    t_max = max(len(e) for e, _ in seqs)
    embeds = torch.zeros(len(seqs), t_max, h, device=dev, dtype=seqs[0][0].dtype)
    labels = torch.full((len(seqs), t_max), -100, device=dev)
    for i, (e, lab) in enumerate(seqs):
        embeds[i, : len(e)], labels[i, : len(e)] = e, lab
    return embeds, labels


def answer_loss(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean answer-token cross-entropy of ``logits`` (B, T − 1, V) against ``target`` (B, T − 1)
    (−100 = unsupervised), and ``stats`` with it (``loss``) and the token accuracy.

    Only the supervised positions (a few answer tokens among hundreds of scene and question
    tokens) go through the softmax and the argmax: the same loss and gradients as
    ``cross_entropy(..., ignore_index=-100)`` over all of them, for a fraction of the work.
    """
    sup = target != -100
    picked, wanted = logits[sup], target[sup]  # (N, V), (N,)
    loss = torch.nn.functional.cross_entropy(picked, wanted)
    with torch.no_grad():
        right = picked.argmax(-1) == wanted
        token_acc = float(right.sum() / max(len(wanted), 1))
    return loss, {"loss": float(loss.detach()), "token_acc": token_acc}


def batch_loss(
    bundle: ModelBundle, embeds: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Right-padded batch → mean answer-token CE and token accuracy (``answer_loss``).

    No attention mask: padding only follows a sequence's tokens, and causal attention never
    looks forward, so the real tokens see exactly what they would alone (and the mask-free
    attention path is the faster one).
    """
    return answer_loss(bundle.lm(inputs_embeds=embeds).logits[:, :-1], labels[:, 1:])


@torch.no_grad()
def answer_accuracy(
    bundle: ModelBundle,
    feats: list[torch.Tensor],
    samples: list[SceneSample],
    cfg: TrainConfig,
    kinds: tuple[str, ...],
) -> dict[str, float]:
    """Teacher-forced exact-answer accuracy per kind, one question per sequence (fast proxy)."""
    bundle.lm.eval()
    right: dict[str, list[bool]] = {k: [] for k in kinds}
    for f, s in zip(feats, samples, strict=True):
        for task in s.tasks:
            if task.kind not in kinds:
                continue
            e, lab = sequence_embeds(bundle, f, s, [task], cfg)
            logits = bundle.lm(inputs_embeds=e[None]).logits[0, :-1]
            target = lab[1:]
            sup = target != -100
            right[task.kind].append(bool((logits.argmax(-1)[sup] == target[sup]).all()))
    bundle.lm.train()
    return {k: float(np.mean(v)) for k, v in right.items() if v}


def pick_tasks(sample: SceneSample, kinds: tuple[str, ...], n: int, rng: random.Random) -> list:
    pool = [t for t in sample.tasks if t.kind in kinds]
    rng.shuffle(pool)
    return pool[:n]


def draw_tasks(
    sample: SceneSample,
    kinds: tuple[str, ...],
    cfg: TrainConfig,
    rng: random.Random,
    counts: dict[str, float] | None = None,
) -> list[Task]:
    """One sequence's questions: from ``cfg.focus`` kinds with probability ``cfg.focus_share``,
    else from ``kinds`` (the same draws as ``pick_tasks`` when there is no focus); with
    ``counts`` (``count_weights``) its counting questions are redrawn by answer weight."""
    if cfg.focus and rng.random() < cfg.focus_share:
        kinds = cfg.focus
    tasks = pick_tasks(sample, kinds, cfg.questions, rng)
    return tasks if counts is None else rebalance_counts(tasks, sample, counts, rng)


def initial_model(
    cfg: TrainConfig,
    train_samples: list[SceneSample],
    data_cfg: DataConfig,
    device: str,
    init: Path | None,
) -> ModelBundle:
    """The checkpoint ``init`` to go on from, else a fresh model whose tokenizer is built from
    the training questions and answers."""
    if init is not None:
        return load_initial(init, data_cfg, device)
    texts = [t.question for s in train_samples for t in s.tasks]
    texts += [t.answer for s in train_samples for t in s.tasks]
    return build_model(cfg, build_tokenizer(texts), data_cfg, device)


def prepare_scenes(
    bundle: ModelBundle, cfg: TrainConfig, samples: list[SceneSample]
) -> list[PreparedScene]:
    """The training scenes with their tower features, voxelised once (``prepare_scene``)."""
    return [
        prepare_scene(
            s,
            scene_features(bundle, s),
            voxel_size=cfg.voxel_size,
            max_tokens=cfg.max_scene_tokens,
            seed=cfg.seed,
        )
        for s in samples
    ]


def optimiser(
    cfg: TrainConfig, bundle: ModelBundle, extras: list[ExtraLoss]
) -> tuple[list[torch.nn.Parameter], torch.optim.AdamW]:
    """AdamW (weight decay on matrices only) over all that trains: the model, then the plug-ins'
    training-only heads; also returns those parameters for gradient clipping."""
    # the token head before the readout head, as before the plug-ins: clip_grad_norm_ adds the
    # gradient norms up in parameter order
    heads = [m for x in sorted(extras, key=lambda x: x.name != "token_loss") for m in x.modules()]
    parts = (bundle.lm, bundle.vision, *heads)
    params = [p for m in parts for p in m.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay}]
    return params, torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def schedule(cfg: TrainConfig, step: int, elapsed_s: float, minutes: float) -> tuple[float, float]:
    """(share of the run done, learning rate) at ``step``: linear warmup, then cosine decay to
    10 %. Under a wall-clock budget the schedule follows whichever runs out first, steps or
    minutes, so a cut-short run still decays (such a run is then only as reproducible as its
    step count, which meta.json records)."""
    frac = step / max(cfg.steps - 1, 1)
    if minutes > 0:
        frac = min(1.0, max(frac, elapsed_s / (60 * minutes)))
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.55 + 0.45 * math.cos(math.pi * frac))
    return frac, lr


def sample_batch(
    bundle: ModelBundle,
    encoder: TurnEncoder,
    scenes: list[PreparedScene],
    cfg: TrainConfig,
    frac: float,
    rng: random.Random,
    counts: dict[str, float] | None,
) -> Batch:
    """One step's batch: ``cfg.batch`` random scenes, each asked questions of the kinds the
    curriculum allows at ``frac`` of the run (``draw_tasks``); a scene left without a question
    is dropped. With ``train_vision`` the scenes' features come from the tower as it is now."""
    kinds = cfg.kinds if frac >= cfg.curriculum else tuple(set(SHORT_KINDS) & set(cfg.kinds))
    kinds = kinds or cfg.kinds
    picked, task_lists, orders = [], [], []
    for _ in range(cfg.batch):
        scene = scenes[rng.randrange(len(scenes))]
        tasks = draw_tasks(scene.sample, kinds, cfg, rng, counts)
        order = rng.randrange(2**31) if cfg.shuffle_tokens else None
        if tasks:
            picked.append(scene)
            task_lists.append(tasks)
            orders.append(order)
    if cfg.train_vision:
        picked = with_fresh_features(bundle, picked)
    embeds, labels = build_batch(bundle, encoder, picked, task_lists, orders)
    return Batch(picked, task_lists, orders, embeds, labels)


def validate(
    bundle: ModelBundle,
    cfg: TrainConfig,
    val_samples: list[SceneSample],
    val_feats: list[torch.Tensor],
) -> dict[str, float]:
    """``val_<kind>`` accuracies (``answer_accuracy``); with ``train_vision`` the held-out
    scenes' features are recomputed by the tower as it is now."""
    if cfg.train_vision:
        val_feats = [scene_features(bundle, s) for s in val_samples]
    acc = answer_accuracy(bundle, val_feats, val_samples, cfg, cfg.kinds)
    return {f"val_{k}": v for k, v in acc.items()}


class CsvLog:
    """The log rows, as they come, in ``training/log.csv`` under ``out_dir`` (none without)."""

    def __init__(self, out_dir: Path | None, kinds: tuple[str, ...]) -> None:
        self.file, self.writer = None, None
        self.fields = ["step", "time_s", "lr", "loss", "token_acc"]
        self.fields += ["bind_loss", "query_loss", "read_loss", "token_loss", "readout_loss"]
        self.fields += ["number_loss"]
        self.fields += [f"val_{k}" for k in kinds]
        if out_dir is not None:
            (out_dir / "training").mkdir(parents=True, exist_ok=True)
            self.file = (out_dir / "training" / "log.csv").open("w", newline="")

    def write(self, row: dict) -> None:
        if self.file is None:
            return
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields, extrasaction="ignore")
            self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def save_run(
    bundle: ModelBundle,
    out_dir: Path,
    cfg: TrainConfig,
    data_cfg: DataConfig,
    init: Path | None,
    train_samples: list[SceneSample],
    log: list[dict],
    start: float,
    device: str,
) -> None:
    """The checkpoint, and ``training/meta.json`` with the run's settings and last log row."""
    write_checkpoint(bundle, out_dir, random_weights=False)
    meta = {
        "train": asdict(cfg),
        "data": asdict(data_cfg),
        "init": str(init) if init is not None else None,
        "train_seeds": [s.seed for s in train_samples],
        "steps_done": len(log),
        "wall_s": round(time.perf_counter() - start, 1),
        "device": device,
        "final": log[-1] if log else {},
    }
    (out_dir / "training" / "meta.json").write_text(json.dumps(meta, indent=2))


def train(
    cfg: TrainConfig,
    train_samples: list[SceneSample],
    data_cfg: DataConfig,
    out_dir: Path | None,
    device: str = "cpu",
    minutes: float = 0.0,
    val_samples: list[SceneSample] | None = None,
    eval_every: int = 200,
    progress: bool = True,
    init: Path | None = None,
) -> tuple[ModelBundle, list[dict]]:
    """The training loop; returns the trained bundle and the log rows (also written as CSV).

    ``init``: a checkpoint directory (e.g. the shipped model) to go on training from; its
    architecture and tokenizer are kept, and ``cfg``'s model-size fields are then unused.
    Each step: a batch, the forward pass, the answer loss plus the weighted extra losses
    (``extra_losses``: the plug-ins ``cfg`` switches on), a clipped AdamW step, the log row.
    """
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    bundle = initial_model(cfg, train_samples, data_cfg, device, init)
    encoder = TurnEncoder(bundle.tokenizer)
    extras = extra_losses(cfg, bundle, encoder)
    if set(cfg.focus) - set(cfg.kinds):
        raise ValueError(f"--focus {cfg.focus} names kinds outside --kinds {cfg.kinds}")
    bundle.lm.train()
    bundle.vision.requires_grad_(cfg.train_vision)
    scenes = prepare_scenes(bundle, cfg, train_samples)
    val_feats = [scene_features(bundle, s) for s in val_samples or []]
    params, opt = optimiser(cfg, bundle, extras)
    counts = count_weights(train_samples, cfg.count_balance) if cfg.count_balance > 0 else None
    rng, log, start = random.Random(cfg.seed), [], time.perf_counter()
    csv_log = CsvLog(out_dir, cfg.kinds)
    bar = tqdm(range(cfg.steps), disable=not progress, desc="train")
    for step in bar:
        frac, lr = schedule(cfg, step, time.perf_counter() - start, minutes)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = sample_batch(bundle, encoder, scenes, cfg, frac, rng, counts)
        with hooked(extras, bundle.lm):
            logits = bundle.lm(inputs_embeds=batch.embeds).logits[:, :-1]
        loss, stats = answer_loss(logits, batch.target)
        for extra in extras:
            value = extra.loss(batch, logits)
            if value is not None:
                loss = loss + extra.weight * value
                stats[extra.name] = float(value.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        row = {"step": step, "time_s": round(time.perf_counter() - start, 2), "lr": lr, **stats}
        out_of_time = minutes > 0 and time.perf_counter() - start > 60 * minutes
        if val_samples and (step % eval_every == 0 or step == cfg.steps - 1 or out_of_time):
            row.update(validate(bundle, cfg, val_samples, val_feats))
        log.append(row)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['token_acc']:.2f}")
        csv_log.write(row)
        if out_of_time:
            break
    csv_log.close()
    bundle.lm.eval()
    bundle.random_weights = False
    if out_dir is not None:
        save_run(bundle, out_dir, cfg, data_cfg, init, train_samples, log, start, device)
    return bundle, log


def load_or_generate(data: str, data_cfg: DataConfig, workers: int):
    """A .npz path, or a seed spec like 0-499 rendered now."""
    if data.endswith(".npz"):
        return load_npz(data)
    return data_cfg, generate(parse_seeds(data), data_cfg, workers)


def _flag(text: str) -> bool:
    if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
    return text.lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="train .npz (see dataset.py) or seeds A-B")
    p.add_argument("--val", default="", help="held-out .npz or seeds for the accuracy log")
    p.add_argument("--out", required=True, type=Path, help="checkpoint output directory")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock cap (0 = none)")
    p.add_argument("--workers", type=int, default=2, help="render processes for seed specs")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    d = DataConfig()
    p.add_argument("--views", type=int, default=d.n_views, help="views rendered per scene")
    p.add_argument("--resolution", type=int, default=d.resolution, help="image size (px)")
    p.add_argument(
        "--patch",
        type=int,
        default=d.patch,
        help="vision-tower patch (px); 16 at 112 px gives about a third of the scene tokens of 8",
    )
    p.add_argument(
        "--clicks",
        choices=CLICK_MODES,
        default=d.clicks,
        help="click points inside the object, or on its seen surface (as a click on an image gives)",
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="checkpoint directory to go on training from (e.g. llava3d_ros/assets/tiny_model)",
    )
    for f, default in asdict(TrainConfig()).items():
        kind = type(default)
        if kind is tuple:
            p.add_argument(f"--{f.replace('_', '-')}", default=",".join(default))
        elif kind is bool:
            p.add_argument(f"--{f.replace('_', '-')}", type=_flag, default=default)
        else:
            p.add_argument(f"--{f.replace('_', '-')}", type=kind, default=default)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    fields = asdict(TrainConfig())
    cfg = TrainConfig(
        **{
            f: tuple(k for k in getattr(a, f).split(",") if k)
            if isinstance(d, tuple)
            else getattr(a, f)
            for f, d in fields.items()
        }
    )
    if a.resolution % a.patch:
        p.error(f"--resolution {a.resolution} is not a multiple of --patch {a.patch}")
    data = DataConfig(n_views=a.views, resolution=a.resolution, patch=a.patch, clicks=a.clicks)
    data_cfg, train_samples = load_or_generate(a.data, data, a.workers)
    val = load_or_generate(a.val, data_cfg, a.workers)[1] if a.val else None
    train(cfg, train_samples, data_cfg, a.out, a.device, a.minutes, val, a.eval_every, init=a.init)
    print(f"checkpoint written to {a.out}")


if __name__ == "__main__":
    main()
