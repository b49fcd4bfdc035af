"""Batched generation with the reasoning system prompt, returning text and token counts.

Used by `safeladder generate` and by evaluation. Prompts are left-padded (decoder-only models
continue from the right edge) and generation stops at the tokenizer's EOS (`<|im_end|>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from safeladder.format import SYSTEM_PROMPT, parse_response, render_prompt
from safeladder.models.precision import Precision


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
    """Generate one completion per chat, in order. `on_batch(n)` reports progress.

    Runs on the RL rollout engine (`TransformersEngine`): one decode loop for training and
    evaluation, with finished rows leaving the batch and none of `model.generate`'s per-step
    overhead. Seeded sampling is reproducible; greedy (temperature 0) is deterministic.
    """
    from safeladder.rollout.base import SamplingSettings
    from safeladder.rollout.hf_engine import TransformersEngine

    prompts = [render_prompt(tokenizer, chat, system_prompt) for chat in chats]
    prefixes = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    engine = TransformersEngine(model, tokenizer)
    sampling = SamplingSettings(
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
        n=1, batch_size=settings.batch_size, seed=settings.seed, precision=settings.precision,
    )
    # Batch prompts of similar length together (less padding), then restore the caller's order.
    order = sorted(range(len(prompts)), key=lambda i: len(prefixes[i]))
    restored: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), settings.batch_size):
        chunk = order[start : start + settings.batch_size]
        groups = engine.sample([prefixes[i] for i in chunk], sampling, first_index=start)
        for i, (completion,) in zip(chunk, groups):
            restored[i] = Generation(prompts[i], completion.text.strip(), len(completion.token_ids),
                                     truncated=completion.finish_reason == "length")
        if on_batch:
            on_batch(len(chunk))
    return [g for g in restored if g is not None]
