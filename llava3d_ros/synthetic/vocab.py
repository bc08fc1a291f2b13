"""An offline sentencepiece tokenizer for the synthetic tasks: one token per one-decimal number."""

from __future__ import annotations

from collections.abc import Iterable

from llava3d_ros.model.prompts import SYSTEM
from llava3d_ros.model.tokenizer import SpTokenizer, train_sentencepiece
from llava3d_ros.synthetic.scenes import CATEGORIES, COLORS
from llava3d_ros.synthetic.tasks import format_number

# Coordinates and extents of the generated rooms stay well inside ±6 m.
NUMBER_RANGE = 6.0
WORD_START = "\u2581"  # sentencepiece's marker of a piece that starts a word


def number_symbols(limit: float = NUMBER_RANGE) -> list[str]:
    """Every one-decimal number in [−limit, limit], bare and with the word-start marker."""
    n = round(limit * 10)
    nums = sorted({format_number(i / 10) for i in range(-n, n + 1)})
    return nums + [WORD_START + x for x in nums]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 800) -> SpTokenizer:
    """A LLaMA-style BPE (ids 0/1/2 = unk/bos/eos, byte fallback) trained on ``texts``.

    Numbers are user-defined symbols so a box costs 6 number tokens, the cheapest form a
    tiny model can learn to copy; the prompt template and all names are in the corpus.
    """
    corpus = [SYSTEM, "USER: ASSISTANT:", *CATEGORIES, *(c + "s" for c in CATEGORIES), *COLORS]
    corpus += sorted(set(texts))
    return SpTokenizer(
        train_sentencepiece(corpus, vocab_size, user_defined_symbols=number_symbols())
    )
