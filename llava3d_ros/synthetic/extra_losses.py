"""The training loop's extra losses as plug-ins: one small interface, built from the CLI options.

Each extra loss (all training only; the model, its forward pass and the checkpoint format are
unchanged) is an ``ExtraLoss``: ``attach(lm)`` / ``detach()`` put on and take off the forward
hooks it reads hidden states with (around each training forward pass, see ``hooked``),
``loss(batch, logits)`` gives its unweighted value for the step (or ``None`` when the batch
holds nothing it supervises), ``name`` is its log column and ``modules()`` are its
training-only heads, which the optimiser trains with the model. ``extra_losses`` builds the
list from a ``TrainConfig``: a loss whose weight is 0 is simply not in it.

The losses themselves live in their own modules: ``number_loss``, ``binding`` (click binding,
described object, describing words), ``readout`` and ``token_loss``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from llava3d_ros.model.loader import ModelBundle
from llava3d_ros.synthetic.batches import PreparedScene, TurnEncoder
from llava3d_ros.synthetic.binding import (
    binding_loss,
    binding_targets,
    capture_input,
    capture_output,
    query_loss,
    query_targets,
    read_loss,
    read_targets,
)
from llava3d_ros.synthetic.number_loss import number_loss, number_table
from llava3d_ros.synthetic.readout import readout_head, readout_loss, readout_targets
from llava3d_ros.synthetic.tasks import Task
from llava3d_ros.synthetic.token_loss import category_head, token_loss, token_targets

if TYPE_CHECKING:
    from llava3d_ros.synthetic.train import TrainConfig


@dataclass
class Batch:
    """One training step's sequences: the scenes, their questions and token orders, and the
    right-padded (B, T, H) embeddings the LLM is fed with their (B, T) labels."""

    scenes: list[PreparedScene]
    tasks: list[list[Task]]
    orders: list[int | None]
    embeds: torch.Tensor
    labels: torch.Tensor

    @property
    def target(self) -> torch.Tensor:
        """(B, T − 1): what the logits at each position predict (−100 = unsupervised)."""
        return self.labels[:, 1:]


class ExtraLoss(ABC):
    """A training-only loss the loop adds, times ``weight``, to the answer cross-entropy."""

    name: str  # the log column, e.g. "bind_loss"

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def attach(self, lm: torch.nn.Module) -> None:
        """Put on the forward hooks ``loss`` reads (none unless a plug-in needs them)."""
        return None

    def detach(self) -> None:
        """Take off what ``attach`` put on."""
        return None

    def modules(self) -> tuple[torch.nn.Module, ...]:
        """Training-only parts (not saved) that the optimiser trains with the model."""
        return ()

    @abstractmethod
    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        """The unweighted loss of the step (``logits`` (B, T − 1, V) predict ``batch.target``),
        or ``None`` when the batch holds nothing this loss supervises."""


@contextmanager
def hooked(extras: list[ExtraLoss], lm: torch.nn.Module) -> Iterator[None]:
    """Every plug-in attached to ``lm`` while inside the block."""
    with ExitStack() as stack:
        for extra in extras:
            extra.attach(lm)
            stack.callback(extra.detach)
        yield


class _Layer1Hook(ExtraLoss):
    """A plug-in that reads layer 1's input (or, with ``output``, its output) during the pass."""

    output = False

    def attach(self, lm: torch.nn.Module) -> None:
        capture = capture_output if self.output else capture_input
        self._hooks = ExitStack()
        self._seen = self._hooks.enter_context(capture(lm.model.layers[1]))

    def detach(self) -> None:
        self._hooks.close()

    @property
    def layer1(self) -> torch.Tensor:
        """The hidden states (B, T, H) captured in the last forward pass."""
        return self._seen[0]


class NumberLoss(ExtraLoss):
    """``number_loss``: box numbers against a Gaussian of width ``sigma`` metres."""

    name = "number_loss"

    def __init__(self, weight: float, bundle: ModelBundle, sigma: float) -> None:
        super().__init__(weight)
        self.table, self.sigma = number_table(bundle.tokenizer, bundle.device), sigma

    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        return number_loss(logits, batch.target, self.table, self.sigma)


class BindLoss(_Layer1Hook):
    """``binding_loss``: head 0 of layer 0 (click → object) and of layer 1 (answer → click)."""

    name = "bind_loss"

    def __init__(self, weight: float, bundle: ModelBundle, encoder: TurnEncoder, margin: float):
        super().__init__(weight)
        self.bundle, self.encoder, self.margin = bundle, encoder, margin

    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        targets = binding_targets(
            self.encoder, batch.scenes, batch.tasks, batch.orders, self.margin
        )
        return binding_loss(self.bundle, batch.embeds, self.layer1, targets) if targets else None


class QueryLoss(_Layer1Hook):
    """``query_loss``: head 1 of layer 1 from grounding and count answers to the described
    objects."""

    name = "query_loss"

    def __init__(self, weight: float, bundle: ModelBundle, encoder: TurnEncoder, margin: float):
        super().__init__(weight)
        self.bundle, self.encoder, self.margin = bundle, encoder, margin

    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        rows = query_targets(self.encoder, batch.scenes, batch.tasks, batch.orders, self.margin)
        return query_loss(self.bundle, self.layer1, rows) if rows else None


class ReadLoss(ExtraLoss):
    """``read_loss``: head 1 of layer 0 from those answers to the question's describing words."""

    name = "read_loss"

    def __init__(self, weight: float, bundle: ModelBundle, encoder: TurnEncoder) -> None:
        super().__init__(weight)
        self.bundle, self.encoder = bundle, encoder

    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        words = read_targets(self.encoder, batch.scenes, batch.tasks)
        return read_loss(self.bundle, batch.embeds, words) if words else None


class ReadoutLoss(_Layer1Hook):
    """``readout_loss``: training-only heads read box centre and count from layer 1's output."""

    name = "readout_loss"
    output = True

    def __init__(self, weight: float, bundle: ModelBundle, encoder: TurnEncoder, seed: int):
        super().__init__(weight)
        self.encoder = encoder
        self.head = readout_head(bundle.lm.config.hidden_size, seed).to(bundle.device)

    def modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.head,)

    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        centres, counts = readout_targets(self.encoder, batch.scenes, batch.tasks)
        if not (centres or counts):
            return None
        return readout_loss(self.head, self.layer1, centres, counts)


class TokenLoss(ExtraLoss):
    """``token_loss``: a training-only linear head classifies object tokens by category."""

    name = "token_loss"

    def __init__(self, weight: float, bundle: ModelBundle, encoder: TurnEncoder, seed: int):
        super().__init__(weight)
        self.encoder = encoder
        self.head = category_head(bundle.lm.config.hidden_size, seed).to(bundle.device)

    def modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.head,)

    def loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor | None:
        tokens = token_targets(self.encoder, batch.scenes, batch.tasks, batch.orders)
        return token_loss(self.head, batch.embeds, tokens) if len(tokens[0]) else None


def extra_losses(cfg: TrainConfig, bundle: ModelBundle, encoder: TurnEncoder) -> list[ExtraLoss]:
    """The plug-ins ``cfg`` switches on (weight > 0), in the order the loop adds them up."""
    layer1 = cfg.bind_loss > 0 or cfg.query_loss > 0 or cfg.readout_loss > 0
    if layer1 and len(bundle.lm.model.layers) < 2:
        raise ValueError("the binding and readout losses supervise layer 1: needs >= 2 layers")
    if (cfg.query_loss > 0 or cfg.read_loss > 0) and bundle.lm.config.num_attention_heads < 2:
        raise ValueError("the described-object losses supervise head 1: needs >= 2 heads")
    # the two heads are made as before the plug-ins: the token head first (each reseeds torch)
    token = TokenLoss(cfg.token_loss, bundle, encoder, cfg.seed) if cfg.token_loss > 0 else None
    readout = (
        ReadoutLoss(cfg.readout_loss, bundle, encoder, cfg.seed) if cfg.readout_loss > 0 else None
    )
    extras = [
        NumberLoss(cfg.number_loss, bundle, cfg.number_sigma) if cfg.number_loss > 0 else None,
        BindLoss(cfg.bind_loss, bundle, encoder, cfg.bind_margin) if cfg.bind_loss > 0 else None,
        QueryLoss(cfg.query_loss, bundle, encoder, cfg.bind_margin) if cfg.query_loss > 0 else None,
        ReadLoss(cfg.read_loss, bundle, encoder) if cfg.read_loss > 0 else None,
        readout,
        token,
    ]
    return [x for x in extras if x is not None]
