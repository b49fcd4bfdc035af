"""Turn prompts into RL rollouts: n samples per prompt, optionally with tool turns in between.

Single-turn: one `engine.sample` call with n samples per prompt. Multi-turn (SPEC §5): the
model's text may end in a stop string that an `Environment` answers (e.g. `</search>` answered
by `<information>…</information>`); the answer is appended to the rollout with loss mask 0 and
log-prob 0 — context, never trained on — and the model continues from the longer prefix in
the same assistant turn, until it ends its answer, runs out of tokens or of turns.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol, Sequence

from safeladder.rollout.base import Rollout, RolloutEngine, SamplingSettings


class Environment(Protocol):
    """Answers the model between turns."""

    stop: tuple[str, ...]  # strings that hand control to the environment

    def respond(self, prompt_index: int, text_so_far: str, rollout_info: dict[str, Any]) -> str | None:
        """Text to append after the model's turn (tool output), or None to end the rollout."""
        ...


def rollout(
    engine: RolloutEngine,
    prompt_ids: Sequence[Sequence[int]],
    settings: SamplingSettings,
    env: Environment | None = None,
    max_turns: int = 4,
    max_tool_tokens: int = 512,
) -> list[Rollout]:
    """G = settings.n rollouts per prompt, ordered prompt-major (group g = rows g·G … g·G+G−1).

    `settings.max_new_tokens` bounds the model tokens of each whole rollout across its turns;
    `max_tool_tokens` bounds each tool answer (it is truncated, not dropped).
    """
    stop = tuple(settings.stop) + (tuple(env.stop) if env is not None else ())
    first = engine.sample(prompt_ids, replace(settings, stop=stop))
    rollouts: list[Rollout] = []
    for g, samples in enumerate(first):
        for k, c in enumerate(samples):
            rollouts.append(Rollout(
                prompt_index=g, sample_index=k, prompt_ids=list(prompt_ids[g]),
                completion_ids=list(c.token_ids), logprobs=list(c.logprobs), mask=[1] * len(c.token_ids),
                finish_reason=c.finish_reason, text=c.text,
            ))
    if env is None:
        return rollouts
    tokenizer = engine.tokenizer
    for turn in range(1, max_turns):
        waiting = []
        for r in rollouts:
            if r.finish_reason != "stop" or r.n_model_tokens >= settings.max_new_tokens:
                continue
            answer = env.respond(r.prompt_index, r.text, r.info)
            if answer is None:
                continue
            tool_ids = tokenizer.encode(answer, add_special_tokens=False)[:max_tool_tokens]
            r.completion_ids += tool_ids
            r.logprobs += [0.0] * len(tool_ids)
            r.mask += [0] * len(tool_ids)
            r.text += tokenizer.decode(tool_ids, skip_special_tokens=True)
            waiting.append(r)
        if not waiting:
            break
        budget = max(1, min(settings.max_new_tokens - r.n_model_tokens for r in waiting))
        more = engine.sample(
            [r.prompt_ids + r.completion_ids for r in waiting],
            replace(settings, n=1, stop=stop, max_new_tokens=budget,
                    seed=None if settings.seed is None else settings.seed + 1_000_003 * turn),
        )
        for r, (c,) in zip(waiting, more):
            r.completion_ids += c.token_ids
            r.logprobs += c.logprobs
            r.mask += [1] * len(c.token_ids)
            r.text += c.text
            r.finish_reason = c.finish_reason
            r.turns += 1
    return rollouts
