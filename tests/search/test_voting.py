"""Stated confidence parsing and confidence-weighted voting."""

from __future__ import annotations

import pytest

from safeladder.search.confidence import confidence_or_default, is_confident, parse_confidence, strip_confidence
from safeladder.search.voting import confidence_weighted_vote, vote_completions


@pytest.mark.parametrize("text, value", [
    ("Paris <confidence>high</confidence>", 1.0),
    ("Paris <confidence> LOW </confidence>", 0.0),
    ("Paris <confidence>0.8</confidence>", 0.8),
    ("Paris <confidence>75%</confidence>", 0.75),
    ("<confidence>low</confidence> then <confidence>high</confidence>", 1.0),  # the last tag counts
    ("Paris <confidence>1.5</confidence>", None),
    ("Paris <confidence>nan</confidence>", None),
    ("Paris <confidence>maybe</confidence>", None),
    ("Paris", None),
])
def test_parse_confidence(text, value):
    assert parse_confidence(text) == value


def test_missing_tag_defaults_and_stripping():
    assert confidence_or_default("Paris") == 1.0 and confidence_or_default("Paris", missing="low") == 0.0
    assert strip_confidence("Paris <confidence>high</confidence>") == "Paris"
    assert strip_confidence("Paris <confidence>high") == "Paris high"  # a dangling tag is dropped, its word kept
    assert is_confident(0.5) and not is_confident(0.49) and not is_confident(0.7, threshold=0.8)


def test_confident_answer_beats_more_unsure_ones():
    r = confidence_weighted_vote(["Paris", "Rome", "Rome"], [1.0, 0.0, 0.0])
    assert r.answer == "Paris" and r.weight == pytest.approx(1.0) and r.votes == 1 and r.n == 3
    assert r.share == pytest.approx(1.0 / 1.1)
    r = confidence_weighted_vote(["Paris", "Rome", "Rome", "Rome"], [0.9, 0.5, 0.5, 0.5])
    assert r.answer == "Rome" and r.tally == pytest.approx({"paris": 0.9, "rome": 1.5})


def test_normalisation_ties_defaults_and_abstentions():
    r = confidence_weighted_vote(["The Paris", "paris.", "  ", "Rome"], [0.5, 0.5, 1.0, 1.0])
    assert r.answer == "The Paris" and r.votes == 2 and r.n == 3  # 1.0 each: more votes wins the tie
    r = confidence_weighted_vote(["Rome", "Paris"], [0.6, 0.6])
    assert r.answer == "Rome"  # full tie: first seen
    assert confidence_weighted_vote(["X", "Y"], [None, 0.4]).answer == "X"  # None → default 0.5
    assert confidence_weighted_vote(["", " "], [1.0, 1.0]).answer is None
    with pytest.raises(ValueError):
        confidence_weighted_vote(["A"], [])


def test_vote_over_completions():
    completions = [
        "<think>\n<search> q </search>\n</think>\nQuarvel <confidence>high</confidence>",
        "<think>guess</think>\nDunmore <confidence>low</confidence>",
        "<think>guess</think>\nDunmore <confidence>low</confidence>",
        "<think>truncated",
    ]
    r = vote_completions(completions)
    assert r.answer == "Quarvel" and r.n == 3
