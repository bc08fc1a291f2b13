import random
from collections import Counter
from dataclasses import replace

import pytest

from llava3d_ros.synthetic.count_balance import count_weights, rebalance_counts
from llava3d_ros.synthetic.train import draw_tasks, train


def test_weights_undo_the_skew(tiny_scenes):
    samples = tiny_scenes.samples
    freq = Counter(t.answer for s in samples for t in s.tasks if t.kind == "count")
    assert len(freq) >= 2  # the fixture's rooms have at least two different counts
    assert set(count_weights(samples, 0.0).values()) == {1.0}
    flat = count_weights(samples, 1.0)
    shares = {a: flat[a] * n for a, n in freq.items()}  # weight x frequency: all equal
    assert max(shares.values()) == pytest.approx(min(shares.values()))
    assert flat[freq.most_common()[-1][0]] > flat[freq.most_common()[0][0]]
    with pytest.raises(ValueError, match=">= 0"):
        count_weights(samples, -0.5)


def test_rare_counts_are_asked_more_often(tiny_scenes):
    sample, cfg = tiny_scenes.samples[0], replace(tiny_scenes.cfg, questions=1)
    cfg = replace(cfg, focus=("count",), focus_share=1.0)
    answers = Counter(t.answer for t in sample.tasks if t.kind == "count")
    rare, common = answers.most_common()[-1][0], answers.most_common()[0][0]
    weights = {a: 1.0 / n for a, n in answers.items()}  # flat over this scene's answers
    plain, balanced = Counter(), Counter()
    for s in range(600):
        plain[draw_tasks(sample, cfg.kinds, cfg, random.Random(s))[0].answer] += 1
        balanced[draw_tasks(sample, cfg.kinds, cfg, random.Random(s), weights)[0].answer] += 1
    assert balanced[rare] > plain[rare] and balanced[common] < plain[common]
    for a in answers:  # each answer near 1/len(answers) of the draws
        assert abs(balanced[a] / 600 - 1 / len(answers)) < 0.08


def test_only_counting_questions_change_and_stay_distinct(tiny_scenes):
    sample = tiny_scenes.samples[1]
    counts = [t for t in sample.tasks if t.kind == "count"]
    others = [t for t in sample.tasks if t.kind != "count"][:3]
    tasks = [others[0], counts[0], others[1], counts[1], counts[2], others[2]]
    weights = {t.answer: 1.0 for t in counts}
    for s in range(50):
        out = rebalance_counts(tasks, sample, weights, random.Random(s))
        assert [t.kind for t in out] == [t.kind for t in tasks]
        assert [out[i] for i in (0, 2, 5)] == others
        picked = [id(t) for t in out if t.kind == "count"]
        assert len(set(picked)) == 3
    assert rebalance_counts(others, sample, weights, random.Random(0)) == others


def test_train_runs_with_it(tiny_scenes, tmp_path):
    cfg = replace(tiny_scenes.cfg, steps=2, batch=3, count_balance=0.5, focus=("count",))
    _, log = train(replace(cfg, focus_share=1.0), tiny_scenes.samples, tiny_scenes.data, tmp_path)
    assert len(log) == 2
