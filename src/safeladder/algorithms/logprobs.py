"""Per-token log-probs of completions, the only model call the policy losses need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass
class TokenBatch:
    """Prompt+completion rows, right-padded; completion positions marked by `mask`."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    targets: torch.Tensor  # (B, T) completion tokens (T = longest completion), padded
    mask: torch.Tensor  # (B, T) 1 where a policy token is trained (tool tokens and padding: 0)
    start: torch.Tensor  # (B,) index in input_ids of each row's first completion token


def build_token_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], masks: Sequence[Sequence[int]], pad_id: int
) -> TokenBatch:
    rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
    width = max(len(r) for r in rows)
    t = max(1, max(len(c) for c in completions))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    targets = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.float32)
    for i, (row, c, m) in enumerate(zip(rows, completions, masks)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        targets[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        mask[i, : len(m)] = torch.tensor(list(m), dtype=torch.float32)
    start = torch.tensor([len(p) for p in prompts])
    return TokenBatch(input_ids, attention, targets, mask, start)


def completion_logprobs(
    model: Any, batch: TokenBatch, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(target_t | prefix) for every completion position: (B, T) (and entropy (B, T)).

    Logits are divided by the sampling temperature so the values match the engine's log-probs.
    The LM head runs only from the earliest completion position on (`logits_to_keep`): prompt
    positions never reach the (·, V) projection, which saves ~10% of an RL training pass.
    """
    device = next(model.parameters()).device
    b, t = batch.targets.shape
    first = max(int(batch.start.min()) - 1, 0)  # earliest position whose logits are needed
    keep = batch.input_ids.shape[1] - first
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False,
                logits_to_keep=keep)
    logits = out.logits  # (B, keep, V): positions first .. L-1
    # position start+j−1 predicts completion token j; shift by `first` into the kept window
    idx = (batch.start.to(device)[:, None] - 1 - first + torch.arange(t, device=device)[None, :]).clamp(0, logits.shape[1] - 1)  # (B, T)
    picked = logits[torch.arange(b, device=device)[:, None], idx]  # (B, T, V)
    picked = picked.float() / (temperature if temperature > 0 else 1.0)
    logp_all = torch.log_softmax(picked, dim=-1)
    logp = logp_all.gather(-1, batch.targets.to(device)[:, :, None]).squeeze(-1)  # (B, T)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, T)
    return logp * batch.mask.to(device), entropy
