"""Search rollouts: `</search>` pauses the model, passages come back masked out, calls are capped."""

from __future__ import annotations

import string

import pytest

from safeladder.models.tiny import tiny_tokenizer
from safeladder.rollout import Completion, SamplingSettings, rollout
from safeladder.search.base import build_index
from safeladder.search.corpus import Document
from safeladder.search.environment import SearchEnvironment, last_query, search_environment

DOCS = [
    Document("d1", "Orsk Lantern Guild", "The Orsk Lantern Guild was founded in 1722 by Mira Thessaly."),
    Document("d2", "Mira Thessaly", "Mira Thessaly was born in Quarvel in 1690 and worked as a clockmaker."),
    Document("d3", "Quarvel", "Quarvel is a river port in Velland, famous for copper bells."),
]


@pytest.fixture(scope="module")
def retriever():
    return build_index(DOCS, "bm25")


class ScriptedEngine:
    """A fake engine: the k-th call answers every prefix with script(k, sample) (ids from the real tokenizer)."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script, self.calls = tokenizer, script, 0

    def sample(self, prefixes, settings):
        out = []
        for _ in prefixes:
            group = []
            for j in range(settings.n):
                text = self.script(self.calls, j)
                ids = self.tokenizer.encode(text, add_special_tokens=False)
                reason = "stop" if any(text.endswith(s) for s in settings.stop) else "eos"
                group.append(Completion(ids, [-0.5] * len(ids), reason, self.tokenizer.decode(ids)))
            out.append(group)
        self.calls += 1
        return out

    def sync_weights(self, model):
        pass


TURN1 = "<think>\nI do not know this. <search> Mira Thessaly born </search>"
TURN2 = "\nThe passage says Quarvel.\n</think>\nQuarvel <confidence>high</confidence>"


def test_last_query_reads_the_newest_search_only():
    assert last_query("<search> a </search> x <search>  two\nwords </search>") == "two words"
    assert last_query("<search> old </search>\n<information>x <search> in info </search></information>\nno call") is None
    assert last_query("<search></search>") == ""
    assert last_query("nothing") is None


def test_retrieved_tokens_are_masked_at_exactly_their_positions(retriever):
    tok = tiny_tokenizer()
    env = SearchEnvironment(retriever, topk=2, max_calls=2)
    engine = ScriptedEngine(tok, lambda call, j: TURN1 if call == 0 else TURN2)
    prompt = tok.encode("Where was Mira Thessaly born?", add_special_tokens=False)
    [r1, r2] = rollout(engine, [prompt], SamplingSettings(max_new_tokens=200, n=2), env=env, max_turns=4)
    info = env.format_passages(retriever.retrieve(["Mira Thessaly born"], 2)[0])
    assert info.startswith("\n<information>\n") and info.endswith("\n</information>\n") and "Doc 1 (Title: Mira Thessaly)" in info
    t1, ti, t2 = (tok.encode(x, add_special_tokens=False) for x in (TURN1, info, TURN2))
    for r in (r1, r2):
        assert r.completion_ids == t1 + ti + t2
        assert r.mask == [1] * len(t1) + [0] * len(ti) + [1] * len(t2)
        assert all(lp == 0.0 for lp, m in zip(r.logprobs, r.mask) if m == 0)
        assert all(lp == -0.5 for lp, m in zip(r.logprobs, r.mask) if m == 1)
        assert tok.decode([t for t, m in zip(r.completion_ids, r.mask) if m == 0]) == info  # the block, whole
        assert r.turns == 2 and r.finish_reason == "eos" and r.text.endswith("<confidence>high</confidence>")
        assert r.info == {"search_calls": 1, "search_queries": ["Mira Thessaly born"], "retrieved_ids": [["d2", "d1"]]}
        assert r.n_model_tokens == len(t1) + len(t2)


def test_calls_are_capped_and_then_refused(retriever):
    tok = tiny_tokenizer()
    env = SearchEnvironment(retriever, topk=1, max_calls=2)
    engine = ScriptedEngine(tok, lambda call, j: f" <search> Quarvel port {call} </search>")
    [r] = rollout(engine, [tok.encode("q", add_special_tokens=False)], SamplingSettings(max_new_tokens=500), env=env, max_turns=4)
    assert r.turns == 4 and r.info["search_calls"] == 2 and r.info["search_refused"] == 1
    assert r.text.count("Search limit reached (2 searches)") == 1 and r.text.count("Doc 1 (Title: Quarvel)") == 2


def test_stop_without_a_query_gets_a_hint_not_a_search(retriever):
    info: dict = {}
    answer = SearchEnvironment(retriever).respond(0, "I will search now </search>", info)
    assert "No query found" in answer and info == {"search_invalid": 1}


def test_passages_are_cut_to_max_passage_tokens(retriever):
    tok = tiny_tokenizer()
    by_tokens = SearchEnvironment(retriever, topk=1, max_passage_tokens=5, tokenizer=tok)
    block = by_tokens.respond(0, "<search> Mira Thessaly </search>", {})
    body = block.split("(Title: Mira Thessaly) ", 1)[1].split("\n</information>")[0]
    assert body.endswith(" …") and len(tok.encode(body[: -len(" …")], add_special_tokens=False)) <= 5
    by_words = SearchEnvironment(retriever, topk=1, max_passage_tokens=3).respond(0, "<search> Mira Thessaly </search>", {})
    assert "(Title: Mira Thessaly) Mira Thessaly was …" in by_words
    assert SearchEnvironment(retriever).respond(0, "<search> the of </search>", {}) == "\n<information>\nNo results.\n</information>\n"


def test_with_the_tiny_model_tool_tokens_are_masked(tiny_policy, retriever):
    """The real transformers engine: the tiny random model hits a stop string, the hint block is masked."""
    from safeladder.rollout.hf_engine import TransformersEngine

    tok = tiny_policy.tokenizer
    env = SearchEnvironment(retriever, max_calls=1)
    env.stop = tuple(string.ascii_letters + string.digits)  # strings the random model soon writes: the tool turn happens
    prompts = [tok.encode("0 1 2 3 4 5 6 7 8", add_special_tokens=False)]
    rollouts = rollout(TransformersEngine(tiny_policy.model, tok), prompts,
                       SamplingSettings(max_new_tokens=12, temperature=1.0, n=3, seed=0), env=env, max_turns=2)
    hint = tok.encode(env.respond(0, "", {}), add_special_tokens=False)
    turned = [r for r in rollouts if r.turns > 1]
    assert turned, "the seeded run should hit the stop string"
    for r in turned:
        start = r.mask.index(0)
        assert r.completion_ids[start:start + len(hint)] == hint and r.mask[start:start + len(hint)] == [0] * len(hint)
        assert sum(1 for m in r.mask if m == 0) == len(hint) and r.info["search_invalid"] == 1
        assert r.mask[:start] == [1] * start and all(m == 1 for m in r.mask[start + len(hint):])  # model turns around it


def test_built_from_config_options(tmp_path, retriever):
    retriever.save(tmp_path / "idx")
    env = search_environment(index=str(tmp_path / "idx"), topk=1, max_calls=1)
    assert env.respond(0, "<search> Velland port </search>", {}).count("Doc ") == 1
    from safeladder.rollout.environments import build_environment

    by_name = build_environment({"name": "search", "index": str(tmp_path / "idx"), "topk": 2})
    assert isinstance(by_name, SearchEnvironment) and by_name.topk == 2
    from safeladder.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one"):
        search_environment()
