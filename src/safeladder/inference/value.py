"""Value functions: how good is this reasoning so far (or this whole completion)?

Step search ranks candidate steps with one, Best-of-N ranks whole samples with the same one, and
the web page shows its verdicts next to each step. The built-in value is the verifier suite
applied to text: `VerifierValue({"safety": 1, "helpfulness": 0.5})` is the weighted mean of those
verifiers' scores. Partial reasoning is judged by handing the verifiers the bare reasoning as the
response (they judge the text after `</think>`, and there is none yet), so every registered
verifier works unchanged. Value functions are built by name (`build_value`), from a registry of
presets, or from a weight spec such as `"safety:1,helpfulness:0.5"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from safeladder.errors import ConfigError
from safeladder.inference.steps import reasoning_for_judging
from safeladder.verifiers.base import Verifier, VerifyItem, build_verifier
from safeladder.verifiers.neural import soft_safety


@dataclass(frozen=True)
class ValueScore:
    score: float  # higher is better
    unsafe: bool = False  # a verifier gave an unsafe label: step search may drop the candidate
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)  # verifier -> {score, label, status}


@runtime_checkable
class ValueFunction(Protocol):
    """Scores (request, text) pairs in one batch.

    `text` is the assistant turn so far: with `final=False` it is unfinished reasoning (judge the
    reasoning), with `final=True` a whole completion (judge the answer). `verifiers_per_item` is
    what one scored item costs in verifier calls, for equal-compute comparisons.
    """

    verifiers_per_item: int

    def score(self, items: Sequence[tuple[str, str]], final: bool = False) -> list[ValueScore]: ...


class VerifierValue:
    """Weighted mean of verifier scores; an item is unsafe if any verdict label is in `unsafe_labels`."""

    def __init__(self, weights: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None,
                 unsafe_labels: Sequence[str] = ("Unsafe",), verifiers: Mapping[str, Verifier] | None = None):
        if not weights:
            raise ConfigError("a verifier value needs at least one verifier")
        bad = {k: w for k, w in weights.items() if not (w > 0)}
        if bad:
            raise ConfigError(f"verifier weights must be > 0, got {bad}")
        self.weights = dict(weights)
        given = dict(verifiers or {})
        self.verifiers = {name: given.get(name) or build_verifier(name, **dict((options or {}).get(name, {})))
                          for name in self.weights}
        self.unsafe_labels = frozenset(unsafe_labels)
        self.verifiers_per_item = len(self.weights)
        self.name = ",".join(f"{k}:{w:g}" if w != 1 else k for k, w in self.weights.items())

    def score(self, items: Sequence[tuple[str, str]], final: bool = False) -> list[ValueScore]:
        if not items:
            return []
        vitems = verify_items(items, final)
        verdicts = {name: v(vitems) for name, v in self.verifiers.items()}
        out = []
        for i in range(len(vitems)):
            total = weight = 0.0
            shown: dict[str, dict[str, Any]] = {}
            unsafe = False
            for name, vs in verdicts.items():
                v = vs[i]
                shown[name] = {"score": v.score, "label": v.label, "status": v.status}
                unsafe = unsafe or v.label in self.unsafe_labels
                if v.status == "ok" and v.score is not None:
                    total += self.weights[name] * v.score
                    weight += self.weights[name]
            out.append(ValueScore(total / weight if weight else 0.0, unsafe, shown))
        return out

    def warm_up(self) -> None:
        """Load (or build) whatever the verifiers load lazily, so the first request is not the slow one."""
        self.score([("Hello", "Hello.")])


def verify_items(items: Sequence[tuple[str, str]], final: bool) -> list[VerifyItem]:
    """What verifiers see: the whole completion when final, else the bare reasoning as the response."""
    return [VerifyItem(prompt=req, response=text if final else reasoning_for_judging(text)) for req, text in items]


class SoftSafetyValue:
    """A smooth safety value from the `safety` verifier's head probabilities (design, SPEC §6).

    The six-verdict score is a step function (1 / 0.1 / 0.01 / 0), so most candidate steps tie.
    This value is `verifiers.neural.soft_safety`, the probability of a safe turn in the sense the
    search wants to steer towards — no harmful content, and declining or warning when the request
    is harmful, helping (not refusing) when it is not; 0 for degenerate text. One verifier call per item.
    """

    verifiers_per_item = 1
    name = "safety_soft"

    def __init__(self, verifier: Verifier | None = None):
        self.verifier = verifier or build_verifier("safety")

    def score(self, items: Sequence[tuple[str, str]], final: bool = False) -> list[ValueScore]:
        if not items:
            return []
        out = []
        for (_, text), v in zip(items, self.verifier(verify_items(items, final))):
            d = v.details
            keys = ("p_prompt_harmful", "p_refusal", "p_harmful_response", "p_warning")
            if v.status != "ok" or not all(k in d for k in keys):
                out.append(ValueScore(0.0, False, {"safety": {"score": v.score, "label": v.label, "status": v.status}}))
                continue
            if d.get("degenerate"):
                s = 0.0
            else:
                soft = soft_safety(**{k: d[k] for k in keys}, promises_harm=bool(d.get("promises_harm")))
                s = self.combine(text, d, soft)
            out.append(ValueScore(s, v.label == "Unsafe", {"safety": {"score": v.score, "label": v.label,
                                                                        "status": v.status, "soft": round(s, 4)}}))
        return out

    def combine(self, text: str, details: Mapping[str, Any], soft: float) -> float:
        """The value from the soft safety score (subclasses add terms; `details` = the heads' output)."""
        return soft

    def warm_up(self) -> None:
        self.score([("Hello", "Hello.")])


class DecisionValue(SoftSafetyValue):
    """`safety_soft` plus whether the reasoning has decided what the request needs (SPEC §6).

    `safety_soft` reads the reasoning as if it were an answer, so "…harmless, so I will simply
    answer it" looks as safe as "…this is fraud, so I must decline". This value adds the fit of the
    decision the reasoning states so far (`verifiers.consistency.reasoning_decision`) to the
    request's harmfulness p_h from the prompt head: decline → p_h, help → 1 − p_h, no decision yet
    → 0.5. The fit counts only as far as the prompt head is sure, c = |2·p_h − 1|:

        value = (1 − c/2) · soft + (c/2) · fit

    so a clear request (p_h 0.02 or 0.98) weighs the decision as much as `safety_soft`, and a
    look-alike the head cannot place (p_h ≈ 0.5: "break into the tech industry") is left to
    `safety_soft` alone. With an unweighted average (c = 1 everywhere), step search declined 4
    of 34 benign look-alikes vs Best-of-N's 0 (benchmarks/RESULTS.md, session 15). Same single
    verifier call per item as `safety_soft`.
    """

    name = "safety_decision"

    def combine(self, text: str, details: Mapping[str, Any], soft: float) -> float:
        from safeladder.verifiers.consistency import reasoning_decision

        p_h = float(details["p_prompt_harmful"])
        decision = reasoning_decision(reasoning_for_judging(text))
        fit = {"decline": p_h, "help": 1.0 - p_h, None: 0.5}[decision]
        half_confidence = abs(2.0 * p_h - 1.0) / 2.0
        return (1.0 - half_confidence) * soft + half_confidence * fit


ValueFactory = Callable[[], ValueFunction]
VALUE_FUNCTIONS: dict[str, ValueFactory] = {}


def register_value(name: str) -> Callable[[ValueFactory], ValueFactory]:
    """Register a value-function factory under a name (e.g. a trained value head)."""

    def deco(factory: ValueFactory) -> ValueFactory:
        if name in VALUE_FUNCTIONS:
            raise ValueError(f"value function {name!r} is already registered")
        VALUE_FUNCTIONS[name] = factory
        return factory

    return deco


# Presets. Any verifier name (or weighted list of them) works too, via `parse_weights`.
register_value("safety")(lambda: VerifierValue({"safety": 1.0}))
register_value("safety_soft")(SoftSafetyValue)
register_value("safety_decision")(DecisionValue)
register_value("safety+helpfulness")(lambda: VerifierValue({"safety": 1.0, "helpfulness": 0.5},
                                                           {"helpfulness": {"soft": True}}))


def parse_weights(spec: str) -> dict[str, float]:
    """`"safety"` -> {safety: 1}; `"safety:1,helpfulness:0.5"` (or `+` between names) -> weights."""
    weights: dict[str, float] = {}
    for part in spec.replace("+", ",").split(","):
        name, _, w = part.strip().partition(":")
        if not name:
            raise ConfigError(f"value spec {spec!r}: empty verifier name")
        try:
            weights[name.strip()] = float(w) if w.strip() else 1.0
        except ValueError:
            raise ConfigError(f"value spec {spec!r}: weight {w!r} of {name!r} is not a number") from None
    return weights


def build_value(spec: str | Mapping[str, float] | ValueFunction) -> ValueFunction:
    """A value function from a registered name, a weight spec/mapping, a trained step-value
    directory, or an instance (returned as is)."""
    if isinstance(spec, ValueFunction):
        return spec
    if isinstance(spec, Mapping):
        return VerifierValue(spec)
    factory = VALUE_FUNCTIONS.get(spec)
    if factory is not None:
        return factory()
    from safeladder.inference.value_head import StepValueHead, is_step_value_dir

    if is_step_value_dir(spec):  # a trained step value (`safeladder value train`)
        return StepValueHead(spec)
    return VerifierValue(parse_weights(spec))


__all__ = ["VALUE_FUNCTIONS", "DecisionValue", "SoftSafetyValue", "ValueFunction", "ValueScore", "VerifierValue", "build_value",
           "parse_weights", "register_value", "verify_items"]
