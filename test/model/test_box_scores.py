"""Box scores: the geometric mean of the model's probabilities of the tokens that wrote each box."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import DynamicCache

import llava3d_ros.model.engine as engine_module
from llava3d_ros.model.answers import parse_boxes_with_spans, span_score, token_ends
from llava3d_ros.model.box_grammar import BoxConstraint, BoxGrammar
from llava3d_ros.model.engine import Engine
from llava3d_ros.model.generate import SamplingConfig, decode, forward_embeds, token_prob
from llava3d_ros.model.tiny import random_views

PROMPT = "USER: Where are the chair and the table? ASSISTANT:"


def _pieces(tok, text: str) -> list[int]:
    """Ids of ``text`` (no BOS), ASCII pieces only, so the ids decode back to ``text``."""
    return tok.sp.encode(text)


ANSWER = " The chair is at [1.5, -0.2, 0.4, 0.5, 0.6, 0.9] and a table [0, 1, 0.4, 1.2, 0.8, 0.75]."


def _script(tok) -> tuple[list[int], list[range]]:
    """Ids of an answer with two boxes, and the id ranges that write each bracket group
    (found by joining the pieces' own texts, not by decoding)."""
    ids = _pieces(tok, ANSWER)
    pieces = [tok.sp.id_to_piece(t).replace("\u2581", " ") for t in ids]
    assert all(len(p) == 1 or not p.startswith("<") for p in pieces)  # no byte pieces
    starts = np.cumsum([0] + [len(p) for p in pieces])
    joined = "".join(pieces)
    ranges = []
    for open_at in [i for i, c in enumerate(joined) if c == "["]:
        close = joined.index("]", open_at) + 1
        ranges.append(
            range(
                int(np.searchsorted(starts, open_at, side="right")) - 1,
                int(np.searchsorted(starts, close, side="left")),
            )
        )
    return ids, ranges


class _Steered:
    """The tiny LLaMA with ``bias`` added to the logit of the next token of ``script`` (EOS
    after it), so that a random-weight model writes boxes; what decoding sees as the model."""

    def __init__(self, lm, script: list[int], eos: int, bias: float) -> None:
        self.lm, self.script, self.eos, self.bias, self.step = lm, script, eos, bias, 0

    def steer(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        out = logits.clone()
        out[self.script[step] if step < len(self.script) else self.eos] += self.bias
        return out

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def __call__(self, **kwargs):
        logits = self.lm(**kwargs).logits
        self.step += 1
        return SimpleNamespace(logits=self.steer(logits[0, -1], self.step)[None, None])


def _independent_probs(lm, prompt_ids: list[int], out: list[int], steer=None) -> list[float]:
    """Each generated token's probability from one uncached pass over prompt + answer:
    float64 softmax of the raw logits (plus the steering bias) at the position before it."""
    embed = lm.get_input_embeddings()
    with torch.inference_mode():
        logits = lm(inputs_embeds=embed(torch.tensor([prompt_ids + out])), use_cache=False).logits
    probs = []
    for k, t in enumerate(out):
        row = logits[0, len(prompt_ids) - 1 + k]
        if steer is not None:
            row = steer(row, k)
        probs.append(float(torch.softmax(row.double(), -1)[t]))
    return probs


def _geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _run(bundle, cfg: SamplingConfig, steered: _Steered | None = None):
    tok, lm = bundle.tokenizer, bundle.lm
    prompt = tok.encode(PROMPT)
    cache = DynamicCache(config=lm.config)
    logits = forward_embeds(lm, lm.get_input_embeddings()(torch.tensor(prompt)), cache)
    model = lm
    if steered is not None:
        model, logits = steered, steered.steer(logits, 0)
    probs: list[float] = []
    out = decode(model, cache, logits, cfg, tok.eos_id, token_probs=probs)
    return prompt, out, probs


@pytest.mark.parametrize(
    "cfg",
    [
        SamplingConfig(max_new_tokens=12),
        SamplingConfig(max_new_tokens=12, temperature=0.7, top_p=0.9, seed=3),
        SamplingConfig(max_new_tokens=12, temperature=1.5, seed=4),
    ],
    ids=["greedy", "nucleus", "hot"],
)
def test_recorded_probabilities_are_the_raw_softmax(bundle, cfg) -> None:
    """One probability per returned id: the untempered softmax of the logits it was picked
    from, whatever the sampling settings (checked against an uncached full pass)."""
    prompt, out, probs = _run(bundle, cfg)
    assert len(probs) == len(out) == 12
    want = _independent_probs(bundle.lm, prompt, out)
    np.testing.assert_allclose(probs, want, rtol=1e-4, atol=1e-7)
    assert all(0.0 < p <= 1.0 for p in probs)


@pytest.mark.parametrize(
    "cfg",
    [
        SamplingConfig(max_new_tokens=80),
        SamplingConfig(max_new_tokens=80, temperature=0.8, seed=1),
    ],
    ids=["greedy", "sampled"],
)
def test_two_boxes_score_the_geometric_mean_of_their_tokens(bundle, cfg) -> None:
    tok = bundle.tokenizer
    script, ranges = _script(tok)
    steered = _Steered(bundle.lm, script, tok.eos_id, bias=20.0)
    prompt, out, probs = _run(bundle, cfg, steered)
    assert out == script  # the bias is big enough to keep sampling on the script
    text = tok.decode(out)
    boxes, spans, warnings = parse_boxes_with_spans(text)
    assert len(boxes) == 2 and not warnings
    assert [text[s] + text[e - 1] for s, e in spans] == ["[]", "[]"]
    ends = token_ends(tok.decode, out, len(text))
    scores = [span_score(span, ends, probs) for span in spans]

    want_probs = _independent_probs(bundle.lm, prompt, out, steered.steer)
    want = [_geomean([want_probs[k] for k in r]) for r in ranges]
    np.testing.assert_allclose(scores, want, rtol=1e-4)
    assert all(0.0 < s <= 1.0 for s in scores)
    # the words around the boxes do not count: their probabilities differ from the boxes'
    assert scores[0] != pytest.approx(_geomean(want_probs), rel=1e-6)


class _FixedLM:
    """Scripted logits: the next script token gets ``margin`` over an otherwise flat vocabulary."""

    def __init__(self, vocab: int, script: list[int], eos: int, margin: float) -> None:
        self.vocab, self.script, self.eos, self.margin, self.step = vocab, script, eos, margin, 0

    def logits(self) -> torch.Tensor:
        out = torch.zeros(self.vocab)
        out[self.script[self.step] if self.step < len(self.script) else self.eos] = self.margin
        return out

    def get_input_embeddings(self):
        return lambda ids: torch.zeros(1, 1, 4)

    def __call__(self, **kwargs):
        self.step += 1
        return SimpleNamespace(logits=self.logits()[None, None])


def _fixed_score(tok, text: str, margin: float, constrained: bool = False) -> float:
    script = _pieces(tok, text)
    lm = _FixedLM(tok.vocab_size, script, tok.eos_id, margin)
    probs: list[float] = []
    grammar = BoxConstraint(BoxGrammar(tok.token_texts(), tok.eos_id)) if constrained else None
    out = decode(lm, None, lm.logits(), SamplingConfig(), tok.eos_id, None, None, grammar, probs)
    decoded = tok.decode(out)
    _, spans, _ = parse_boxes_with_spans(decoded)
    assert len(spans) == 1, decoded
    return span_score(spans[0], token_ends(tok.decode, out, len(decoded)), probs)


def test_a_peaked_distribution_scores_higher_than_a_flat_one(bundle) -> None:
    tok = bundle.tokenizer
    text = " It is here [1, 2, 3, 0.5, 0.5, 0.5]."
    peaked, flat = _fixed_score(tok, text, 12.0), _fixed_score(tok, text, 2.0)
    assert 0.0 < flat < peaked <= 1.0
    v = tok.vocab_size  # one token at +m over v - 1 at 0: p = e^m / (e^m + v - 1), for every token
    assert flat == pytest.approx(math.exp(2.0) / (math.exp(2.0) + v - 1), rel=1e-5)
    assert peaked == pytest.approx(math.exp(12.0) / (math.exp(12.0) + v - 1), rel=1e-5)


def test_a_box_the_grammar_repaired_scores_lower(bundle) -> None:
    """Probabilities are read before the grammar's mask: a token the grammar forced in keeps
    the low probability the model gave it (the comma here), instead of a renormalised one."""
    tok = bundle.tokenizer
    good = _fixed_score(tok, " [1, 2, 3, 0.5, 0.5, 0.5]", 12.0, constrained=True)
    repaired = _fixed_score(tok, " [1, 2 3, 0.5, 0.5, 0.5]", 12.0, constrained=True)
    assert 0.0 < repaired < good


def test_span_score_rules() -> None:
    # tokens "ab", "[1", ",2]", "cd" over "ab[1,2]cd": the box is chars 2..7
    ends, probs = [2, 4, 7, 9], [0.1, 0.5, 0.8, 0.2]
    assert span_score((2, 7), ends, probs) == pytest.approx(math.sqrt(0.5 * 0.8))
    assert span_score((3, 4), ends, probs) == pytest.approx(0.5)
    assert math.isnan(span_score((9, 10), ends, probs))  # no token wrote it
    assert span_score((0, 9), [2, 4, 7, 9], [0.1, 0.0, 0.8, 0.2]) == 0.0
    assert token_ends(lambda ids: "x" * len(ids), [5, 6, 7, 8], upto=2) == [1, 2]
    assert token_ends(lambda ids: "x" * sum(ids), [1, 0, 2], upto=99) == [1, 1, 3]


def test_token_prob_is_bounded() -> None:
    logits = torch.tensor([1e4, -1e4, 0.0])
    assert token_prob(logits, 0) == 1.0 and token_prob(logits, 1) == 0.0
    assert token_prob(torch.zeros(4), 2) == pytest.approx(0.25)


@pytest.fixture
def steer_engine(monkeypatch, bundle):
    """The engine's decoding runs the tiny model steered onto the two-box script."""
    tok = bundle.tokenizer
    script, ranges = _script(tok)
    real = engine_module.decode

    def steered_decode(lm, cache, logits, *args, **kwargs):
        s = _Steered(lm, script, tok.eos_id, bias=20.0)
        return real(s, cache, s.steer(logits, 0), *args, **kwargs)

    monkeypatch.setattr(engine_module, "decode", steered_decode)
    return ranges


def test_engine_labels_and_scores_with_prefix_reuse_and_streaming(bundle, steer_engine) -> None:
    views = random_views(2, seed=5)
    # the scene holds points where the script's boxes are: the box grammar keeps centres
    # among the scene's points, and would otherwise (rightly) refuse the script's numbers
    for k, centre in enumerate([(1.5, -0.2, 0.4), (0.0, 1.0, 0.4)]):
        views[0].patch_xyz[0, k], views[0].patch_valid[0, k] = centre, True
    cached = Engine(bundle, max_new_tokens=80)
    fresh = Engine(bundle, max_new_tokens=80, reuse_prefix=False)
    streamed: list[str] = []
    cached.answer(views, "Where is the lamp?")
    r = cached.answer(
        views, "Where are the chair and the table?", on_token=lambda t, n: streamed.append(t)
    )
    assert r.success and cached.prefix_hits == 1, r.message
    assert streamed[-1].strip() == r.text and r.text.startswith("The chair is at [1.5")
    probs = cached.last_token_probs
    assert len(probs) == len(cached.last_tokens)
    assert [b.score for b in r.boxes] == pytest.approx(
        [_geomean([probs[k] for k in rng]) for rng in steer_engine], rel=1e-9
    )
    assert [b.label for b in r.boxes] == ["chair", "table"]
    ref = fresh.answer(views, "Where are the chair and the table?")
    assert [b.score for b in r.boxes] == pytest.approx([b.score for b in ref.boxes], rel=1e-3)

    ground = cached.answer(views, '"the red chair."', task="ground")
    assert ground.success and [b.label for b in ground.boxes] == ["the red chair"] * 2
    assert all(0.0 < b.score <= 1.0 for b in ground.boxes)
