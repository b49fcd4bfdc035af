"""Test-time confidence-weighted voting over n sampled answers (SPEC §5).

Each sample votes for its (normalised) answer with weight max(confidence, floor): confident
answers count fully, "low" answers still count a little so that n unsure samples agreeing beat
one unsure outlier. Ties go to the answer with more votes, then to the one seen first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from safeladder.format import answer_text
from safeladder.search.confidence import Missing, confidence_or_default, strip_confidence
from safeladder.verifiers.rules import normalize_answer


@dataclass(frozen=True)
class VoteResult:
    answer: str | None  # the winning answer as first written (None: no sample answered)
    weight: float  # its summed weight
    share: float  # its weight / all weight (a confidence for the voted answer)
    votes: int  # samples that gave it
    n: int  # samples that answered
    tally: dict[str, float] = field(default_factory=dict)  # normalised answer -> weight


def confidence_weighted_vote(
    answers: Sequence[str], confidences: Sequence[float | None], *, floor: float = 0.05,
    default: float = 0.5, normalise: Callable[[str], str] = normalize_answer,
) -> VoteResult:
    """Vote over parallel lists of answers and confidences (None → `default`); blank answers abstain."""
    if len(answers) != len(confidences):
        raise ValueError(f"{len(answers)} answers but {len(confidences)} confidences")
    weight: dict[str, float] = {}
    count: dict[str, int] = {}
    first: dict[str, str] = {}
    for answer, conf in zip(answers, confidences):
        key = normalise(answer)
        if not key:
            continue
        c = default if conf is None else min(max(float(conf), 0.0), 1.0)
        weight[key] = weight.get(key, 0.0) + max(c, floor)
        count[key] = count.get(key, 0) + 1
        first.setdefault(key, answer.strip())
    if not weight:
        return VoteResult(None, 0.0, 0.0, 0, 0, {})
    order = list(first)  # first-seen order breaks the last ties
    best = max(order, key=lambda k: (weight[k], count[k], -order.index(k)))
    total = sum(weight.values())
    return VoteResult(first[best], weight[best], weight[best] / total, count[best], sum(count.values()), weight)


def vote_completions(completions: Sequence[str], *, missing: Missing = "high", floor: float = 0.05) -> VoteResult:
    """Vote over full completions: the answer after `</think>`, minus its confidence tag, weighted by it."""
    answers = [strip_confidence(answer_text(c)) for c in completions]
    confs = [confidence_or_default(answer_text(c), missing) for c in completions]
    return confidence_weighted_vote(answers, confs, floor=floor)
