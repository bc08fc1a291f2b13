"""Training batches in one pass per step: geometry and tokens cached, one pooling, one gather.

The per-sequence path (``train.sequence_embeds``) voxelises each scene again (its patch
positions never change), tokenises every question again, and runs one position-MLP,
pooling, projector and embedding call per sequence before copying each into a padded
batch: many small operations, each a kernel launch on a GPU. Here a scene's voxel
assignment is computed once (``prepare_scene``), each question and answer is tokenised once
(``TurnEncoder``), and a step runs the position MLP, the voxel means and the projector once
over all scenes of the batch, embeds all text in one call, and assembles the padded batch
with a single gather. The result equals the per-sequence path sequence by sequence
(``test/synthetic/test_batches.py``). ``bench/bench_train.py`` times both in one run: on two
CPU cores they are equally fast (the model's matrix products dominate there); on a GPU
it is still to be measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llava3d_ros.geometry.voxels import VoxelAssignment, pool_features, voxelize
from llava3d_ros.model.loader import ModelBundle
from llava3d_ros.model.prompts import (
    BOX_TOKEN_INDEX,
    build_prompt,
    split_at_image,
    tokenize_prompt,
)
from llava3d_ros.model.tokenizer import SpTokenizer
from llava3d_ros.synthetic.dataset import SceneSample
from llava3d_ros.synthetic.tasks import Task

IGNORE = -100


@dataclass
class PreparedScene:
    """A training scene with everything that does not change between steps."""

    sample: SceneSample
    feats: torch.Tensor  # (N, C) frozen CLIP patch features
    xyz: torch.Tensor  # (N, 3) patch positions, 0 where invalid
    patch_to_voxel: torch.Tensor  # (N,) voxel index, −1 = left out
    num_voxels: int
    centers: np.ndarray  # (num_voxels, 3) mean xyz of each voxel's patches


def prepare_scene(
    sample: SceneSample,
    feats: torch.Tensor,
    *,
    voxel_size: float,
    max_tokens: int,
    seed: int,
) -> PreparedScene:
    """Voxelise a scene once (its patch positions are fixed; the token cap's draw is seeded)."""
    dev = feats.device
    xyz = torch.from_numpy(sample.patch_xyz.reshape(-1, 3)).to(dev)
    valid = torch.from_numpy(sample.patch_valid.reshape(-1)).to(dev)
    xyz = torch.where(valid[:, None], xyz, torch.zeros_like(xyz))
    a = voxelize(xyz, valid, voxel_size=voxel_size, max_tokens=max_tokens, seed=seed)
    centers = a.voxel_centers.cpu().numpy()
    return PreparedScene(sample, feats, xyz, a.patch_to_voxel, a.num_voxels, centers)


class TurnEncoder:
    """``train.encode_turns`` with every question and answer tokenised once."""

    def __init__(self, tok: SpTokenizer) -> None:
        self.tok = tok
        self._first: dict[str, tuple[list[int], list[int]]] = {}
        self._turn: dict[str, list[int]] = {}
        self._answer: dict[str, list[int]] = {}

    def encode(self, tasks: list[Task]) -> tuple[list[int], list[int], list[int]]:
        """(prefix ids before <image>, ids after it, labels for those ids)."""
        first = tasks[0].question
        if first not in self._first:
            self._first[first] = split_at_image(tokenize_prompt(build_prompt(first), self.tok))
        pre, post0 = self._first[first]
        post = list(post0)
        labels = [IGNORE] * len(post)
        for i, task in enumerate(tasks):
            if i:
                turn = self._turn.get(task.question)
                if turn is None:  # no BOS after the first turn
                    text = f"USER: {task.question} ASSISTANT:"
                    turn = self._turn[task.question] = tokenize_prompt(text, self.tok)[1:]
                post += turn
                labels += [IGNORE] * len(turn)
            answer = self._answer.get(task.answer)
            if answer is None:
                answer = self.tok.sp.encode(task.answer) + [self.tok.eos_id]
                self._answer[task.answer] = answer
            post += answer
            labels += answer
        return list(pre), post, labels


def scene_order(n: int, order_seed: int | None) -> torch.Tensor:
    """The scene tokens' order in a sequence (seeded shuffle, as ``train.sequence_embeds``)."""
    if order_seed is None:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(order_seed))


def build_batch(
    bundle: ModelBundle,
    encoder: TurnEncoder,
    scenes: list[PreparedScene],
    tasks: list[list[Task]],
    orders: list[int | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T, H) embeddings and (B, T) labels for one sequence per scene."""
    lm, dev = bundle.lm, bundle.device
    dtype = lm.get_input_embeddings().weight.dtype
    # scene tokens of the whole batch: one position MLP, one voxel mean, one projector
    feats = torch.cat([s.feats for s in scenes])
    xyz = torch.cat([s.xyz for s in scenes])
    offsets = np.cumsum([0] + [s.num_voxels for s in scenes])
    idx = torch.cat(
        [
            torch.where(s.patch_to_voxel >= 0, s.patch_to_voxel + int(off), -1)
            for s, off in zip(scenes, offsets, strict=False)
        ]
    )
    total = int(offsets[-1])
    empty = torch.empty(0, device=dev)
    pooled = pool_features(
        feats + lm.patch_pos_mlp(xyz.to(feats.dtype)), VoxelAssignment(idx, empty, empty, total)
    )
    scene_tokens = lm.model.mm_projector(pooled)
    # text of the whole batch in one embedding call, clicks in one encoder call
    encoded = [encoder.encode(t) for t in tasks]
    ids = [i for pre, post, _ in encoded for i in (*pre, *post)]
    ids_t = torch.tensor(ids, device=dev)
    text = lm.get_input_embeddings()(ids_t.clamp(min=0))
    click_list = [t.clicks for ts in tasks for t in ts if len(t.clicks)]
    clicks = (
        lm.click_tokens(torch.from_numpy(np.concatenate(click_list)).to(dev))
        if click_list
        else torch.empty(0, text.shape[1], device=dev, dtype=dtype)
    )
    # one table (row 0 = padding) and one gather
    table = torch.cat([text.new_zeros(1, text.shape[1]), text, scene_tokens.to(text.dtype), clicks])
    scene_base, click_base = 1 + len(ids), 1 + len(ids) + total
    rows, label_rows = [], []
    tok_at, click_at = 1, click_base
    for (pre, post, labels), scene, off, order in zip(
        encoded, scenes, offsets, orders, strict=False
    ):
        post_arr = np.asarray(post)
        is_click = post_arr == BOX_TOKEN_INDEX
        n_clicks = int(is_click.sum())
        post_rows = np.arange(tok_at + len(pre), tok_at + len(pre) + len(post))
        post_rows[is_click] = np.arange(click_at, click_at + n_clicks)
        rows.append(
            np.concatenate(
                [
                    np.arange(tok_at, tok_at + len(pre)),
                    scene_base + int(off) + scene_order(scene.num_voxels, order).numpy(),
                    post_rows,
                ]
            )
        )
        label_rows.append(np.asarray([IGNORE] * (len(pre) + scene.num_voxels) + labels))
        tok_at += len(pre) + len(post)
        click_at += n_clicks
    if click_at - click_base != len(clicks):
        raise ValueError("<boxes> sentinels and click points differ in number")
    t_max = max(len(r) for r in rows)
    index = np.zeros((len(rows), t_max), dtype=np.int64)
    label = np.full((len(rows), t_max), IGNORE, dtype=np.int64)
    for i, (r, lab) in enumerate(zip(rows, label_rows, strict=True)):
        index[i, : len(r)], label[i, : len(lab)] = r, lab
    embeds = table[torch.from_numpy(index).to(dev)]
    return embeds, torch.from_numpy(label).to(dev)
