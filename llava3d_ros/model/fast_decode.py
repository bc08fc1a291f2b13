"""The fast decode path: a static KV cache and one capturable per-token step.

``generate.decode`` (the eager path) grows a ``DynamicCache`` by one ``torch.cat`` per layer and
token, and reads the logits back to the host to pick each token. Here the answer's KV lives in
a preallocated ``transformers.StaticCache`` (sized to prefix + question + max_new_tokens, rounded
up to a bucket so that the buffers, and with them a captured graph, are reused across queries),
the per-token step (embed → LLaMA → last logits) has fixed shapes and fixed buffer addresses,
and on CUDA it is compiled once with ``torch.compile(mode="reduce-overhead")`` (CUDA graphs).
The token is chosen on the device (argmax, or temperature/top-p sampling with a device
generator); the one host sync per token is reading the chosen id back.

The prompt is still prefilled by the engine on its ``DynamicCache`` (the scene prefix cache it
reuses across questions, unchanged); :meth:`StaticDecoder.load` then copies that KV into the
static cache. The decoder remembers which scene prefix its buffers hold, so a follow-up
question about the same scene copies only the question's few positions.

Semantics are those of ``generate.decode``: the box grammar (``BoxConstraint``) checks each id
on the host and re-picks over its mask when it refuses one; ``cancel`` is checked before every
step; ``on_token`` sees the ids so far after each token; ``token_probs`` gets
``generate.token_prob`` of each id (computed on the device, read back once at the end).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache, LlamaForCausalLM, StaticCache

from llava3d_ros.model.box_grammar import BoxConstraint
from llava3d_ros.model.generate import SamplingConfig, sampling_generator, token_loop

DECODE_PATHS = ("auto", "eager", "static")
BUCKET = 256  # static cache lengths are multiples of this (fewer reallocations and recompiles)


def resolve_decode_path(path: str, device: torch.device | str) -> str:
    """``auto`` → ``static`` on CUDA, ``eager`` elsewhere; ``eager``/``static`` as given."""
    if path not in DECODE_PATHS:
        raise ValueError(f"decode_path must be one of {DECODE_PATHS}, got {path!r}")
    if path != "auto":
        return path
    return "static" if torch.device(device).type == "cuda" else "eager"


def bucket_length(needed: int, bucket: int = BUCKET) -> int:
    """``needed`` rounded up to a multiple of ``bucket``."""
    return max(bucket, -(-needed // bucket) * bucket)


def pick_on_device(
    logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator | None
) -> torch.Tensor:
    """``generate.pick_token`` without leaving the device: a 0-d/1-element id tensor.

    Same arithmetic (argmax; softmax at the temperature, top-p by the same rule, multinomial),
    with the top-p drop done by ``masked_fill`` (a boolean index assignment would sync) and
    the draw made by a generator on the logits' device. On the CPU this is bit-for-bit
    ``pick_token`` (same generator, same probabilities); on CUDA the draws come from the CUDA
    generator, so sampled answers are seeded and reproducible but not the eager path's.
    """
    if cfg.temperature <= 0:
        return torch.argmax(logits)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        drop = (torch.cumsum(sorted_p, dim=-1) - sorted_p) >= cfg.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen)


def log_prob(logits: torch.Tensor, token: int) -> torch.Tensor:
    """``log`` of ``generate.token_prob`` as a device scalar (same fp32 arithmetic, no sync)."""
    x = logits.float()
    return x[token] - torch.logsumexp(x, dim=-1)


def _mark_step() -> None:
    mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    if mark is not None:
        mark()


class StaticDecoder:
    """Owns the static KV cache and the (possibly compiled) decode step of one model.

    ``compile``: None = compile on CUDA only (``torch.compile(mode="reduce-overhead")``, CUDA
    graphs), True/False to force. A step that fails to compile falls back to the plain step
    for good; :attr:`note` says which step runs and why.
    """

    def __init__(
        self,
        lm: LlamaForCausalLM,
        *,
        compile: bool | None = None,
        compile_options: dict[str, Any] | None = None,
        bucket: int = BUCKET,
    ) -> None:
        self.lm = lm
        self.device = lm.get_input_embeddings().weight.device
        self.bucket = bucket
        self.compile = self.device.type == "cuda" if compile is None else compile
        self.compile_options = (
            dict(compile_options)
            if compile_options is not None
            else {"mode": "reduce-overhead", "fullgraph": False}
        )
        self.cache: StaticCache | None = None
        self.capacity = 0
        self.length = 0  # positions of the static cache in use (host copy; no sync to read)
        self.reallocations = 0
        self.copied_positions = 0  # KV positions copied in from the dynamic cache, all queries
        self._held: weakref.ref | None = None  # the engine's scene prefix the buffers hold
        self._held_len = 0
        self._step: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._compile_failed = ""
        self._ids = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.note = self._describe()

    # ----- the cache -------------------------------------------------------------------------

    def forget(self) -> None:
        """Forget which scene prefix the buffers hold (the next load copies it again)."""
        self._held, self._held_len = None, 0

    def _ensure(self, needed: int, like: torch.Tensor, n_layers: int) -> None:
        if self.cache is not None and self.capacity >= needed:
            return
        self.forget()
        self.cache = None  # free the old buffers before allocating the new ones
        self.capacity = bucket_length(needed, self.bucket)
        cache = StaticCache(config=self.lm.config, max_cache_len=self.capacity)
        if len(cache.layers) != n_layers:
            raise RuntimeError(
                f"static cache has {len(cache.layers)} layers, the prefill cache {n_layers}"
            )
        # allocate now (not lazily inside the first step) so the buffers have fixed
        # addresses before anything is captured
        cache.early_initialization(
            batch_size=like.shape[0],
            num_heads=like.shape[1],
            head_dim=like.shape[3],
            dtype=like.dtype,
            device=like.device,
        )
        self.cache = cache
        self.reallocations += 1
        self._build_step()

    def load(
        self, src: DynamicCache, max_new_tokens: int, prefix: object | None, prefix_len: int
    ) -> None:
        """Copy ``src`` (prefill KV: scene prefix + question) into the static cache.

        ``prefix`` is the engine's scene-prefix object whose KV fills ``src``'s first
        ``prefix_len`` positions (None: no reuse). When the buffers already hold that same
        prefix object, only the positions after it are copied.
        """
        total = src.get_seq_length()
        first = src.layers[0].keys
        self._ensure(total + max_new_tokens, first, len(src.layers))
        start = 0
        held = self._held() if self._held is not None else None
        if prefix is not None and held is prefix and self._held_len == prefix_len <= total:
            start = prefix_len
        self.forget()  # until the copy below has finished
        for s, d in zip(src.layers, self.cache.layers, strict=True):
            d.keys[:, :, start:total].copy_(s.keys[:, :, start:total])
            d.values[:, :, start:total].copy_(s.values[:, :, start:total])
        self._set_length(total)
        self.copied_positions += total - start
        if prefix is not None:
            self._held, self._held_len = weakref.ref(prefix), prefix_len

    def _set_length(self, n: int) -> None:
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(n)
        self.length = n

    # ----- the step --------------------------------------------------------------------------

    def _build_step(self) -> None:
        lm, cache = self.lm, self.cache
        embed = lm.get_input_embeddings()

        def step(ids: torch.Tensor) -> torch.Tensor:
            out = lm(inputs_embeds=embed(ids), cache=cache, use_cache=True, logits_to_keep=1)
            return out.logits[0, -1]

        self._step = step
        self._compiled = None
        if self.compile and not self._compile_failed:
            try:
                self._compiled = torch.compile(step, **self.compile_options)
            except Exception as exc:  # noqa: BLE001 - any failure means: run the plain step
                self._compile_failed = f"{type(exc).__name__}: {exc}"
        self.note = self._describe()

    def _describe(self) -> str:
        where = self.device.type
        if self._compile_failed:
            return (
                f"static KV cache on {where}; compile failed ({self._compile_failed}), plain step"
            )
        if self.compile:
            opts = ", ".join(f"{k}={v!r}" for k, v in self.compile_options.items())
            return f"static KV cache on {where}; step compiled with torch.compile({opts})"
        return f"static KV cache on {where}; plain (uncompiled) step"

    def _forward(self, tok: int) -> torch.Tensor:
        """Append ``tok`` at position ``self.length``; its logits (vocab,)."""
        self._ids.fill_(tok)
        if self._compiled is not None:
            try:
                # a new iteration for CUDA-graph trees: the previous step's outputs are dead
                _mark_step()
                logits = self._compiled(self._ids)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - compile/capture failure: plain step for good
                self._compile_failed = f"{type(exc).__name__}: {exc}"[:300]
                self._compiled = None
                self.note = self._describe()
                self._set_length(self.length)  # undo a partial update before re-running
                logits = self._step(self._ids)
        else:
            logits = self._step(self._ids)
        self.length += 1
        return logits

    # ----- the loop --------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(
        self,
        logits: torch.Tensor,
        cfg: SamplingConfig,
        eos_id: int,
        on_token: Callable[[list[int]], None] | None = None,
        cancel: threading.Event | None = None,
        constraint: BoxConstraint | None = None,
        token_probs: list[float] | None = None,
    ) -> list[int]:
        """``generate.decode`` over the loaded static cache (call :meth:`load` first)."""
        if self.cache is None:
            raise RuntimeError("StaticDecoder.decode before load")
        gen = sampling_generator(cfg, logits.device)
        lps: list[torch.Tensor] = []

        def step(tok: int) -> torch.Tensor:
            if self.length >= self.capacity:  # load() sized it; only a caller bug gets here
                raise RuntimeError(f"static KV cache full ({self.capacity} positions)")
            return self._forward(tok)  # its output buffer is overwritten by the next replay

        try:
            return token_loop(
                logits,
                lambda lg: int(pick_on_device(lg, cfg, gen)),  # the one host sync per token
                step, cfg.max_new_tokens, eos_id, on_token, cancel, constraint,
                None if token_probs is None else (lambda lg, tok: lps.append(log_prob(lg, tok))),
            )  # fmt: skip
        finally:
            if token_probs is not None and lps:
                token_probs.extend(min(1.0, math.exp(v)) for v in torch.stack(lps).tolist())
