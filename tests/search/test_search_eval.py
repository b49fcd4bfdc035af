"""Search evaluation: rollouts with the tool, scored with the search verifiers, rates with intervals."""

from __future__ import annotations

import pytest

from safeladder.data.sample import Sample
from safeladder.models.tiny import tiny_tokenizer
from safeladder.rollout import Completion
from safeladder.search.base import build_index
from safeladder.search.corpus import Document
from safeladder.search.environment import SearchEnvironment
from safeladder.search.evaluate import evaluate_search

DOCS = [Document("d1", "Mira Thessaly", "Mira Thessaly was born in Quarvel in 1690."),
        Document("d2", "Quarvel", "Quarvel is a river port in Velland.")]


class Scripted:
    """First call: every prompt searches; second call: every prompt answers "Quarvel", confidently."""

    def __init__(self):
        self.tokenizer, self.calls = tiny_tokenizer(), 0

    def sample(self, prefixes, settings):
        text = "<think>\n<search> Mira Thessaly </search>" if self.calls == 0 else "\n</think>\nQuarvel <confidence>high</confidence>"
        self.calls += 1
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        reason = "stop" if text.endswith("</search>") else "eos"
        return [[Completion(ids, [0.0] * len(ids), reason, text)] for _ in prefixes]

    def sync_weights(self, model):
        pass


def test_rates_and_rows():
    samples = [Sample(id="a", prompt="Where was Mira Thessaly born?", label="search_qa", reference="Quarvel"),
               Sample(id="b", prompt="In which country is Quarvel?", label="search_qa", reference="Velland")]
    env = SearchEnvironment(build_index(DOCS, "bm25"), topk=1)
    res = evaluate_search(Scripted(), samples, env, max_turns=3)
    assert res.n == 2 and res.mean_calls == 1.0
    assert res.rates == {"search_correct": 0.5, "false_certain": 0.5, "honest_uncertainty": 0.0, "searched": 1.0}
    lo, hi = res.intervals["search_correct"]
    assert lo < 0.5 < hi
    assert [r["false_certain"] for r in res.rows] == [0.0, 1.0] and "Doc 1 (Title: Mira Thessaly)" in res.rows[0]["text"]
    assert res.summary()["search_eval/searched"] == 1.0
    assert res.mean_model_tokens == pytest.approx(len(Scripted().tokenizer.encode(
        "<think>\n<search> Mira Thessaly </search>\n</think>\nQuarvel <confidence>high</confidence>", add_special_tokens=False)), abs=2)
