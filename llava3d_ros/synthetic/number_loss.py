"""The number loss: distance-aware targets for the one-decimal number tokens of box answers.

Plain cross-entropy scores writing 1.2 m for a true 1.3 m as wrong as writing −4.0 m, so a
tiny model learns the 121 number tokens as unrelated symbols and gets no credit for a box that
is nearly right. ``number_loss`` (training only; model and checkpoint unchanged) adds, at every
position whose target is a number token, a cross-entropy against a Gaussian over the number
tokens of the same form (bare, or with the word-start marker), centred on the true value. Its
peak stays on the true token, so greedy decoding still aims at the exact number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llava3d_ros.model.tokenizer import SpTokenizer
from llava3d_ros.synthetic.vocab import WORD_START, number_symbols


@dataclass(frozen=True)
class NumberTable:
    """The tokenizer's number tokens: ids (N,), values (N,) in metres, word-start form (N,),
    and ``index`` (vocab,) mapping a token id to its row here, or −1 for other tokens."""

    ids: torch.Tensor
    values: torch.Tensor
    word_start: torch.Tensor
    index: torch.Tensor


def number_table(tok: SpTokenizer, device: str | torch.device = "cpu") -> NumberTable:
    """Every number symbol the tokenizer holds as one piece (all of them for ``build_tokenizer``)."""
    ids, values, starts = [], [], []
    for piece in number_symbols():
        i = tok.sp.piece_to_id(piece)
        if i == tok.unk_id:
            continue
        ids.append(i)
        values.append(float(piece.removeprefix(WORD_START)))
        starts.append(piece.startswith(WORD_START))
    if not ids:
        raise ValueError("the tokenizer has no one-decimal number tokens")
    index = torch.full((tok.vocab_size,), -1, dtype=torch.long, device=device)
    ids_t = torch.tensor(ids, device=device)
    index[ids_t] = torch.arange(len(ids), device=device)
    return NumberTable(
        ids_t, torch.tensor(values, device=device), torch.tensor(starts, device=device), index
    )


def number_loss(
    logits: torch.Tensor, target: torch.Tensor, table: NumberTable, sigma: float
) -> torch.Tensor:
    """Mean soft cross-entropy over the positions whose target is a number token.

    ``logits`` (B, T, V) predict ``target`` (B, T) (−100 = unsupervised); ``sigma`` (metres)
    is the Gaussian's width: 0.1 puts about 40 % of the target on the true token.
    """
    if sigma <= 0:
        raise ValueError(f"number_sigma must be > 0, got {sigma}")
    row = torch.where(target >= 0, table.index[target.clamp(min=0)], -1)
    keep = row >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    row = row[keep]
    logp = torch.log_softmax(logits[keep].float(), dim=-1)[:, table.ids]  # (M, N)
    gap = table.values[None, :] - table.values[row][:, None]
    same_form = table.word_start[None, :] == table.word_start[row][:, None]
    q = torch.exp(-0.5 * (gap / sigma) ** 2) * same_form
    q = q / q.sum(dim=1, keepdim=True)
    return -(q * logp).sum(dim=1).mean()
