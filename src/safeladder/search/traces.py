"""Warm-up traces for the search stage: completions that search, read and state their confidence.

A 135M model never writes `<search>` on its own (measured: 0 of 32 dev questions, sampled at
T = 1, after the demo ladder), so RL has nothing to reinforce. A short SFT on these traces
teaches the format; RL then learns *when* the answer is supported (SPEC §5).

Each trace is what a rollout with the real tool would contain — the information blocks are the
retriever's actual answers, formatted by the same `SearchEnvironment`:

    <think>
    <search> question </search>
    <information> … </information>            ← tool output: SFT masks it (`masked_spans`)
    [Org was founded by P. Next I find where P was born.
    <search> Where was P born </search>
    <information> … </information>]           ← two-hop questions only
    The information says: "<sentence with the answer>".
    </think>
    answer <confidence>high</confidence>

When the last block does not contain a gold alias, the trace says so and answers with
`<confidence>low</confidence>` — the honest behaviour the search reward pays for.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from safeladder.data.sample import Sample
from safeladder.errors import DataError
from safeladder.format import THINK_CLOSE, THINK_OPEN
from safeladder.search.base import Passage
from safeladder.search.environment import INFO_CLOSE, INFO_OPEN, SEARCH_CLOSE, SEARCH_OPEN, SearchEnvironment
from safeladder.verifiers.rules import reference_aliases

# Text between these markers is tool output: SFT gives it no loss (SFTConfig.masked_spans).
TOOL_SPANS: tuple[tuple[str, str], ...] = ((INFO_OPEN, INFO_CLOSE),)
NOT_FOUND = "unknown"
_SENTENCE = re.compile(r"[^.!?]+[.!?]?")


def _query(question: str) -> str:
    return " ".join(question.split()).rstrip("?").strip()


def _sentence_with(passages: Sequence[Passage], aliases: Sequence[str]) -> tuple[str, str] | None:
    """(sentence, alias) of the first passage sentence that contains a gold alias, best passage first."""
    for p in passages:
        for sentence in _SENTENCE.findall(p.text):
            for alias in aliases:
                if alias and alias.lower() in sentence.lower():
                    return sentence.strip(), alias
    return None


def search_trace(sample: Sample, env: SearchEnvironment, titles: dict[str, str]) -> str:
    """The completion for one search question (see the module docstring); `titles`: doc id → title."""
    aliases = reference_aliases(sample.reference or "")
    if not aliases:
        raise DataError(f"sample {sample.id}", None, "reference", "a search trace needs a reference answer")
    question = sample.user_text
    parts = [f"{THINK_OPEN}\n"]

    def search(query: str) -> list[Passage]:
        passages = env.retriever.retrieve([query], env.topk)[0]
        parts.append(f"{SEARCH_OPEN} {query} {SEARCH_CLOSE}")
        parts.append(env.format_passages(passages))
        return passages

    passages = search(_query(question))
    gold = list(sample.metadata.get("gold_docs") or [])
    if len(gold) == 2 and gold[1] in titles:  # two hops: find the bridge entity, then search for it
        bridge = titles[gold[1]]
        if any(bridge.lower() in p.text.lower() for p in passages):
            first = titles.get(gold[0], "organisation")
            parts.append(f"The {first} was founded by {bridge}. Next I find where {bridge} was born.\n")
            passages = search(f"Where was {bridge} born")
    found = _sentence_with(passages, aliases[:1]) or _sentence_with(passages, aliases)
    if found:
        sentence, _ = found
        parts.append(f"The information says: {sentence}\n{THINK_CLOSE}\n{aliases[0]} <confidence>high</confidence>")
    else:
        parts.append(f"The information does not answer the question.\n{THINK_CLOSE}\n"
                     f"{NOT_FOUND} <confidence>low</confidence>")
    return "".join(parts)


def search_traces(samples: Sequence[Sample], env: SearchEnvironment, documents: Sequence[Any]) -> list[Sample]:
    """Samples with `response` set to their search trace (`documents`: the corpus, for titles)."""
    titles = {d.id: d.title for d in documents}
    return [s.model_copy(update={"response": search_trace(s, env, titles)}) for s in samples]
