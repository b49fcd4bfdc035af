"""Training sets of the neural verifier heads: provenance, labels, determinism, a clean held-out split."""

from __future__ import annotations

import pytest

from safeladder.data.sources.benign import load_benign
from safeladder.data.sources.harmful import decline_trace, load_harmful
from safeladder.data.splits import split_of
from safeladder.format import answer_text
from safeladder.verifiers import training_data as td
from safeladder.verifiers.refusal import is_refusal

pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def sets():
    try:
        td.pyrit_dir()
    except Exception:
        pytest.skip("pyrit==1.1.0 scorer-eval CSVs not installed")
    return {name: td.build_set(name) for name in td.HEAD_SETS}


def _prompt(ex: td.Example) -> str:
    return ex.text[0] if isinstance(ex.text, tuple) else ex.text


def test_held_out_split_is_disjoint_from_train(sets):
    for name, examples in sets.items():
        train, held_out = td.split_examples(examples)
        assert train and held_out and len(train) + len(held_out) == len(examples)
        assert {e.group for e in train}.isdisjoint({e.group for e in held_out}), name
        assert {e.id for e in train}.isdisjoint({e.id for e in held_out}), name
        if td.HEAD_SETS[name][1] != "response":  # no request sits on both sides
            assert {_prompt(e) for e in train}.isdisjoint({_prompt(e) for e in held_out}), name
        assert all(split_of(e.group) == "dev" for e in held_out)
        assert len({e.id for e in examples}) == len(examples)


def test_held_out_matches_the_sources_dev_splits(sets):
    held_out = {e.id for e in td.split_examples(sets["prompt_harmful"])[1]}
    assert {s.id for s in load_harmful("all", "dev")} <= held_out
    assert {s.id for s in load_benign("dev")} <= held_out
    assert not {s.id for s in load_harmful("all", "train")} & held_out
    # derived answers follow their prompt: declines written for dev prompts are held out
    dev_prompts = {s.user_text for s in load_harmful("all", "dev")}
    for e in sets["response_refusal"]:
        if e.source == "synthetic-decline" and e.text[0] in dev_prompts:
            assert e.split == "dev"


def test_every_set_has_both_classes_and_provenance(sets):
    for name, examples in sets.items():
        table = td.counts(examples)
        assert table["total"]["pos"] > 100 and table["total"]["neg"] > 100, (name, table["total"])
        assert sum(r["pos"] + r["neg"] for k, r in table.items() if k != "total") == len(examples)
        assert all(e.source for e in examples) and all(e.label in (0, 1) for e in examples)
    assert {"advbench", "harmbench", "donotanswer"} <= {e.source for e in sets["prompt_harmful"] if e.label}
    assert any(e.human for e in sets["response_refusal"]) and any(e.human for e in sets["response_harmful"])


def test_labels_mean_what_they_say(sets):
    harmful = load_harmful("advbench")[0]
    decline = (harmful.user_text, answer_text(decline_trace(harmful)))
    by_text = {name: {e.text: e.label for e in examples} for name, examples in sets.items()}
    assert by_text["prompt_harmful"][harmful.user_text] == 1
    assert by_text["response_refusal"][decline] == 1
    assert by_text["response_harmful"][decline] == 0
    assert by_text["value"][decline] == 1
    assert by_text["has_warning"][decline[1]] == 1
    benign = load_benign()[0]
    assert by_text["prompt_harmful"][benign.user_text] == 0
    assert by_text["helpfulness"][(benign.user_text, benign.metadata["answer"])] == 1
    assert by_text["response_refusal"][(benign.user_text, benign.metadata["answer"])] == 0
    # synthetic refusals really read as refusals, compliance answers do not
    for e in sets["response_refusal"]:
        if e.source == "synthetic-refusal":
            assert is_refusal(e.text[1]), e.text
        if e.source == "synthetic-compliance":
            assert not is_refusal(e.text[1]), e.text


def test_pyrit_control_prompts_are_the_everyday_ones():
    control = td.pyrit_control_objectives()
    assert "Write a short poem about the ocean." in control and "Tell me a joke about cats!" in control
    assert not any("bomb" in c.lower() or "hack" in c.lower() for c in control)
    assert 30 <= len(control) <= 60


def test_sets_are_deterministic(sets):
    again = td.build_set("has_warning")
    assert td.data_hash(again) == td.data_hash(sets["has_warning"])


def test_unknown_set_is_an_error():
    with pytest.raises(td.SafeLadderError, match="unknown head"):
        td.build_set("nope")


def test_refusals_that_comply_anyway_are_harmful_and_open_with_a_refusal(sets):
    relent = [e for e in sets["response_harmful"] if e.source == "synthetic-relent"]
    assert len(relent) > 100 and all(e.label == 1 for e in relent)
    for e in relent:
        assert is_refusal(e.text[1].split(". ")[0] + "."), e.text  # the opener alone reads as a refusal
    # only requests that got no plain compliance answer, so no request teaches both shapes
    complied = {e.group for e in sets["response_harmful"] if e.source == "synthetic-compliance"}
    assert not complied & {e.group for e in relent}


def test_hand_labels_are_human_rows_split_by_their_request(sets):
    hand = [e for e in sets["response_harmful"] if e.source == "hand-model-answers"]
    rows = td.hand_labels()
    assert len(hand) == len(rows) and all(e.human for e in hand)
    assert {e.label for e in hand} == {0, 1} and all(e.weight == td.HARD_NEGATIVE_WEIGHT for e in hand)
    ids = {s.id for s in load_harmful("all")}
    assert all(r.prompt_id in ids for r in rows)  # every request is a known harmful sample …
    assert all(e.split == split_of(e.group) for e in hand)  # … and the answer follows its split
    # labelled refusals that name the topic are the hard negatives
    assert sum(1 for r in rows if r.harmful == 0 and is_refusal(r.answer)) >= 20


@pytest.mark.parametrize("row, field", [
    ('{"id": "x", "prompt_id": "p", "prompt": "q", "answer": "a"}', "harmful"),
    ('{"id": "x", "prompt_id": "p", "prompt": "q", "answer": "a", "harmful": 2}', "harmful"),
    ('{"id": "x", "prompt_id": "p", "prompt": 3, "answer": "a", "harmful": 1}', "prompt"),
])
def test_a_bad_hand_label_row_names_file_line_and_field(tmp_path, row, field):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"id": "ok", "prompt_id": "p", "prompt": "q", "answer": "a", "harmful": 0}\n' + row + "\n")
    with pytest.raises(td.DataError, match=rf"labels.jsonl:2: {field}: expected"):
        td.hand_labels.__wrapped__(path)
