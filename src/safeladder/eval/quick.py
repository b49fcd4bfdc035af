"""A quick before/after check on the dev splits of the built-in sources.

Measures what CoT-SFT is meant to change: format compliance, how often harmful requests are
declined, how often benign look-alikes are (wrongly) declined, and arithmetic accuracy.
Refusals are judged by the rule-based detector; the full evaluation harness uses the neural
safety verifier instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from safeladder.data.sample import Sample
from safeladder.eval.stats import wilson_interval
from safeladder.format import format_ok, parse_response
from safeladder.inference.generate import Generation, GenerationSettings, generate
from safeladder.train.progress import progress_bar


@dataclass(frozen=True)
class Rate:
    hits: int
    n: int

    @property
    def value(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.hits, self.n)

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{100 * self.value:5.1f}% [{100 * lo:.0f}–{100 * hi:.0f}]"


@dataclass
class QuickReport:
    rates: dict[str, Rate]
    mean_tokens: float
    generations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rates": {k: {"value": r.value, "hits": r.hits, "n": r.n, "ci95": r.interval} for k, r in self.rates.items()},
            "mean_tokens": self.mean_tokens,
        }

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "quick_eval.json").write_text(json.dumps(self.to_dict(), indent=2))
        with (out_dir / "generations.jsonl").open("w") as fh:
            for g in self.generations:
                fh.write(json.dumps(g) + "\n")


def _answer(g: Generation) -> str:
    """The judged text: the answer after </think>; a reply with no think block is judged whole."""
    parsed = parse_response(g.completion)
    return parsed.answer


# Metric name -> (which task's samples, per-sample judgement).
def _metrics() -> dict[str, tuple[str, Callable[[Sample, Generation], bool]]]:
    from safeladder.verifiers.math_answer import is_correct
    from safeladder.verifiers.refusal import is_refusal

    return {
        "harmful_declined": ("harmful", lambda s, g: is_refusal(_answer(g))),
        "benign_declined": ("benign", lambda s, g: is_refusal(_answer(g))),
        "math_accuracy": ("math", lambda s, g: is_correct(_answer(g), s.reference or "")),
    }


def dev_sets(n_harmful: int = 60, n_benign: int = 40, n_math: int = 60) -> dict[str, list[Sample]]:
    """Fixed dev subsets (deterministic), disjoint from the SFT training split."""
    from safeladder.data.sources.arithmetic import load_math
    from safeladder.data.sources.benign import load_benign
    from safeladder.data.sources.harmful import load_harmful

    def spread(xs: list[Sample], n: int) -> list[Sample]:  # an even spread across sources/kinds
        step = max(1, len(xs) // n) if n else 1
        return xs[::step][:n]

    return {
        "harmful": spread(load_harmful("all", "dev"), n_harmful),
        "benign": spread(load_benign("dev"), n_benign),
        "math": spread(load_math("dev"), n_math),
    }


def quick_eval(
    model: Any, tokenizer: Any, sets: dict[str, list[Sample]],
    settings: GenerationSettings = GenerationSettings(max_new_tokens=160), label: str = "eval",
) -> QuickReport:
    items = [(task, s) for task, samples in sets.items() for s in samples]
    bar = progress_bar(transient=True)
    with bar:
        t = bar.add_task(label, total=len(items), info="")
        gens = generate(model, tokenizer, [s.chat() for _, s in items], settings,
                        on_batch=lambda n: bar.advance(t, n))
    rates: dict[str, Rate] = {"format_ok": Rate(sum(format_ok(g.completion) for g in gens), len(gens))}
    for name, (task, judge) in _metrics().items():
        pairs = [(s, g) for (tk, s), g in zip(items, gens) if tk == task]
        rates[name] = Rate(sum(judge(s, g) for s, g in pairs), len(pairs))
    records = [
        {"task": tk, "id": s.id, "prompt": s.user_text, "reference": s.reference,
         "completion": g.completion, "tokens": g.n_tokens, "truncated": g.truncated}
        for (tk, s), g in zip(items, gens)
    ]
    mean_tokens = sum(g.n_tokens for g in gens) / max(len(gens), 1)
    return QuickReport(rates=rates, mean_tokens=mean_tokens, generations=records)
