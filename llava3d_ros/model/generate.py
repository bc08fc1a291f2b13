"""Token-by-token decoding over a KV cache: greedy or sampled, streamed, cancellable, seedable."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, LlamaForCausalLM

from llava3d_ros.answer import QueryError, ResultCode
from llava3d_ros.model.box_grammar import BoxConstraint


@dataclass(frozen=True)
class SamplingConfig:
    """``temperature <= 0`` means greedy; ``seed`` makes sampling reproducible."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise QueryError(
                ResultCode.BAD_REQUEST, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise QueryError(ResultCode.BAD_REQUEST, f"top_p must be in (0, 1], got {self.top_p}")


def pick_token(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator | None) -> int:
    """Next token from (vocab,) logits: argmax, or nucleus sampling at the given temperature."""
    if cfg.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # keep the smallest set whose mass reaches top_p (the top token always stays)
        drop = (torch.cumsum(sorted_p, dim=-1) - sorted_p) >= cfg.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


def token_prob(logits: torch.Tensor, token: int) -> float:
    """The model's own probability of ``token``: softmax of the raw (vocab,) logits at
    temperature 1, before temperature, top-p and box-grammar masking.

    Unmasked on purpose: greedy decoding has no distribution of its own (temperature 0), and a
    token the grammar forced in would, renormalised over the few allowed tokens, look far
    surer than the model was. This way the same text gets the same probabilities whatever the
    sampling settings, and a box the grammar had to repair scores lower.
    """
    x = logits.float()
    return min(1.0, math.exp(float(x[token] - torch.logsumexp(x, dim=-1))))


@torch.inference_mode()
def forward_embeds(lm: LlamaForCausalLM, embeds: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
    """Append (T, hidden) embeddings to ``cache``; returns the last position's logits (vocab,)."""
    out = lm(inputs_embeds=embeds[None], cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[0, -1]


@torch.inference_mode()
def decode(
    lm: LlamaForCausalLM,
    cache: DynamicCache,
    logits: torch.Tensor,
    cfg: SamplingConfig,
    eos_id: int,
    on_token: Callable[[list[int]], None] | None = None,
    cancel: threading.Event | None = None,
    constraint: BoxConstraint | None = None,
    token_probs: list[float] | None = None,
) -> list[int]:
    """Generate from ``logits`` (after the prompt) until EOS or ``max_new_tokens``.

    ``on_token`` sees the ids so far after each new token; a set ``cancel`` raises
    ``QueryError(CANCELED)`` before the next forward pass. With ``constraint``, a token its
    grammar forbids is replaced by the best (or a sampled) allowed one. ``token_probs``, when
    given, gets one entry per returned id: :func:`token_prob` of the id under the logits it
    was chosen from.
    """
    gen = sampling_generator(cfg, torch.device("cpu"))
    embed = lm.get_input_embeddings()

    def step(tok: int) -> torch.Tensor:
        ids = torch.tensor([[tok]], device=logits.device)
        return lm(inputs_embeds=embed(ids), cache=cache, use_cache=True, logits_to_keep=1).logits[
            0, -1
        ]

    record = (
        None if token_probs is None else (lambda lg, tok: token_probs.append(token_prob(lg, tok)))
    )
    return token_loop(
        logits, lambda lg: pick_token(lg, cfg, gen), step, cfg.max_new_tokens, eos_id,
        on_token, cancel, constraint, record,
    )  # fmt: skip


def sampling_generator(cfg: SamplingConfig, device: torch.device) -> torch.Generator | None:
    """The seeded generator sampling draws from (None for greedy decoding)."""
    if cfg.temperature <= 0:
        return None
    gen = torch.Generator(device=device)
    if cfg.seed is None:
        gen.seed()
    else:
        gen.manual_seed(cfg.seed)
    return gen


def token_loop(
    logits: torch.Tensor,
    pick: Callable[[torch.Tensor], int],
    step: Callable[[int], torch.Tensor],
    max_new_tokens: int,
    eos_id: int,
    on_token: Callable[[list[int]], None] | None = None,
    cancel: threading.Event | None = None,
    constraint: BoxConstraint | None = None,
    record: Callable[[torch.Tensor, int], None] | None = None,
) -> list[int]:
    """The per-token bookkeeping every decode path shares: grammar, EOS, streaming, cancel.

    ``pick(logits)`` chooses a token, ``step(token)`` runs the model on it and returns the
    next logits, ``record(logits, token)`` notes each kept token (its probability).
    """
    out: list[int] = []
    if cancel is not None and cancel.is_set():
        raise QueryError(ResultCode.CANCELED, "canceled before the first token")
    while True:
        tok = pick(logits)
        if constraint is not None:
            tok = constraint.check(logits, tok, pick)
        if tok == eos_id:
            break
        out.append(tok)
        if record is not None:
            record(logits, tok)
        if on_token is not None:
            on_token(out)
        if len(out) >= max_new_tokens:
            break
        if cancel is not None and cancel.is_set():
            raise QueryError(ResultCode.CANCELED, f"canceled after {len(out)} tokens")
        logits = step(tok)
    return out
