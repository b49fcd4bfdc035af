"""Turn (chat, completion) pairs into token ids with labels on the assistant's tokens only.

SmolLM2's pad token *is* its EOS (`<|im_end|>`), so masks are built from positions, never by
comparing ids with the pad id: otherwise the EOS the model must learn to emit would be masked.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from safeladder.format import render_prompt

IGNORE = -100


def _segments(completion: str, masked_spans: Sequence[tuple[str, str]]) -> list[tuple[str, bool]]:
    """Split the completion into (text, trained) pieces; `open … close` spans (inclusive) are not trained."""
    out: list[tuple[str, bool]] = []
    rest = completion
    while rest:
        hits = [(rest.find(o), o, c) for o, c in masked_spans if rest.find(o) >= 0]
        if not hits:
            out.append((rest, True))
            break
        start, _, close = min(hits)
        end = rest.find(close, start)
        end = len(rest) if end < 0 else end + len(close)
        # the tool's newlines around its block belong to it, as in a rollout's tool turn
        while start > 0 and rest[start - 1] == "\n":
            start -= 1
        while end < len(rest) and rest[end] == "\n":
            end += 1
        if start:
            out.append((rest[:start], True))
        out.append((rest[start:end], False))
        rest = rest[end:]
    return out


def encode_example(
    tokenizer: Any, chat: Sequence[dict[str, str]], completion: str,
    system_prompt: str | None, max_len: int, masked_spans: Sequence[tuple[str, str]] = (),
) -> dict[str, list[int]]:
    """Prompt ids (label IGNORE) + completion ids + EOS (labelled). Truncates the completion end.

    `masked_spans`: (open, close) markers of tool output inside the completion (e.g.
    `("<information>", "</information>")`): those pieces are tokenized on their own, as a
    multi-turn rollout appends them, and get label IGNORE — context the model reads, never
    text it is trained to write.
    """
    prompt_ids = tokenizer(render_prompt(tokenizer, chat, system_prompt), add_special_tokens=False)["input_ids"]
    completion_ids: list[int] = []
    completion_labels: list[int] = []
    for text, trained in _segments(completion, masked_spans) if masked_spans else [(completion, True)]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        completion_ids += ids
        completion_labels += ids if trained else [IGNORE] * len(ids)
    completion_ids.append(tokenizer.eos_token_id)
    completion_labels.append(tokenizer.eos_token_id)
    room = max_len - len(prompt_ids)
    if room < 8:
        raise ValueError(f"prompt is {len(prompt_ids)} tokens, too long for max_len={max_len}")
    return {
        "input_ids": prompt_ids + completion_ids[:room],
        "labels": [IGNORE] * len(prompt_ids) + completion_labels[:room],
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
