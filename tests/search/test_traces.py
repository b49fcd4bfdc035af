from __future__ import annotations

from safeladder.data.sample import Sample
from safeladder.search.base import build_index
from safeladder.search.corpus import Document
from safeladder.search.environment import SearchEnvironment, information_block
from safeladder.search.traces import search_trace, search_traces

DOCS = [
    Document("c1", "Quarvel", "The capital of Quarvel is the city of Osterbay. Quarvish is spoken there."),
    Document("c2", "Brindle", "The capital of Brindle is the city of Helmfast. Brindlish is spoken there."),
    Document("o1", "Tarn Guild", "The Tarn Guild was founded in 1801 by Ilsa Moorcroft. It is based in Helmfast."),
    Document("p1", "Ilsa Moorcroft", "Born in Osterbay in 1770, Ilsa Moorcroft became a weaver."),
]


def _env() -> SearchEnvironment:
    return SearchEnvironment(build_index(DOCS, "bm25"), topk=2, max_passage_tokens=64)


def test_one_hop_trace_holds_the_real_search_result_and_a_confident_answer():
    env = _env()
    s = Sample(id="q1", prompt="What is the capital of Quarvel?", label="search_qa", reference="Osterbay",
               metadata={"gold_docs": ["c1"], "hops": 1})
    text = search_trace(s, env, {d.id: d.title for d in DOCS})
    expected_block = env.format_passages(env.retriever.retrieve(["What is the capital of Quarvel"], 2)[0])
    assert text.startswith("<think>\n<search> What is the capital of Quarvel </search>" + expected_block)
    assert "The information says: The capital of Quarvel is the city of Osterbay." in text
    assert text.endswith("</think>\nOsterbay <confidence>high</confidence>")


def test_two_hop_trace_searches_for_the_bridge_entity():
    s = Sample(id="q2", prompt="In which city was the founder of the Tarn Guild born?", label="search_qa",
               reference="Osterbay", metadata={"gold_docs": ["o1", "p1"], "hops": 2})
    text = search_trace(s, _env(), {d.id: d.title for d in DOCS})
    assert text.count("<search>") == 2
    assert "The Tarn Guild was founded by Ilsa Moorcroft." in text
    assert "<search> Where was Ilsa Moorcroft born </search>" in text
    assert text.endswith("Osterbay <confidence>high</confidence>")


def test_answer_missing_from_the_results_gives_low_confidence():
    s = Sample(id="q3", prompt="What is the capital of Quarvel?", label="search_qa", reference="Nowhere")
    [traced] = search_traces([s], _env(), DOCS)
    assert "The information does not answer the question." in traced.response
    assert traced.response.endswith("unknown <confidence>low</confidence>")
    assert information_block("x").startswith("\n<information>")  # the block format the SFT mask expects


def test_cli_writes_traces_that_sft_can_load(tmp_path):
    from typer.testing import CliRunner

    from safeladder.cli import app
    from safeladder.data.loaders import load_samples
    from safeladder.search.world import WorldSpec, write_world

    paths = write_world(tmp_path / "world", WorldSpec(seed=3, countries=3, cities=4, organisations=3, people=6))
    res = CliRunner().invoke(app, ["search", "index", "--corpus", str(paths["corpus"]), "-o", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "traces.jsonl"
    res = CliRunner().invoke(app, ["search", "traces", "--qa", str(paths["train"]), "--index", str(tmp_path / "idx"),
                                   "--limit", "12", "--topk", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = load_samples(out).samples
    assert len(rows) == 12
    assert all(r.response.startswith("<think>\n<search> ") and "<confidence>" in r.response for r in rows)
    # most world questions are answered from the retrieved passage (BM25 finds the entity's page)
    assert sum("<confidence>high" in r.response for r in rows) >= 9


def test_question_without_reference_is_a_data_error_naming_the_sample():
    import pytest

    from safeladder.errors import DataError

    with pytest.raises(DataError, match="sample q9: reference"):
        search_trace(Sample(id="q9", prompt="What is the capital of Quarvel?", label="search_qa"), _env(), {})


def test_cli_cuts_passages_by_the_policy_tokens_like_the_rollouts(tmp_path):
    from typer.testing import CliRunner

    from safeladder.cli import app
    from safeladder.data.loaders import load_samples
    from safeladder.models.tiny import tiny_tokenizer
    from safeladder.search.base import load_index
    from safeladder.search.world import WorldSpec, write_world

    paths = write_world(tmp_path / "world", WorldSpec(seed=3, countries=3, cities=4, organisations=3, people=6))
    assert CliRunner().invoke(app, ["search", "index", "--corpus", str(paths["corpus"]), "-o", str(tmp_path / "idx")]).exit_code == 0
    out = tmp_path / "traces.jsonl"
    res = CliRunner().invoke(app, ["search", "traces", "--qa", str(paths["train"]), "--index", str(tmp_path / "idx"),
                                   "--limit", "3", "--topk", "2", "--max-passage-tokens", "5", "--tokenizer", "tiny",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    first = load_samples(out).samples[0]
    # the rollout's environment, built with the policy's tokenizer, shows exactly this block
    env = SearchEnvironment(load_index(tmp_path / "idx"), topk=2, max_passage_tokens=5, tokenizer=tiny_tokenizer())
    query = " ".join(first.user_text.split()).rstrip("?").strip()
    block = env.format_passages(env.retriever.retrieve([query], 2)[0])
    assert block in first.response
    words = SearchEnvironment(load_index(tmp_path / "idx"), topk=2, max_passage_tokens=5)
    assert words.format_passages(words.retriever.retrieve([query], 2)[0]) != block  # the cut differs from words
