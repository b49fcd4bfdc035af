"""Turn (chat, completion) pairs into token ids with labels on the assistant's tokens only.

SmolLM2's pad token *is* its EOS (`<|im_end|>`), so masks are built from positions, never by
comparing ids with the pad id: otherwise the EOS the model must learn to emit would be masked.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from safeladder.format import render_prompt

IGNORE = -100


def encode_example(
    tokenizer: Any, chat: Sequence[dict[str, str]], completion: str,
    system_prompt: str | None, max_len: int,
) -> dict[str, list[int]]:
    """Prompt ids (label IGNORE) + completion ids + EOS (labelled). Truncates the completion end."""
    prompt_ids = tokenizer(render_prompt(tokenizer, chat, system_prompt), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    room = max_len - len(prompt_ids)
    if room < 8:
        raise ValueError(f"prompt is {len(prompt_ids)} tokens, too long for max_len={max_len}")
    completion_ids = completion_ids[:room]
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE] * len(prompt_ids) + completion_ids,
    }


def collate(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padded positions get attention 0 and label IGNORE."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)  # (B, T)
    attn = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        attn[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attn}


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over labelled positions, and the number of such positions."""
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    loss_sum = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE, reduction="sum",
    )
    return loss_sum, (shift_labels != IGNORE).sum()
