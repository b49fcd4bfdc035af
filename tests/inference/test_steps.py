"""Step splitting, the sampling settings of a step, and the token-level context helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from safeladder.format import THINK_CLOSE
from safeladder.inference.steps import (
    FORCED_CLOSE, THINK_PREFILL, SeedSequence, StepSettings, closes_reasoning, context_ids, prompt_ids,
    reasoning_for_judging, split_steps, split_token_budget, user_text,
)
from safeladder.rollout.base import Completion


def test_split_steps_keeps_separators_with_the_step_before():
    text = "First, the request.\n\nSecond: is it safe?\n\n\nThird line\nstill third.\n\nLast"
    assert split_steps(text) == ["First, the request.\n\n", "Second: is it safe?\n\n\n",
                                 "Third line\nstill third.\n\n", "Last"]
    assert split_steps("") == []
    assert split_steps("no separator at all") == ["no separator at all"]
    assert split_steps("a||b||", separator="||") == ["a||", "b||"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab \n.", max_size=60))
def test_split_steps_is_lossless_and_every_step_but_the_last_ends_a_step(text):
    steps = split_steps(text)
    assert "".join(steps) == text
    assert all(s for s in steps)
    for s in steps[:-1]:
        assert s.endswith("\n\n") and "\n\n" not in s.rstrip("\n")  # one separator, at the end


def test_split_token_budget():
    assert split_token_budget(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert split_token_budget([], 3) == []
    with pytest.raises(ValueError):
        split_token_budget([1], 0)


def test_reasoning_for_judging_strips_tags_and_stops_at_the_close():
    assert reasoning_for_judging("<think>\nThe user asks X.\n\nIt is harmful.") == "The user asks X.\n\nIt is harmful."
    assert reasoning_for_judging("<think>\nplan\n</think>\nanswer") == "plan"
    assert reasoning_for_judging("") == ""
    assert closes_reasoning("x </think> y") and not closes_reasoning("<think> x")


def test_step_settings_stop_at_the_separator_and_the_close_tag():
    s = StepSettings(step_tokens=20, answer_tokens=50, temperature=0.5, top_p=0.9)
    r = s.reasoning(n=3, seed=7)
    assert (r.max_new_tokens, r.n, r.seed, r.temperature, r.top_p) == (20, 3, 7, 0.5, 0.9)
    assert r.stop == ("\n\n", THINK_CLOSE)
    assert s.reasoning(max_tokens=5).max_new_tokens == 5  # a smaller remaining budget wins
    a = s.answer(stop=("###",), max_tokens=80)
    assert a.max_new_tokens == 50 and a.stop == ("###",)
    for bad in ({"step_tokens": 0}, {"max_steps": 0}, {"answer_tokens": 0}, {"separator": ""}):
        with pytest.raises(ValueError):
            StepSettings(**bad)


def test_context_ids_drop_only_a_final_eos():
    eos = {2}
    assert context_ids(Completion([5, 6, 2], [0.0] * 3, "eos", "ab"), eos) == [5, 6]
    assert context_ids(Completion([5, 2, 6], [0.0] * 3, "length", "ab"), eos) == [5, 2, 6]
    assert context_ids(Completion([5, 6], [0.0] * 2, "stop", "ab"), eos) == [5, 6]


def test_prompt_ids_end_inside_the_assistant_turn_with_the_think_prefill(tiny_policy):
    tok = tiny_policy.tokenizer
    chat = [{"role": "user", "content": "What is 47 + 38?"}]
    ids = prompt_ids(tok, chat)
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>assistant\n" + THINK_PREFILL)
    assert "What is 47 + 38?" in text and text.count("<|im_start|>user") == 1
    assert tok.decode(prompt_ids(tok, chat, prefill="")).endswith("<|im_start|>assistant\n")
    assert user_text([*chat, {"role": "assistant", "content": "85"}, {"role": "user", "content": "why?"}]) == "why?"
    assert FORCED_CLOSE.strip() == THINK_CLOSE


def test_seed_sequence_is_distinct_per_call_and_reproducible():
    a, b = SeedSequence(3), SeedSequence(3)
    seeds = [a.next() for _ in range(4)]
    assert len(set(seeds)) == 4 and seeds == [b.next() for _ in range(4)]
    assert SeedSequence(None).next() is None
    assert 0 <= SeedSequence(2**62).next() < 2**63  # any request seed stays a valid torch seed
