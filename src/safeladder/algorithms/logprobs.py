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
    The LM head runs only at the positions whose next token is trained (a boolean
    `logits_to_keep`): prompt, padding and tool positions never reach the (·, V) projection or
    the softmax. In an RL batch those are about a third of the window after the first completion
    token (rows end at different lengths), and the head is a fifth of SmolLM2's FLOPs per token.
    Untrained positions get log-prob 0 and entropy 0.
    """
    device = next(model.parameters()).device
    b, t = batch.targets.shape
    if bool((batch.start < 1).any()):
        raise ValueError("every row needs at least one prompt token before its completion")
    trained = batch.mask.to(device) > 0  # (B, T)
    # completion token j of row i is predicted at position start_i + j − 1
    pos = batch.start.to(device)[:, None] - 1 + torch.arange(t, device=device)[None, :]  # (B, T)
    keep = torch.zeros(batch.input_ids.shape, dtype=torch.bool, device=device)  # (B, L)
    keep[torch.arange(b, device=device)[:, None].expand(b, t)[trained], pos[trained]] = True
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False,
                logits_to_keep=keep)
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float() / (temperature if temperature > 0 else 1.0)  # (N, V)
    logp_all = torch.log_softmax(logits, dim=-1)  # (N, V), rows in (i, j) order, as `trained` is read
    picked = logp_all.gather(-1, batch.targets.to(device)[trained][:, None]).squeeze(-1)  # (N,)
    logp = torch.zeros((b, t), dtype=picked.dtype, device=device).masked_scatter(trained, picked)  # (B, T)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            ent = -(logp_all.exp() * logp_all).sum(-1)  # (N,)
            entropy = torch.zeros((b, t), dtype=ent.dtype, device=device).masked_scatter(trained, ent)
    return logp, entropy
