"""Evaluate a policy on search QA with the tool in the loop: accuracy, false certainty, search share.

The issue's acceptance compares these before and after search RL on the dev split; the plain
generation harness cannot run tool turns, so this drives `multi_turn.rollout` (greedy by default)
with a `SearchEnvironment` and scores every completion with the search verifiers. Proportions come
with 95% Wilson intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from safeladder.data.sample import Sample
from safeladder.eval.stats import wilson_interval
from safeladder.format import render_prompt
from safeladder.rollout import SamplingSettings, rollout
from safeladder.search.environment import SearchEnvironment
from safeladder.search.prompt import SEARCH_SYSTEM_PROMPT
from safeladder.verifiers.base import VerifyItem, build_verifier

RATES = ("search_correct", "false_certain", "honest_uncertainty", "searched")


@dataclass
class SearchEvalResult:
    n: int
    rates: dict[str, float]  # verifier name -> share of samples scoring 1
    intervals: dict[str, tuple[float, float]]
    mean_calls: float
    mean_model_tokens: float
    rows: list[dict[str, Any]] = field(default_factory=list)  # per sample: id, text, scores, calls

    def summary(self) -> dict[str, float]:
        out = {f"search_eval/{k}": v for k, v in self.rates.items()}
        out.update({"search_eval/n": float(self.n), "search_eval/mean_calls": self.mean_calls,
                    "search_eval/mean_model_tokens": self.mean_model_tokens})
        return out


def evaluate_search(
    engine: Any, samples: Sequence[Sample], env: SearchEnvironment, *, system_prompt: str = SEARCH_SYSTEM_PROMPT,
    max_new_tokens: int = 256, max_turns: int = 4, max_tool_tokens: int = 512, temperature: float = 0.0,
    batch_size: int = 16, seed: int | None = 0,
) -> SearchEvalResult:
    """Roll out each sample once through `engine` (a `RolloutEngine`) with the search tool; score and summarise."""
    import safeladder.verifiers.search_rewards  # noqa: F401  (registers the verifiers)

    tok = engine.tokenizer
    prompts = [tok.encode(render_prompt(tok, s.chat(), system_prompt), add_special_tokens=False) for s in samples]
    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, n=1,
                                batch_size=batch_size, seed=seed)
    rollouts = rollout(engine, prompts, settings, env=env, max_turns=max_turns, max_tool_tokens=max_tool_tokens)
    items = [VerifyItem(s.user_text, r.text, s.reference, s.label, {"id": s.id}) for s, r in zip(samples, rollouts)]
    scores = {name: [v.score for v in build_verifier(name)(items)] for name in RATES}
    n = len(samples)
    rates, intervals = {}, {}
    for name, values in scores.items():
        hits = sum(1 for v in values if v == 1.0)
        rates[name] = hits / n if n else 0.0
        intervals[name] = wilson_interval(hits, n)
    rows = [{"id": s.id, "text": r.text, "calls": r.info.get("search_calls", 0),
             **{name: scores[name][i] for name in RATES}} for i, (s, r) in enumerate(zip(samples, rollouts))]
    return SearchEvalResult(
        n=n, rates=rates, intervals=intervals,
        mean_calls=sum(r.info.get("search_calls", 0) for r in rollouts) / max(n, 1),
        mean_model_tokens=sum(r.n_model_tokens for r in rollouts) / max(n, 1), rows=rows,
    )


def evaluate_search_model(
    model: Any, samples: Sequence[Sample], index: Any, *, topk: int = 2, max_calls: int = 2,
    max_passage_tokens: int = 64, max_new_tokens: int = 160, batch_size: int = 64, **options: Any,
) -> SearchEvalResult:
    """`evaluate_search` from a model name/dir and an index directory (passages cut by the model's tokens)."""
    from safeladder.models.loader import load_policy
    from safeladder.rollout.hf_engine import TransformersEngine
    from safeladder.search.environment import search_environment

    policy = load_policy(str(model))
    engine = TransformersEngine(policy.model, policy.tokenizer)
    env = search_environment(index=str(index), topk=topk, max_calls=max_calls,
                             max_passage_tokens=max_passage_tokens, tokenizer=policy.tokenizer)
    return evaluate_search(engine, samples, env, max_new_tokens=max_new_tokens, max_turns=max_calls + 1,
                           batch_size=batch_size, **options)
