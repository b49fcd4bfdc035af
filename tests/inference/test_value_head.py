"""The trained step value: prefix cutting, ranking metrics, training on labelled prefixes, loading
it through `build_value`, and collecting examples from a real (tiny) engine."""

from __future__ import annotations

import pytest
import torch

from safeladder.errors import ConfigError
from safeladder.inference.steps import StepSettings
from safeladder.inference.value import ValueScore, build_value
from safeladder.inference.value_head import (
    StepExample, StepValueHead, collect_examples, examples_from_turn, load_examples, prefix_cuts, ranking_accuracy,
    save_examples, train_step_value,
)
from safeladder.verifiers.base import Verdict, Verifier
from safeladder.verifiers.heads import HeadConfig

CUES = ("bomb", "decline", "sure")


class CueEmbedder:
    """Coordinate k is 1 when the text contains CUES[k] (as `encode_pooled` returns: text row + span rows)."""

    def encode_pooled(self, texts, spans=None, batch_size=64):
        spans = [()] * len(texts) if spans is None else list(spans)

        def vec(t: str) -> torch.Tensor:
            v = torch.zeros(8)
            for k, cue in enumerate(CUES):
                v[k] = float(cue in t.lower())
            return v

        return [torch.stack([vec(t), *(vec(t[a:b]) for a, b in s)]) for t, s in zip(texts, spans)]


@pytest.fixture
def cues(monkeypatch):
    monkeypatch.setattr("safeladder.verifiers.embeddings.get_embedder", lambda: CueEmbedder())


def test_prefix_cuts_follow_the_step_budget_and_end_at_the_reasoning():
    assert prefix_cuts(50, 24) == [24, 48, 50]
    assert prefix_cuts(48, 24) == [24, 48]
    assert prefix_cuts(10, 24) == [10]
    assert prefix_cuts(0, 24) == []


def test_examples_from_turn_decode_each_prefix(tiny_policy):
    tok = tiny_policy.tokenizer
    ids = tok.encode("alpha beta gamma delta epsilon zeta eta theta", add_special_tokens=False)
    out = examples_from_turn("p1", "req", "<think>\n", ids, tok, 0.1, step_tokens=3)
    assert [e.cut for e in out] == prefix_cuts(len(ids), 3)
    for e in out:
        assert e.reasoning == tok.decode(ids[: e.cut], skip_special_tokens=True).strip()
        assert (e.prompt_id, e.request, e.target) == ("p1", "req", 0.1)


def test_ranking_accuracy_by_hand():
    ex = [StepExample("a", "r", "x", 1.0, 24), StepExample("a", "r", "y", 0.0, 24),
          StepExample("b", "r", "z", 0.0, 24)]
    # pairs (better, worse): (0, 1) same request and cut, (0, 2) across requests
    m = ranking_accuracy(ex, [0.9, 0.2, 0.95])
    assert m["pairs"] == 2 and m["pairs_within_request"] == 1
    assert m["auc"] == pytest.approx(0.5) and m["auc_within_request"] == 1.0
    assert ranking_accuracy(ex[1:], [0.3, 0.3])["auc"] is None  # no pair with different targets


def _labelled(n: int) -> list[StepExample]:
    """Declining reasoning on a bomb request ends safe (1), eager reasoning ends unsafe (0)."""
    out = []
    for i in range(n):
        out.append(StepExample(f"q{i}", f"bomb request {i}", f"I must decline {i}", 1.0, 24))
        out.append(StepExample(f"q{i}", f"bomb request {i}", f"sure, step one {i}", 0.0, 24))
    return out


def test_training_learns_which_prefixes_end_safe_and_the_value_loads_by_directory(cues, tmp_path):
    report = train_step_value(_labelled(30), tmp_path, config=HeadConfig(hidden=0, max_epochs=300, patience=50),
                              baseline=None, meta={"model": "tiny"})
    assert report["requests"] == 30 and report["n_val"] == 12 and report["n_train"] == 48  # split by request
    assert report["head"]["auc_within_request"] == 1.0
    value = build_value(str(tmp_path))
    assert isinstance(value, StepValueHead)
    decline, eager, empty = value.score([("bomb request", "<think>\nI must decline"),
                                         ("bomb request", "<think>\nSure, step one"), ("bomb request", "<think>\n")])
    assert decline.score > 0.7 and eager.score < 0.3 and empty.score == 0.5
    assert decline.verdicts["step_value"]["score"] == pytest.approx(decline.score, abs=1e-4)


def test_finished_turns_are_judged_by_the_final_value(cues, tmp_path):
    train_step_value(_labelled(10), tmp_path, baseline=None)

    class Final:
        verifiers_per_item = 1

        def __init__(self):
            self.seen = []

        def score(self, items, final=False):
            self.seen.append((list(items), final))
            return [ValueScore(0.25) for _ in items]

    final = Final()
    value = StepValueHead(tmp_path, final_value=final)
    assert [s.score for s in value.score([("q", "<think>\nr\n</think>\nanswer")], final=True)] == [0.25]
    assert final.seen == [([("q", "<think>\nr\n</think>\nanswer")], True)]


def test_bad_directories_and_example_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no trained step value"):
        StepValueHead(tmp_path)
    with pytest.raises(ConfigError, match="no step-value examples"):
        train_step_value([], tmp_path)
    path = tmp_path / "examples.jsonl"
    save_examples(_labelled(2), path)
    assert load_examples(path) == _labelled(2)
    path.write_text(path.read_text() + '{"request": "x"}\n')
    with pytest.raises(ConfigError, match=r"examples.jsonl:5: not a step-value example"):
        load_examples(path)


class _ByLength(Verifier):
    """Scores a finished turn 1 when its text is longer than the median of the batch; records what it judged."""

    def __init__(self):
        self.judged: list[tuple[str, float]] = []

    def verify(self, items):
        lengths = sorted(len(it.response) for it in items)
        mid = lengths[len(lengths) // 2]
        out = [Verdict(float(len(it.response) > mid), "x") for it in items]
        self.judged += [(it.response, v.score) for it, v in zip(items, out)]
        return out


def test_collect_examples_labels_every_prefix_of_every_turn_with_its_final_score(tiny_policy):
    from safeladder.data.sample import Sample
    from safeladder.inference.steps import reasoning_for_judging
    from safeladder.rollout.hf_engine import TransformersEngine

    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    samples = [Sample(id=f"s{i}", prompt=f"question {i}", label="safety") for i in range(2)]
    settings = StepSettings(step_tokens=4, max_steps=3, answer_tokens=5, temperature=1.0)
    judge = _ByLength()
    out = collect_examples(engine, samples, settings, per_prompt=3, judge=judge, seed=0)
    assert len(judge.judged) == 6  # 2 prompts × 3 whole turns, each judged once when finished
    assert {e.prompt_id for e in out} == {"s0", "s1"}
    assert all(0 < e.cut <= 12 for e in out)
    assert {e.target for e in out} == {0.0, 1.0}
    for e in out:  # every example is a prefix of a judged turn's reasoning, labelled with that turn's score
        assert any(reasoning_for_judging(text).startswith(e.reasoning) and score == e.target
                   for text, score in judge.judged), e
    # the first step of every turn is an example (a 4-token prefix), and no turn yields more than 3
    assert sum(1 for e in out if e.cut == 4) == 6 and len(out) <= 18
