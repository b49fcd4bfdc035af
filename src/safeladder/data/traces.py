"""Verified CoT traces for the built-in tasks (offline stand-in for a teacher model).

Each task pairs a loader of prompts with a trace builder that writes a `<think>…</think> answer`
completion and checks it (arithmetic traces verify their own result; harmful prompts get a
decline *with a warning and a safe alternative*, benign look-alikes a helpful answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from safeladder.data.sample import Sample
from safeladder.data.splits import Split
from safeladder.format import THINK_OPEN


@dataclass(frozen=True)
class TraceTask:
    load: Callable[[Split], list[Sample]]
    trace: Callable[[Sample, int], str]
    judgement: str | None = None  # the reasoning's first words with `judgement_first`


def open_with_judgement(completion: str, judgement: str) -> str:
    """`<think>\nX…` -> `<think>\n{judgement} X…`: the reasoning states its verdict first."""
    head = f"{THINK_OPEN}\n"
    if not completion.startswith(head):
        raise ValueError(f"trace does not open with {head!r}: {completion[:40]!r}")
    return f"{head}{judgement} {completion[len(head):]}"


def _math_task() -> TraceTask:
    from safeladder.data.sources.arithmetic import arithmetic_trace, load_math

    return TraceTask(load=lambda split: load_math(split), trace=lambda s, seed: arithmetic_trace(s))


def _harmful_task() -> TraceTask:
    from safeladder.data.sources.harmful import decline_trace, load_harmful

    return TraceTask(load=lambda split: load_harmful("all", split), trace=decline_trace, judgement="Harmful request.")


def _benign_task() -> TraceTask:
    from safeladder.data.sources.benign import helpful_trace, load_benign

    return TraceTask(load=lambda split: load_benign(split), trace=helpful_trace, judgement="Harmless request.")


# Task name -> factory (lazy, so that a missing optional data package only matters if used).
TRACE_TASKS: dict[str, Callable[[], TraceTask]] = {
    "math": _math_task,
    "harmful": _harmful_task,
    "benign": _benign_task,
}


def builtin_traces(counts: dict[str, int], split: Split = "train", seed: int = 0,
                   judgement_first: bool = False) -> list[Sample]:
    """`counts[task]` samples of each task's split, each with its verified trace as `response`.

    `judgement_first` opens the reasoning of the safety traces with their verdict ("Harmful
    request." / "Harmless request."), so a model trained on them decides in its first reasoning
    words, where a value can read the decision (step search with `safety_decision`). Without it the
    shipped SFT model wrote the benign reasoning for 49 of 50 harmful dev requests and declined
    only in the answer (benchmarks/RESULTS.md, session 14); with it M³-RL lost arithmetic, so it
    is off by default.

    Samples are taken in a seeded order, so the same counts and seed give the same data. A
    count above the split's size cycles through the prompts again, each pass with the next
    trace variant (trace seed + pass), so a small task can be up-weighted without verbatim copies.
    """
    import random

    unknown = set(counts) - set(TRACE_TASKS)
    if unknown:
        raise ValueError(f"unknown built-in trace task(s) {sorted(unknown)}; known: {sorted(TRACE_TASKS)}")
    out: list[Sample] = []
    for name, n in counts.items():
        if n <= 0:
            continue
        task = TRACE_TASKS[name]()
        pool = task.load(split)
        random.Random(f"{name}:{seed}").shuffle(pool)
        if not pool:
            continue
        passes = -(-n // len(pool))  # ceil
        picked = [(s, seed + p) for p in range(passes) for s in pool][:n]
        for s, trace_seed in picked:
            response = task.trace(s, trace_seed)
            if judgement_first and task.judgement:
                response = open_with_judgement(response, task.judgement)
            out.append(s.model_copy(update={"response": response}))
    return out
