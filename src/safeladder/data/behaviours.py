"""Tag chain-of-thought traces with reasoning behaviours (SPEC §2, "cognitive diversity analysis").

A behaviour is a name plus a few word-bounded, case-insensitive regexes. A trace carries the
behaviour if any of its patterns occurs in the reasoning. The registry is a plain module-level
dict so users can add, drop or retune behaviours (`register_behaviour`, or edit `BEHAVIOURS`
directly), and every function also takes a `registry=` override so a config can supply its own
without touching global state.

Patterns are deliberately lexical: they are cheap, transparent and reproducible, which matters
more for a data report than catching every paraphrase.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Pattern, Sequence

Registry = Mapping[str, Sequence[Pattern[str]]]


def word_pattern(body: str) -> Pattern[str]:
    """Compile a regex body as a whole-word, case-insensitive pattern; spaces match any whitespace.

    Word boundaries keep "check" from firing inside "paycheck" or "checkout", and "then"
    inside "strengthen". Pass an already compiled pattern to `register_behaviour` to opt out
    (e.g. for CJK markers such as "等等", where `\\b` does not separate words).
    """
    return re.compile(r"\b(?:" + re.sub(r" +", r"\\s+", body) + r")\b", re.IGNORECASE)


def build_registry(spec: Mapping[str, Iterable[str | Pattern[str]]]) -> dict[str, tuple[Pattern[str], ...]]:
    """Turn {name: [regex body or compiled pattern, ...]} (e.g. from YAML) into a registry."""
    return {
        name: tuple(p if isinstance(p, re.Pattern) else word_pattern(p) for p in patterns)
        for name, patterns in spec.items()
    }


# Order is the report order. Bodies are regexes (see `word_pattern`); keep them readable.
_DEFAULT_SPEC: dict[str, tuple[str, ...]] = {
    "verification": (
        r"check(?:s|ed|ing)?",
        r"double[- ]?check(?:s|ed|ing)?",
        r"verif(?:y|ies|ied|ying|ication)",
        r"substitut(?:e|es|ed|ing) (?:\w+ )?back",
        r"plug(?:s|ged|ging)? (?:\w+ )?back",
        r"let me confirm",
    ),
    "backtracking": (
        r"wait",
        r"actually",
        r"(?:that|this)(?:'s|’s| is| was) (?:wrong|incorrect|not right)",
        r"let me re-?do",
        r"instead",
        r"I made (?:a|an) (?:mistake|error)",
    ),
    "subgoal": (
        r"first(?:ly)?",
        r"step (?:\d+|one|two|three|four|five)",
        r"next",
        r"then",
        r"finally",
        r"break (?:this|it|the problem|that) down",
        r"sub-?(?:goal|problem|task)s?",
    ),
    "reflection": (
        r"h+m+",
        r"let me think",
        r"let's think",
        r"reconsider(?:s|ed|ing)?",
        r"on second thoughts?",
    ),
    "risk_assessment": (
        r"harm(?:s|ed|ful|fully|ing)?",
        r"dangerous(?:ly)?",
        r"danger(?:s)?",
        r"illegal(?:ly)?",
        r"unsafe",
        r"risk(?:s|y|ier|ed)?",
    ),
}

BEHAVIOURS: dict[str, tuple[Pattern[str], ...]] = build_registry(_DEFAULT_SPEC)


def register_behaviour(
    name: str,
    patterns: Iterable[str | Pattern[str]],
    registry: dict[str, tuple[Pattern[str], ...]] | None = None,
) -> None:
    """Add (or replace) a behaviour in `registry` (the module-level `BEHAVIOURS` by default)."""
    target = BEHAVIOURS if registry is None else registry
    target.update(build_registry({name: patterns}))


def tag_behaviours(think: str | None, registry: Registry | None = None) -> frozenset[str]:
    """The behaviours whose patterns occur in `think` (the reasoning text)."""
    if not think:
        return frozenset()
    reg = BEHAVIOURS if registry is None else registry
    return frozenset(name for name, patterns in reg.items() if any(p.search(think) for p in patterns))
