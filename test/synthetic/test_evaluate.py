"""The synthetic evaluation answers each scene from its own tokens, even when frame ids and poses repeat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llava3d_ros.model.engine as engine_module
from llava3d_ros.model.engine import Engine
from llava3d_ros.synthetic.dataset import DataConfig, sample_from_scene
from llava3d_ros.synthetic.evaluate import score_sample
from llava3d_ros.synthetic.scenes import make_scene, recolored
from llava3d_ros.synthetic.train import TrainConfig, build_model
from llava3d_ros.synthetic.vocab import build_tokenizer


@pytest.fixture
def first_logits(monkeypatch) -> list[torch.Tensor]:
    """The logits each answer's decoding starts from, in call order."""
    seen: list[torch.Tensor] = []
    decode = engine_module.decode

    def spy(lm, cache, logits, *args, **kwargs):
        seen.append(logits.detach().reshape(-1, logits.shape[-1])[-1].clone())
        return decode(lm, cache, logits, *args, **kwargs)

    monkeypatch.setattr(engine_module, "decode", spy)
    return seen


def test_recoloured_room_from_the_same_poses_is_not_answered_from_the_cache(first_logits) -> None:
    data = DataConfig(n_views=2, resolution=56, patch=8, kinds=("color",))
    room = make_scene(3)
    rng = np.random.default_rng(0)
    a, b = (sample_from_scene(recolored(room, rng), data, 7) for _ in range(2))
    assert np.array_equal(a.patch_xyz, b.patch_xyz) and not np.array_equal(a.images, b.images)
    tok = build_tokenizer([t.question for t in a.tasks] + [t.answer for t in a.tasks])
    cfg = TrainConfig(hidden=32, layers=1, heads=2, mm_hidden=16, vision_hidden=16)
    bundle = build_model(cfg, tok, data, "cpu")
    n = len(b.tasks)

    score_sample(Engine(bundle), b, max_new_tokens=1)
    own = first_logits[-n:]
    engine = Engine(bundle)
    score_sample(engine, a, max_new_tokens=1)
    score_sample(engine, b, max_new_tokens=1)
    after_a = first_logits[-n:]
    for x, y in zip(own, after_a, strict=True):
        torch.testing.assert_close(x, y)

    # what the evaluation did before forgetting between scenes: room b read from room a's prefix
    stale = Engine(bundle)
    q = b.tasks[0]
    stale.answer(a.model_views(), q.question, "", list(q.clicks), 1)
    stale.answer(b.model_views(), q.question, "", list(q.clicks), 1)
    assert stale.prefix_hits == 1
    assert not torch.allclose(first_logits[-1], own[0])


def test_cli_views_reach_the_scenes_and_the_report(tmp_path, capsys) -> None:
    import json

    from llava3d_ros.synthetic.evaluate import main

    out, answers = tmp_path / "r.json", tmp_path / "answers.jsonl"
    main(
        ["--seeds", "200000", "--ablations", "none", "--views", "3", "--workers", "1"]
        + ["--clicks", "surface", "--json", str(out), "--answers", str(answers)]
    )
    assert (
        "1 held-out scenes (200000), 3 views, clicks: surface, decoding: box grammar on"
        in capsys.readouterr().out
    )
    questions = json.loads(out.read_text())["none"]["questions"]
    records = [json.loads(line) for line in answers.read_text().splitlines()]
    # "questions" sums the metric entries: a caption scores 2 (name, box parses), a grounding 3
    entries = {"caption": 2, "ground": 3}
    assert questions > 0 and sum(entries.get(r["kind"], 1) for r in records) == questions
    assert {r["ablation"] for r in records} == {"none"} and {r["seed"] for r in records} == {200000}
    assert all(r["truth"] and isinstance(r["answer"], str) for r in records)
    with pytest.raises(SystemExit):
        main(["--seeds", "200000", "--views", "-1"])


class _FixedBoxEngine:
    """Answers every question with one box (and the count text ``count``)."""

    def __init__(self, box: np.ndarray, count: str, overruled: int = 0) -> None:
        self.box, self.count, self.overruled = box, count, overruled

    def forget_scenes(self) -> None:
        pass

    def answer(self, views, question, *_args, **_kwargs):
        from types import SimpleNamespace

        box = SimpleNamespace(center=self.box[:3], size=self.box[3:])
        text = self.count if question.startswith("How many") else "[box]"
        return SimpleNamespace(
            success=True, text=text, boxes=[box], box_tokens_overruled=self.overruled
        )


def test_grounding_diagnostics_say_which_object_a_box_picked_and_how_far_off_it_is() -> None:
    from dataclasses import replace

    from llava3d_ros.synthetic.evaluate import summarise

    data = DataConfig(n_views=2, resolution=56, patch=8, kinds=("ground",))
    full = sample_from_scene(make_scene(3), data, 7)
    task = full.tasks[0]
    sample = replace(full, tasks=[task])  # one grounding question
    other = next(i for i in range(len(sample.boxes)) if i != task.target)

    def scored(box: np.ndarray) -> dict[str, float]:
        return summarise(score_sample(_FixedBoxEngine(box, "1"), sample, 1))

    exact = scored(task.box)
    assert exact["ground_right_object"] == 1.0 and exact["ground_acc50"] == 1.0
    assert exact["ground_centre_err_m"] == 0.0 and exact["ground_size_err_m"] == 0.0
    grown = scored(task.box + np.array([0.3, 0, 0, 0.1, 0, 0.2]))
    assert grown["ground_right_object"] == 1.0
    assert grown["ground_centre_err_m"] == pytest.approx(0.3)
    assert grown["ground_size_err_m"] == pytest.approx(0.1)  # mean of 0.1, 0, 0.2
    wrong = scored(sample.boxes[other])
    assert wrong["ground_right_object"] == 0.0
    distance = np.linalg.norm(sample.boxes[other, :3] - task.box[:3])
    assert wrong["ground_centre_err_m"] == pytest.approx(distance)


def test_caption_box_accuracy_scores_the_box_a_caption_writes() -> None:
    from dataclasses import replace

    from llava3d_ros.synthetic.evaluate import summarise

    data = DataConfig(n_views=2, resolution=56, patch=8, kinds=("caption",))
    full = sample_from_scene(make_scene(3), data, 7)
    task = full.tasks[0]
    sample = replace(full, tasks=[task])
    other = next(i for i in range(len(sample.boxes)) if i != task.target)
    for box, acc, overruled in ((task.box, 1.0, 0), (sample.boxes[other], 0.0, 3)):
        answers: list[dict] = []
        out = summarise(score_sample(_FixedBoxEngine(box, "1", overruled), sample, 1, answers))
        assert out["caption_box_acc25"] == acc and out["parseable_boxes"] == 1.0
        assert out["boxes_enforced"] == float(overruled > 0)  # the grammar's hand is counted
        assert answers[0]["kind"] == "caption" and answers[0]["truth"] == task.answer
        assert answers[0]["overruled"] == overruled
        np.testing.assert_allclose(answers[0]["boxes"][0], box)


def test_count_majority_is_the_commonest_true_counts_share() -> None:
    from llava3d_ros.synthetic.evaluate import DIAGNOSTICS, METRICS, summarise

    totals = {m: [] for m in METRICS + DIAGNOSTICS}
    totals["count"] = [True, False, False, False]
    totals["count_majority"] = ["0", "1", "0", "2"]
    out = summarise(totals)
    assert out["count"] == 0.25 and out["count_majority"] == 0.5
    assert np.isnan(out["ground_centre_err_m"]) and out["questions"] == 4
