"""Human intervention on the chain of thought (SPEC §6): stream steps, edit one, resume from the edit.

An `InterventionSession` holds one assistant turn as a list of steps, each with the exact token ids
it contributes to the context. `next_step()` samples one more step from prompt + all step ids; a
`replace(k, text)` / `insert(k, text)` keeps the steps before the edit point *as token ids* (never
re-encoded, never regenerated), puts the human text in as a step of its own, drops what came after
it, and the next `next_step()` continues right after the edit — in the same assistant turn, with
the think block still open (no new user turn). Every edit is recorded with its before/after text
and token counts (kept, discarded, regenerated) and logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Literal, Sequence

from safeladder.errors import SafeLadderError
from safeladder.format import SYSTEM_PROMPT, parse_response
from safeladder.inference.steps import (
    FORCED_CLOSE, THINK_PREFILL, SeedSequence, Step, StepSettings, closes_reasoning, context_ids, encode, eos_ids,
    prompt_ids, user_text,
)
from safeladder.inference.value import ValueFunction
from safeladder.rollout.base import RolloutEngine

log = logging.getLogger(__name__)

EditMode = Literal["replace", "insert"]
TurnFinish = Literal["stop", "length"]  # OpenAI's finish reasons: the answer ended, or the token budget did


class EditError(SafeLadderError):
    """An edit the session cannot apply (no such step, empty insertion)."""


@dataclass
class EditRecord:
    index: int  # the step the human text now occupies
    mode: EditMode
    before: str  # the replaced step's text ("" for an insertion)
    after: str  # the human text, verbatim
    discarded: list[str]  # texts of the later steps the edit dropped
    kept_tokens: int  # context tokens before the edit, reused as they were
    discarded_tokens: int  # model-sampled tokens the edit threw away
    regenerated_tokens: int = 0  # tokens sampled after this edit (until the next edit)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class InterventionSession:
    """One assistant turn generated step by step, open to edits at any step."""

    def __init__(self, engine: RolloutEngine, chat: Sequence[dict[str, str]], settings: StepSettings = StepSettings(),
                 value: ValueFunction | None = None, *, prefill: str = THINK_PREFILL,
                 system_prompt: str | None = SYSTEM_PROMPT, max_new_tokens: int | None = None,
                 answer_stop: tuple[str, ...] = (), seed: int | None = None):
        self.engine, self.settings, self.value = engine, settings, value
        self.chat = [dict(m) for m in chat]
        self.request = user_text(chat)
        self.prefill = prefill
        self.prompt_ids = prompt_ids(engine.tokenizer, chat, prefill, system_prompt)
        self.max_new_tokens = max_new_tokens or settings.max_steps * settings.step_tokens + settings.answer_tokens
        self.answer_stop = tuple(answer_stop)
        self.steps: list[Step] = []
        self.edits: list[EditRecord] = []
        self.generated_tokens = 0  # every sampled token, discarded ones included
        self.verifier_calls = 0
        self.finish_reason: TurnFinish | None = None
        self._eos = eos_ids(engine)
        self._seeds = SeedSequence(seed)

    # ------------------------------------------------------------------ state

    @property
    def context_ids(self) -> list[int]:
        """What the model continues from: the prompt, then every step's ids in order."""
        return self.prompt_ids + [t for s in self.steps for t in s.token_ids]

    @property
    def completion(self) -> str:
        """The assistant turn so far (prefill included)."""
        return self.prefill + "".join(s.text for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.steps)

    @property
    def model_tokens(self) -> int:
        """Tokens of the turn the model wrote (what `max_new_tokens` bounds; human text is free)."""
        return sum(len(s.token_ids) for s in self.steps if s.source == "model")

    @property
    def reasoning_closed(self) -> bool:
        return closes_reasoning(self.completion)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def think(self) -> str | None:
        return parse_response(self.completion).think

    @property
    def answer(self) -> str:
        return parse_response(self.completion).answer if self.reasoning_closed else ""

    def to_json(self) -> dict[str, Any]:
        return {"steps": [s.to_json() for s in self.steps], "done": self.done, "finish_reason": self.finish_reason,
                "reasoning_closed": self.reasoning_closed, "answer": self.answer, "completion": self.completion,
                "generated_tokens": self.generated_tokens, "completion_tokens": self.completion_tokens,
                "verifier_calls": self.verifier_calls, "edits": [e.to_json() for e in self.edits]}

    # ------------------------------------------------------------------ generation

    def next_step(self) -> Step | None:
        """Sample the next step (a reasoning step, or the answer once the reasoning is closed).

        Returns None when the turn is over. A reasoning that ends the turn (EOS) or reaches
        `max_steps` is closed for the model by a system step, so the turn always gets an answer.
        """
        if self.done:
            return None
        left = self.max_new_tokens - self.model_tokens
        if left <= 0:
            self.finish_reason = "length"
            return None
        if not self.reasoning_closed:
            reasoning = [s for s in self.steps if s.kind == "reasoning"]
            last = self.steps[-1] if self.steps else None
            if len(reasoning) >= self.settings.max_steps or (last is not None and last.finish_reason == "eos"):
                return self._append(Step(len(self.steps), FORCED_CLOSE, encode(self.engine.tokenizer, FORCED_CLOSE),
                                         "reasoning", "system"))
            sampling, kind = self.settings.reasoning(seed=self._seeds.next(), max_tokens=left), "reasoning"
        else:
            sampling, kind = self.settings.answer(seed=self._seeds.next(), max_tokens=left, stop=self.answer_stop), "answer"
        (c,), = self.engine.sample([self.context_ids], sampling)
        self.generated_tokens += len(c.token_ids)
        if self.edits:
            self.edits[-1].regenerated_tokens += len(c.token_ids)
        step = self._append(Step(len(self.steps), c.text, context_ids(c, self._eos), kind, "model",  # type: ignore[arg-type]
                                 c.finish_reason, len(c.token_ids)))
        if kind == "answer":
            self.finish_reason = "length" if c.finish_reason == "length" else "stop"
        return step

    def stream(self, max_steps: int | None = None) -> Iterator[Step]:
        """Yield steps as they are sampled until the turn ends (or `max_steps` more steps)."""
        count = 0
        while not self.done and (max_steps is None or count < max_steps):
            step = self.next_step()
            if step is None:
                break
            count += 1
            yield step

    def run(self) -> str:
        """Generate to the end of the turn; the whole completion."""
        for _ in self.stream():
            pass
        return self.completion

    def _append(self, step: Step) -> Step:
        self.steps.append(step)
        self._judge(step)
        return step

    def _judge(self, step: Step) -> None:
        if self.value is None:
            return
        (sc,) = self.value.score([(self.request, self.completion)], final=step.kind == "answer")
        step.score, step.unsafe, step.verdicts = sc.score, sc.unsafe, sc.verdicts
        self.verifier_calls += self.value.verifiers_per_item

    # ------------------------------------------------------------------ edits

    def replace(self, k: int, text: str) -> EditRecord:
        """Replace step k by `text` (verbatim; "" deletes it) and drop every later step."""
        if not 0 <= k < len(self.steps):
            raise EditError(f"no step {k} to replace; the turn has {len(self.steps)} steps (0-{len(self.steps) - 1})")
        return self._edit(k, text, "replace", self.steps[k].text, self.steps[k:])

    def insert(self, k: int, text: str) -> EditRecord:
        """Insert `text` after step k (k = -1: before the first step) and drop every later step."""
        if not -1 <= k < len(self.steps):
            raise EditError(f"cannot insert after step {k}; the turn has {len(self.steps)} steps")
        if not text:
            raise EditError("an insertion needs some text")
        return self._edit(k + 1, text, "insert", "", self.steps[k + 1 :])

    def edit(self, k: int, text: str, mode: EditMode = "replace") -> EditRecord:
        return self.replace(k, text) if mode == "replace" else self.insert(k, text)

    def _edit(self, at: int, text: str, mode: EditMode, before: str, dropped: list[Step]) -> EditRecord:
        kept = self.steps[:at]
        record = EditRecord(
            index=at, mode=mode, before=before, after=text, discarded=[s.text for s in dropped[1 if mode == "replace" else 0:]],
            kept_tokens=sum(len(s.token_ids) for s in kept),
            discarded_tokens=sum(s.generated_tokens for s in dropped if s.source == "model"),
        )
        self.steps = kept
        self.finish_reason = None
        if text:
            kind = "answer" if self.reasoning_closed else "reasoning"
            self._append(Step(at, text, encode(self.engine.tokenizer, text), kind, "human"))  # type: ignore[arg-type]
        self.edits.append(record)
        log.info("edit %s at step %d: %r -> %r (%d tokens kept, %d discarded)",
                 mode, at, before[:200], text[:200], record.kept_tokens, record.discarded_tokens)
        return record


__all__ = ["EditError", "EditRecord", "InterventionSession"]
