"""Batched generation with the reasoning system prompt, returning text and token counts.

Used by `safeladder generate` and by evaluation. Prompts are left-padded (decoder-only models
continue from the right edge) and generation stops at the tokenizer's EOS (`<|im_end|>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from safeladder.format import SYSTEM_PROMPT, parse_response, render_prompt
from safeladder.models.precision import Precision, autocast


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    batch_size: int = 32
    precision: Precision = "auto"  # bf16 autocast only where the hardware supports it natively
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    prompt: str
    completion: str
    n_tokens: int
    truncated: bool  # hit max_new_tokens without EOS

    @property
    def think(self) -> str | None:
        return parse_response(self.completion).think

    @property
    def answer(self) -> str:
        return parse_response(self.completion).answer


def generate(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Sequence[dict[str, str]]],
    settings: GenerationSettings = GenerationSettings(),
    system_prompt: str | None = SYSTEM_PROMPT,
    on_batch: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Generate one completion per chat, in order. `on_batch(n)` reports progress."""
    import torch

    prompts = [render_prompt(tokenizer, chat, system_prompt) for chat in chats]
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    torch.manual_seed(settings.seed)
    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    # Batch prompts of similar length together (less padding), then restore the caller's order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Generation] = []
    try:
        for start in range(0, len(prompts), settings.batch_size):
            batch = [prompts[i] for i in order[start : start + settings.batch_size]]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            sampling = settings.temperature > 0
            with torch.no_grad(), autocast(model, settings.precision):
                ids = model.generate(
                    **enc, max_new_tokens=settings.max_new_tokens, do_sample=sampling,
                    temperature=settings.temperature if sampling else None,
                    top_p=settings.top_p if sampling else None, top_k=None,
                    eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]  # (B, T_new)
            for prompt, row in zip(batch, new.tolist()):
                n = row.index(eos) + 1 if eos in row else len(row)
                text = tokenizer.decode(row[:n], skip_special_tokens=True)
                out.append(Generation(prompt, text.strip(), n, truncated=eos not in row))
            if on_batch:
                on_batch(len(batch))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    restored: list[Generation] = [out[0]] * len(out)
    for pos, i in enumerate(order):
        restored[i] = out[pos]
    return restored
