"""The verifier protocol: score a batch of items, one explicit verdict per item.

A verifier never invents a score: when it cannot judge an item it returns a verdict with
`score=None` and a status saying why ("not_applicable", "parse_error", "error"). Verifiers are
built by name from a registry (`register_verifier`), so configs can name them in YAML.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Mapping, Sequence

from safeladder.errors import ConfigError
from safeladder.format import answer_text

Status = Literal["ok", "not_applicable", "parse_error", "error"]


@dataclass(frozen=True)
class VerifyItem:
    """What a verifier sees. `response` is the full completion, think block included."""

    prompt: str
    response: str
    reference: str | None = None
    label: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """One judgement. `score` is in [0, 1] when status == "ok", else None."""

    score: float | None
    label: str | None = None  # the discrete verdict, e.g. "Safe with warning", "correct"
    status: Status = "ok"
    details: dict[str, Any] = field(default_factory=dict)  # raw judge output, categories, probs

    def __post_init__(self) -> None:
        if self.status == "ok":
            if self.score is None or not (0.0 <= self.score <= 1.0):
                raise ValueError(f"an ok verdict needs a score in [0, 1], got {self.score!r}")
        elif self.score is not None:
            raise ValueError(f"a {self.status} verdict must not carry a score")

    @classmethod
    def not_applicable(cls, why: str) -> "Verdict":
        return cls(None, None, "not_applicable", {"reason": why})

    @classmethod
    def parse_error(cls, raw: str, why: str = "unparseable judge output") -> "Verdict":
        return cls(None, None, "parse_error", {"raw": raw, "reason": why})


class Verifier(ABC):
    """Base class. Subclasses set `name` and implement `verify` (batched)."""

    name: ClassVar[str] = ""
    judges_think: ClassVar[bool] = False  # True: the reasoning is judged too, not only the answer

    def judged_text(self, item: VerifyItem) -> str:
        """The answer after the last `</think>`, unless this verifier judges the reasoning too."""
        return item.response if self.judges_think else answer_text(item.response)

    @abstractmethod
    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        """One verdict per item, in order."""

    def __call__(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        verdicts = self.verify(items)
        if len(verdicts) != len(items):
            raise RuntimeError(f"verifier {self.name!r} returned {len(verdicts)} verdicts for {len(items)} items")
        return verdicts


VERIFIERS: dict[str, Callable[..., Verifier]] = {}


def register_verifier(name: str) -> Callable[[type[Verifier]], type[Verifier]]:
    """Class decorator: make a verifier constructible by name (`build_verifier(name, **options)`)."""

    def deco(cls: type[Verifier]) -> type[Verifier]:
        if name in VERIFIERS:
            raise ValueError(f"verifier {name!r} is already registered")
        cls.name = name
        VERIFIERS[name] = cls
        return cls

    return deco


def build_verifier(name: str, **options: Any) -> Verifier:
    _import_builtin_verifiers()
    if name not in VERIFIERS:
        raise ConfigError(f"unknown verifier {name!r}; known: {', '.join(sorted(VERIFIERS))}")
    try:
        return VERIFIERS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"verifier {name!r}: bad options {sorted(options)}: {exc}") from None


# Modules that register verifiers when imported (looked up lazily, so startup stays fast).
BUILTIN_VERIFIER_MODULES: list[str] = [
    "safeladder.verifiers.rules",
    "safeladder.verifiers.consistency",
    "safeladder.verifiers.neural",
    "safeladder.verifiers.judges",
    "safeladder.verifiers.guards",
    "safeladder.verifiers.client",
    "safeladder.verifiers.search_rewards",
    "safeladder.distributed.verifier_pool",  # "ray_pool" (Ray itself is imported only when used)
]


def _import_builtin_verifiers() -> None:
    import importlib

    for module in BUILTIN_VERIFIER_MODULES:
        importlib.import_module(module)
