"""The rollout protocol shared by every engine (transformers, vLLM, Ray workers).

An engine continues token prefixes: `sample(prefixes, settings)` returns, for each prefix,
`settings.n` completions with the token ids the model chose, the log-prob of each under the
sampling distribution, and why it stopped. Everything above that — chat templates, groups of
samples per prompt, tool turns whose tokens are context rather than policy output — is built
by `multi_turn.rollout` on top of this one call, so a new engine only implements `sample`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

FinishReason = Literal["eos", "stop", "length"]  # EOS token · a stop string · max_new_tokens


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 256
    # no EOS / stop before this many tokens (HF's min_new_tokens, vLLM's min_tokens); the EOS
    # tokens are removed from the sampling distribution, the reported log-prob stays the policy's
    min_new_tokens: int = 0
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1  # samples per prefix; the prefix is encoded once and its KV cache shared
    stop: tuple[str, ...] = ()  # stop strings, kept at the end of the completion (e.g. "</search>")
    batch_size: int = 16  # prefixes per forward pass (each expands to n rows)
    seed: int | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens, n and batch_size must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], got {self.min_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


@dataclass
class Completion:
    """One sampled continuation of one prefix."""

    token_ids: list[int]
    logprobs: list[float]  # log π_sample(token | prefix, earlier tokens), one per token
    finish_reason: FinishReason
    text: str


@dataclass
class Rollout:
    """One full sample for RL: the prompt, everything after it, and which tokens the policy wrote.

    `completion_ids` may interleave model turns (mask 1) with tool output (mask 0, log-prob 0);
    losses and KL only ever see mask-1 tokens.
    """

    prompt_index: int  # which prompt of the batch (the GRPO group id)
    sample_index: int  # which of its n samples
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    mask: list[int]
    finish_reason: FinishReason
    text: str  # the decoded completion (model and tool text)
    turns: int = 1
    info: dict[str, Any] = field(default_factory=dict)  # environment bookkeeping (e.g. search calls)

    @property
    def n_model_tokens(self) -> int:
        return sum(self.mask)


@runtime_checkable
class RolloutEngine(Protocol):
    tokenizer: Any

    def sample(self, prefixes: Sequence[Sequence[int]], settings: SamplingSettings) -> list[list[Completion]]:
        """For each prefix, `settings.n` completions (outer list in prefix order)."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from `model`'s current weights (no-op when they are shared)."""
        ...
