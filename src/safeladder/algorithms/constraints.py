"""Constraints with a Lagrange multiplier (SPEC §5): maximise reward subject to E[cost] ≤ δ.

One generic dual variable per constraint, updated once per RL step by projected gradient ascent:

    λ ← max(0, λ + η · (mean_batch cost − δ))

λ grows while the constraint is violated and decays back to 0 once it holds. The multiplier
lives in `batch.state[f"lagrange/{name}"]` (plain floats, so the RL loop checkpoints and logs
it with the rest of the algorithm state). Two ways to use it:

- reward transform "lagrangian_penalty":  R' = R − λ · cost   (Deliberative Search: cost =
  false_certain, so R = r_format + c − λ·f);
- advantage transform "safe_rlhf_constraint":  A = (A_r − λ · A_c) / (1 + λ), A_c the
  group-normalised cost (safe-RLHF's "safety as a constraint", any verifier as the cost).

Each step uses the λ of the start of the step, then updates it with this step's cost (the
usual primal-dual order). If the loop sets `batch.state["step"]`, a second call within the same
step reuses λ without updating it again, so micro-batching cannot double the dual step.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from safeladder.algorithms.advantages import ADVANTAGE_TRANSFORMS, REWARD_TRANSFORMS, GroupBatch
from safeladder.errors import ConfigError

STATE_PREFIX = "lagrange/"


def cost_of(batch: GroupBatch, cost: str, who: str) -> torch.Tensor:
    """The cost component (N,), NaN where it did not apply; a ConfigError naming what exists."""
    if cost not in batch.components:
        raise ConfigError(f"{who}: cost component {cost!r} is not in the batch (components: "
                          f"{', '.join(sorted(batch.components)) or 'none'}); list its verifier in the "
                          "label's recipe (weight 0 computes it without adding it to the reward)")
    return batch.components[cost].float()


def dual_step(
    state: dict[str, Any], name: str, cost_mean: float, *, lr: float, target: float,
    init: float = 0.0, max_lambda: float | None = None,
) -> tuple[float, dict[str, float]]:
    """Return λ for this step and advance the stored λ once: max(0, λ + lr·(cost_mean − target)).

    A NaN `cost_mean` (no sample carried the cost) leaves λ unchanged.
    """
    if lr < 0 or init < 0 or (max_lambda is not None and max_lambda < 0):
        raise ConfigError(f"constraint {name!r}: lr, init and max_lambda must be >= 0")
    key = STATE_PREFIX + name
    slot = state.setdefault(key, {"lambda": float(init), "updates": 0, "last_step": None})
    lam = float(slot["lambda"])
    step = state.get("step")
    already = step is not None and slot.get("last_step") == step
    if not already and not math.isnan(cost_mean):
        new = max(0.0, lam + lr * (cost_mean - target))
        if max_lambda is not None:
            new = min(new, max_lambda)
        slot.update({"lambda": new, "updates": int(slot["updates"]) + 1, "last_step": step})
    metrics = {
        f"{key}/lambda": lam,
        f"{key}/lambda_next": float(slot["lambda"]),
        f"{key}/target": float(target),
    }
    if not math.isnan(cost_mean):
        metrics[f"{key}/cost_mean"] = cost_mean
        metrics[f"{key}/violation"] = cost_mean - target
    return lam, metrics


def _nanmean(x: torch.Tensor) -> float:
    ok = ~torch.isnan(x)
    return float(x[ok].mean()) if bool(ok.any()) else math.nan


@REWARD_TRANSFORMS.register("lagrangian_penalty")
def lagrangian_penalty(
    batch: GroupBatch, *, cost: str, name: str | None = None, lr: float = 0.05, target: float = 0.05,
    init: float = 0.0, max_lambda: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """R' = R − λ·cost (cost NaN → 0), then the dual step. Defaults: η 0.05, δ 0.05, λ₀ 0 (SPEC §5)."""
    c = cost_of(batch, cost, "lagrangian_penalty")
    lam, metrics = dual_step(batch.state, name or cost, _nanmean(c), lr=lr, target=target, init=init,
                             max_lambda=max_lambda)
    shaped = batch.rewards.float() - lam * torch.nan_to_num(c, nan=0.0)
    return shaped.to(batch.rewards.dtype), metrics


def group_normalise(values: torch.Tensor, group: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(x − mean_g x) / (std_g x + ε) over each group's non-NaN entries; NaN entries map to 0."""
    out = torch.zeros_like(values, dtype=torch.float32)
    ok = ~torch.isnan(values)
    for g in torch.unique(group).tolist():
        idx = torch.nonzero((group == g) & ok).squeeze(-1)
        if idx.numel():
            x = values[idx].float()
            out[idx] = (x - x.mean()) / (x.std(unbiased=False) + eps)
    return out


@ADVANTAGE_TRANSFORMS.register("safe_rlhf_constraint")
def safe_rlhf_constraint(
    adv: torch.Tensor, batch: GroupBatch, *, cost: str, name: str | None = None, lr: float = 0.05,
    target: float = 0.05, init: float = 0.0, max_lambda: float | None = None, scope: str = "all",
    eps: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, float]]:
    """A = (A_r − λ·A_c) / (1 + λ) with A_c the group-normalised cost; then the dual step.

    `scope: all` (safe-RLHF, where every sample has a cost) rescales every sample. `scope:
    applicable` leaves the samples whose cost is NaN (a verifier routed to other labels) at A_r.
    With a cost that only some labels carry, `all` divides the other labels' advantages by 1 + λ
    too: with a scale-free optimiser (Adam) that weights them 1/(1 + λ) against the labels that
    carry the cost, and it shrinks any length term added before it. Which is better is an
    empirical question (benchmarks/RESULTS.md, session 21: `all` was safer for M³-RL).
    """
    if scope not in ("all", "applicable"):
        raise ConfigError(f"safe_rlhf_constraint: scope must be 'all' or 'applicable' (got {scope!r})")
    c = cost_of(batch, cost, "safe_rlhf_constraint")
    lam, metrics = dual_step(batch.state, name or cost, _nanmean(c), lr=lr, target=target, init=init,
                             max_lambda=max_lambda)
    a_c = group_normalise(c, batch.group, eps)
    out = (adv.float() - lam * a_c) / (1.0 + lam)
    if scope == "applicable":
        out = torch.where(torch.isnan(c), adv.float(), out)
    return out.to(adv.dtype), metrics


def multipliers(state: dict[str, Any]) -> dict[str, float]:
    """Every constraint's current λ, for logs and reports: {name: λ}."""
    return {k[len(STATE_PREFIX):]: float(v["lambda"]) for k, v in state.items()
            if k.startswith(STATE_PREFIX) and isinstance(v, dict) and "lambda" in v}
