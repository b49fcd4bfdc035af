"""The curriculum's mixture sampler: stratified draws hold the mixture within every step."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from safeladder.data.sample import Sample
from safeladder.train.rl_config import Phase
from safeladder.train.rl_data import MixtureSampler, stratified_counts


def _pools() -> dict[str, list[Sample]]:
    return {
        task: [Sample(id=f"{task}-{i}", prompt=f"{task} {i}", label=task) for i in range(7)]
        for task in ("harmful", "benign", "math")
    }


def test_stratified_counts_stay_within_one_of_the_share_and_match_it_on_average():
    weights, k = [0.35, 0.35, 0.3], 8  # shares 2.8, 2.8, 2.4
    rng = random.Random(0)
    totals = [0, 0, 0]
    for _ in range(4000):
        counts = stratified_counts(weights, k, rng)
        assert sum(counts) == k
        assert [c in (2, 3) for c in counts] == [True, True, True]
        totals = [t + c for t, c in zip(totals, counts)]
    means = [t / 4000 for t in totals]
    assert means == pytest.approx([2.8, 2.8, 2.4], abs=0.05)


def test_stratified_counts_are_exact_when_the_shares_are_whole():
    assert stratified_counts([1, 1, 2], 8, random.Random(3)) == [2, 2, 4]
    assert stratified_counts([0.5, 0.5], 1, random.Random(0)) in ([1, 0], [0, 1])


def test_stratified_draw_never_misses_a_task_that_independent_draws_miss():
    sampler = MixtureSampler(_pools(), seed=0)
    mixture = {"harmful": 0.35, "benign": 0.35, "math": 0.3}
    independent = Phase(name="p", steps=50, mixture=mixture)
    stratified = Phase(name="p", steps=50, mixture=mixture, draw="stratified")
    missed = 0
    for step in range(50):
        by_task = Counter(s.label for s in sampler.draw(stratified, step, 8))
        assert sum(by_task.values()) == 8 and min(by_task[t] for t in mixture) >= 2
        missed += min(Counter(s.label for s in sampler.draw(independent, step, 8))[t] for t in mixture) == 0
    assert missed > 0  # the independent draw does leave tasks out of some 8-prompt steps


def test_stratified_draw_is_deterministic_per_step_and_resumable():
    phase = Phase(name="p", steps=5, mixture={"harmful": 0.5, "benign": 0.3, "math": 0.2}, draw="stratified")
    a = MixtureSampler(_pools(), seed=1)
    first = [[s.prompt for s in a.draw(phase, step, 5)] for step in range(4)]
    b = MixtureSampler(_pools(), seed=1)
    b.draw(phase, 0, 5), b.draw(phase, 1, 5)
    resumed = MixtureSampler(_pools(), seed=1)
    resumed.load_state(b.state())
    assert [[s.prompt for s in resumed.draw(phase, step, 5)] for step in (2, 3)] == first[2:]
