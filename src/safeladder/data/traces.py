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


@dataclass(frozen=True)
class TraceTask:
    load: Callable[[Split], list[Sample]]
    trace: Callable[[Sample, int], str]


def _math_task() -> TraceTask:
    from safeladder.data.sources.arithmetic import arithmetic_trace, load_math

    return TraceTask(load=lambda split: load_math(split), trace=lambda s, seed: arithmetic_trace(s))


def _harmful_task() -> TraceTask:
    from safeladder.data.sources.harmful import decline_trace, load_harmful

    return TraceTask(load=lambda split: load_harmful("all", split), trace=decline_trace)


def _benign_task() -> TraceTask:
    from safeladder.data.sources.benign import helpful_trace, load_benign

    return TraceTask(load=lambda split: load_benign(split), trace=helpful_trace)


# Task name -> factory (lazy, so that a missing optional data package only matters if used).
TRACE_TASKS: dict[str, Callable[[], TraceTask]] = {
    "math": _math_task,
    "harmful": _harmful_task,
    "benign": _benign_task,
}


def builtin_traces(counts: dict[str, int], split: Split = "train", seed: int = 0) -> list[Sample]:
    """`counts[task]` samples of each task's split, each with its verified trace as `response`.

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
        out += [s.model_copy(update={"response": task.trace(s, trace_seed)}) for s, trace_seed in picked]
    return out
