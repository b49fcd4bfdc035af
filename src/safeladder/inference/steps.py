"""Reasoning steps: what a step is, how the text splits into steps, and how one step is sampled.

A step ends at a blank line (the separator), at `</think>` (the reasoning is over), or after a
token budget — whichever comes first — so a model that never writes blank lines still yields
steps. Step search (`step_search.py`) and the human-intervention session (`intervention.py`) both
sample with `StepSettings.reasoning/answer`, and their context is always *token ids* (prompt, then
every step's own ids in order), so what was generated once is never re-encoded or regenerated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

from safeladder.format import SYSTEM_PROMPT, THINK_CLOSE, THINK_OPEN, render_prompt
from safeladder.rollout.base import Completion, FinishReason, RolloutEngine, SamplingSettings

STEP_SEPARATOR = "\n\n"
THINK_PREFILL = THINK_OPEN + "\n"  # the assistant turn opens the think block; the model continues inside it
FORCED_CLOSE = "\n" + THINK_CLOSE + "\n"  # appended when the reasoning runs out of steps without closing

StepKind = Literal["reasoning", "answer"]
StepSource = Literal["model", "human", "system"]  # system: a close tag we appended (step budget, EOS)


def split_steps(reasoning: str, separator: str = STEP_SEPARATOR) -> list[str]:
    """Split text into steps, losslessly: `"".join(split_steps(t)) == t`.

    Each step keeps its trailing separator, and a run of blank lines stays with the step before
    it, so the pieces are exactly what the model wrote between stops.
    """
    if not reasoning:
        return []
    steps: list[str] = []
    start = pos = 0
    while True:
        hit = reasoning.find(separator, pos)
        if hit < 0:
            break
        end = hit + len(separator)
        while reasoning.startswith("\n", end):  # "\n\n\n" ends one step, not two
            end += 1
        steps.append(reasoning[start:end])
        start = pos = end
    if start < len(reasoning):
        steps.append(reasoning[start:])
    return steps


def split_token_budget(token_ids: Sequence[int], budget: int) -> list[list[int]]:
    """Split token ids into steps of at most `budget` tokens (for reasoning without blank lines)."""
    if budget < 1:
        raise ValueError("a step budget must be >= 1 token")
    return [list(token_ids[i : i + budget]) for i in range(0, len(token_ids), budget)]


def closes_reasoning(text: str) -> bool:
    return THINK_CLOSE in text


def reasoning_for_judging(completion_so_far: str) -> str:
    """The reasoning written so far as plain text (tags removed), for judging partial reasoning.

    Verifiers judge the text after `</think>`; handing them the bare reasoning as the response
    makes them judge the reasoning itself (what the search steers), with no adapter class needed.
    """
    head = completion_so_far.split(THINK_CLOSE, 1)[0]
    return head.replace(THINK_OPEN, "").strip()


@dataclass
class Step:
    """One piece of the assistant turn, with the exact token ids that sit in the context."""

    index: int
    text: str
    token_ids: list[int]
    kind: StepKind = "reasoning"
    source: StepSource = "model"
    finish_reason: FinishReason | None = None  # for model steps: why sampling stopped
    generated_tokens: int = 0  # tokens sampled for this step (its EOS included, which the context drops)
    score: float | None = None  # value-function score of the reasoning up to and including this step
    verdicts: dict[str, Any] = field(default_factory=dict)  # per-verifier {score, label, status}
    unsafe: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "text": self.text, "kind": self.kind, "source": self.source,
                "finish_reason": self.finish_reason, "tokens": len(self.token_ids), "score": self.score,
                "verdicts": self.verdicts, "unsafe": self.unsafe}


@dataclass(frozen=True)
class StepSettings:
    """How one step (or the answer) is sampled."""

    step_tokens: int = 48  # token budget of one reasoning step
    max_steps: int = 12  # reasoning steps before the think block is closed for the model
    answer_tokens: int = 192
    temperature: float = 0.7
    top_p: float = 0.95
    separator: str = STEP_SEPARATOR
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.step_tokens < 1 or self.max_steps < 1 or self.answer_tokens < 1:
            raise ValueError("step_tokens, max_steps and answer_tokens must be >= 1")
        if not self.separator:
            raise ValueError("the step separator must be a non-empty string")

    def reasoning(self, n: int = 1, seed: int | None = None, max_tokens: int | None = None) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=min(self.step_tokens, max_tokens or self.step_tokens),
                                temperature=self.temperature, top_p=self.top_p, n=n,
                                stop=(self.separator, THINK_CLOSE), seed=seed, precision=self.precision)

    def answer(self, n: int = 1, seed: int | None = None, max_tokens: int | None = None,
               stop: tuple[str, ...] = ()) -> SamplingSettings:
        return SamplingSettings(max_new_tokens=min(self.answer_tokens, max_tokens or self.answer_tokens),
                                temperature=self.temperature, top_p=self.top_p, n=n, stop=stop, seed=seed,
                                precision=self.precision)

    def with_(self, **changes: Any) -> "StepSettings":
        return replace(self, **changes)


def eos_ids(engine: RolloutEngine) -> set[int]:
    found = getattr(engine, "eos_ids", None)
    if found:
        return set(found)
    eos = engine.tokenizer.eos_token_id
    return {eos} if eos is not None else set()


def context_ids(completion: Completion, eos: set[int]) -> list[int]:
    """The ids a completion adds to the context: everything but a final EOS (the turn goes on)."""
    ids = list(completion.token_ids)
    if completion.finish_reason == "eos" and ids and ids[-1] in eos:
        ids.pop()
    return ids


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def prompt_ids(tokenizer: Any, chat: Sequence[dict[str, str]], prefill: str = THINK_PREFILL,
               system_prompt: str | None = SYSTEM_PROMPT) -> list[int]:
    """The rendered prompt, then `prefill` inside the assistant turn (by default the open think tag)."""
    ids = encode(tokenizer, render_prompt(tokenizer, chat, system_prompt))
    return ids + (encode(tokenizer, prefill) if prefill else [])


def user_text(chat: Sequence[dict[str, str]]) -> str:
    """The last user turn: what verifiers read as the request."""
    return next((m["content"] for m in reversed(chat) if m["role"] == "user"), "")


class SeedSequence:
    """Distinct, reproducible seeds for successive engine calls (one fixed seed would repeat draws)."""

    def __init__(self, seed: int | None):
        self.seed, self.calls = seed, 0

    def next(self) -> int | None:
        if self.seed is None:
            return None
        self.calls += 1
        return (self.seed * 1_000_003 + self.calls) % (2**63 - 1)  # torch seeds must fit in 64 bits


__all__ = [
    "FORCED_CLOSE", "STEP_SEPARATOR", "THINK_PREFILL", "SeedSequence", "Step", "StepSettings", "closes_reasoning",
    "context_ids", "encode", "eos_ids", "prompt_ids", "reasoning_for_judging", "split_steps", "split_token_budget",
    "user_text",
]
