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
    shared_prompt: bool = False  # every row continues one prompt: it runs once and its cache is shared

    @property
    def computed_tokens(self) -> int:
        """Tokens the model actually runs (a shared prompt counts once)."""
        total = int(self.attention_mask.sum())
        if self.shared_prompt:
            total -= int(self.start[0]) * (self.input_ids.shape[0] - 1)
        return total


def build_token_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], masks: Sequence[Sequence[int]], pad_id: int,
    share_prompt: bool = False,
) -> TokenBatch:
    """`share_prompt`: when every row has the same prompt (a GRPO group), run it once (exact)."""
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
    shared = share_prompt and len(rows) > 1 and all(list(p) == list(prompts[0]) for p in prompts[1:])
    return TokenBatch(input_ids, attention, targets, mask, start, shared)


def _picked(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
            with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each row's target under logits/T: (N, V), (N,) -> (N,) (and entropy (N,))."""
    logp_all = torch.log_softmax(logits.float() / (temperature if temperature > 0 else 1.0), dim=-1)  # (N, V)
    picked = logp_all.gather(-1, targets[:, None]).squeeze(-1)  # (N,)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # (N,)
    return picked, entropy


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
    targets = batch.targets.to(device)  # (B, T)
    shareable = batch.shared_prompt and batch.input_ids.shape[1] == int(batch.start[0]) + t
    if shareable and not getattr(model, "is_activation_checkpointing", False):
        return _shared_prompt_logprobs(model, batch, trained, targets, temperature, with_entropy)
    # completion token j of row i is predicted at position start_i + j − 1
    pos = batch.start.to(device)[:, None] - 1 + torch.arange(t, device=device)[None, :]  # (B, T)
    keep = torch.zeros(batch.input_ids.shape, dtype=torch.bool, device=device)  # (B, L)
    keep[torch.arange(b, device=device)[:, None].expand(b, t)[trained], pos[trained]] = True
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False,
                logits_to_keep=keep)
    # (N, V), rows in (i, j) order, as `trained` is read
    picked, ent = _picked(out.logits.reshape(-1, out.logits.shape[-1]), targets[trained], temperature, with_entropy)
    logp = torch.zeros((b, t), dtype=picked.dtype, device=device).masked_scatter(trained, picked)  # (B, T)
    entropy = None if ent is None else torch.zeros((b, t), dtype=ent.dtype, device=device).masked_scatter(trained, ent)
    return logp, entropy


def _shared_prompt_logprobs(model: Any, batch: TokenBatch, trained: torch.Tensor, targets: torch.Tensor,
                            temperature: float, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows share one prompt of P tokens: run it once, repeat its KV cache over the B rows
    (gradients from every row flow back into it), then run the completions on top. In a GRPO
    micro-batch of one group this saves (B − 1)·P tokens of forward and backward."""
    device = trained.device
    b, t = targets.shape
    p = int(batch.start[0])
    prompt_out = model(input_ids=batch.input_ids[:1, :p].to(device), use_cache=True, logits_to_keep=1)
    cache = prompt_out.cache
    cache.batch_repeat_interleave(b)
    # completion token j ≥ 1 is predicted at completion position j − 1; token 0 by the prompt's last position
    keep = torch.zeros((b, t), dtype=torch.bool, device=device)  # (B, T)
    keep[:, :-1] = trained[:, 1:]
    out = model(input_ids=batch.input_ids[:, p:].to(device), attention_mask=batch.attention_mask.to(device),
                position_ids=(p + torch.arange(t, device=device))[None].expand(b, t), cache=cache, use_cache=True,
                logits_to_keep=keep)
    first, rest = trained.clone(), trained.clone()  # (B, T)
    first[:, 1:], rest[:, 0] = False, False
    head = prompt_out.logits[:, -1, :].expand(int(first.sum()), -1)  # (N0, V): one row, shared
    p0, e0 = _picked(head, targets[first], temperature, with_entropy)
    pr, er = _picked(out.logits.reshape(-1, out.logits.shape[-1]), targets[rest], temperature, with_entropy)
    logp = torch.zeros((b, t), dtype=pr.dtype, device=device).masked_scatter(first, p0).masked_scatter(rest, pr)
    entropy = None
    if with_entropy:
        entropy = torch.zeros((b, t), dtype=er.dtype, device=device).masked_scatter(first, e0).masked_scatter(rest, er)
    return logp, entropy
