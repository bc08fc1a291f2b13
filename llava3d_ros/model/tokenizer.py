"""The slow (sentencepiece) LLaMA tokenizer the release uses, read from ``tokenizer.model``.

transformers 5 replaced its sentencepiece ``LlamaTokenizer`` with a converted BPE backend;
upstream tokenised with the sentencepiece model itself, so we wrap sentencepiece directly.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm

from llava3d_ros.model.config import ConfigError, read_json


class SpTokenizer:
    """``encode`` = what ``tokenizer(text).input_ids`` gave upstream (BOS first, no EOS)."""

    def __init__(self, model_proto: bytes, add_bos: bool = True) -> None:
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as exc:
            raise ConfigError(f"cannot load sentencepiece model: {exc}") from exc
        self.model_proto = model_proto
        self.add_bos = add_bos
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.unk_id = self.sp.unk_id()
        self._texts: list[str | None] | None = None  # token_texts, built on first use

    @classmethod
    def from_dir(cls, model_dir: Path) -> SpTokenizer:
        """Load ``tokenizer.model`` (+ ``add_bos_token`` from ``tokenizer_config.json`` if present)."""
        path = model_dir / "tokenizer.model"
        if not path.is_file():
            raise ConfigError(
                f"missing tokenizer file {path} (the slow LLaMA tokenizer is required)"
            )
        cfg_path = model_dir / "tokenizer_config.json"
        add_bos = (
            bool(read_json(cfg_path).get("add_bos_token", True)) if cfg_path.is_file() else True
        )
        return cls(path.read_bytes(), add_bos=add_bos)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def token_texts(self) -> list[str | None]:
        """What each id adds to decoded text: ``▁`` → space, byte pieces → their ASCII
        character; control, unknown and non-ASCII byte pieces → None. Built once: every
        engine on this tokenizer (one per ablation in ``eval-synthetic``) shares the list."""
        if self._texts is None:
            self._texts = self._build_token_texts()
        return self._texts

    def _build_token_texts(self) -> list[str | None]:
        sp = self.sp
        texts: list[str | None] = []
        for i in range(sp.get_piece_size()):
            piece = sp.id_to_piece(i)
            if sp.is_control(i) or sp.is_unknown(i):
                texts.append(None)
            elif sp.is_byte(i):
                value = int(piece[3:-1], 16)  # "<0x2C>"
                texts.append(chr(value) if value < 128 else None)
            else:
                texts.append(piece.replace("\u2581", " "))
        return texts

    def encode(self, text: str) -> list[int]:
        ids = self.sp.encode(text)
        return [self.bos_id, *ids] if self.add_bos else ids

    def decode(self, ids: list[int]) -> str:
        # sentencepiece rejects ids it does not know; the LM head may be wider than the vocab
        n = self.vocab_size
        return self.sp.decode(
            [i for i in ids if 0 <= i < n and i not in (self.bos_id, self.eos_id)]
        )


def train_sentencepiece(lines: Iterable[str], vocab_size: int, **options: Any) -> bytes:
    """Train a LLaMA-style sentencepiece BPE in-process: byte fallback, split digits, ids
    0/1/2 = unk/bos/eos, no pad; ``options`` add or override trainer settings."""
    out = io.BytesIO()
    settings: dict[str, Any] = {
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "hard_vocab_limit": False,
        "byte_fallback": True,
        "character_coverage": 1.0,
        "split_digits": True,
        "add_dummy_prefix": True,
        "remove_extra_whitespaces": False,
        "normalization_rule_name": "identity",
        "unk_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": -1,
        "num_threads": 1,
        "minloglevel": 2,
    }
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, **{**settings, **options}
    )
    return out.getvalue()
