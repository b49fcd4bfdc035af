"""Prompt pools and the curriculum's mixture sampler, with a resumable cursor.

Each task's prompts are visited in a seeded permutation per epoch; the sampler's whole state is
one cursor per task plus the step number, so a resumed run draws exactly the prompts an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
from typing import Callable

from safeladder.data.sample import Sample
from safeladder.train.rl_config import Phase, TaskSpec


def _builtin_math(split: str) -> list[Sample]:
    from safeladder.data.sources.arithmetic import load_math

    return load_math(split)


def _builtin_harmful(split: str) -> list[Sample]:
    from safeladder.data.sources.harmful import load_harmful

    return load_harmful("all", split)


def _builtin_benign(split: str) -> list[Sample]:
    from safeladder.data.sources.benign import load_benign

    return load_benign(split)


# Built-in prompt sources by name (labels: math → "math", harmful → "safety", benign → "benign").
BUILTIN_PROMPTS: dict[str, Callable[[str], list[Sample]]] = {
    "math": _builtin_math,
    "harmful": _builtin_harmful,
    "benign": _builtin_benign,
}


def load_task(name: str, spec: TaskSpec) -> list[Sample]:
    from safeladder.errors import ConfigError

    if spec.builtin is not None:
        if spec.builtin not in BUILTIN_PROMPTS:
            raise ConfigError(f"tasks.{name}.builtin: unknown source {spec.builtin!r} (known: {', '.join(sorted(BUILTIN_PROMPTS))})")
        samples = BUILTIN_PROMPTS[spec.builtin](spec.split)
    else:
        from safeladder.data.loaders import load_samples
        from safeladder.data.splits import take_split

        samples = take_split(load_samples(spec.path, spec.mapping).samples, spec.split)
    if spec.label is not None:
        samples = [s.model_copy(update={"label": spec.label}) for s in samples]
    if spec.limit is not None:
        samples = samples[: spec.limit]
    if not samples:
        raise ConfigError(f"tasks.{name}: no prompts (source {spec.builtin or spec.path}, split {spec.split})")
    return samples


def stratified_counts(weights: list[float], k: int, rng: random.Random) -> list[int]:
    """Split k draws over tasks: floor(k·w) each, the remainder by systematic sampling.

    Each task gets floor(k·w) or one more, and on average exactly k·w (w normalised) — the
    mixture held within every step instead of only in expectation.
    """
    total = sum(weights)
    shares = [k * w / total for w in weights]
    counts = [int(s) for s in shares]
    fractions = [s - c for s, c in zip(shares, counts)]
    remainder = k - sum(counts)
    # `remainder` evenly spaced points u, u+1, … over the fractions laid end to end; each
    # fraction is < 1, so a task catches at most one point, with probability equal to its fraction.
    u, edge = rng.random(), 0.0
    for i, f in enumerate(fractions):
        lo, edge = edge, edge + f
        hits = sum(1 for j in range(remainder) if lo <= u + j < edge)
        counts[i] += hits
    counts[-1] += k - sum(counts)  # float round-off at the very end of the line
    return counts


class MixtureSampler:
    """Draws each step's prompts from the current phase's mixture; deterministic given its state."""

    def __init__(self, pools: dict[str, list[Sample]], seed: int):
        self.pools = pools
        self.seed = seed
        self.cursors: dict[str, int] = {name: 0 for name in pools}  # prompts consumed per task

    def _order(self, task: str, epoch: int) -> list[int]:
        order = list(range(len(self.pools[task])))
        random.Random(f"{self.seed}:{task}:{epoch}").shuffle(order)
        return order

    def _take(self, task: str) -> Sample:
        n = len(self.pools[task])
        epoch, offset = divmod(self.cursors[task], n)
        self.cursors[task] += 1
        return self.pools[task][self._order(task, epoch)[offset]]

    def draw(self, phase: Phase, step: int, k: int) -> list[Sample]:
        """k prompts for RL step `step`: tasks chosen by weight (seeded by step), prompts in order."""
        names = [t for t, w in phase.mixture.items() if w > 0]
        weights = [phase.mixture[t] for t in names]
        rng = random.Random(f"{self.seed}:step:{step}")
        if phase.draw == "stratified":
            counts = stratified_counts(weights, k, rng)
            tasks = [t for t, c in zip(names, counts) for _ in range(c)]
        else:
            tasks = rng.choices(names, weights=weights, k=k)
        return [self._take(t) for t in sorted(tasks, key=names.index)]

    def state(self) -> dict[str, int]:
        return dict(self.cursors)

    def load_state(self, cursors: dict[str, int]) -> None:
        self.cursors.update({k: int(v) for k, v in cursors.items() if k in self.cursors})
