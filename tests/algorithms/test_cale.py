"""CALE (SPEC §4) on hand-made groups, and DAPO's overlong penalty."""

from __future__ import annotations

import pytest
import torch

import safeladder.algorithms.cale  # noqa: F401  (registers "cale" and "overlong")
from safeladder.algorithms.advantages import ADVANTAGE_TRANSFORMS, REWARD_TRANSFORMS, GroupBatch, apply_transforms, grpo_advantages
from safeladder.algorithms.cale import cale, length_metrics, overlong
from safeladder.errors import ConfigError


def batch(rewards, lengths, group=None, labels=None, **kw) -> GroupBatch:
    n = len(rewards)
    return GroupBatch(
        rewards=torch.tensor(rewards, dtype=torch.float32),
        group=torch.tensor(group if group is not None else [0] * n),
        lengths=torch.tensor(lengths, dtype=torch.float32),
        labels=labels or ["math"] * n,
        **kw,
    )


def run(b: GroupBatch, **opts):
    adv = grpo_advantages(b.rewards, b.group)
    out, metrics = cale(adv, b, **opts)
    return adv, out, metrics


def test_registered_under_their_names():
    assert "cale" in ADVANTAGE_TRANSFORMS and "overlong" in REWARD_TRANSFORMS


def test_length_term_only_among_good_and_matches_the_formula():
    # three correct (reward 2) of lengths 10/50/90, two wrong: one very short, one very long
    b = batch([2, 2, 2, 0, 0], [10, 50, 90, 3, 400])
    adv, out, m = run(b, thresholds={"math": 2.0}, beta=0.2, clip=2.0)
    L = torch.tensor([10.0, 50, 90])
    ell = (L - L.mean()) / (L.std(unbiased=False) + 1e-6)
    expected_good = adv[:3] - 0.2 * ell.clamp(-2, 2)
    assert torch.allclose(out[:3], expected_good, atol=1e-6)
    assert torch.equal(out[3:], adv[3:])  # wrong answers: untouched, the 3-token one gains nothing
    assert out[0] > out[1] > out[2]  # shorter good answers are preferred
    assert m["cale/applied_share"] == 1.0
    assert m["cale/tokens_good"] == pytest.approx(50.0) and m["cale/tokens_other"] == pytest.approx(201.5)


def test_short_wrong_answers_never_gain_whatever_their_length():
    base = batch([2, 2, 0, 0], [40, 60, 100, 100])
    _, out_base, _ = run(base, thresholds={"math": 2.0})
    for short in (1, 5, 20):
        b = batch([2, 2, 0, 0], [40, 60, short, short])
        adv, out, _ = run(b, thresholds={"math": 2.0})
        assert torch.equal(out[2:], adv[2:])
        assert torch.allclose(out[:2], out_base[:2])  # lengths of wrong answers never move the good ones
        assert (out[2:] < out[:2].min()).all()  # and every wrong answer stays below every good one


def test_delta_floor_keeps_good_positive_advantages_up():
    # two good answers with a small positive task advantage; β large enough to push the long one negative
    b = batch([2, 2, 0], [10, 1000, 10])
    adv, out, m = run(b, thresholds={"math": 2.0}, beta=1.5, delta=0.0)
    assert adv[1] > 0 and adv[1] - 1.5 < 0  # unfloored, the long good answer would go negative
    assert out[1] == pytest.approx(0.0) and m["cale/floored"] == 1.0
    _, out_d, _ = run(b, thresholds={"math": 2.0}, beta=1.5, delta=0.25)
    assert out_d[1] == pytest.approx(0.25) and (out_d[:2] >= 0.25).all()


def test_floor_ties_never_pushes_an_all_good_group_down():
    # every response good and equally rewarded: A^task = 0, CALE is the only signal
    b = batch([2, 2, 2, 2], [10, 20, 60, 70])
    adv, out, m = run(b, thresholds={"math": 2.0}, beta=1.0)
    assert torch.equal(adv, torch.zeros(4))
    assert (out[2:] < 0).all()  # SPEC form: the longer half is pushed down
    _, tied, mt = run(b, thresholds={"math": 2.0}, beta=1.0, floor_ties=True)
    assert torch.allclose(tied[:2], out[:2])  # the shorter half is pulled up exactly as before
    assert torch.equal(tied[2:], torch.zeros(2)) and mt["cale/floored"] == 2.0
    # a good answer that lost to its group (A^task < 0) keeps the SPEC form
    b2 = batch([2, 2, 3, 3], [10, 90, 50, 50])
    adv2, out2, _ = run(b2, thresholds={"math": 2.0}, beta=1.0, floor_ties=True)
    assert adv2[1] < 0 and out2[1] < adv2[1]


def test_no_op_with_fewer_than_two_good_responses():
    b = batch([2, 0, 0, 1], [10, 20, 30, 40])  # one good (τ 2), one near miss
    adv, out, m = run(b, thresholds={"math": 2.0})
    assert torch.equal(out, adv) and m["cale/applied_share"] == 0.0


def test_all_good_equal_rewards_get_a_pure_length_signal_without_floor():
    b = batch([2, 2, 2, 2], [10, 20, 30, 40])
    adv, out, _ = run(b, thresholds={"math": 2.0}, beta=0.2)
    assert torch.allclose(adv, torch.zeros(4))
    assert out[0] > 0 > out[3] and out.sum().abs() < 1e-5  # zero-sum: standardised within the good set


def test_thresholds_per_label_default_and_groups_are_separate():
    b = batch([1.0, 1.0, 2.0, 2.0, 0.9, 0.9], [10, 90, 10, 90, 10, 90], group=[0, 0, 1, 1, 2, 2],
              labels=["safety", "safety", "math", "math", "other", "other"])
    adv, out, m = run(b, thresholds={"safety": 0.95, "math": 2.0})
    assert torch.equal(out[4:], adv[4:])  # label "other" has no threshold and no default: never good
    assert out[0] > out[1] and out[2] > out[3]
    assert m["cale/applied_share"] == pytest.approx(2 / 3)
    _, out2, m2 = run(b, thresholds={"safety": 0.95, "math": 2.0}, default_threshold=0.5)
    assert out2[4] > out2[5] and m2["cale/applied_share"] == 1.0


def test_goodness_can_come_from_one_component():
    # an overlong penalty lowered the long correct answer's reward below τ; the component still says correct
    comp = {"math": torch.tensor([1.0, 1.0, 0.0])}
    b = batch([2.0, 1.2, 0.0], [10, 300, 10], components=comp)
    _, by_reward, _ = run(b, thresholds={"math": 2.0})
    _, by_comp, m = run(b, thresholds={"math": 1.0}, component="math")
    assert m["cale/applied_share"] == 1.0 and by_comp[0] - by_comp[1] > by_reward[0] - by_reward[1]
    with pytest.raises(ConfigError, match="components: math"):
        run(b, thresholds={"math": 1.0}, component="safety")


def test_needs_a_threshold_and_sane_options():
    b = batch([1, 1], [1, 2])
    with pytest.raises(ConfigError, match="thresholds"):
        run(b)
    with pytest.raises(ConfigError, match="clip"):
        run(b, default_threshold=1.0, clip=0)


def test_through_apply_transforms_with_config_dicts():
    b = batch([2, 2, 0, 2, 2, 0], [10, 50, 5, 70, 30, 5], group=[0, 0, 0, 1, 1, 1])
    rewards, adv, metrics = apply_transforms(
        b.rewards.clone(), b, "grpo", [], [{"name": "cale", "thresholds": {"math": 2.0}, "beta": 0.2}])
    assert adv[0] > adv[1] and adv[4] > adv[3] and "cale/applied_share" in metrics
    assert adv[2] == adv[5]  # the two wrong answers keep the same (task-only) advantage


def test_overlong_penalty_is_dapo_soft_punishment():
    b = batch([1.0] * 5, [50, 80, 90, 100, 150])
    shaped, m = overlong(b, max_len=100, buffer=20, penalty=0.5)
    assert shaped.tolist() == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.5])
    assert m["overlong/penalised_share"] == pytest.approx(0.6)
    with pytest.raises(ConfigError):
        overlong(b, max_len=100, buffer=0)


def test_length_metrics_split_reasoning_and_answer_per_label():
    words = lambda t: len(t.split())  # noqa: E731
    m = length_metrics(["<think>a b c d</think> x y", "<think>a b</think> x y z z", "no tags here"],
                       ["math", "math", "safety"], words)
    assert m["len/math/think_tokens"] == 3 and m["len/math/answer_tokens"] == 3
    assert m["len/safety/think_tokens"] == 0 and m["len/safety/answer_tokens"] == 3
