"""Rule-based verifiers (SPEC §3.3 "rules"): format, answers, instruction following, language, length.

All are cheap and deterministic and need no model. Each returns one explicit verdict per item and
never invents a score: an item a rule cannot judge (no reference, no instructions) gets
`not_applicable`; broken item data (an unknown IFEval id, a reference that is not a choice) gets
status "error" with the reason. Unless noted, a verifier judges only the answer after `</think>`.

Registered names and options:
  format            1/0 from `safeladder.format.parse_response` on the whole completion.
  math              math-verify equivalence of the final answer with `reference`.
  multiple_choice   choice letter A–J vs `reference` (a letter, or a choice text with metadata["choices"]).
  exact_match       SQuAD-normalised exact match, max over reference aliases (alias_sep="|").
  token_f1          SQuAD token F1, max over reference aliases (alias_sep="|").
  ifeval            fraction of IFEval instructions followed (mode="strict"|"loose"); see ifeval.py.
  language          question, reasoning and answer share one dominant script.
  length            word count vs max_words (target="answer"|"completion"), linear decay to 2×max.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
import string
from collections import Counter
from typing import Any, Mapping, Sequence

from safeladder.data.curate import NO_SCRIPT, dominant_script, language_consistent
from safeladder.errors import ConfigError
from safeladder.format import answer_text, parse_response
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, register_verifier
from safeladder.verifiers.ifeval import ifeval_check, sentence_splitter
from safeladder.verifiers.math_answer import extract_answer, is_correct

__all__ = [
    "extract_choice",
    "length_score",
    "normalize_answer",
    "reference_aliases",
    "token_f1",
]


def _error(why: str) -> Verdict:
    """The item's own data is broken (not the verifier's choice to skip it)."""
    return Verdict(None, None, "error", {"reason": why})


def _has_reference(item: VerifyItem) -> bool:
    return item.reference is not None and item.reference.strip() != ""


# --------------------------------------------------------------------------- format

@register_verifier("format")
class FormatVerifier(Verifier):
    """1.0 iff the completion is exactly `<think> non-empty </think> non-empty answer`.

    Looks at the completion only: the system prompt mentions the tags itself.
    """

    judges_think = True

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        verdicts = []
        for item in items:
            issues = list(parse_response(item.response).issues)
            ok = not issues
            verdicts.append(Verdict(1.0 if ok else 0.0, "well_formed" if ok else "malformed", details={"issues": issues}))
        return verdicts


# --------------------------------------------------------------------------- math

@register_verifier("math")
class MathVerifier(Verifier):
    """1.0 iff the one final answer equals `reference` (exact for numbers, else math-verify)."""

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        return [self._one(item) for item in items]

    def _one(self, item: VerifyItem) -> Verdict:
        if not _has_reference(item):
            return Verdict.not_applicable("no reference answer")
        assert item.reference is not None
        answer = self.judged_text(item)
        extracted = extract_answer(answer)
        details = {"extracted": extracted, "reference": item.reference}
        if extracted is None:
            return Verdict(0.0, "no_answer", details=details)
        correct = is_correct(answer, item.reference)
        return Verdict(1.0 if correct else 0.0, "correct" if correct else "incorrect", details=details)


# --------------------------------------------------------------------------- multiple choice

_CHOICE_LETTERS = "ABCDEFGHIJ"
# A choice letter that is a whole token: upper case (but not the pronoun in "I think"), or lower
# case only where it cannot be a word ("a bit"): parenthesised, bold, or last on its line.
_LETTER = (
    r"(?:\(\s*([A-Ja-j])\s*\)|\[\s*([A-Ja-j])\s*\]|\*\*([A-Ja-j])\*\*"
    r"|([A-HJ]|I(?!\s+[a-z]))(?![\w'’])|([a-j])(?=[.):]?[*_]*\s*$))"
)
_BOXED_CHOICE = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-Ja-j])\)?\s*\}?\s*\}")
_STATED_CHOICE = re.compile(  # only the keywords ignore case: the letter's case matters (see above)
    rf"\b(?i:answers?|options?|choices?)\b(?:\s+(?i:is|would\s+be|should\s+be|must\s+be))?\s*[:=]?[\s*_]*{_LETTER}",
    re.MULTILINE,
)
_LINE_CHOICE = re.compile(r"^[\s*_#>]*[(\[]?\s*([A-Ja-j])\s*[)\].:]?[\s*_]*$")  # a line that is just "(B)"
_LEADING_CHOICE = re.compile(r"^[\s*_]*[(\[]?([A-Ja-j])[)\].:](?:\s|$)")  # "B. Paris", "(c) ..."
_PAREN_CHOICE = re.compile(r"\(([A-J])\)")


def _stated(text: str) -> str | None:
    found = list(_STATED_CHOICE.finditer(text))
    if not found:
        return None
    return next(g for g in found[-1].groups() if g)


def _boxed(text: str) -> str | None:
    found = _BOXED_CHOICE.findall(text)
    return found[-1] if found else None


def _own_line(text: str) -> str | None:
    lines = [m.group(1) for line in text.splitlines() if (m := _LINE_CHOICE.match(line))]
    return lines[-1] if lines else None


def _leading(text: str) -> str | None:
    match = _LEADING_CHOICE.match(text.strip())
    return match.group(1) if match else None


def _parenthesised(text: str) -> str | None:
    found = _PAREN_CHOICE.findall(text)
    return found[-1] if found else None


# Most explicit first: "\boxed{B}", "the answer is (B)", a line that is only "B", an answer that
# starts with "B." / "(B)", the last "(B)" anywhere.
_CHOICE_EXTRACTORS = (
    ("boxed", _boxed), ("stated", _stated), ("own_line", _own_line), ("leading", _leading),
    ("parenthesised", _parenthesised),
)


def _extract_choice_how(text: str) -> tuple[str | None, str | None]:
    for how, extract in _CHOICE_EXTRACTORS:
        letter = extract(text)
        if letter:
            return letter.upper(), how
    return None, None


def extract_choice(text: str) -> str | None:
    """The chosen letter A–J ("The answer is (B)", "B.", "**C**", "Answer: d" -> "B","B","C","D"), or None."""
    return _extract_choice_how(text)[0]


def _choice_texts(choices: Any) -> dict[str, str]:
    """letter -> choice text, from a list (A, B, ... in order) or a {letter: text} mapping."""
    if isinstance(choices, Mapping):
        return {str(k).strip().upper(): str(v) for k, v in choices.items()}
    if isinstance(choices, (list, tuple)):
        return dict(zip(_CHOICE_LETTERS, map(str, choices)))
    return {}


def _letter_of_text(text: str, choices: Mapping[str, str]) -> str | None:
    wanted = normalize_answer(text)
    hits = [letter for letter, choice in choices.items() if normalize_answer(choice) == wanted]
    return hits[0] if wanted and len(hits) == 1 else None


def _reference_letter(reference: str, choices: Mapping[str, str]) -> str | None:
    bare = re.fullmatch(r"[(\[]?\s*([A-Ja-j])\s*[)\].]?", reference.strip())
    return bare.group(1).upper() if bare else _letter_of_text(reference, choices)


@register_verifier("multiple_choice")
class MultipleChoiceVerifier(Verifier):
    """1.0 iff the chosen letter equals the reference letter.

    `reference` is a letter ("B", "(b)") or, when metadata["choices"] lists the options (a list in
    A, B, ... order, or a {letter: text} mapping), the text of the right option. An answer with no
    letter scores 0 ("no_choice": a wrong answer, not a parse error) unless, with choices given,
    the whole answer is the text of exactly one option.
    """

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        return [self._one(item) for item in items]

    def _one(self, item: VerifyItem) -> Verdict:
        if not _has_reference(item):
            return Verdict.not_applicable("no reference choice")
        assert item.reference is not None
        choices = _choice_texts(item.metadata.get("choices"))
        want = _reference_letter(item.reference, choices)
        if want is None:
            return _error(f"reference {item.reference!r} is not a choice letter A-J nor the text of one choice")
        answer = self.judged_text(item)
        got, how = _extract_choice_how(answer)
        if got is None and choices:
            got = _letter_of_text(answer, choices)
            how = "choice_text" if got else None
        details = {"extracted": got, "reference": want, "how": how}
        if got is None:
            return Verdict(0.0, "no_choice", details=details)
        return Verdict(1.0 if got == want else 0.0, "correct" if got == want else "incorrect", details=details)


# --------------------------------------------------------------------------- exact match / F1

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles (a/an/the), collapse spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def reference_aliases(reference: str, sep: str | None = "|") -> list[str]:
    """The accepted answers in a reference.

    A reference that parses as a JSON list (`["Paris", "City of Paris"]`) gives its items;
    otherwise it is split on `sep` ("Paris|City of Paris"); sep=None keeps it whole. Blank aliases
    are dropped.
    """
    text = reference.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return [str(a).strip() for a in parsed if str(a).strip()]
    aliases = text.split(sep) if sep else [text]
    return [a.strip() for a in aliases if a.strip()]


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 of normalised texts (two empty texts: 1.0; one empty: 0.0)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _check_alias_sep(alias_sep: Any) -> str | None:
    if alias_sep is not None and (not isinstance(alias_sep, str) or not alias_sep):
        raise ConfigError(f"alias_sep must be a non-empty string or null, got {alias_sep!r}")
    return alias_sep


class ReferenceVerifier(Verifier):
    """Base of verifiers that judge an answer against the aliases of `item.reference`.

    An item without a reference answer is not applicable; `judge(text, aliases)` decides the rest.
    Shared by the rule verifiers here and the search-stage ones (`search_rewards`).
    """

    alias_sep: str | None = "|"

    @abstractmethod
    def judge(self, text: str, aliases: list[str]) -> Verdict:
        """The verdict on the judged text, given the reference's (non-empty) aliases."""

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        return [self._one(item) for item in items]

    def _one(self, item: VerifyItem) -> Verdict:
        aliases = reference_aliases(item.reference or "", self.alias_sep)
        if not aliases:
            return Verdict.not_applicable("no reference answer")
        return self.judge(self.judged_text(item), aliases)


class _AliasVerifier(ReferenceVerifier):
    """Shared by exact_match and token_f1: score = max over the reference's aliases."""

    def __init__(self, alias_sep: str | None = "|"):
        self.alias_sep = _check_alias_sep(alias_sep)

    @abstractmethod
    def score(self, prediction: str, alias: str) -> float:
        """Score of the answer against one alias."""

    @abstractmethod
    def label(self, score: float) -> str:
        """The discrete verdict for a best score."""

    def judge(self, prediction: str, aliases: list[str]) -> Verdict:
        scores = [self.score(prediction, alias) for alias in aliases]
        best = max(range(len(aliases)), key=scores.__getitem__)
        details = {"prediction": normalize_answer(prediction), "aliases": aliases, "best_alias": aliases[best]}
        return Verdict(scores[best], self.label(scores[best]), details=details)


@register_verifier("exact_match")
class ExactMatchVerifier(_AliasVerifier):
    """1.0 iff the SQuAD-normalised answer equals one normalised alias of the reference."""

    def score(self, prediction: str, alias: str) -> float:
        return float(normalize_answer(prediction) == normalize_answer(alias))

    def label(self, score: float) -> str:
        return "correct" if score == 1.0 else "incorrect"


@register_verifier("token_f1")
class TokenF1Verifier(_AliasVerifier):
    """SQuAD token F1 of the answer against the best-matching alias of the reference."""

    def score(self, prediction: str, alias: str) -> float:
        return token_f1(prediction, alias)

    def label(self, score: float) -> str:
        return "exact" if score == 1.0 else ("partial" if score > 0 else "no_overlap")


# --------------------------------------------------------------------------- IFEval

_IFEVAL_MODES = ("strict", "loose")


@register_verifier("ifeval")
class IFEvalVerifier(Verifier):
    """Fraction of the item's IFEval instructions the answer follows (official checker, offline).

    Reads metadata["instruction_id_list"] and metadata["kwargs"] (IFEval layout: one dict per id;
    may be omitted when no instruction takes arguments). The score uses `mode` ("strict", the
    IFEval default, or "loose"); details hold both per-instruction lists.
    """

    def __init__(self, mode: str = "strict"):
        if mode not in _IFEVAL_MODES:
            raise ConfigError(f"ifeval mode must be one of {_IFEVAL_MODES}, got {mode!r}")
        self.mode = mode

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        return [self._one(item) for item in items]

    def _one(self, item: VerifyItem) -> Verdict:
        ids = item.metadata.get("instruction_id_list")
        if not ids:
            return Verdict.not_applicable("no instruction_id_list in metadata")
        try:
            result = ifeval_check(self.judged_text(item), ids, item.metadata.get("kwargs"), item.prompt)
        except ValueError as exc:
            return _error(f"bad IFEval metadata: {exc}")
        except Exception as exc:  # a checker bug on an odd answer: say so, never guess a score
            return _error(f"IFEval checker failed: {type(exc).__name__}: {exc}")
        followed = result[self.mode]
        score = sum(followed) / len(followed)
        label = "all_followed" if all(followed) else ("none" if not any(followed) else "partial")
        details = {
            "instruction_id_list": list(ids), "strict": result["strict"], "loose": result["loose"],
            "mode": self.mode, "sentence_splitter": sentence_splitter(),
        }
        return Verdict(score, label, details=details)


# --------------------------------------------------------------------------- language

@register_verifier("language")
class LanguageVerifier(Verifier):
    """1.0 iff question, reasoning and answer share one dominant script (Latin, CJK, Cyrillic, ...).

    Texts without prose (numbers, formulas) do not count; if none of the three has prose there is
    nothing to judge (not_applicable).
    """

    judges_think = True

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        return [self._one(item) for item in items]

    def _one(self, item: VerifyItem) -> Verdict:
        parsed = parse_response(item.response)
        texts = {"question": item.prompt, "reasoning": parsed.think or "", "answer": parsed.answer}
        scripts = {part: dominant_script(text) for part, text in texts.items()}
        if set(scripts.values()) == {NO_SCRIPT}:
            return Verdict.not_applicable("no prose in question, reasoning or answer")
        ok = language_consistent(*texts.values())
        return Verdict(1.0 if ok else 0.0, "consistent" if ok else "mixed", details={"scripts": scripts})


# --------------------------------------------------------------------------- length

_LENGTH_TARGETS = ("answer", "completion")


def length_score(words: int, max_words: int) -> float:
    """1.0 up to `max_words`, then linear down to 0.0 at 2 × max_words (and 0 beyond)."""
    if words <= max_words:
        return 1.0
    return max(0.0, 1.0 - (words - max_words) / max_words)


@register_verifier("length")
class LengthVerifier(Verifier):
    """Rewards brevity: `length_score(words, max_words)`.

    Words are whitespace-separated tokens (a cheap, tokenizer-free stand-in for model tokens; CJK
    text without spaces counts as few words). target="answer" counts the text after `</think>`,
    target="completion" the whole completion, reasoning included. max_words defaults to 512.
    """

    judges_think = True  # with target="completion"; target="answer" reads only the answer

    def __init__(self, max_words: int = 512, target: str = "answer"):
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ConfigError(f"length max_words must be a positive integer, got {max_words!r}")
        if target not in _LENGTH_TARGETS:
            raise ConfigError(f"length target must be one of {_LENGTH_TARGETS}, got {target!r}")
        self.max_words, self.target = max_words, target

    def judged_text(self, item: VerifyItem) -> str:
        return item.response if self.target == "completion" else answer_text(item.response)

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        verdicts = []
        for item in items:
            words = len(self.judged_text(item).split())
            score = length_score(words, self.max_words)
            label = "within_limit" if score == 1.0 else ("too_long" if score == 0.0 else "over_limit")
            details = {"words": words, "max_words": self.max_words, "target": self.target}
            verdicts.append(Verdict(score, label, details=details))
        return verdicts
