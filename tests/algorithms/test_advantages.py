"""Advantage estimators and dynamic sampling against hand computations."""

from __future__ import annotations

import pytest
import torch

from safeladder.algorithms.advantages import ADVANTAGES, GroupBatch, apply_transforms, informative_groups
from safeladder.errors import ConfigError


def test_grpo_normalises_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 4.0, 6.0])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    adv = ADVANTAGES.get("grpo")(rewards, group, 0.0)
    # group 0: mean 0.5, std 0.5 → ±1; group 1: mean 4, population std sqrt(8/3)
    s = (8 / 3) ** 0.5
    assert torch.allclose(adv, torch.tensor([1.0, -1.0, 1.0, -1.0, -2 / s, 0.0, 2 / s]), atol=1e-6)


def test_mean_baseline_only_subtracts_the_mean():
    adv = ADVANTAGES.get("mean_baseline")(torch.tensor([3.0, 1.0, 5.0]), torch.tensor([7, 7, 7]), 1e-6)
    assert torch.allclose(adv, torch.tensor([0.0, -2.0, 2.0]))


def test_equal_rewards_give_zero_advantage_and_are_dropped_by_dynamic_sampling():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0])
    group = torch.tensor([0, 0, 1, 1])
    assert torch.equal(ADVANTAGES.get("grpo")(rewards, group, 1e-6)[:2], torch.zeros(2))
    assert informative_groups(rewards, group).tolist() == [False, False, True, True]


def test_unknown_estimator_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="grpo"):
        ADVANTAGES.get("gae")


def test_apply_transforms_runs_estimator_when_no_transforms():
    batch = GroupBatch(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]), torch.tensor([5, 9]), ["math", "math"])
    rewards, adv, metrics = apply_transforms(batch.rewards, batch, "grpo", [], [], eps=0.0)
    assert torch.allclose(adv, torch.tensor([-1.0, 1.0])) and metrics == {}


def test_floor_transform_keeps_only_what_beat_the_group():
    batch = GroupBatch(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0, 0, 0, 0]), torch.tensor([5, 5, 5, 5]),
                       ["math"] * 4)
    _, grpo, _ = apply_transforms(batch.rewards, batch, "grpo", [], [], eps=0.0)
    _, adv, metrics = apply_transforms(batch.rewards, batch, "grpo", [], [{"name": "floor"}], eps=0.0)
    assert torch.equal(adv[2:], grpo[2:]) and torch.equal(adv[:2], torch.zeros(2))
    assert metrics["floor/raised_share"] == 0.5
    _, adv_neg, _ = apply_transforms(batch.rewards, batch, "grpo", [], [{"name": "floor", "value": -0.5}], eps=0.0)
    assert torch.allclose(adv_neg[:2], torch.tensor([-0.5, -0.4472136]), atol=1e-6)
