"""Rule-based math answer check (SPEC §3.3 "rules: math answer equivalence").

Two jobs: pull the *one* final answer out of an answer text, and decide whether it equals the
reference. Only a single extracted answer is compared, so a completion cannot earn credit by
listing many candidate numbers. Plain numbers are compared exactly (fast, no imports, safe from
any thread); anything else (LaTeX fractions, expressions) goes to the `math-verify` package.

math-verify's own timeouts use `signal.alarm`, which fails outside the main thread and would also
cancel any alarm the caller set (e.g. pytest-timeout). We therefore always call it with timeouts
disabled and bound its work by truncating the inputs instead.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from typing import Any

__all__ = ["extract_answer", "is_correct", "to_number"]

# A number: optional sign (not when glued to a word/digit, so "85-38" is not "-38"), thousands
# commas, decimals. Unicode minus is accepted.
_NUM = r"(?:(?<![\w)\]])[-−])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?:(?<![\w)\]])[-−])?\.\d+"
_NUM_RE = re.compile(_NUM)
_FRACTION = rf"(?:{_NUM})(?:\s*/\s*\d+)?"
_ANSWER_IS_RE = re.compile(
    rf"(?:answer\s*(?:is|:|=)|####)[\s:*_]*(?:\$\s*([^$\n]{{1,200}}?)\s*\$|\$?\s*({_FRACTION}))",
    re.IGNORECASE,
)
_EQUALS_END_RE = re.compile(rf"=\s*\$?\s*({_FRACTION})\s*\$?\s*[.!]?\s*$")
_MAX_MV_CHARS = 1000  # bound on what math-verify parses (it runs without a timeout, see above)


def _normalize_number(text: str) -> str:
    """'1,234' -> '1234', '−7' -> '-7', '3 / 4' -> '3/4'; other text is returned stripped."""
    return re.sub(r"\s+", "", text.replace(",", "").replace("−", "-")) if _looks_numeric(text) else text.strip()


def _looks_numeric(text: str) -> bool:
    return re.fullmatch(rf"\s*{_FRACTION}\s*", text) is not None


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip() or None
    return None  # unbalanced: truncated answer


def extract_answer(text: str) -> str | None:
    """The final answer of an answer text, or None if it has none.

    Priority: last `\\boxed{…}`; last "the answer is X" / "Answer: X" / "#### X"; "= X" closing the
    text; the last number. Numbers come back normalised ("1,234" -> "1234"); LaTeX stays as written.
    """
    boxed = _last_boxed(text)
    if boxed is not None:
        return _normalize_number(boxed)
    said = list(_ANSWER_IS_RE.finditer(text))
    if said:
        return _normalize_number(said[-1].group(1) or said[-1].group(2))
    end = _EQUALS_END_RE.search(text.strip())
    if end:
        return _normalize_number(end.group(1))
    numbers = _NUM_RE.findall(text)
    return _normalize_number(numbers[-1]) if numbers else None


def to_number(text: str | None) -> Fraction | None:
    """Exact value of a plain number ("1,234", "-7", "85.0", "3/4", "$12"), else None."""
    if text is None:
        return None
    cleaned = text.strip().removeprefix("$").removesuffix("$").strip()
    if not _looks_numeric(cleaned):
        return None
    try:
        return Fraction(_normalize_number(cleaned))
    except (ValueError, ZeroDivisionError):
        return None


def _reference_value(reference: str) -> str:
    """A reference may be a bare value or a worked solution ("... #### 72"): keep its final answer."""
    if to_number(reference) is not None:
        return reference.strip()
    extracted = extract_answer(reference) if ("\\boxed{" in reference or "####" in reference) else None
    return extracted if extracted is not None else reference.strip()


class _DropTimeoutWarning(logging.Filter):
    """math-verify warns on every process start that timeouts are off; we turned them off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


def _math_verify(answer_text: str, reference: str) -> bool | None:
    """math-verify's verdict, or None when it is unavailable or errors (caller falls back)."""
    try:
        from math_verify import parse, verify  # lazy: pulls in sympy, only needed for non-numbers
    except ImportError:
        return None
    for name in ("math_verify.parser", "math_verify.grader"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTimeoutWarning) for f in log.filters):
            log.addFilter(_DropTimeoutWarning())
    gold_text = reference if "$" in reference or "\\boxed" in reference else f"${reference}$"
    try:
        gold: Any = parse(gold_text[:_MAX_MV_CHARS], parsing_timeout=None)
        pred: Any = parse(answer_text[-_MAX_MV_CHARS:], parsing_timeout=None)
        if not gold or not pred:
            return None
        return bool(verify(gold, pred, timeout_seconds=None))
    except Exception:  # math-verify raises on odd inputs; treat as "cannot tell"
        return None


def is_correct(answer_text: str, reference: str) -> bool:
    """True iff the final answer of `answer_text` equals `reference`.

    Plain numbers compare exactly ("85.0" == "85", "1,234" == "1234", "0.5" == "1/2"). Other
    answers are checked with math-verify (symbolic equivalence); if it cannot decide, the
    answer is judged wrong. Pass only the text after `</think>` (see `safeladder.format.answer_text`).
    """
    candidate = extract_answer(answer_text)
    if candidate is None:
        return False
    ref = _reference_value(reference)
    got, want = to_number(candidate), to_number(ref)
    if got is not None and want is not None:
        return got == want
    verdict = _math_verify(answer_text, ref)
    if verdict is not None:
        return verdict
    return candidate.replace(" ", "") == ref.replace(" ", "")
