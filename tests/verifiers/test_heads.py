"""Trained heads: fitting, metrics, safetensors round trip, and when heads are (re)built."""

from __future__ import annotations

import json

import pytest
import torch

from safeladder.errors import SafeLadderError
from safeladder.verifiers import heads as heads_mod
from safeladder.verifiers.embeddings import encoder_tag
from safeladder.verifiers.heads import (
    Encoded, answer_spans, build_features, encode_inputs, needed_inputs, opening, tail,
    HEADS_VERSION, Head, HeadConfig, binary_metrics, ensure_heads, fit_head, input_dim, pair_features,
)


def _toy(n: int = 200, dim: int = 16, seed: int = 0, gap: float = 3.0, noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Two clouds on either side of the first coordinate's zero (separable for gap >> noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g) * noise
    y = torch.arange(n) % 2
    x[:, 0] += torch.where(y == 1, gap, -gap)
    return x, y


@pytest.mark.parametrize("hidden", [0, 32])
def test_head_learns_a_separable_toy_set(hidden):
    x, y = _toy()
    xv, yv = _toy(seed=1)
    xt, yt = _toy(seed=2)
    head = fit_head("toy", "response", x, y, xv, yv, HeadConfig(hidden=hidden, max_epochs=60), seed=0)
    m = binary_metrics(yt, head.predict_proba(xt))
    assert m["accuracy"] == 1.0 and m["f1"] == 1.0 and m["n"] == 200


def test_class_balanced_loss_protects_the_minority_class():
    # Overlapping clouds, 20 positives against 380 negatives: an unweighted loss leans on the
    # majority and misses most positives; the balanced loss recovers them.
    x, y = _toy(800, dim=4, gap=0.5, noise=1.0)
    keep = torch.cat([torch.nonzero(y == 1).flatten()[:20], torch.nonzero(y == 0).flatten()[:380]])
    xt, yt = _toy(400, dim=4, seed=3, gap=0.5, noise=1.0)
    recall = {
        balanced: binary_metrics(yt, fit_head("imb", "response", x[keep], y[keep], seed=0, config=HeadConfig(
            hidden=0, max_epochs=60, balanced=balanced)).predict_proba(xt))["recall"]
        for balanced in (True, False)
    }
    assert recall[True] > 0.4 and recall[False] < 0.25


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    x, y = _toy()
    head = fit_head("rt", "pair", pair_features(x, x, x), y, config=HeadConfig(hidden=8, max_epochs=5))
    head.meta["threshold"] = 0.4
    head.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt.json", "rt.safetensors"]
    loaded = heads_mod.load_head(tmp_path, "rt")
    xt = pair_features(x, x, x)
    assert torch.equal(loaded.predict_proba(xt), head.predict_proba(xt))
    assert loaded.reads == "pair" and loaded.threshold == 0.4 and loaded.meta["version"] == HEADS_VERSION
    # the weights file is plain safetensors, the meta plain JSON (no pickle anywhere)
    assert json.loads((tmp_path / "rt.json").read_text())["in_dim"] == input_dim("pair", 16)


def test_wrong_feature_width_is_rejected():
    x, y = _toy(dim=8)
    head = fit_head("w", "prompt", x, y, config=HeadConfig(hidden=0, max_epochs=1))
    with pytest.raises(ValueError, match=r"expects \(N, 8\)"):
        head.predict_proba(torch.zeros(3, 9))


def test_missing_head_is_a_clear_error(tmp_path):
    with pytest.raises(SafeLadderError, match="no trained head 'nope'"):
        heads_mod.load_head(tmp_path, "nope")


def test_binary_metrics_values():
    m = binary_metrics([1, 1, 0, 0, 1], torch.tensor([0.9, 0.2, 0.6, 0.1, 0.7]))
    assert m["n"] == 5 and m["positives"] == 3
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)


def test_pair_features_layout():
    p, r = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    o = torch.tensor([[5.0, 6.0]])
    assert pair_features(p, r, o).tolist() == [[1.0, 2.0, 3.0, 4.0, 3.0, 8.0, 11.0, 5.0, 6.0]]
    assert (input_dim("prompt", 384), input_dim("response", 384), input_dim("pair", 384)) == (384, 1152, 1537)


def test_openings_and_tails():
    answer = "I can't help with that.  It is illegal.\nI can suggest a legal option instead."
    assert opening(answer, 3) == "I can't help"
    assert tail(answer) == "It is illegal. I can suggest a legal option instead."
    assert tail("I can't help with that.") == tail("No") == ""
    assert tail("Use 3.5 mm screws. Then tighten.") == "Then tighten."
    assert tail("First. " + " ".join(f"w{i}" for i in range(50)), words=3) == "w47 w48 w49"


def test_answer_spans_are_character_ranges_of_the_parts():
    answer = "  Sorry, I can't do that.\n\nInstead,   try the library. It is free."
    spans = answer_spans(answer, opening_words=3)
    assert [answer[a:b] for a, b in spans] == ["Sorry, I can't", "Sorry, I can't do that.",
                                               "Instead,   try the library. It is free."]
    assert answer_spans("One sentence only.") == ((0, 18), (0, 18), (0, 0))  # no tail: a zero vector downstream
    assert answer_spans("no full stop at all").first == (0, 19)  # one unfinished sentence: the whole answer
    assert answer_spans("") == answer_spans("  \n") == ((0, 0), (0, 0), (0, 0))
    for text in ("Use 3.5 mm screws. Then tighten.", "I can't help with that.  It is illegal.\nI can suggest a legal option."):
        s = answer_spans(text)
        assert " ".join(text[s.opening[0]:s.opening[1]].split()) == opening(text)
        assert " ".join(text[s.tail[0]:s.tail[1]].split()) == tail(text)


def test_ensure_heads_loads_current_heads_without_training(tmp_path, monkeypatch):
    x, y = _toy(dim=4)
    fit_head("a", "prompt", x, y, config=HeadConfig(hidden=0, max_epochs=1)).save(tmp_path)
    calls: list[list[str]] = []
    monkeypatch.setattr(heads_mod, "train_heads", lambda d, names: calls.append(list(names)))
    assert set(ensure_heads(["a"], tmp_path)) == {"a"} and calls == []


def test_ensure_heads_retrains_missing_and_outdated_heads(tmp_path, monkeypatch):
    x, y = _toy(dim=4)
    old = fit_head("old", "prompt", x, y, config=HeadConfig(hidden=0, max_epochs=1))
    old.meta["version"] = HEADS_VERSION - 1
    old.save(tmp_path)
    calls: list[list[str]] = []

    def fake_train(directory, names):
        calls.append(list(names))
        for name in names:
            fit_head(name, "prompt", x, y, config=HeadConfig(hidden=0, max_epochs=1)).save(directory)

    monkeypatch.setattr(heads_mod, "train_heads", fake_train)
    loaded = ensure_heads(["old", "new"], tmp_path)
    assert calls == [["old", "new"]]
    assert loaded["old"].meta["version"] == HEADS_VERSION


def test_train_heads_rejects_unknown_names(tmp_path):
    with pytest.raises(SafeLadderError, match="unknown heads"):
        heads_mod.train_heads(tmp_path, ["no_such_head"])


def test_ensure_heads_retrains_heads_of_another_encoder(tmp_path, monkeypatch):
    x, y = _toy(dim=4)
    head = fit_head("h", "prompt", x, y, config=HeadConfig(hidden=0, max_epochs=1))
    assert head.meta["encoder"] == encoder_tag()
    head.meta["encoder"] = "all-MiniLM-L6-v2/fp32/256/end64" if "int8" in encoder_tag() else "x/int8"
    head.save(tmp_path)
    calls: list[list[str]] = []
    monkeypatch.setattr(heads_mod, "train_heads", lambda d, names: calls.append(list(names)))
    ensure_heads(["h"], tmp_path)
    assert calls == [["h"]]


def _parts(i: float) -> torch.Tensor:
    """[e(answer), e(opening), e(first sentence), e(tail)], each filled with a telling value."""
    return torch.stack([torch.full((4,), i + k / 10) for k in range(4)])


def test_features_use_exactly_the_needed_texts():
    prompts, responses = ["Is it safe?", "Hi"], ["No. Wear gloves and work outside.", "Hello there."]
    encoded = Encoded({p: torch.full((4,), 10.0 + i) for i, p in enumerate(prompts)},
                      {r: _parts(float(i)) for i, r in enumerate(responses)})
    for reads, width in (("prompt", 4), ("response", 12), ("pair", 17)):
        need_p, need_a = needed_inputs(reads, prompts, responses)
        only = Encoded({p: encoded.prompts[p] for p in need_p}, {a: encoded.answers[a] for a in need_a})
        x = build_features(reads, prompts, responses, only)  # a text not needed would raise KeyError
        assert x.shape == (2, width)
        if reads == "response":  # [e(answer), e(first sentence), e(tail)]
            assert torch.equal(x[0], torch.cat([_parts(0.0)[0], _parts(0.0)[2], _parts(0.0)[3]]))
        if reads == "pair":  # [..., e(opening)] and e(prompt) first
            assert torch.equal(x[1, -4:], _parts(1.0)[1]) and torch.equal(x[1, :4], torch.full((4,), 11.0))
    assert needed_inputs("prompt", prompts, responses) == (prompts, [])
    assert needed_inputs("response", prompts, responses) == ([], responses)


class _CountingEmbedder:
    def __init__(self):
        self.calls: list[tuple[list[str], list]] = []

    def encode_pooled(self, texts, spans=None, batch_size=64):
        self.calls.append((list(texts), list(spans)))
        return [torch.ones(1 + len(s), 4) * len(t) for t, s in zip(texts, spans)]


def test_encode_inputs_encodes_each_distinct_text_once_in_one_call():
    e = _CountingEmbedder()
    answers = ["I can't. Ask a doctor instead.", "Sure.", "I can't. Ask a doctor instead."]
    out = encode_inputs(e, ["Q"] * 8, answers)  # a GRPO group: one prompt, several answers
    assert len(e.calls) == 1
    texts, spans = e.calls[0]
    assert texts == ["Q", "I can't. Ask a doctor instead.", "Sure."]
    assert spans == [(), answer_spans(answers[0]), answer_spans("Sure.")]
    assert set(out.prompts) == {"Q"} and out.answers["Sure."].shape == (4, 4)


def test_shipped_heads_are_current_for_this_code_and_data():
    """Fails when training data, features or HEADS_VERSION change without refreshing the shipped heads:
    `safeladder verifier train --out DIR`, then copy DIR/*.json and *.safetensors to pretrained_heads/."""
    from safeladder.verifiers.training_data import HEAD_SETS

    stale = [name for name in HEAD_SETS if not heads_mod.pretrained_matches(name)]
    assert stale == [], f"shipped heads out of date: {stale}"


def test_ensure_heads_installs_shipped_heads_instead_of_training(tmp_path, monkeypatch):
    from safeladder.verifiers.training_data import HEAD_SETS

    def no_training(directory, names):
        raise AssertionError(f"trained {names}")

    monkeypatch.setattr(heads_mod, "train_heads", no_training)
    loaded = ensure_heads(list(HEAD_SETS), tmp_path / "heads")
    assert set(loaded) == set(HEAD_SETS)
    for name in HEAD_SETS:
        shipped = (heads_mod.PRETRAINED_DIR / f"{name}.safetensors").read_bytes()
        assert (tmp_path / "heads" / f"{name}.safetensors").read_bytes() == shipped


def test_a_shipped_head_for_other_data_is_not_installed(tmp_path):
    source = tmp_path / "shipped"
    source.mkdir()
    for suffix in (".json", ".safetensors"):
        (source / f"prompt_harmful{suffix}").write_bytes((heads_mod.PRETRAINED_DIR / f"prompt_harmful{suffix}").read_bytes())
    meta = json.loads((source / "prompt_harmful.json").read_text())
    meta["data_hash"] = "0" * 16  # trained on other data
    (source / "prompt_harmful.json").write_text(json.dumps(meta))
    assert not heads_mod.install_pretrained("prompt_harmful", tmp_path / "heads", source)
    assert not (tmp_path / "heads" / "prompt_harmful.json").exists()


def test_a_cached_head_trained_on_other_data_than_the_shipped_one_is_replaced(tmp_path, monkeypatch):
    """Same version and encoder, another data hash: the cache is stale, the shipped head goes in."""
    monkeypatch.setattr(heads_mod, "train_heads", lambda d, names: pytest.fail(f"trained {names}"))
    cache = tmp_path / "heads"
    ensure_heads(["prompt_harmful"], cache)
    meta = json.loads((cache / "prompt_harmful.json").read_text())
    assert heads_mod._is_current(cache, "prompt_harmful")
    meta["data_hash"] = "0" * 16  # as if trained before the data changed
    (cache / "prompt_harmful.json").write_text(json.dumps(meta))
    (cache / "prompt_harmful.safetensors").write_bytes(b"stale")
    assert not heads_mod._is_current(cache, "prompt_harmful")
    ensure_heads(["prompt_harmful"], cache)
    shipped = heads_mod.PRETRAINED_DIR / "prompt_harmful.safetensors"
    assert (cache / "prompt_harmful.safetensors").read_bytes() == shipped.read_bytes()
