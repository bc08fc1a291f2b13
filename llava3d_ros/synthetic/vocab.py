"""An offline sentencepiece tokenizer for the synthetic tasks: one token per one-decimal number."""

from __future__ import annotations

import io
from collections.abc import Iterable

import sentencepiece as spm

from llava3d_ros.model.prompts import SYSTEM
from llava3d_ros.model.tokenizer import SpTokenizer
from llava3d_ros.synthetic.scenes import CATEGORIES, COLORS
from llava3d_ros.synthetic.tasks import format_number

# Coordinates and extents of the generated rooms stay well inside ±6 m.
NUMBER_RANGE = 6.0


def number_symbols(limit: float = NUMBER_RANGE) -> list[str]:
    """Every one-decimal number in [−limit, limit], bare and with the word-start marker."""
    n = round(limit * 10)
    nums = sorted({format_number(i / 10) for i in range(-n, n + 1)})
    return nums + ["\u2581" + x for x in nums]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 800) -> SpTokenizer:
    """A LLaMA-style BPE (ids 0/1/2 = unk/bos/eos, byte fallback) trained on ``texts``.

    Numbers are user-defined symbols so a box costs 6 number tokens, the cheapest form a
    tiny model can learn to copy; the prompt template and all names are in the corpus.
    """
    corpus = [SYSTEM, "USER: ASSISTANT:", *CATEGORIES, *(c + "s" for c in CATEGORIES), *COLORS]
    corpus += sorted(set(texts))
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=out,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        user_defined_symbols=number_symbols(),
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return SpTokenizer(out.getvalue())
