"""Stated confidence: `<confidence>high|low</confidence>` or a number in [0, 1] at the end of the answer.

The false-certain constraint (SPEC §5) needs a confidence for every answer, so this module also
decides what a *missing* or unreadable tag means — by default "high": a model must not escape the
constraint by omitting the tag (it has to say "low" to be honest).
"""

from __future__ import annotations

import math
import re
from typing import Literal

CONFIDENCE_OPEN = "<confidence>"
CONFIDENCE_CLOSE = "</confidence>"
_TAG = re.compile(r"<confidence>\s*(.*?)\s*</confidence>", re.IGNORECASE | re.DOTALL)
_STRAY = re.compile(r"</?confidence>", re.IGNORECASE)
LEVELS = {"high": 1.0, "low": 0.0}

Missing = Literal["high", "low"]


def parse_confidence(text: str) -> float | None:
    """The last stated confidence in [0, 1] ("high" 1.0, "low" 0.0, or the number), None if none is valid."""
    tags = _TAG.findall(text)
    if not tags:
        return None
    raw = tags[-1].strip().lower()
    if raw in LEVELS:
        return LEVELS[raw]
    try:
        value = float(raw.rstrip("%")) / (100.0 if raw.endswith("%") else 1.0)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def strip_confidence(text: str) -> str:
    """The answer without its confidence tag(s) — what correctness is judged on."""
    return re.sub(r"[ \t]{2,}", " ", _STRAY.sub(" ", _TAG.sub(" ", text))).strip()


def confidence_or_default(text: str, missing: Missing = "high") -> float:
    """Stated confidence, with `missing` standing in for an absent or unreadable tag."""
    value = parse_confidence(text)
    return LEVELS[missing] if value is None else value


def is_confident(value: float, threshold: float = 0.5) -> bool:
    """k = 1[confidence ≥ threshold]: "high" is confident, "low" is not; numbers split at the threshold."""
    return value >= threshold
