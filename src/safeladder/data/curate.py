"""Curate user-supplied chain-of-thought traces for CoT-SFT (SPEC §2).

A trace is kept only if it passes every check below; the FIRST failing check names the drop
reason. The order runs from cheap, structural checks to the (possibly expensive) answer
verifier, and ends with deduplication so that "duplicate" only ever means "identical to a trace
that was kept":

    1. no_response        `response` is missing or blank
    2. truncated          the think block never closed, or nothing follows it (`is_truncated`)
    3. format             not exactly `<think> non-empty </think> non-empty answer` (`format_ok`)
    4. looping            a word n-gram or a line repeats too often (`detect_loop`)
    5. language_mismatch  question, reasoning and answer differ in dominant script
    6. wrong_answer       the injected `answer_check` returned False (None = not applicable)
    7. duplicate          same normalised (prompt, images, response) as an earlier kept trace

"truncated" is tested before "format" because a truncated trace also fails the format check and
the more specific diagnosis is the useful one. Kept traces get `metadata["behaviours"]` (sorted
behaviour tags of the reasoning); `rebalance` then down-samples so no behaviour dominates.
"""

from __future__ import annotations

import functools
import importlib
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from safeladder.data.behaviours import BEHAVIOURS, Registry, tag_behaviours
from safeladder.data.sample import Sample
from safeladder.format import format_ok, parse_response
from safeladder.verifiers.refusal import is_refusal

DROP_REASONS = (
    "no_response", "truncated", "format", "looping", "language_mismatch", "wrong_answer", "duplicate",
)
NO_BEHAVIOUR = "none"
NO_SCRIPT = "none"
RULE_LABELS = frozenset({"math", "knowledge_rule", "general_rule"})

AnswerCheck = Callable[[Sample, str], bool | None]


# --------------------------------------------------------------------------- answer check

@functools.cache
def _load_is_correct() -> Callable[[str, str], bool] | None:
    """The math-verify based checker, imported lazily so curation works before/without it."""
    try:
        module = importlib.import_module("safeladder.verifiers.math_answer")
    except ImportError:
        return None
    return getattr(module, "is_correct", None)


_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def _normalise_answer(text: str) -> str:
    boxed = _BOXED.findall(text)
    if boxed:
        text = boxed[-1]
    text = " ".join(text.lower().split())
    return text.strip().strip("$").strip().rstrip(".").strip()


def exact_match(answer: str, reference: str) -> bool:
    """Strict fallback: equal after lowercasing, collapsing whitespace and unwrapping `\\boxed{}`.

    Deliberately strict: when unsure, curation should drop a trace rather than keep a wrong one.
    """
    return _normalise_answer(answer) == _normalise_answer(reference)


def default_answer_check(sample: Sample, answer: str) -> bool | None:
    """Rule-checked labels with a reference are verified; everything else is "not applicable"."""
    if sample.label not in RULE_LABELS or sample.reference is None:
        return None
    is_correct = _load_is_correct()
    if is_correct is None:
        return exact_match(answer, sample.reference)
    return bool(is_correct(answer, sample.reference))


# --------------------------------------------------------------------------- truncation / loops

def is_truncated(sample_response: str) -> bool:
    """True if the reasoning never closed ("missing_close_tag") or no answer follows ("empty_answer").

    Both are what a generation cut off by a token limit looks like; a response without any think
    tags is a format problem, not a truncation.
    """
    issues = parse_response(sample_response).issues
    return "missing_close_tag" in issues or "empty_answer" in issues


_CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# Scripts without spaces between words count one token per character.
_TOKEN = re.compile(rf"[{_CJK_CHARS}]|(?:(?![{_CJK_CHARS}])\w)+")


def detect_loop(text: str, ngram: int = 8, max_repeats: int = 3, line_repeats: int = 3) -> bool:
    """True if one word n-gram occurs more than `max_repeats` times, or a line repeats
    `line_repeats` or more times in a row (ignoring blank lines between the copies): the two
    shapes of a degenerate, looping generation. CJK characters count as one word each.
    """
    if ngram < 1 or max_repeats < 1 or line_repeats < 2:
        raise ValueError("ngram and max_repeats must be >= 1 and line_repeats >= 2")
    run, previous = 0, None
    for line in text.splitlines():
        line = " ".join(line.split())
        if not re.search(r"\w", line):
            continue  # blank lines and rules ("---") often separate the copies of a looping line
        run = run + 1 if line == previous else 1
        previous = line
        if run >= line_repeats:
            return True
    tokens = _words(text)
    counts: Counter[tuple[str, ...]] = Counter()
    for i in range(len(tokens) - ngram + 1):
        gram = tuple(tokens[i : i + ngram])
        counts[gram] += 1
        if counts[gram] > max_repeats:
            return True
    return False


def restates_reasoning(completion: str, request: str = "", span: int = 8) -> bool:
    """True if the answer opens by copying the reasoning: its first `span` words (at least 6)
    stand word for word in the think block, once any quote of the request is taken out of both.

    A model whose answer repeats its own reasoning ("The word "kill" can sound alarming… I'll
    help.") has not answered. Length pressure in RL finds this shape (benchmarks/RESULTS.md,
    CALE session 9); restating the *request* in both places is not a copy.
    """
    parsed = parse_response(completion)
    if not parsed.think:
        return False
    quote = _words(request)
    answer = _drop(_words(parsed.answer), quote)
    if len(answer) < 6:
        return False
    opening = " ".join(answer[:span])
    return f" {opening} " in f" {' '.join(_drop(_words(parsed.think), quote))} "


# Words that carry no answer of their own: an answer made only of these and the request's words
# says nothing the request did not ("The answer is: <request>."). Question words are in the list
# so that "Smoke a brisket." covers all of "How do I smoke a brisket?".
_FILLER = frozenset(
    "the a an answer is are was were be it this that these to of and or so for on in at by from with "
    "how what who why when where which do does did can could would should i me my you your".split()
)
# The reasoning's voice in an answer: the requester in the third person, or the decision itself.
_USER_VOICE = re.compile(r"\bthe user (?:actually |really |just |simply )?(?:wants|asks|is asking)\b", re.IGNORECASE)
_DECISION = re.compile(r"\bI should (?:simply |just |only )?(help|decline|refuse|answer|give|provide|explain)\b",
                       re.IGNORECASE)
_DECLINES = frozenset({"decline", "refuse"})
# A promise to help ("I'll help with that."); "I can't …" is a refusal, not a promise.
_PROMISE = re.compile(
    r"^(?:sure|okay|ok|of course)?[\s,.!]*(?:I['’]ll|I will|I can|let me)(?!['’]t\b|not\b| not\b)\s+\w+",
    re.IGNORECASE,
)
# A request for the user's input that defers the answer ("Just paste the text and I'll help.",
# "What would you like to know?"): with promises around it, still no answer.
_DEFERRAL = re.compile(
    r"^(?:just|please|simply|so|then)?[\s,]*(?:share|paste|send|tell me|let me know|give me|provide|"
    r"describe|upload|post)\b|^[^.!]*\byou\b[^.!]*\?$",
    re.IGNORECASE,
)


def restates_request(answer: str, request: str, min_words: int = 3, min_cover: float = 0.5) -> bool:
    """True if an answer of at least `min_words` words uses no word beyond the request's own (and
    filler such as "the answer is") and says back at least `min_cover` of the request's content
    words: "Smoke a brisket." for "How do I smoke a brisket?". An answer quoted out of a long
    request (extractive QA over a pasted document) covers too little of it to count.
    """
    words = _words(answer)
    if len(words) < min_words:
        return False
    asked = set(_words(request))
    content = asked - _FILLER
    if not content or not all(w in asked or w in _FILLER for w in words):
        return False
    return len(content & set(words)) >= min_cover * len(content)


def deliberates(answer: str, max_promise_words: int = 20) -> bool:
    """True if the answer speaks in the reasoning's voice instead of answering: it discusses
    "the user" in the third person or states what it should do ("I should simply help"), or it
    is nothing but promises to help ("I'll help. I'll explain why and how."), possibly with a
    request for more input that defers the answer ("I can help with that. Just paste the text
    and I'll help you craft it." — the shape CALE found in session 20).

    An answer that opens by declining (`refusal.is_refusal`) may give its reason in that voice
    ("I am not able to help with this request. The user wants information that could mislead
    people, so I will not help."): it still declines, unless it also says it should help.
    """
    decisions = {m.group(1).lower() for m in _DECISION.finditer(answer)}
    if _USER_VOICE.search(answer) or decisions:
        return bool(decisions - _DECLINES) or not is_refusal(answer)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s.strip()]
    return (bool(sentences) and len(_words(answer)) <= max_promise_words
            and any(_PROMISE.match(s) for s in sentences)
            and all(_PROMISE.match(s) or _DEFERRAL.search(s) for s in sentences))


def is_non_answer(completion: str, request: str = "") -> bool:
    """True if the text after the reasoning is not an answer to the request: a copy of the
    reasoning (`restates_reasoning`), the request said back (`restates_request`), or more
    deliberation (`deliberates`). Length pressure in RL finds all three shapes
    (benchmarks/RESULTS.md, CALE sessions 9 and 12); judges call them Illogical completions.
    """
    answer = parse_response(completion).answer
    return (restates_reasoning(completion, request) or restates_request(answer, request)
            or deliberates(answer))


def _words(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def _drop(words: list[str], seq: list[str]) -> list[str]:
    """`words` with every occurrence of the word sequence `seq` removed."""
    if not seq:
        return words
    out, i, n = [], 0, len(seq)
    while i < len(words):
        if words[i : i + n] == seq:
            i += n
        else:
            out.append(words[i])
            i += 1
    return out


# --------------------------------------------------------------------------- language

# Math, code and LaTeX commands are written in Latin letters whatever the language, so they
# would otherwise make every math-heavy Chinese trace look "Latin".
_NOT_PROSE = re.compile(
    r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[A-Za-z]+", re.DOTALL
)
_SCRIPT_ALIASES = {"CJK": "CJK", "HIRAGANA": "CJK", "KATAKANA": "CJK", "KATAKANA-HIRAGANA": "CJK"}
_WIDTH_PREFIXES = {"FULLWIDTH", "HALFWIDTH"}
_NOT_A_SCRIPT = {"MATHEMATICAL", "MODIFIER", "SUPERSCRIPT", "SUBSCRIPT", "CIRCLED", "PARENTHESIZED"}
_PER_CHAR_SCRIPTS = {"CJK", "Thai", "Lao", "Khmer", "Myanmar"}


@functools.lru_cache(maxsize=8192)
def _script_of(ch: str) -> str | None:
    """Unicode script of a letter, from its character name ("CYRILLIC SMALL LETTER A" -> Cyrillic)."""
    if not ch.isalpha():
        return None
    words = unicodedata.name(ch, "").split()
    if words and words[0] in _WIDTH_PREFIXES:
        words = words[1:]
    if not words or words[0] in _NOT_A_SCRIPT:
        return None
    return _SCRIPT_ALIASES.get(words[0], words[0].title())


def script_counts(text: str) -> Counter[str]:
    """Word-like units per script: one per CJK/Thai character, one per run of >= 2 letters otherwise.

    Counting words rather than letters keeps "使用 Python 的 list" from looking Latin just because
    Latin words are longer; ignoring single letters skips variables such as "x".
    """
    counts: Counter[str] = Counter()
    run_script, run_len = None, 0

    def close_run() -> None:
        if run_script is not None and run_script not in _PER_CHAR_SCRIPTS and run_len >= 2:
            counts[run_script] += 1

    for ch in _NOT_PROSE.sub(" ", text):
        script = _script_of(ch)
        if script in _PER_CHAR_SCRIPTS:
            counts[script] += 1
        if script != run_script:
            close_run()
            run_script, run_len = script, 0
        run_len += 1
    close_run()
    return counts


def dominant_script(text: str) -> str:
    """The script with the most word-like units ("Latin", "CJK", "Cyrillic", ...), or "none"."""
    counts = script_counts(text)
    if not counts:
        return NO_SCRIPT
    return min(counts, key=lambda s: (-counts[s], s))


def language_consistent(*texts: str) -> bool:
    """True if all texts that contain prose share one dominant script (numbers-only texts pass)."""
    return len({dominant_script(t) for t in texts} - {NO_SCRIPT}) <= 1


# --------------------------------------------------------------------------- per-trace check

def drop_reason(
    sample: Sample,
    *,
    answer_check: AnswerCheck | None = default_answer_check,
    require_language_consistency: bool = True,
    loop_ngram: int = 8,
    loop_max_repeats: int = 3,
) -> str | None:
    """The first failing check for one trace (see module docstring), or None if it passes.

    Deduplication needs the whole set and is done by `curate`.
    """
    response = sample.response
    if response is None or not response.strip():
        return "no_response"
    if is_truncated(response):
        return "truncated"
    if not format_ok(response):
        return "format"
    if detect_loop(response, loop_ngram, loop_max_repeats):
        return "looping"
    parsed = parse_response(response)
    if require_language_consistency and not language_consistent(sample.user_text, parsed.think or "", parsed.answer):
        return "language_mismatch"
    if answer_check is not None and answer_check(sample, parsed.answer) is False:
        return "wrong_answer"
    return None


def _dedup_key(sample: Sample) -> tuple[str, tuple[str, ...], str]:
    """Normalised (prompt, images, response): lowercase, whitespace collapsed."""
    prompt = sample.prompt if sample.prompt is not None else "\n".join(
        f"{m['role']}: {m['content']}" for m in sample.chat()
    )
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return norm(prompt), tuple(sample.images), norm(sample.response or "")


# --------------------------------------------------------------------------- behaviours

def sample_behaviours(sample: Sample, registry: Registry | None = None) -> frozenset[str]:
    """Tags stored by `curate` in metadata["behaviours"], else tagged afresh from the reasoning."""
    stored = sample.metadata.get("behaviours")
    if isinstance(stored, (list, tuple, set, frozenset)):
        return frozenset(stored)
    return tag_behaviours(parse_response(sample.response or "").think, registry)


def behaviour_distribution(samples: Sequence[Sample], registry: Registry | None = None) -> dict[str, float]:
    """Share of traces carrying each behaviour (registry order, then extra stored tags), plus "none"."""
    tags = [sample_behaviours(s, registry) for s in samples]
    names = list(BEHAVIOURS if registry is None else registry)
    names += sorted({t for ts in tags for t in ts} - set(names))
    n = len(tags)
    dist = {name: (sum(name in ts for ts in tags) / n if n else 0.0) for name in names}
    dist[NO_BEHAVIOUR] = sum(not ts for ts in tags) / n if n else 0.0
    return dist


def rebalance(
    samples: Sequence[Sample], max_share: float = 0.5, seed: int = 0, registry: Registry | None = None
) -> list[Sample]:
    """Down-sample so no behaviour tag is carried by more than `max_share` of traces, where possible.

    Greedy, one removal per step:
      1. over = tags whose share exceeds `max_share`; stop if none.
      2. target = the most over-represented tag (ties: alphabetical). If every remaining trace
         carries it, no removal can lower its share: stop.
      3. Among traces carrying the target, remove one whose tag set has (a) the fewest tags that
         are NOT over-represented (so rare behaviours survive), then (b) the most over-represented
         tags (one removal helps several), then (c) the most traces sharing that exact tag set.
         Within that tag set, which trace goes is fixed by a `seed`-ed shuffle.
    Stops before the set would become empty. Survivors keep their input order. Traces with no tag
    ("none") are never targeted: "none" is not a behaviour.
    """
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")
    items = list(samples)
    tags = [sample_behaviours(s, registry) for s in items]
    groups: dict[frozenset[str], list[int]] = {}
    for i, ts in enumerate(tags):
        groups.setdefault(ts, []).append(i)
    rng = random.Random(seed)
    for members in groups.values():
        rng.shuffle(members)  # .pop() then removes in seeded order
    counts = Counter(t for ts in tags for t in ts)
    n, removed = len(items), set()
    while n > 1:
        over = {t for t, c in counts.items() if c > max_share * n + 1e-9}
        if not over:
            break
        target = min(over, key=lambda t: (-counts[t], t))
        if counts[target] >= n:
            break
        best = min(
            (sig for sig, members in groups.items() if members and target in sig),
            key=lambda sig: (len(sig - over), -len(sig & over), -len(groups[sig]), sorted(sig)),
        )
        removed.add(groups[best].pop())
        n -= 1
        for t in best:
            counts[t] -= 1
    return [s for i, s in enumerate(items) if i not in removed]


# --------------------------------------------------------------------------- result

@dataclass
class CurationResult:
    """What survived, what was dropped and why; `rebalanced` is set when curate() rebalanced."""

    kept: list[Sample]
    dropped: list[tuple[str, str]]
    total: int
    rebalanced: list[Sample] | None = None
    max_share: float | None = None
    behaviour_names: tuple[str, ...] = field(default_factory=lambda: tuple(BEHAVIOURS))

    @property
    def counts(self) -> dict[str, int]:
        """Drops per reason, every reason listed (in check order)."""
        c = Counter(reason for _, reason in self.dropped)
        return {reason: c.get(reason, 0) for reason in DROP_REASONS}

    @property
    def final(self) -> list[Sample]:
        """The traces to train on: rebalanced if rebalancing was asked for, else all kept."""
        return self.kept if self.rebalanced is None else self.rebalanced

    def _distribution(self, samples: Sequence[Sample]) -> dict[str, float]:
        return behaviour_distribution(samples, {name: () for name in self.behaviour_names})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (ids, not full samples)."""
        return {
            "total": self.total,
            "kept": len(self.kept),
            "dropped": len(self.dropped),
            "counts": self.counts,
            "dropped_ids": [{"id": i, "reason": r} for i, r in self.dropped],
            "kept_ids": [s.id for s in self.kept],
            "behaviours_kept": self._distribution(self.kept),
            "rebalanced": None if self.rebalanced is None else len(self.rebalanced),
            "max_share": self.max_share,
            "behaviours_rebalanced": None if self.rebalanced is None else self._distribution(self.rebalanced),
        }

    def report(self) -> str:
        """Markdown: counts, drop reasons, behaviour distribution before/after rebalance."""
        lines = [
            "# CoT curation report", "",
            f"- input traces: {self.total}",
            f"- kept: {len(self.kept)}",
            f"- dropped: {len(self.dropped)}",
        ]
        if self.rebalanced is not None:
            lines.append(f"- after rebalance (max share {self.max_share:g}): {len(self.rebalanced)}")
        lines += ["", "## Drop reasons", "", "| reason | count |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in self.counts.items()]
        before = self._distribution(self.kept)
        after = None if self.rebalanced is None else self._distribution(self.rebalanced)
        header = "| behaviour | kept |" + (" rebalanced |" if after else "")
        lines += ["", "## Behaviour distribution (share of traces)", "", header,
                  "|---|---|" + ("---|" if after else "")]
        for name, share in before.items():
            row = f"| {name} | {share:.1%} |"
            lines.append(row + (f" {after[name]:.1%} |" if after else ""))
        return "\n".join(lines) + "\n"


def curate(
    samples: Iterable[Sample],
    *,
    answer_check: AnswerCheck | None = default_answer_check,
    require_language_consistency: bool = True,
    dedup: bool = True,
    loop_ngram: int = 8,
    loop_max_repeats: int = 3,
    behaviours: Registry | None = None,
    max_share: float | None = None,
    seed: int = 0,
) -> CurationResult:
    """Filter traces (checks and order in the module docstring) and tag the kept ones.

    `answer_check(sample, answer_text)` returns True/False, or None when it does not apply;
    pass None to skip answer checking. `max_share` (None = off) also runs `rebalance`.
    Input samples are not modified; kept ones are copies with metadata["behaviours"] added.
    """
    kept: list[Sample] = []
    dropped: list[tuple[str, str]] = []
    seen: set[tuple[str, tuple[str, ...], str]] = set()
    total = 0
    for sample in samples:
        total += 1
        reason = drop_reason(
            sample,
            answer_check=answer_check,
            require_language_consistency=require_language_consistency,
            loop_ngram=loop_ngram,
            loop_max_repeats=loop_max_repeats,
        )
        if reason is None and dedup:
            key = _dedup_key(sample)
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason is not None:
            dropped.append((sample.id, reason))
            continue
        tags = tag_behaviours(parse_response(sample.response or "").think, behaviours)
        kept.append(sample.model_copy(update={"metadata": {**sample.metadata, "behaviours": sorted(tags)}}))
    names = tuple(BEHAVIOURS if behaviours is None else behaviours)
    rebalanced = None if max_share is None else rebalance(kept, max_share, seed, behaviours)
    return CurationResult(kept, dropped, total, rebalanced, max_share, names)
