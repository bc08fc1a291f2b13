"""The one entry point the node calls: views + question → AnswerResult, with feature and KV caches."""

from __future__ import annotations

import gc
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from llava3d_ros.answer import AnswerResult, QueryError, ResultCode, Timings
from llava3d_ros.geometry.errors import GeometryError
from llava3d_ros.model.answers import parse_boxes_with_spans, span_score, token_ends
from llava3d_ros.model.box_grammar import BoxConstraint, BoxGrammar, CentreBounds
from llava3d_ros.model.fast_decode import StaticDecoder, resolve_decode_path
from llava3d_ros.model.features import FeatureCache
from llava3d_ros.model.generate import SamplingConfig, decode, forward_embeds
from llava3d_ros.model.labels import box_labels
from llava3d_ros.model.llava3d import clip_patch_features
from llava3d_ros.model.loader import ModelBundle
from llava3d_ros.model.prompts import (
    BOX_TOKEN_INDEX,
    build_prompt,
    scene_token_budget,
    split_at_image,
    task_query,
    tokenize_prompt,
)
from llava3d_ros.scene.view import ModelView


@dataclass
class _Prefix:
    """KV cache of [BOS, system, "USER: ", scene tokens] for one scene state."""

    key: str
    cache: DynamicCache
    length: int
    scene_tokens: int
    dropped: int  # occupied voxels the token cap left out


class Engine:
    """Answers questions about a set of views; reuses CLIP features per frame and the scene's KV prefix."""

    def __init__(
        self,
        bundle: ModelBundle,
        *,
        max_scene_tokens: int = 2560,
        voxel_size: float = 0.2,
        seed: int = 0,
        compat_bf16: bool = False,
        feature_cache_size: int = 64,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        reuse_prefix: bool = True,
        vision_batch: int = 8,
        constrain_boxes: bool = True,
        decode_path: str = "auto",
    ) -> None:
        """``decode_path``: ``eager`` (``generate.decode`` over the growing DynamicCache),
        ``static`` (``fast_decode.StaticDecoder``: static KV cache, step compiled on CUDA) or
        ``auto`` (static on CUDA, eager elsewhere)."""
        if max_scene_tokens < 1 or voxel_size <= 0 or vision_batch < 1:
            raise ValueError("max_scene_tokens, voxel_size and vision_batch must be positive")
        self.bundle: ModelBundle | None = bundle
        self.max_scene_tokens = max_scene_tokens
        self.voxel_size = voxel_size
        self.seed = seed
        self.compat_bf16 = compat_bf16
        self.features = FeatureCache(feature_cache_size)
        self.default_sampling = SamplingConfig(max_new_tokens, temperature, top_p, seed)
        self.reuse_prefix = reuse_prefix
        self.vision_batch = vision_batch
        self.prefix_hits = 0
        self.last_tokens: list[int] = []  # ids of the last answer, for tests and benchmarks
        self.last_token_probs: list[float] = []  # the model's probability of each of them
        self._prefix: _Prefix | None = None
        # Fault injection: called with (stage, number of views) as each stage starts; tests
        # raise torch.OutOfMemoryError from it to exercise recovery where memory cannot run out.
        self.fault_hook: Callable[[str, int], None] | None = None
        self._lock = threading.Lock()
        self._model_id = bundle.model_id
        tok = bundle.tokenizer
        # inside "[...]" only tokens that keep it a readable box (model/box_grammar.py)
        self.box_grammar = BoxGrammar(tok.token_texts(), tok.eos_id) if constrain_boxes else None
        self.decode_path = resolve_decode_path(decode_path, bundle.device)
        self._static: StaticDecoder | None = None  # built on first use (static path only)
        cfg = bundle.vision.config
        self.image_size = cfg.image_size
        self.grid = cfg.image_size // cfg.patch_size
        self.context = bundle.lm.config.tokenizer_model_max_length
        mean = torch.tensor(bundle.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(bundle.image_std, dtype=torch.float32).view(3, 1, 1)
        self._norm = (mean, std)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def decode_path_note(self) -> str:
        """Which decode path runs, and (static) whether its step is compiled or why not."""
        if self.decode_path == "eager":
            return "eager: generate.decode over a DynamicCache"
        if self._static is None:
            return "static: not used yet"
        return f"static: {self._static.note}"

    def _static_decoder(self) -> StaticDecoder:
        if self._static is None:
            self._static = StaticDecoder(self.bundle.lm)
        return self._static

    def forget_scenes(self) -> None:
        """Drop the cached CLIP features and scene prefix.

        Both are keyed by frame ids (and the prefix by patch positions too), which a frame
        buffer never reuses; a caller whose frame ids restart (one scene after another, as in
        the synthetic evaluation) must call this between scenes, or a recoloured room seen
        from the same poses is answered from the previous room's tokens.
        """
        with self._lock:
            self._drop_caches()

    def _drop_caches(self) -> None:
        self._prefix = None
        self.features.clear()
        if self._static is not None:  # keep its buffers and compiled step, not what they hold
            self._static.forget()

    def release(self) -> None:
        """Drop the model, caches and (on GPU) the allocator's cached blocks."""
        with self._lock:
            self._drop_caches()
            self._static = None
            self.bundle = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def answer(
        self,
        views: Sequence[ModelView],
        question: str,
        task: str = "",
        click_points: Sequence[np.ndarray] = (),
        max_new_tokens: int = 0,
        temperature: float = -1.0,
        on_token: Callable[[str, int], None] | None = None,
        cancel: threading.Event | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> AnswerResult:
        """Run one query; every failure comes back as an AnswerResult with its code, never raised."""
        t0 = time.perf_counter()
        timings = Timings()
        result = AnswerResult(code=ResultCode.OK, model=self._model_id)
        result.view_stamps_ns = [int(v.stamp_ns) for v in views]
        result.view_frames = [v.camera_frame for v in views]
        result.click_points = [np.asarray(c, dtype=np.float64) for c in click_points]
        with self._lock:
            try:
                self._run(
                    views=views,
                    question=question,
                    task=task,
                    result=result,
                    timings=timings,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    on_token=on_token,
                    cancel=cancel,
                    on_stage=on_stage,
                )
            except QueryError as exc:
                result.code, result.message = exc.code, exc.message
            except GeometryError as exc:
                result.code, result.message = ResultCode.BAD_REQUEST, f"bad scene geometry: {exc}"
            except torch.OutOfMemoryError as exc:
                # drop everything recomputable so the next query starts from the weights alone
                self._prefix = None
                self.features.clear()
                self._static = None  # its preallocated KV buffers too
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                result.code, result.out_of_memory = ResultCode.MODEL_ERROR, True
                result.message = (
                    f"out of memory with {len(views)} views (fewer views or scene tokens may "
                    f"fit): {exc}"
                )
            except (RuntimeError, ValueError) as exc:
                self._prefix = None
                if self._static is not None:
                    self._static.forget()
                result.code, result.message = ResultCode.MODEL_ERROR, f"model failure: {exc}"
            finally:
                if self._prefix is not None:  # drop this query's tokens; keep the scene prefix
                    extra = self._prefix.cache.get_seq_length() - self._prefix.length
                    if extra > 0:
                        self._prefix.cache.crop(-extra)
        timings.total_s = time.perf_counter() - t0
        result.timings = timings
        return result

    def _run(
        self,
        *,
        views: Sequence[ModelView],
        question: str,
        task: str,
        result: AnswerResult,
        timings: Timings,
        max_new_tokens: int,
        temperature: float,
        on_token: Callable[[str, int], None] | None,
        cancel: threading.Event | None,
        on_stage: Callable[[str], None] | None,
    ) -> None:
        """The query itself (``answer`` holds the lock and turns exceptions into result codes).

        Keyword-only: ten arguments, several of the same type, are easy to pass in the wrong
        order. It fills ``result`` and ``timings`` in place.
        """
        b = self.bundle
        if b is None:
            raise QueryError(ResultCode.NOT_READY, "the model has been released")
        if not views:
            raise QueryError(ResultCode.NO_SCENE, "no views to answer from")
        if not isinstance(question, str):
            raise QueryError(ResultCode.BAD_REQUEST, "question must be a string")
        clicks = self._clicks(result.click_points)
        d = self.default_sampling
        sampling = SamplingConfig(
            max_new_tokens=max_new_tokens if max_new_tokens > 0 else d.max_new_tokens,
            temperature=temperature if temperature >= 0 else d.temperature,
            top_p=d.top_p,
            seed=d.seed,
        )
        ids = tokenize_prompt(build_prompt(task_query(task, question, len(clicks))), b.tokenizer)
        pre_ids, post_ids = split_at_image(ids)
        n_text = len(pre_ids) + len(post_ids) - len(clicks)
        cap = scene_token_budget(
            n_text, len(clicks), sampling.max_new_tokens, self.max_scene_tokens, self.context
        )
        self._enter("encoding", len(views), on_stage)
        t = time.perf_counter()
        key = self._scene_key(views, cap)
        prefix = (
            self._prefix
            if (self.reuse_prefix and self._prefix and self._prefix.key == key)
            else None
        )
        dev = b.device
        embed = b.lm.get_input_embeddings()
        with torch.inference_mode():
            if prefix is None:
                self._prefix = None
                scene, dropped = self._scene_tokens(views, cap)
                prefix_embeds = torch.cat([embed(torch.tensor(pre_ids, device=dev)), scene])
            else:
                self.prefix_hits += 1
                dropped = prefix.dropped
            suffix = self._suffix_embeds(post_ids, clicks)
            timings.encode_s = time.perf_counter() - t
            self._enter("prefill", len(views), on_stage)
            t = time.perf_counter()
            if prefix is None and self.reuse_prefix:
                cache = DynamicCache(config=b.lm.config)
                forward_embeds(b.lm, prefix_embeds, cache)
                prefix = _Prefix(key, cache, cache.get_seq_length(), scene.shape[0], dropped)
                self._prefix = prefix
            if prefix is not None:
                cache, n_scene = prefix.cache, prefix.scene_tokens
                logits = forward_embeds(b.lm, suffix, cache)
            else:  # full recomputation, no reuse
                cache, n_scene = DynamicCache(config=b.lm.config), scene.shape[0]
                logits = forward_embeds(b.lm, torch.cat([prefix_embeds, suffix]), cache)
            result.scene_tokens = n_scene
            static = None
            if self.decode_path == "static":  # the prompt's KV into the static cache
                static = self._static_decoder()
                static.load(cache, sampling.max_new_tokens, prefix, prefix.length if prefix else 0)
            if dropped:  # only when voxels were really left out, not whenever the cap is lower
                why = (
                    f"to fit the {self.context}-token context"
                    if cap < self.max_scene_tokens
                    else "(max_scene_tokens)"
                )
                result.parse_warnings.append(
                    f"scene tokens capped at {cap} {why}: {dropped} of {cap + dropped} "
                    "occupied voxels left out"
                )
            timings.prefill_s = time.perf_counter() - t
        self._enter("decoding", len(views), on_stage)
        t = time.perf_counter()
        tok = b.tokenizer

        def _emit(out: list[int]) -> None:
            if on_token is not None:
                on_token(tok.decode(out), len(out))

        constraint = (
            BoxConstraint(self.box_grammar, self._centre_bounds(views))
            if self.box_grammar
            else None
        )
        probs: list[float] = []
        try:
            if static is not None:
                tokens = static.decode(
                    logits, sampling, tok.eos_id, _emit, cancel, constraint, token_probs=probs
                )
            else:
                tokens = decode(
                    b.lm,
                    cache,
                    logits,
                    sampling,
                    tok.eos_id,
                    _emit,
                    cancel,
                    constraint,
                    token_probs=probs,
                )
        finally:
            timings.decode_s = time.perf_counter() - t
        self.last_tokens, self.last_token_probs = tokens, probs
        full = tok.decode(tokens)
        result.text = full.strip()
        result.boxes, spans, warnings = parse_boxes_with_spans(result.text)
        result.parse_warnings.extend(warnings)
        self._describe_boxes(result, spans, task, question, tokens, probs, full)
        if constraint is not None:
            self._report_constraint(constraint, len(tokens), result)

    def _describe_boxes(
        self,
        result: AnswerResult,
        spans: list[tuple[int, int]],
        task: str,
        question: str,
        tokens: list[int],
        probs: list[float],
        full: str,
    ) -> None:
        """Label and score each box (docs/interfaces.md, GroundedObject): the label by the
        task's rule (model/labels.py), the score = geometric mean of the model's probabilities
        of the tokens that wrote the box's bracket group."""
        if not result.boxes:
            return
        lead = len(full) - len(full.lstrip())  # result.text is ``full`` stripped
        ends = token_ends(self.bundle.tokenizer.decode, tokens, lead + spans[-1][1])
        labels = box_labels(task, question, result.text, spans)
        for box, (start, end), label in zip(result.boxes, spans, labels, strict=True):
            box.label = label
            box.score = span_score((start + lead, end + lead), ends, probs)

    @staticmethod
    def _report_constraint(constraint: BoxConstraint, n_tokens: int, result: AnswerResult) -> None:
        """Say in the answer where the box grammar overrode the model."""
        result.box_tokens_overruled = constraint.overruled
        if constraint.overruled:
            result.parse_warnings.append(
                f"box format enforced: {constraint.overruled} of {n_tokens} tokens were not "
                "the model's first choice"
                + (
                    f" ({constraint.held_inside} to keep a box centre inside the scene's extent)"
                    if constraint.held_inside
                    else ""
                )
            )
        if constraint.dead_ends:
            result.parse_warnings.append(
                f"box format not enforceable with this vocabulary ({constraint.dead_ends} boxes)"
            )

    def _centre_bounds(self, views: Sequence[ModelView]) -> CentreBounds | None:
        """Box centres stay inside the extent of the views' patch positions (model frame)."""
        pts = [v.patch_xyz[v.patch_valid] for v in views]
        return CentreBounds.around(np.concatenate(pts)) if pts else None

    def _enter(self, stage: str, n_views: int, on_stage: Callable[[str], None] | None) -> None:
        if self.fault_hook is not None:
            self.fault_hook(stage, n_views)
        if on_stage is not None:
            on_stage(stage)

    def _clicks(self, points: list[np.ndarray]) -> torch.Tensor:
        for i, p in enumerate(points):
            if p.shape != (3,) or not np.all(np.isfinite(p)):
                raise QueryError(
                    ResultCode.BAD_REQUEST, f"click point {i} must be 3 finite numbers, got {p!r}"
                )
        arr = np.stack(points) if points else np.zeros((0, 3))
        return torch.as_tensor(arr, dtype=torch.float32)

    def _check_view(self, v: ModelView) -> None:
        s, g = self.image_size, self.grid
        if v.image.shape != (s, s, 3) or v.image.dtype != np.uint8:
            raise QueryError(
                ResultCode.BAD_REQUEST, f"view {v.frame_id}: image must be ({s},{s},3) uint8"
            )
        if v.patch_xyz.shape != (g, g, 3) or v.patch_valid.shape != (g, g):
            raise QueryError(
                ResultCode.BAD_REQUEST, f"view {v.frame_id}: patch grid must be {g}×{g}"
            )

    def _scene_key(self, views: Sequence[ModelView], cap: int) -> str:
        """Changes whenever the frames, their (re-optimised) positions, or the pooling settings do."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((cap, self.voxel_size, self.seed, self.compat_bf16)).encode())
        for v in views:
            self._check_view(v)
            h.update(int(v.frame_id).to_bytes(8, "little", signed=True))
            h.update(np.ascontiguousarray(v.patch_xyz, dtype=np.float32).tobytes())
            h.update(np.ascontiguousarray(v.patch_valid, dtype=bool).tobytes())
        return h.hexdigest()

    def _view_features(self, views: Sequence[ModelView]) -> torch.Tensor:
        """(V·G·G, C) CLIP features; the tower runs only for frames not already cached."""
        b = self.bundle
        have: dict[int, torch.Tensor] = {}
        for v in views:  # held locally: frames evicted by this query's own inserts still count
            f = self.features.get(v.frame_id)
            if f is not None:
                have[v.frame_id] = f
        todo = list({v.frame_id: v for v in views if v.frame_id not in have}.values())
        mean, std = (x.to(b.device) for x in self._norm)
        select = b.lm.config.mm_vision_select_layer
        for i in range(0, len(todo), self.vision_batch):
            chunk = todo[i : i + self.vision_batch]
            # np.array copies: views may hold read-only arrays, which torch will not wrap
            pix = torch.stack([torch.from_numpy(np.array(v.image)) for v in chunk])
            pix = ((pix.to(b.device).permute(0, 3, 1, 2).float() / 255.0 - mean) / std).to(b.dtype)
            feats = clip_patch_features(b.vision, pix, select)
            for v, f in zip(chunk, feats, strict=True):
                self.features.put(v.frame_id, f)
                have[v.frame_id] = f
        return torch.cat([have[v.frame_id] for v in views])

    def _scene_tokens(self, views: Sequence[ModelView], cap: int) -> tuple[torch.Tensor, int]:
        """Scene tokens of ``views`` under the token cap, and how many voxels it left out."""
        b = self.bundle
        feats = self._view_features(views)
        xyz = torch.from_numpy(
            np.concatenate([np.asarray(v.patch_xyz, np.float32).reshape(-1, 3) for v in views])
        )
        valid = torch.from_numpy(
            np.concatenate([np.asarray(v.patch_valid, bool).reshape(-1) for v in views])
        )
        # invalid patches may hold NaN; they are excluded from pooling but still pass the MLP
        xyz = torch.where(valid[:, None], xyz, torch.zeros_like(xyz)).to(b.device)
        tokens, assignment = b.lm.scene_tokens(
            feats,
            xyz,
            valid.to(b.device),
            voxel_size=self.voxel_size,
            max_tokens=cap,
            seed=self.seed,
            compat_bf16=self.compat_bf16,
        )
        return tokens, assignment.dropped

    def _suffix_embeds(self, post_ids: list[int], clicks: torch.Tensor) -> torch.Tensor:
        """Text after ``<image>`` with one click embedding spliced in per ``<boxes>`` sentinel."""
        b = self.bundle
        dev = b.device
        embed = b.lm.get_input_embeddings()
        click_emb = b.lm.click_tokens(clicks.to(dev)) if len(clicks) else None
        parts, run, k = [], [], 0
        for t in post_ids:
            if t == BOX_TOKEN_INDEX:
                if run:
                    parts.append(embed(torch.tensor(run, device=dev)))
                    run = []
                parts.append(click_emb[k : k + 1])
                k += 1
            else:
                run.append(t)
        if run:
            parts.append(embed(torch.tensor(run, device=dev)))
        return torch.cat(parts)
