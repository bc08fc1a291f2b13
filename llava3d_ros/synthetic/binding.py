"""The click-binding loss: a training-only aid that supervises two attention hops.

Answering about a clicked object needs a click token to find the scene tokens at its 3D
place (query/key projections that match position codes) and the answer to find the click.
Without help both appear late and suddenly: the binding probes sit near chance for
thousands of steps first. ``binding_loss`` supervises head 0 of layer 0 (click → the
clicked object's scene tokens) and head 0 of layer 1 (answer → click). The model, its
forward pass and the checkpoint format are unchanged.

``query_loss`` does the same for questions without a click: head 1 of layer 1 from the
positions that write a grounding answer to the described object's scene tokens, and from
the position that writes a count to the scene tokens of every object of that category.
Layer 1 can only look for what its query carries, so ``read_loss`` supervises the hop
before: head 1 of layer 0 from those same positions to the question's describing words.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from transformers.models.llama.modeling_llama import rotate_half

from llava3d_ros.model.loader import ModelBundle
from llava3d_ros.model.prompts import BOX_TOKEN_INDEX
from llava3d_ros.synthetic.batches import IGNORE, PreparedScene, TurnEncoder, scene_order
from llava3d_ros.synthetic.scenes import CATEGORIES
from llava3d_ros.synthetic.tasks import Task
from llava3d_ros.synthetic.vocab import WORD_START


def _token_positions(scene: PreparedScene, pre_len: int, order: int | None) -> np.ndarray:
    """Sequence position of each of the scene's voxels: the inverse of the shuffle."""
    at = np.empty(scene.num_voxels, dtype=np.int64)
    at[scene_order(scene.num_voxels, order).numpy()] = np.arange(scene.num_voxels)
    return pre_len + at


def _tokens_in(
    scene: PreparedScene, at: np.ndarray, boxes: np.ndarray, margin: float
) -> np.ndarray:
    """Sequence positions of the voxels inside any of ``boxes`` (k, 6) grown by ``margin``."""
    inside = np.zeros(scene.num_voxels, dtype=bool)
    for box in boxes:
        lo, hi = box[:3] - box[3:] / 2 - margin, box[:3] + box[3:] / 2 + margin
        inside |= np.all((scene.centers >= lo) & (scene.centers <= hi), axis=1)
    return at[np.flatnonzero(inside)]


def _answer_spans(labels: list[int]) -> list[np.ndarray]:
    """Per answer, the label indices it supervises (contiguous runs of non-IGNORE labels)."""
    supervised = np.asarray(labels) != IGNORE
    starts = np.flatnonzero(supervised & ~np.r_[False, supervised[:-1]])
    ends = np.flatnonzero(supervised & ~np.r_[supervised[1:], False]) + 1
    return [np.arange(a, b) for a, b in zip(starts, ends, strict=True)]


@dataclass
class BindingTarget:
    """A click token and the scene tokens of the object it clicks, as positions in a sequence."""

    sequence: int
    click: int
    object_tokens: np.ndarray  # (M,) int64
    answer: int  # the position whose logits predict the first token of the click's answer


def binding_targets(
    encoder: TurnEncoder,
    scenes: list[PreparedScene],
    tasks: list[list[Task]],
    orders: list[int | None],
    margin: float,
) -> list[BindingTarget]:
    """Where ``build_batch`` puts each click, which scene tokens lie in the clicked object's box
    grown by ``margin`` metres (clicks whose object has no such token are skipped), and
    which position predicts the click's answer."""
    out = []
    for b, (scene, ts, order) in enumerate(zip(scenes, tasks, orders, strict=True)):
        pre, post, labels = encoder.encode(ts)
        start = len(pre) + scene.num_voxels
        click_pos = start + np.flatnonzero(np.asarray(post) == BOX_TOKEN_INDEX)
        targets = [t.target for t in ts for _ in range(len(t.clicks))]
        spans = _answer_spans(labels)
        answers = [start + s[0] - 1 for s, t in zip(spans, ts, strict=True) for _ in t.clicks]
        at = _token_positions(scene, len(pre), order)
        for pos, target, answer in zip(click_pos, targets, answers, strict=True):
            tokens = _tokens_in(scene, at, scene.sample.boxes[target][None], margin)
            if len(tokens):
                out.append(BindingTarget(b, int(pos), tokens, int(answer)))
    return out


def _query_answers(
    encoder: TurnEncoder, tasks: list[Task]
) -> Iterator[tuple[Task, np.ndarray, np.ndarray, list[int]]]:
    """Per grounding or count question of one sequence: (task, indices into ``post`` of the
    positions that predict its supervised answer tokens, the question's own indices, post)."""
    _, post, labels = encoder.encode(tasks)
    asked = 0
    for span, task in zip(_answer_spans(labels), tasks, strict=True):
        question, asked = np.arange(asked, span[0]), span[-1] + 1
        if task.kind == "ground":
            yield task, span - 1, question, post
        elif task.kind == "count":
            yield task, span[:1] - 1, question, post


def _counted(task: Task) -> str:
    return next(c for c in CATEGORIES if f" {c}s " in task.question)


def query_targets(
    encoder: TurnEncoder,
    scenes: list[PreparedScene],
    tasks: list[list[Task]],
    orders: list[int | None],
    margin: float,
) -> list[tuple[int, int, np.ndarray]]:
    """(sequence, position, scene-token positions) rows for ``query_loss``: every position that
    predicts a token of a grounding answer → the described object's tokens; the position that
    predicts a count → the tokens of all objects of the counted category (none for 0)."""
    rows = []
    for b, (scene, ts, order) in enumerate(zip(scenes, tasks, orders, strict=True)):
        pre_len = len(encoder.encode(ts)[0])
        start = pre_len + scene.num_voxels
        at = _token_positions(scene, pre_len, order)
        boxes = scene.sample.boxes
        for task, positions, _, _ in _query_answers(encoder, ts):
            if task.kind == "ground":
                wanted = boxes[task.target][None]
            else:
                category = _counted(task)
                same = [i for i, n in enumerate(scene.sample.names) if n.endswith(f" {category}")]
                wanted = boxes[same]
            tokens = _tokens_in(scene, at, wanted, margin)
            if len(tokens):
                rows += [(b, int(start + p), tokens) for p in positions]
    return rows


def read_targets(
    encoder: TurnEncoder, scenes: list[PreparedScene], tasks: list[list[Task]]
) -> list[tuple[int, int, np.ndarray]]:
    """Rows for ``read_loss``: the positions ``query_targets`` uses (for every grounding or
    count question) → the question's describing words: the quoted phrase's size, colour and
    category, or the counted category ("chairs")."""
    sp = encoder.tok.sp
    rows = []
    for b, (scene, ts) in enumerate(zip(scenes, tasks, strict=True)):
        start = len(encoder.encode(ts)[0]) + scene.num_voxels
        for task, positions, question, post in _query_answers(encoder, ts):
            if task.kind == "ground":
                words = [w for w in task.question.split('"')[1].split() if w != "the"]
            else:
                words = [_counted(task) + "s"]
            pieces = {sp.piece_to_id(WORD_START + w) for w in words}
            describing = question[np.isin(np.asarray(post)[question], list(pieces))]
            if len(describing):
                rows += [(b, int(start + p), start + describing) for p in positions]
    return rows


def head_attention_loss(
    bundle: ModelBundle,
    hidden: torch.Tensor,
    layer: int,
    rows: list[tuple[int, int, np.ndarray]],
    head: int = 0,
) -> torch.Tensor:
    """Mean −log of the attention ``head`` of ``layer`` pays from (sequence, position) to the
    given key positions; ``hidden`` (B, T, H) is that layer's input."""
    dec = bundle.lm.model.layers[layer]
    attn, dev = dec.self_attn, hidden.device
    d = attn.head_dim
    b_idx = torch.tensor([r[0] for r in rows], device=dev)
    q_pos = torch.tensor([r[1] for r in rows], device=dev)
    h = dec.input_layernorm(hidden[b_idx])  # (K, T, H)
    kv_head = head // (attn.config.num_attention_heads // attn.config.num_key_value_heads)
    q = attn.q_proj(h[torch.arange(len(rows), device=dev), q_pos])[:, head * d : (head + 1) * d]
    k = attn.k_proj(h)[..., kv_head * d : (kv_head + 1) * d]
    positions = torch.arange(h.shape[1], device=dev)[None]
    cos, sin = bundle.lm.model.rotary_emb(h, positions)
    k = k * cos + rotate_half(k) * sin
    q = q * cos[0, q_pos] + rotate_half(q) * sin[0, q_pos]
    logits = torch.einsum("kd,ktd->kt", q, k) * d**-0.5
    logp = logits.masked_fill(positions > q_pos[:, None], float("-inf")).log_softmax(-1)
    wanted = torch.zeros_like(logp, dtype=torch.bool)
    for i, (_, _, keys) in enumerate(rows):
        wanted[i, torch.as_tensor(keys, device=dev)] = True
    return -torch.logsumexp(logp.masked_fill(~wanted, float("-inf")), -1).mean()


def binding_loss(
    bundle: ModelBundle,
    embeds: torch.Tensor,
    layer1_input: torch.Tensor,
    targets: list[BindingTarget],
) -> torch.Tensor:
    """Mean of both hops' −log attention mass: head 0 of layer 0 from each click token to the
    clicked object's scene tokens, head 0 of layer 1 from the answer position to the click."""
    hop1 = [(t.sequence, t.click, t.object_tokens) for t in targets]
    hop2 = [(t.sequence, t.answer, np.array([t.click])) for t in targets]
    return 0.5 * (
        head_attention_loss(bundle, embeds, 0, hop1)
        + head_attention_loss(bundle, layer1_input, 1, hop2)
    )


def query_loss(
    bundle: ModelBundle, layer1_input: torch.Tensor, rows: list[tuple[int, int, np.ndarray]]
) -> torch.Tensor:
    """−log attention mass of head 1 of layer 1 from ``query_targets``' rows to their tokens."""
    return head_attention_loss(bundle, layer1_input, 1, rows, head=1)


def read_loss(
    bundle: ModelBundle, embeds: torch.Tensor, rows: list[tuple[int, int, np.ndarray]]
) -> torch.Tensor:
    """−log attention mass of head 1 of layer 0 from ``read_targets``' rows to the words."""
    return head_attention_loss(bundle, embeds, 0, rows, head=1)


@contextmanager
def capture_input(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the hidden states ``module`` is called with (a decoder layer's input)."""
    seen: list[torch.Tensor] = []

    def hook(_mod, args, kwargs):
        seen.append(args[0] if args else kwargs["hidden_states"])

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def capture_output(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the hidden states ``module`` returns (a decoder layer's output)."""
    seen: list[torch.Tensor] = []

    def hook(_mod, _args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()
