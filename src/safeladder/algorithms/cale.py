"""Safe-and-efficient RL (SPEC §4): CALE, the conditional length advantage, and DAPO's overlong penalty.

CALE shortens reasoning without teaching the model that short is good in itself: within each
group, only the responses that already meet the objective (reward ≥ τ for their label) compete
on length, standardised among themselves. A short wrong or short unsafe answer is outside that
subset and never gains anything:

    C = { i : R_i ≥ τ(label_i) }
    if |C| ≥ 2:  ℓ_i = (L_i − mean_C L) / (std_C L + ε)          for i in C
                 A_i ← A_i − β · clip(ℓ_i, −c, c)
                 and for i in C with A_i^task > 0: A_i ← max(A_i, δ)

The δ floor stops the length term from turning a good response that beat its group (A^task > 0)
into one the update pushes away from. Groups where every response is good and equally rewarded
have A^task = 0 everywhere: there CALE is the only signal (so dynamic sampling, which drops
equal-reward groups, removes exactly the groups CALE learns most from — keep it off with CALE).

`R_i` is the reward the estimator saw (after reward transforms). To judge "good" on one
verifier's score instead — e.g. when an overlong penalty already lowered long correct answers —
set `component` to that objective's name.

`floor_ties: true` (not in SPEC §4; off by default) extends the δ floor to good responses whose task
advantage is 0 — in practice the groups where every response is good and equally rewarded. There
the SPEC's term pushes the longer half of the good answers *down* (A = −β·ℓ < 0); on a 135M model
such pushes send probability mass to whatever the judges cannot see (bare declines, one reasoning
template for every prompt). With the floor, the shorter good answers are still pulled up and the
longer ones are left alone: the length pressure only ever raises good answers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch

from safeladder.algorithms.advantages import ADVANTAGE_TRANSFORMS, REWARD_TRANSFORMS, GroupBatch
from safeladder.errors import ConfigError


def _thresholds(labels: Sequence[str], thresholds: Mapping[str, float] | None, default: float | None) -> torch.Tensor:
    """τ per sample (N,); NaN where the label has no threshold (such samples are never 'good')."""
    table = dict(thresholds or {})
    return torch.tensor([float(table.get(lab, math.nan if default is None else default)) for lab in labels],
                        dtype=torch.float32)


def good_mask(batch: GroupBatch, thresholds: Mapping[str, float] | None = None,
              default_threshold: float | None = None, component: str | None = None) -> torch.Tensor:
    """bool (N,): responses that meet their label's objective (score ≥ τ; NaN scores never do)."""
    if component is None:
        score = batch.rewards.float()
    elif component in batch.components:
        score = batch.components[component].float()
    else:
        raise ConfigError(f"cale: component {component!r} is not in the batch (components: "
                          f"{', '.join(sorted(batch.components)) or 'none'})")
    tau = _thresholds(batch.labels, thresholds, default_threshold)
    return (score >= tau) & ~torch.isnan(tau) & ~torch.isnan(score)


@ADVANTAGE_TRANSFORMS.register("cale")
def cale(
    adv: torch.Tensor, batch: GroupBatch, *, beta: float = 0.2, clip: float = 2.0, delta: float = 0.0,
    thresholds: Mapping[str, float] | None = None, default_threshold: float | None = None,
    component: str | None = None, floor_ties: bool = False, eps: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, float]]:
    """A_i + A_i^len for the good responses of each group with ≥ 2 of them; others unchanged.

    Options: `beta` (β, scale), `clip` (c, bound of the standardised length), `delta` (δ, floor
    for good responses with positive task advantage), `thresholds` (label → τ), `default_threshold`
    (τ for labels not listed; None: such samples are never good), `component` (judge goodness on
    this objective's score instead of the total reward), `floor_ties` (also floor good responses
    with A^task = 0, so no good response is pushed below δ by its length).
    """
    if beta < 0 or clip <= 0:
        raise ConfigError(f"cale: beta must be >= 0 and clip > 0 (got beta={beta}, clip={clip})")
    if not thresholds and default_threshold is None:
        raise ConfigError("cale: set `thresholds` (label -> minimum reward of a good response) and/or "
                          "`default_threshold`; without them no response counts as good")
    task = adv.float()
    good = good_mask(batch, thresholds, default_threshold, component)
    lengths = batch.lengths.float()
    out = task.clone()
    groups = torch.unique(batch.group)
    applied = floored = 0
    for g in groups.tolist():
        members = torch.nonzero((batch.group == g) & good).squeeze(-1)
        if members.numel() < 2:
            continue
        applied += 1
        L = lengths[members]
        ell = (L - L.mean()) / (L.std(unbiased=False) + eps)
        new = task[members] - beta * ell.clamp(-clip, clip)
        floor = task[members] >= 0 if floor_ties else task[members] > 0
        floored += int((floor & (new < delta)).sum())
        out[members] = torch.where(floor, new.clamp(min=delta), new)
    metrics: dict[str, float] = {
        "cale/applied_share": applied / max(len(groups), 1),
        "cale/good_share": float(good.float().mean()) if len(good) else 0.0,
        "cale/floored": float(floored),
        "cale/mean_abs_length_adv": float((out - task).abs().mean()) if len(out) else 0.0,
    }
    if bool(good.any()):
        metrics["cale/tokens_good"] = float(lengths[good].mean())
    if bool((~good).any()):
        metrics["cale/tokens_other"] = float(lengths[~good].mean())
    return out.to(adv.dtype), metrics


@REWARD_TRANSFORMS.register("overlong")
def overlong(batch: GroupBatch, *, max_len: int, buffer: int, penalty: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """DAPO's soft overlong punishment, added to the reward:

        r_len(L) = 0                          if L ≤ max_len − buffer
                   (max_len − buffer − L) / buffer   inside the buffer (0 → −1)
                   −1                         if L > max_len
        R' = R + penalty · r_len
    """
    if max_len < 1 or not 0 < buffer <= max_len or penalty < 0:
        raise ConfigError(f"overlong: need max_len >= 1, 0 < buffer <= max_len, penalty >= 0 "
                          f"(got max_len={max_len}, buffer={buffer}, penalty={penalty})")
    L = batch.lengths.float()
    r_len = ((max_len - buffer - L) / buffer).clamp(min=-1.0, max=0.0)
    shaped = batch.rewards.float() + penalty * r_len
    metrics = {
        "overlong/penalised_share": float((r_len < 0).float().mean()) if len(L) else 0.0,
        "overlong/mean_penalty": float((penalty * r_len).mean()) if len(L) else 0.0,
    }
    return shaped.to(batch.rewards.dtype), metrics


def length_metrics(completions: Sequence[str], labels: Sequence[str], count_tokens: Any) -> dict[str, float]:
    """Mean reasoning and answer tokens per label: `len/{label}/think_tokens`, `…/answer_tokens`.

    `count_tokens(text) -> int` (e.g. `lambda t: len(tokenizer.encode(t, add_special_tokens=False))`).
    The advantage transform only sees total lengths; this splits them so a run can show *which*
    part shrank (SPEC §4 asks for both).
    """
    from safeladder.format import parse_response

    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # think, answer, count
    for text, label in zip(completions, labels, strict=True):
        parsed = parse_response(text)
        row = sums[label]
        row[0] += count_tokens(parsed.think or "")
        row[1] += count_tokens(parsed.answer)
        row[2] += 1
    out: dict[str, float] = {}
    for label, (think, answer, n) in sorted(sums.items()):
        out[f"len/{label}/think_tokens"] = think / n
        out[f"len/{label}/answer_tokens"] = answer / n
    return out
