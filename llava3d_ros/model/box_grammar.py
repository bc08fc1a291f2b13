"""Box-constrained decoding: once the model opens ``[``, only tokens that keep it a box may follow.

The released model writes boxes as ``[cx, cy, cz, dx, dy, dz]`` (optionally + 3 angles) inside
free text. A dropped comma or a stray word inside the brackets makes the box unreadable. With
the grammar on, text outside brackets stays free; inside, a token is allowed only if the
bracket can still become a box that ``answers.parse_boxes`` reads, in the layout the model
writes: 6 or 9 numbers separated by ``, ``, positive extents, and EOS only outside a box.
Numbers are bounded (4 integer and 3 decimal digits), so every box closes within a bounded
number of characters.

Written by hand rather than with a structured-generation library (outlines,
lm-format-enforcer): those constrain the whole answer to one regex or schema and bring
their own tokenizer adapters, while we constrain only bracket groups inside free text, inside
our own KV-cache loop, with one semantic rule (positive extents) that a regex states only
awkwardly. The automaton mirrors the parser it serves and fits in this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

_DIGITS = frozenset("0123456789")
_BOX_CHARS = _DIGITS | frozenset("-., ]")
_PARTIAL_NUMBER = re.compile(r"-?\d{0,4}(\.\d{0,3})?")
_NUMBER = re.compile(r"-?\d{1,4}(\.\d{1,3})?")
_EXTENTS = range(3, 6)  # value positions that must be > 0


@dataclass(frozen=True)
class BoxState:
    """Where the text stands: outside a box, or inside one after ``count`` complete numbers."""

    inside: bool = False
    count: int = 0
    number: str = ""  # the number being written
    spaced: bool = False  # a space followed the last comma


def feed(state: BoxState, text: str) -> BoxState | None:
    """The state after ``text``, or None if ``text`` cannot continue a box from ``state``.

    Boxes are held to the released model's own layout, ``[n, n, n, n, n, n]``: a number ends
    only at ``,`` or ``]``, and a space may follow a comma (once), nowhere else. Keeping the
    model on text it was trained on lets it go on with its own numbers after a repair (with
    a space allowed before the comma, a model that dropped the comma writes ``-1.7 ,`` and
    then loses its place).
    """
    s = state
    for c in text:
        if not s.inside:
            if c == "[":
                s = BoxState(inside=True)
            continue
        if c == " ":
            if s.count == 0 or s.number or s.spaced:
                return None
            s = replace(s, spaced=True)
        elif c in _DIGITS or c in "-.":
            number = s.number + c
            if not _PARTIAL_NUMBER.fullmatch(number) or (c == "-" and s.count in _EXTENTS):
                return None
            if c == "." and not number.rstrip(".").lstrip("-"):
                return None  # a number starts with a digit
            decimals = number.partition(".")[2]
            if s.count in _EXTENTS and len(decimals) == 3 and float(number) == 0:
                return None  # an extent of 0.000 could never become positive
            s = replace(s, number=number)
        elif c in ",]":
            if not _complete(s.number, s.count):
                return None
            count = s.count + 1
            if c == ",":
                if count >= 9:
                    return None
                s = BoxState(inside=True, count=count)
            else:
                if count not in (6, 9):
                    return None
                s = BoxState()
        else:
            return None
    return s


def _complete(number: str, index: int) -> bool:
    """``number`` can end here as the box's ``index``-th value."""
    if not _NUMBER.fullmatch(number):
        return False
    return index not in _EXTENTS or float(number) > 0


class BoxGrammar:
    """Per-tokenizer tables for box-constrained decoding (build once per model)."""

    def __init__(self, token_texts: list[str | None], eos_id: int) -> None:
        """``token_texts[i]``: the characters token ``i`` adds to the answer (None: control
        tokens and partial UTF-8 bytes, never allowed inside a box)."""
        self.texts = token_texts
        self.eos_id = eos_id
        # tokens that can appear inside a box: box characters only, or a ']' closing it
        self.box_candidates = [
            i for i, t in enumerate(token_texts) if t and (set(t) <= _BOX_CHARS or "]" in t)
        ]

    def step(self, state: BoxState, token: int) -> BoxState | None:
        """The state after ``token``, or None if the grammar forbids it here."""
        if token == self.eos_id:
            return None if state.inside else state
        text = self.texts[token] if 0 <= token < len(self.texts) else None
        if text is None:
            return None if state.inside else state
        return feed(state, text)

    def allowed(self, state: BoxState, vocab: int, device: torch.device) -> torch.Tensor:
        """Boolean mask over ``vocab`` logits of the tokens allowed after ``state``."""
        mask = torch.zeros(vocab, dtype=torch.bool)
        if state.inside:
            ids = [
                i
                for i in self.box_candidates
                if i < vocab and feed(state, self.texts[i]) is not None
            ]
        else:
            ids = [i for i in range(min(vocab, len(self.texts))) if self.step(state, i) is not None]
            mask[len(self.texts) :] = True
            if self.eos_id < vocab:
                ids.append(self.eos_id)
        mask[ids] = True
        return mask.to(device)


class BoxConstraint:
    """One answer's walk through the grammar, counting the tokens it overruled."""

    def __init__(self, grammar: BoxGrammar) -> None:
        self.grammar = grammar
        self.state = BoxState()
        self.overruled = 0  # tokens the model chose that the grammar replaced
        self.dead_ends = 0  # boxes left unconstrained because no token could continue them

    def check(self, logits: torch.Tensor, token: int, repick: Callable[[torch.Tensor], int]) -> int:
        """``token`` if the grammar allows it, else ``repick`` over the allowed tokens only.

        Greedy: the argmax of the masked logits. Sampled: a refused draw followed by a draw
        from the masked distribution gives exactly the masked distribution (top_p aside), so
        the mask is built only when the model's own token is refused (rare; cheap otherwise).
        """
        nxt = self.grammar.step(self.state, token)
        if nxt is None:
            mask = self.grammar.allowed(self.state, logits.shape[-1], logits.device)
            if mask.any():
                token = repick(logits.masked_fill(~mask, float("-inf")))
                nxt = self.grammar.step(self.state, token)
                self.overruled += 1
            else:  # a vocabulary that cannot finish the box: let the model go on unconstrained
                self.dead_ends += 1
                nxt = BoxState()
        self.state = nxt if nxt is not None else BoxState()
        return token
