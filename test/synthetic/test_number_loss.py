"""The number loss: every number token mapped, near misses cost less, it trains."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from llava3d_ros.synthetic.number_loss import number_loss, number_table
from llava3d_ros.synthetic.train import train
from llava3d_ros.synthetic.vocab import number_symbols


@pytest.fixture(scope="module")
def table(tiny_scenes):
    return tiny_scenes.bundle.tokenizer, number_table(tiny_scenes.bundle.tokenizer)


def test_every_number_symbol_is_one_token_with_its_value(table):
    tok, t = table
    assert len(t.ids) == len(number_symbols())
    for i, v, start in zip(t.ids.tolist(), t.values.tolist(), t.word_start.tolist(), strict=True):
        piece = tok.sp.id_to_piece(i)
        assert float(piece.removeprefix("\u2581")) == pytest.approx(v)
        assert piece.startswith("\u2581") == start
        assert int(t.index[i]) >= 0
    assert int(t.index[tok.eos_id]) == -1


def _peaked(tok, t, piece: str) -> torch.Tensor:
    logits = torch.zeros(1, 1, tok.vocab_size)
    logits[0, 0, tok.sp.piece_to_id(piece)] = 8.0
    return logits


def test_a_near_miss_costs_less_than_a_far_one(table):
    tok, t = table
    target = torch.tensor([[tok.sp.piece_to_id("\u25811.3")]])
    exact, near, far = (
        float(number_loss(_peaked(tok, t, p), target, t, 0.1))
        for p in ("\u25811.3", "\u25811.2", "\u2581-4.0")
    )
    assert exact < near < far
    # the other form of the same value is no better than a far miss: forms never mix
    other_form = float(number_loss(_peaked(tok, t, "1.3"), target, t, 0.1))
    assert other_form == pytest.approx(far, rel=1e-4)


def test_positions_without_number_targets_give_zero(table):
    tok, t = table
    logits = torch.randn(2, 3, tok.vocab_size, requires_grad=True)
    target = torch.tensor([[-100, tok.eos_id, -100], [-100, -100, tok.bos_id]])
    loss = number_loss(logits, target, t, 0.1)
    assert float(loss.detach()) == 0.0
    loss.backward()  # still part of the graph
    with pytest.raises(ValueError, match="sigma"):
        number_loss(logits, target, t, 0.0)


def test_train_logs_the_number_loss(tiny_scenes):
    samples, cfg0, data = tiny_scenes.samples, tiny_scenes.cfg, tiny_scenes.data
    cfg = replace(cfg0, steps=3, batch=3, number_loss=1.0, kinds=("ground",))
    _, log = train(cfg, samples, data, None, progress=False)
    assert all(np.isfinite(r["number_loss"]) and r["number_loss"] > 0 for r in log)
