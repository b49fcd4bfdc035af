"""The fictional world: deterministic, answers in the corpus, retrievable, consistent splits; the QA adapter."""

from __future__ import annotations

import json

import pytest

from safeladder.data.loaders import load_samples
from safeladder.data.splits import take_split
from safeladder.errors import DataError
from safeladder.search.base import build_index
from safeladder.search.corpus import load_corpus
from safeladder.search.world import LABEL, WorldSpec, adapt_qa, generate_world, load_qa, split_of_question, write_world
from safeladder.verifiers.rules import normalize_answer, reference_aliases

SMALL = WorldSpec(seed=5, countries=3, cities=9, organisations=12, people=40)


@pytest.fixture(scope="module")
def world():
    return generate_world(SMALL)


def test_same_seed_same_world_other_seed_other_world(world):
    again = generate_world(SMALL)
    assert again.documents == world.documents and [s.model_dump() for s in again.samples] == [s.model_dump() for s in world.samples]
    other = generate_world(WorldSpec(**{**SMALL.__dict__, "seed": 6}))
    assert len({d.title for d in other.documents} & {d.title for d in world.documents}) < 3  # a new world, not a shuffle


def test_shape_and_unique_names(world):
    assert len(world.documents) == SMALL.passages == 64
    assert len({d.id for d in world.documents}) == 64 and len({d.title.lower() for d in world.documents}) == 64
    per_entity = {"country": 3, "city": 4, "organisation": 4, "person": 5}
    assert len(world.samples) == sum(per_entity[e["type"]] for e in world.entities.values())
    assert len({s.id for s in world.samples}) == len(world.samples)
    assert {s.label for s in world.samples} == {LABEL}


def test_every_answer_is_written_in_its_gold_passages(world):
    text = {d.id: d.text for d in world.documents}
    for s in world.samples:
        gold = " ".join(text[g] for g in s.metadata["gold_docs"])
        assert any(normalize_answer(a) in normalize_answer(gold) for a in reference_aliases(s.reference)), s
        assert s.metadata["hops"] == len(s.metadata["gold_docs"])


def test_two_hop_questions_chain_through_the_founder(world):
    two = [s for s in world.samples if s.metadata["hops"] == 2]
    assert len(two) == SMALL.organisations
    for s in two:
        org, person = s.metadata["gold_docs"]
        assert world.entities[org]["founder"] == person
        assert world.entities[world.entities[person]["birthplace"]]["name"] == s.reference


def test_one_hop_answers_are_retrievable_by_bm25(world):
    one = [s for s in world.samples if s.metadata["hops"] == 1]
    hits = build_index(world.documents, "bm25").retrieve([s.prompt for s in one], 3)
    recall = sum(s.metadata["gold_docs"][0] in [p.id for p in h] for s, h in zip(one, hits)) / len(one)
    assert recall >= 0.9


def test_written_splits_agree_with_take_split(tmp_path):
    paths = write_world(tmp_path / "w", SMALL)
    manifest = json.loads((tmp_path / "w" / "dataset.json").read_text())
    assert manifest["documents"] == 64 and manifest["spec"]["seed"] == 5
    assert len(load_corpus(paths["corpus"])) == 64
    loaded = {s: load_samples(paths[s]).samples for s in ("train", "dev", "test")}
    assert sum(len(v) for v in loaded.values()) == len(generate_world(SMALL).samples)
    assert {k: len(v) for k, v in loaded.items()} == manifest["questions"]
    assert all(min(len(v), 1) for v in loaded.values())
    assert len(take_split(loaded["train"], "train")) == len(loaded["train"])
    assert len(take_split(loaded["dev"], "dev")) == len(loaded["dev"])
    assert all(split_of_question(s.id) == "test" for s in loaded["test"])


def test_for_passages_scales_the_world():
    spec = WorldSpec.for_passages(10_000, seed=1)
    assert 9_900 <= spec.passages <= 10_000 and spec.cities >= spec.countries
    with pytest.raises(ValueError):
        WorldSpec(countries=5, cities=2)


def test_adapter_reads_search_r1_style_qa_and_corpus(tmp_path):
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "nq1", "question": "who wrote the ledger?", "golden_answers": ["Ana Vel", "A. Vel"]},
        {"question": "capital of Velland?", "answer": "Brannoch"},
    ]) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"id": 1, "contents": '"Brannoch"\nBrannoch is the capital of Velland.'}) + "\n")
    samples = load_qa(tmp_path / "qa.jsonl")
    assert [s.id for s in samples] == ["nq1", "qa-2"]
    assert reference_aliases(samples[0].reference) == ["Ana Vel", "A. Vel"] and samples[1].reference == "Brannoch"
    paths = adapt_qa(tmp_path / "qa.jsonl", tmp_path / "c.jsonl", tmp_path / "out")
    assert load_corpus(paths["corpus"])[0].title == "Brannoch"
    assert sum(len(load_samples(paths[s]).samples) for s in ("train", "dev", "test")) == 2


@pytest.mark.parametrize("row, where", [
    ({"id": "a"}, "qa.jsonl:1: question: missing"),
    ({"question": "q?"}, "qa.jsonl:1: answer: missing"),
    ({"question": "q?", "answers": []}, "qa.jsonl:1: answers: expected a non-empty string"),
    ({"question": "q?", "answer": 5}, "qa.jsonl:1: answer: expected a non-empty string"),
    ({"id": True, "question": "q?", "answer": "a"}, "qa.jsonl:1: id: expected a non-empty string or integer"),
])
def test_adapter_errors_name_file_line_field(tmp_path, row, where):
    (tmp_path / "qa.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError) as err:
        load_qa(tmp_path / "qa.jsonl")
    assert where in str(err.value)
