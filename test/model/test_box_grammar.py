"""Box-constrained decoding: the grammar, its token tables, and decoding through it."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llava3d_ros.model.answers import parse_boxes
from llava3d_ros.model.box_grammar import BoxConstraint, BoxGrammar, BoxState, CentreBounds, feed
from llava3d_ros.model.generate import SamplingConfig, decode, pick_token
from llava3d_ros.model.tiny import random_bundle

OUTSIDE = BoxState()


@pytest.mark.parametrize(
    "text",
    [
        "[1.6, -1.7, 0.7, 0.5, 0.6, 0.9]",
        "It is at [1.6, -1.7, 0.7, 0.5, 0.6, 0.9]. And [0,0,0,1,1,1] too.",
        "[1, 2, 3, 4, 5, 6, 0.1, -0.2, 3.14]",
        "[1,2,3,4,5,6]",
        "no box at all",
    ],
)
def test_readable_boxes_pass_and_close(text: str) -> None:
    assert feed(OUTSIDE, text) == OUTSIDE
    boxes, warnings = parse_boxes(text)
    assert not warnings and len(boxes) == text.count("[")


@pytest.mark.parametrize(
    "text",
    [
        "[1.6, -1.7 0.7",  # the stage-10 failure: a dropped comma
        "[1, 2, 3, -1, 1, 1]",  # negative extent
        "[1, 2, 3, 0.0, 1, 1]",  # zero extent
        "[1, 2, 3, 4, 5]",  # too few numbers
        "[1, 2, 3, 4, 5, 6, 7]",  # neither 6 nor 9
        "[1, 2, 3, 4, 5, 6, 7, 8, 9,",  # a tenth number
        "[ 1",  # a space after the bracket
        "[1, 2 ,",  # a space before a comma (what a dropped comma looks like)
        "[1,  2",  # two spaces in a row
        "[.5",
        "[1.,",
        "[-,",
        "[12345",  # five integer digits
        "[1.2345",  # four decimals
        "[1, 2, a",
        "[1, [2",
        "[05",  # leading zeros: the released model writes 0.5, never 05
        "[1, -007",
    ],
)
def test_unreadable_boxes_are_refused(text: str) -> None:
    assert feed(OUTSIDE, text) is None


def test_every_closed_box_the_grammar_lets_through_parses() -> None:
    """Random walks over box characters: whatever the grammar accepts and closes, the parser
    reads as one box, without warnings (the grammar and the parser agree)."""
    rng = random.Random(0)
    alphabet = list("0123456789-., ]")
    closed = 0
    for _ in range(4000):
        state, text = feed(OUTSIDE, "["), "["
        for _ in range(40):
            options = [c for c in alphabet if feed(state, c) is not None]
            assert options, f"dead end after {text!r}"
            c = rng.choice(options)
            state, text = feed(state, c), text + c
            if not state.inside:
                break
        if not state.inside:
            closed += 1
            boxes, warnings = parse_boxes(text)
            assert len(boxes) == 1 and not warnings, text
    assert closed > 100


@pytest.fixture(scope="module")
def tok():
    return random_bundle().tokenizer


def _ids(tok, *pieces: str) -> list[int]:
    return [tok.sp.piece_to_id(p) for p in pieces]


def test_token_texts_map_sentencepiece_pieces(tok) -> None:
    texts = tok.token_texts()
    assert len(texts) == tok.vocab_size
    assert texts[tok.eos_id] is None and texts[tok.bos_id] is None
    word = tok.sp.encode(" the", out_type=str)[0]
    assert texts[tok.sp.piece_to_id(word)] == word.replace("\u2581", " ")
    comma = tok.sp.piece_to_id("<0x2C>")
    assert texts[comma] == ","


def test_mask_inside_a_box(tok) -> None:
    grammar = BoxGrammar(tok.token_texts(), tok.eos_id)
    state = feed(OUTSIDE, "[1.6, -1.7")
    mask = grammar.allowed(state, tok.vocab_size + 4, torch.device("cpu"))
    texts = tok.token_texts()
    allowed = {texts[i] for i in torch.nonzero(mask).flatten().tolist()}
    assert "," in allowed and "0" in allowed and " " not in allowed  # no space before a comma
    after_comma = grammar.allowed(feed(state, ","), tok.vocab_size, torch.device("cpu"))
    assert after_comma[texts.index(" ")] and after_comma[texts.index("0")]
    assert not mask[tok.eos_id] and not mask[tok.vocab_size :].any()  # no EOS, no unknown ids
    assert all(feed(state, t) is not None for t in allowed)
    outside = grammar.allowed(OUTSIDE, tok.vocab_size, torch.device("cpu"))
    assert outside[tok.eos_id] and outside.float().mean() > 0.95


class _ScriptedLM:
    """A stand-in LM whose every step prefers the next token of ``script``, then ``fallback``
    tokens in order, whatever came before; EOS once the script ends."""

    def __init__(self, vocab: int, script: list[int], fallback: list[int], eos: int) -> None:
        self.vocab, self.script, self.fallback, self.eos, self.step = (
            vocab,
            script,
            fallback,
            eos,
            0,
        )

    def logits(self) -> torch.Tensor:
        out = torch.zeros(self.vocab)
        for rank, t in enumerate(self.fallback):
            out[t] = 5.0 - 0.01 * rank
        out[self.script[self.step] if self.step < len(self.script) else self.eos] = 10.0
        return out

    def get_input_embeddings(self):
        return lambda ids: torch.zeros(1, 1, 4)

    def __call__(self, **kwargs):
        self.step += 1
        return SimpleNamespace(logits=self.logits()[None, None])


def _decode(tok, constrained: bool) -> tuple[str, BoxConstraint]:
    # the stage-10 failure: a comma dropped after the second number
    script = _ids(tok, "\u2581[", "1", ".", "6", "<0x2C>", "\u2581", "-", "1", ".", "7")
    script += _ids(tok, "\u2581", "0", ".", "7", "<0x2C>", "\u2581", "0", ".", "5", "]")
    fallback = _ids(tok, "<0x2C>", "]", "1", "\u2581")
    lm = _ScriptedLM(tok.vocab_size, script, fallback, tok.eos_id)
    constraint = BoxConstraint(BoxGrammar(tok.token_texts(), tok.eos_id))
    out = decode(
        lm,
        None,
        lm.logits(),
        SamplingConfig(max_new_tokens=60),
        tok.eos_id,
        constraint=constraint if constrained else None,
    )
    return tok.decode(out), constraint


def test_decoding_through_the_grammar_repairs_the_box(tok) -> None:
    free, _ = _decode(tok, constrained=False)
    boxes, warnings = parse_boxes(free)
    assert not boxes and warnings  # what the model writes on its own does not parse
    text, constraint = _decode(tok, constrained=True)
    boxes, warnings = parse_boxes(text)
    assert len(boxes) == 1 and not warnings, text
    # the comma is restored and the model goes on with its own numbers
    assert text.startswith("[1.6, -1.7,0.7, 0.5,")
    assert constraint.overruled >= 1 and constraint.dead_ends == 0
    assert not constraint.state.inside


def _sample_boxes(tok, bounds: CentreBounds | None, seed: int) -> tuple[list[str], int]:
    """20 boxes opened on random logits and sampled through the grammar (60 tokens at most
    each): the texts of those that closed, and how many tokens the bounds refused."""
    grammar = BoxGrammar(tok.token_texts(), tok.eos_id)
    gen = torch.Generator().manual_seed(seed)
    cfg = SamplingConfig(temperature=1.0, seed=0)
    texts = tok.token_texts()
    closed, held = [], 0
    for _ in range(20):
        constraint = BoxConstraint(grammar, bounds)
        text, constraint.state = "", feed(OUTSIDE, "[")
        for _ in range(60):
            logits = torch.randn(tok.vocab_size, generator=gen)
            t = constraint.check(
                logits, pick_token(logits, cfg, gen), lambda m: pick_token(m, cfg, gen)
            )
            text += texts[t] or ""
            if not constraint.state.inside:
                closed.append("[" + text)
                break
        held += constraint.held_inside
    return closed, held


def test_sampling_through_the_grammar_stays_readable(tok) -> None:
    """Random logits, sampled: every box that closes parses (and most do close)."""
    closed, _ = _sample_boxes(tok, None, seed=0)
    for text in closed:
        boxes, warnings = parse_boxes(text)
        assert len(boxes) == 1 and not warnings, text
    assert len(closed) >= 10


SCENE = CentreBounds((-1.0, 0.5, 0.0), (2.25, 3.0, 1.2))


@pytest.mark.parametrize(
    "text",
    [
        "[-1.0, 0.5, 0.0, 9.9, 9.9, 9.9]",  # extents are not bounded, only the centre
        "[2.25, 3, 1.2, 0.1, 0.1, 0.1]",
        "[0.7, 1.75, 0.333, 1, 1, 1]",
        "[1, 2, 0, 1, 1, 1, 0, 0, 0]",
    ],
)
def test_bounds_keep_centres_inside_the_scene(text: str) -> None:
    assert feed(OUTSIDE, text, SCENE) == OUTSIDE


@pytest.mark.parametrize(
    "text",
    [
        "[-1.001",  # just below x
        "[2.251,",  # just above x
        "[3",  # 3, 3x, 3xx or 3xxx: none within -1.0..2.25
        "[0, 0.4",  # y may no longer reach 0.5
        "[0, 4",
        "[0, 1, -1",  # z ≥ 0
        "[0, 1, 1.3",
        "[0, 1, 1.21,",
    ],
)
def test_bounds_refuse_a_centre_outside_the_scene(text: str) -> None:
    assert feed(OUTSIDE, text) is not None  # the format alone allows it
    assert feed(OUTSIDE, text, SCENE) is None


def test_bounds_allow_every_prefix_that_can_still_land_inside() -> None:
    # "1" may still become 1.xxx (inside x); "-" may become -0.xxx or -1.000
    for text in ["[1", "[-", "[-0.", "[-1", "[-1.00", "[2.2", "[0, 2", "[0, 0.", "[0, 1, 0."]:
        assert feed(OUTSIDE, text, SCENE) is not None, text
    assert feed(OUTSIDE, "[-1.01", SCENE) is None


def test_bounds_around_points_snap_outward_to_the_grid() -> None:
    pts = np.array([[0.12345, 1.0, -2.0], [0.2, np.nan, 0.0], [0.5, 1.5, 0.0004]])
    b = CentreBounds.around(pts)
    assert b.lo == pytest.approx((0.123, 1.0, -2.0)) and b.hi == pytest.approx((0.5, 1.5, 0.001))
    assert CentreBounds.around(np.full((2, 3), np.nan)) is None
    # a single point still leaves a 3-decimal number to write
    one = CentreBounds.around(np.array([[0.4137, 0.4137, 0.4137]]))
    assert feed(OUTSIDE, "[0.414, 0.414, 0.414, 1, 1, 1]", one) == OUTSIDE


def test_sampling_within_bounds_closes_boxes_inside_them(tok) -> None:
    """Random logits, sampled through the grammar with the scene's extent: every closed box's
    centre lies inside it, and the refusals are counted as such."""
    closed, held = _sample_boxes(tok, SCENE, seed=1)
    for text in closed:
        boxes, warnings = parse_boxes(text)
        assert len(boxes) == 1 and not warnings, text
        c = np.asarray(boxes[0].center)
        assert (c >= np.array(SCENE.lo)).all() and (c <= np.array(SCENE.hi)).all(), text
    assert len(closed) >= 10 and held > 0
