"""Policy losses (SPEC §3.4): PPO ratio-clip, CPGD, the CPGD drift term and the k3 KL.

Inputs are per-token tensors of shape (B, T) over completion positions; `mask` is 1 on tokens
the policy wrote (tool output and padding are 0); `advantages` is (B,) per sequence or (B, T).
Each loss returns (scalar loss, metrics). Aggregation turns (B, T) token terms into a scalar.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from safeladder.algorithms.registry import Registry

Aggregation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
AGGREGATIONS: Registry[Aggregation] = Registry("loss aggregation")


@AGGREGATIONS.register("token-mean")
def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over every policy token of the batch: long sequences weigh more (DAPO)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


@AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens within each sequence, then over sequences (GRPO / CPGD)."""
    per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
    has_tokens = (mask.sum(-1) > 0).float()
    return (per_seq * has_tokens).sum() / has_tokens.sum().clamp(min=1)


# (logp, logp_old, advantages, mask, clip_eps, aggregation) -> (loss, metrics)
PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]
POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return advantages[:, None].expand_as(like) if advantages.dim() == 1 else advantages


@POLICY_LOSSES.register("cpgd")
def cpgd_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_eps: float = 0.2, aggregation: Aggregation = seq_mean_token_mean,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CPGD: −agg(logp_clip · A), clipping the log-prob one-sidedly at logp_old ± log(1±ε).

        logp_clip = min(logp, logp_old + log(1+ε))  if A > 0
                    max(logp, logp_old + log(1−ε))  if A ≤ 0

    Inside the trust region the gradient is REINFORCE's (A · ∇logp); beyond the bound on the
    side the advantage pushes towards, logp_clip is the constant bound and the gradient is 0.
    """
    adv = _per_token(advantages, logp)  # (B, T)
    upper = logp_old + math.log(1 + clip_eps)
    lower = logp_old + math.log(1 - clip_eps)
    clipped = torch.where(adv > 0, torch.minimum(logp, upper), torch.maximum(logp, lower))  # (B, T)
    loss = aggregation(-clipped * adv, mask)
    with torch.no_grad():
        was_clipped = ((adv > 0) & (logp > upper)) | ((adv <= 0) & (logp < lower))
        frac = token_mean(was_clipped.float(), mask)
    return loss, {"clip_frac": float(frac)}


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    clip_eps: float = 0.2, aggregation: Aggregation = seq_mean_token_mean,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO / GRPO: −agg(min(r·A, clip(r, 1−ε, 1+ε)·A)) with r = exp(logp − logp_old)."""
    adv = _per_token(advantages, logp)
    ratio = torch.exp(logp - logp_old)
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    loss = aggregation(-torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        frac = token_mean((clipped < unclipped).float(), mask)
    return loss, {"clip_frac": float(frac)}


def cpgd_drift(logp: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation = seq_mean_token_mean) -> torch.Tensor:
    """CPGD policy drift: agg((exp(logp.detach() − logp_old) − 1).clamp(max=2) · logp).

    Its gradient equals that of KL(π_old ‖ π_θ) on sampled tokens (value 0 at π_θ = π_old),
    pulling the policy back when an update drifts far; weight it by α ≈ 0.001–0.01.
    """
    weight = (torch.exp(logp.detach() - logp_old) - 1).clamp(max=2.0)
    return aggregation(weight * logp, mask)


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): exp(q − p) − (q − p) − 1 ≥ 0, with p = logp, q = logp_ref."""
    d = logp_ref - logp
    return torch.exp(d) - d - 1
