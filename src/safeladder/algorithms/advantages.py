"""Rewards → advantages (SPEC §3.4), and transforms applied on top (CALE, constraints).

Everything works on flat tensors of N = groups × G samples with a `group` id per sample, so
groups of unequal size (after dynamic sampling or failed samples) need no special case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from safeladder.algorithms.registry import Registry

# (rewards (N,), group (N,) long, eps) -> advantages (N,)
AdvantageEstimator = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
ADVANTAGES: Registry[AdvantageEstimator] = Registry("advantage estimator")


def group_mean_std(values: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and (population) std of its group. values (N,), group (N,) → (N,), (N,)."""
    _, inverse, counts = torch.unique(group, return_inverse=True, return_counts=True)
    values = values.double()
    sums = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, values)
    means = sums / counts
    sq = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, (values - means[inverse]) ** 2)
    std = (sq / counts).sqrt()
    return means[inverse].float(), std[inverse].float()


@ADVANTAGES.register("grpo")
def grpo_advantages(rewards: torch.Tensor, group: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """A_i = (R_i − mean_g R) / (std_g R + ε): group-normalised (GRPO)."""
    mean, std = group_mean_std(rewards, group)
    return (rewards - mean) / (std + eps)


@ADVANTAGES.register("mean_baseline")
def mean_baseline_advantages(rewards: torch.Tensor, group: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """A_i = R_i − mean_g R: REINFORCE with the group mean as baseline (no std scaling)."""
    mean, _ = group_mean_std(rewards, group)
    return rewards - mean


def informative_groups(rewards: torch.Tensor, group: torch.Tensor, tol: float = 1e-8) -> torch.Tensor:
    """Dynamic sampling: bool (N,) — False for samples whose whole group has equal rewards.

    Such groups have zero advantage everywhere and only dilute the batch.
    """
    _, std = group_mean_std(rewards, group)
    return std > tol


@dataclass
class GroupBatch:
    """What advantage transforms may look at, one entry per sample (N,)."""

    rewards: torch.Tensor  # (N,) total reward
    group: torch.Tensor  # (N,) group id
    lengths: torch.Tensor  # (N,) model tokens of the completion
    labels: list[str]  # recipe label per sample
    components: dict[str, torch.Tensor] = field(default_factory=dict)  # objective -> (N,), NaN = n/a
    state: dict[str, Any] = field(default_factory=dict)  # persistent algorithm state (e.g. λ), checkpointed


# (advantages (N,), batch, options) -> (advantages (N,), metrics)
AdvantageTransform = Callable[..., tuple[torch.Tensor, dict[str, float]]]
_BUILTIN = ("safeladder.algorithms.cale", "safeladder.algorithms.constraints")
ADVANTAGE_TRANSFORMS: Registry[AdvantageTransform] = Registry("advantage transform", _BUILTIN)


@ADVANTAGE_TRANSFORMS.register("floor")
def floor_advantages(adv: torch.Tensor, batch: GroupBatch, *, value: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """A_i ← max(A_i, value). With 0: learn only from samples that beat their group (online
    rejection-sampling fine-tuning). Negative advantages push probability to outputs the batch
    never showed; on a small policy judged by weak verifiers that mass can land on what the
    verifiers cannot see, while a floor only reinforces answers that were sampled and judged.
    Samples left at 0 cost no training compute (they carry no gradient)."""
    out = adv.clamp(min=value)
    return out, {"floor/raised_share": float((adv < value).float().mean()) if len(adv) else 0.0}


# (batch, options) -> (rewards (N,), metrics): reward shaping before the estimator (e.g. a
# Lagrangian penalty −λ·cost, an overlong penalty). May read and update `batch.state`.
RewardTransform = Callable[..., tuple[torch.Tensor, dict[str, float]]]
REWARD_TRANSFORMS: Registry[RewardTransform] = Registry("reward transform", _BUILTIN)


def apply_transforms(
    rewards: torch.Tensor, batch: GroupBatch, estimator: str, reward_transforms: list[dict[str, Any]],
    advantage_transforms: list[dict[str, Any]], eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Shaped rewards and final advantages for a batch; each transform is {"name": …, **options}.

    Order: reward transforms (in config order) → estimator → advantage transforms.
    """
    metrics: dict[str, float] = {}
    for spec in reward_transforms:
        opts = {k: v for k, v in spec.items() if k != "name"}
        batch.rewards = rewards
        rewards, m = REWARD_TRANSFORMS.get(spec["name"])(batch, **opts)
        metrics.update(m)
    batch.rewards = rewards
    adv = ADVANTAGES.get(estimator)(rewards, batch.group, eps)
    for spec in advantage_transforms:
        opts = {k: v for k, v in spec.items() if k != "name"}
        adv, m = ADVANTAGE_TRANSFORMS.get(spec["name"])(adv, batch, **opts)
        metrics.update(m)
    return rewards, adv, metrics
