from __future__ import annotations

import pytest

from safeladder.format import (
    SYSTEM_PROMPT, answer_text, format_ok, make_completion, parse_response, render_prompt, with_system,
)


@pytest.mark.parametrize(
    "text, think, answer, issues",
    [
        ("<think>a</think>b", "a", "b", ()),
        ("  <think>\n step \n</think>\n The answer is 5. ", "step", "The answer is 5.", ()),
        ("a</think>b", "a", "b", ("missing_open_tag",)),
        ("<think>a", "a", "", ("missing_close_tag", "empty_answer")),
        ("hello", None, "hello", ("no_think_block",)),
        ("<think></think>x", "", "x", ("empty_think",)),
        ("<think>a</think>", "a", "", ("empty_answer",)),
        ("x<think>a</think>b", "a", "b", ("text_before_think",)),
        ("<think>a</think>b</think>c", "a\nb", "c", ("multiple_think_blocks",)),
    ],
)
def test_parse_response_cases(text, think, answer, issues):
    parsed = parse_response(text)
    assert parsed.think == think
    assert parsed.answer == answer
    assert parsed.issues == issues
    assert parsed.well_formed == (issues == ())


def test_answer_is_text_after_last_close_tag():
    assert answer_text("<think>x</think> first </think> final") == "final"


def test_format_check_is_on_completion_only():
    # The system prompt mentions both tags; a completion without them must still fail.
    assert "<think>" in SYSTEM_PROMPT and "</think>" in SYSTEM_PROMPT
    assert not format_ok("Sure, here is the answer: 5")
    assert format_ok(make_completion("3 + 2 = 5.", "The answer is 5."))


def test_with_system_prepends_once():
    chat = [{"role": "user", "content": "hi"}]
    assert with_system(chat)[0] == {"role": "system", "content": SYSTEM_PROMPT}
    own = [{"role": "system", "content": "mine"}, *chat]
    assert with_system(own) == own
    assert with_system(chat, None) == chat


def test_render_prompt_uses_chat_template(tiny_policy):
    text = render_prompt(tiny_policy.tokenizer, [{"role": "user", "content": "What is 2 + 2?"}])
    assert text.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>")
    assert "<|im_start|>user\nWhat is 2 + 2?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
