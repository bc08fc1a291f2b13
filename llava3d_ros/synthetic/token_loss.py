"""The token-category loss: a training-only aid that puts each object's category into its tokens.

A description ("the chair") or a count ("how many chairs") can only be matched by attention
against what the scene tokens carry. Linear probes (``feature_probe``) find colour in 95 % of a
frozen random tower's voxel tokens but category at chance, and training the tower through the
LLM's loss alone moves that little. ``token_loss`` supervises it directly: a linear head (built
for training and not saved) classifies every scene token that lies in exactly one object's box
by that object's category, from the very embeddings the LLM is fed, so the gradient reaches the
projector, the 3D position MLP and, with ``train_vision``, the tower.
"""

from __future__ import annotations

import numpy as np
import torch

from llava3d_ros.synthetic.batches import PreparedScene, TurnEncoder
from llava3d_ros.synthetic.binding import _token_positions
from llava3d_ros.synthetic.feature_probe import voxel_objects
from llava3d_ros.synthetic.scenes import CATEGORIES
from llava3d_ros.synthetic.tasks import Task


def token_targets(
    encoder: TurnEncoder,
    scenes: list[PreparedScene],
    tasks: list[list[Task]],
    orders: list[int | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sequence, position, category index) of every scene token inside exactly one object."""
    seqs, positions, labels = [], [], []
    for b, (scene, ts, order) in enumerate(zip(scenes, tasks, orders, strict=True)):
        objects = voxel_objects(scene)
        keep = np.flatnonzero(objects >= 0)
        at = _token_positions(scene, len(encoder.encode(ts)[0]), order)
        categories = [CATEGORIES.index(n.split()[-1]) for n in scene.sample.names]
        seqs.append(np.full(len(keep), b))
        positions.append(at[keep])
        labels.append(np.asarray(categories, dtype=np.int64)[objects[keep]])
    return np.concatenate(seqs), np.concatenate(positions), np.concatenate(labels)


def category_head(hidden: int, seed: int) -> torch.nn.Linear:
    """The training-only linear classifier ``token_loss`` reads scene tokens with."""
    torch.manual_seed(seed)
    return torch.nn.Linear(hidden, len(CATEGORIES))


def token_loss(
    head: torch.nn.Linear,
    embeds: torch.Tensor,
    targets: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> torch.Tensor:
    """Mean cross-entropy of ``head`` on the targeted scene tokens of ``embeds`` (B, T, H)."""
    seqs, positions, labels = (torch.from_numpy(a).to(embeds.device) for a in targets)
    logits = head(embeds[seqs, positions].to(head.weight.dtype))
    return torch.nn.functional.cross_entropy(logits, labels)
