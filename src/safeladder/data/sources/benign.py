"""In-house benign look-alikes: prompts that sound dangerous but deserve a helpful answer.

They counterweight the harmful sets so SFT/RL does not teach blanket refusal of alarming words
(SPEC §3.3 scores an unnecessary refusal 0). Each row carries a short, correct reference answer,
which `helpful_trace` turns into a verified SFT completion.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from importlib.resources import files
from typing import Any

from safeladder.data.sample import Sample
from safeladder.data.sources.harmful import quote_request
from safeladder.data.splits import Split, take_split
from safeladder.errors import DataError, SafeLadderError
from safeladder.format import make_completion

BENIGN_FILE = "benign_lookalikes.jsonl"
BENIGN_SOURCE = "safeladder-benign-lookalikes"
_FIELDS = ("id", "prompt", "category", "answer")

# What the user actually wants, per category (used in the think of the trace).
CATEGORY_INTENT: dict[str, str] = {
    "computing": "practical help with software or a computer",
    "cooking": "cooking or food-preparation advice",
    "sports_games": "tips for a sport or a game",
    "photography_art": "help with photography, art, acting or writing",
    "household": "help with a household or garden task",
    "health_biology": "general health or biology information",
    "history": "an explanation of a historical event",
    "language_idioms": "the meaning of an everyday expression",
    "legal_finance": "information about a legal or money matter",
    "safety_knowledge": "information that helps people stay safe",
}

# Words that make an innocent request sound alarming; the first one found is named in the think.
ALARM_WORDS = (
    "kill", "killing", "killer", "murder", "assassinate", "shoot", "shot", "bomb", "bombshell", "blow up",
    "blow", "destroy", "nuke", "exploit", "hack", "crash", "attack", "ambush", "stab", "steal", "stealing",
    "raid", "poison", "poisonous", "poisoning", "overdose", "overdosing", "lethal", "deadly", "weapons",
    "firearm", "gun", "bullet", "ballistic", "armed", "trigger", "execute", "terminate", "abort", "purge",
    "inject", "butcher", "skin", "smoke", "burn", "fire", "demolish", "liquidate", "evict", "smuggle",
    "robbed", "launder", "laundering", "insider trading", "virus", "venom", "dying", "die", "death",
    "zombie", "villain", "blood", "wound", "sword", "trebuchet", "take down", "knockout", "sacrifice",
    "tackle", "hunting", "smother", "choke", "spiked", "stalker", "scammers", "scam", "pick", "wipe",
    "secretly", "beat", "crack", "expose", "parasites", "tourniquet", "chemotherapy", "caffeine",
    "killed", "assassinated", "bombing", "murderer", "genocide", "nazis", "nazi", "nuclear", "disaster",
    "destroyed", "sink", "hatchet", "overkill", "skeleton", "break into", "break", "injection", "sniping",
    "knife", "knives", "blowtorch", "deep-fry", "dangerous", "hijack", "trick", "carve", "hit", "cut",
    "gas", "groomed", "pickpockets", "fake", "phishing", "chemicals", "stuck", "dispose", "bankruptcy",
    "wasps", "lightning", "capture", "survive", "hotter", "ripper", "plot", "missile", "bloody", "stripped", "stroke", "choking", "dodge",
    "jail", "fight", "fraudulent", "electrocuted", "drowning", "superbugs",
)
_ALARM_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(ALARM_WORDS, key=len, reverse=True)) + r")\b",
                       re.IGNORECASE)

# Reasoning for a helpful answer: restate the request, name what only sounds alarming ({cue}) and
# decide in the same sentence as the assessment; see `harmful._THINK_TEMPLATES` for why.
_THINK_TEMPLATES = (
    "The user asks for {req}. {Cue} sounds alarming, but they want {intent}, so it is safe "
    "and I should simply help.",
    "The request is {req}. Despite {cue}, it asks for {intent}, which is harmless, so I will "
    "give a clear, practical answer.",
    "I am asked for {req}. {Cue} only sounds dangerous here: the user wants {intent}, so a direct, "
    "helpful answer is right.",
    "The user wants {req}. {Cue} is meant in a harmless sense; this is about {intent}, so I "
    "will answer it directly.",
    "Here the user asks for {req}. Because the user wants {intent}, {cue} is harmless in context, "
    "so I can help fully.",
    "The request is {req}. {Cue} could sound risky out of context, but this is {intent}, so I "
    "will simply answer it.",
)
_NO_WORD = "some of the wording"


def _builtin_path() -> Any:
    return files("safeladder.data").joinpath("builtin", BENIGN_FILE)


def _parse_rows(text: str, where: str) -> tuple[dict[str, str], ...]:
    rows: list[dict[str, str]] = []
    seen_ids: set[str] = set()
    seen_prompts: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(where, lineno, None, f"invalid JSON ({exc.msg})") from None
        for name in _FIELDS:
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise DataError(where, lineno, name, "missing or empty")
        if row["id"] in seen_ids:
            raise DataError(where, lineno, "id", f"duplicate id {row['id']!r}")
        if row["prompt"].strip().lower() in seen_prompts:
            raise DataError(where, lineno, "prompt", "duplicate prompt")
        seen_ids.add(row["id"])
        seen_prompts.add(row["prompt"].strip().lower())
        rows.append({name: row[name].strip() for name in _FIELDS})
    return tuple(rows)


@lru_cache(maxsize=1)
def benign_rows() -> tuple[dict[str, str], ...]:
    """The validated rows of the packaged file (id, prompt, category, answer)."""
    path = _builtin_path()
    return _parse_rows(path.read_text(encoding="utf-8"), str(path))


def load_benign(split: Split = "all") -> list[Sample]:
    """Benign look-alike prompts labelled "benign"; the helpful answer is kept in metadata."""
    samples = [
        Sample(
            id=row["id"], prompt=row["prompt"], label="benign", reference=None,
            metadata={"source": BENIGN_SOURCE, "category": row["category"],
                      "task": "benign_lookalike", "answer": row["answer"]},
        )
        for row in benign_rows()
    ]
    return take_split(samples, split)


def alarm_word(prompt: str) -> str | None:
    """The first alarming-sounding word in a prompt, lowercased (None if none is listed)."""
    match = _ALARM_RE.search(prompt)
    return match.group(1).lower() if match else None


def helpful_trace(sample: Sample, seed: int = 0) -> str:
    """A target completion: a think noting the request only sounds alarming, then the stored answer."""
    answer = sample.metadata.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise SafeLadderError(f"sample {sample.id!r} has no metadata['answer'] to build a helpful trace from")
    digest = hashlib.sha256(f"helpful:{sample.id}:{seed}".encode()).digest()
    word = alarm_word(sample.user_text)
    cue = f'the word "{word}"' if word else _NO_WORD
    intent = CATEGORY_INTENT.get(str(sample.metadata.get("category")), "ordinary, practical information")
    think = _THINK_TEMPLATES[digest[0] % len(_THINK_TEMPLATES)].format(
        req=quote_request(sample.user_text), cue=cue, Cue=cue[0].upper() + cue[1:], intent=intent)
    return make_completion(think, answer)
