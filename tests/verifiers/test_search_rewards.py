"""The search stage's rule verifiers: correctness without the tag, false certainty, honest doubt, searching."""

from __future__ import annotations

import pytest

import safeladder.verifiers.search_rewards  # noqa: F401  (registers the verifiers)
from safeladder.errors import ConfigError
from safeladder.verifiers.base import VerifyItem, build_verifier

ANSWERS = {  # answer after </think> -> (correct, false_certain, honest_uncertainty)
    "Quarvel <confidence>high</confidence>": (1.0, 0.0, 0.0),
    "the quarvel. <confidence>low</confidence>": (1.0, 0.0, 0.0),
    "Dunmore <confidence>high</confidence>": (0.0, 1.0, 0.0),
    "Dunmore <confidence>low</confidence>": (0.0, 0.0, 1.0),
    "Dunmore <confidence>0.3</confidence>": (0.0, 0.0, 1.0),
    "Dunmore": (0.0, 1.0, 0.0),  # no tag: counts as confident
}


def item(answer, reference="Quarvel|Port Quarvel", think="<think>\n<search> q </search>\n</think>\n"):
    return VerifyItem("Where?", think + answer, reference=reference, label="search_qa")


@pytest.mark.parametrize("name, col", [("search_correct", 0), ("false_certain", 1), ("honest_uncertainty", 2)])
def test_scores_per_answer(name, col):
    v = build_verifier(name)
    got = [x.score for x in v([item(a) for a in ANSWERS])]
    assert got == [row[col] for row in ANSWERS.values()]


def test_f1_metric_and_threshold():
    partial = item("Port of Quarvel <confidence>high</confidence>", reference="Port Quarvel")
    assert build_verifier("search_correct")([partial])[0].score == 0.0
    f1 = build_verifier("search_correct", metric="f1")([partial])[0]
    assert f1.score == pytest.approx(0.8) and f1.label == "correct"
    assert build_verifier("false_certain", metric="f1", f1_threshold=0.9)([partial])[0].score == 1.0
    assert build_verifier("false_certain", missing="low")([item("Dunmore")])[0].score == 0.0


def test_searched_and_not_applicable():
    searched = build_verifier("searched")
    got = searched([item("x"), item("x", think="<think>no tools</think>\n"), item("x", think="<think><search>a</search><search>b</search></think>")])
    assert [v.score for v in got] == [1.0, 0.0, 1.0] and got[2].details["calls"] == 2
    assert build_verifier("false_certain")([item("x", reference=None)])[0].status == "not_applicable"
    with pytest.raises(ConfigError):
        build_verifier("search_correct", metric="bleu")
