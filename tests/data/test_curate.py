"""Behavioural tests for CoT trace curation and behaviour tagging (SPEC §2)."""

from __future__ import annotations

import json

import pytest

from safeladder.data import curate as curate_mod
from safeladder.data.behaviours import BEHAVIOURS, build_registry, register_behaviour, tag_behaviours
from safeladder.data.curate import (
    DROP_REASONS,
    behaviour_distribution,
    curate,
    default_answer_check,
    detect_loop,
    deliberates,
    is_non_answer,
    restates_reasoning,
    restates_request,
    dominant_script,
    drop_reason,
    is_truncated,
    language_consistent,
    rebalance,
)
from safeladder.data.sample import Sample
from safeladder.format import make_completion

GOOD_THINK = "Wait, let me check: 85 - 38 = 47."
LOOP_THINK = "I should add the numbers again to be sure. " * 6


def trace(id: str, think: str = GOOD_THINK, answer: str = "The answer is 47.", *,
          prompt: str = "What is 85 minus 38?", label: str = "general", reference: str | None = None,
          response: str | None = "", images: list[str] | None = None) -> Sample:
    """A sample whose response is `<think>think</think>answer` unless `response` is given."""
    resp = make_completion(think, answer) if response == "" else response
    return Sample(id=id, prompt=prompt, label=label, reference=reference, response=resp, images=images or [])


def reject_all(sample: Sample, answer: str) -> bool:
    return False


# --------------------------------------------------------------------------- drop reasons

def test_each_drop_reason_is_recorded_with_its_reason() -> None:
    samples = [
        trace("ok"),
        trace("none", response=None),
        trace("blank", response="   \n"),
        trace("cut", response="<think>First, 85 - 38 is"),
        trace("no-tags", response="The answer is 47."),
        trace("loop", think=LOOP_THINK),
        trace("zh", answer="答案是四十七。"),
        trace("wrong", label="math", reference="47"),
        trace("dup", think=GOOD_THINK.upper()),  # same as "ok" after lower-casing
    ]
    check = lambda s, a: False if s.id == "wrong" else None  # noqa: E731
    result = curate(samples, answer_check=check)
    assert [s.id for s in result.kept] == ["ok"]
    assert result.dropped == [
        ("none", "no_response"), ("blank", "no_response"), ("cut", "truncated"), ("no-tags", "format"),
        ("loop", "looping"), ("zh", "language_mismatch"), ("wrong", "wrong_answer"), ("dup", "duplicate"),
    ]
    assert result.counts == {
        "no_response": 2, "truncated": 1, "format": 1, "looping": 1,
        "language_mismatch": 1, "wrong_answer": 1, "duplicate": 1,
    }
    assert list(result.counts) == list(DROP_REASONS)
    assert result.total == 9


def test_empty_answer_after_closed_think_counts_as_truncated() -> None:
    assert drop_reason(trace("a", response="<think>Step 1: add.</think>")) == "truncated"


def test_text_before_think_is_a_format_drop() -> None:
    assert drop_reason(trace("a", response="Sure! <think>ok</think> 47")) == "format"


def test_first_failing_reason_wins() -> None:
    # Truncated + looping + Chinese: truncation is checked first.
    assert drop_reason(trace("a", response="<think>" + LOOP_THINK + "答案"), answer_check=reject_all) == "truncated"
    # Looping + language mismatch + wrong answer: looping first.
    assert drop_reason(trace("b", think=LOOP_THINK, answer="答案是四十七。"), answer_check=reject_all) == "looping"
    # Language mismatch + wrong answer: language first.
    assert drop_reason(trace("c", answer="答案是四十七。"), answer_check=reject_all) == "language_mismatch"
    # Wrong answer only.
    assert drop_reason(trace("d"), answer_check=reject_all) == "wrong_answer"


def test_answer_check_is_not_called_on_structurally_bad_traces() -> None:
    calls: list[str] = []

    def check(sample: Sample, answer: str) -> bool:
        calls.append(sample.id)
        return True

    curate([trace("cut", response="<think>half"), trace("loop", think=LOOP_THINK), trace("ok")], answer_check=check)
    assert calls == ["ok"]


def test_duplicate_of_a_dropped_trace_gets_its_own_reason() -> None:
    result = curate([trace("a"), trace("b")], answer_check=reject_all)
    assert result.dropped == [("a", "wrong_answer"), ("b", "wrong_answer")]


def test_language_check_can_be_disabled() -> None:
    result = curate([trace("zh", answer="答案是四十七。")], require_language_consistency=False)
    assert [s.id for s in result.kept] == ["zh"]


# --------------------------------------------------------------------------- dedup

def test_dedup_keeps_the_first_and_normalises_case_and_whitespace() -> None:
    first = trace("first")
    second = trace("second", prompt="what   is 85 MINUS 38?", think="wait,  let me CHECK: 85 - 38 = 47.")
    result = curate([first, second])
    assert [s.id for s in result.kept] == ["first"]
    assert result.dropped == [("second", "duplicate")]


def test_dedup_distinguishes_images_and_can_be_turned_off() -> None:
    with_image = trace("img", images=["a.png"])
    assert [s.id for s in curate([trace("plain"), with_image]).kept] == ["plain", "img"]
    assert [s.id for s in curate([trace("x"), trace("y")], dedup=False).kept] == ["x", "y"]


# --------------------------------------------------------------------------- answer check

def test_answer_check_receives_the_answer_text_and_none_means_not_applicable() -> None:
    seen: list[str] = []

    def check(sample: Sample, answer: str) -> bool | None:
        seen.append(answer)
        return None

    result = curate([trace("a", answer="It is 47.")], answer_check=check)
    assert seen == ["It is 47."]
    assert [s.id for s in result.kept] == ["a"]
    assert [s.id for s in curate([trace("b")], answer_check=lambda s, a: True).kept] == ["b"]
    assert curate([trace("c")], answer_check=reject_all).dropped == [("c", "wrong_answer")]
    assert [s.id for s in curate([trace("d")], answer_check=None).kept] == ["d"]


def test_default_answer_check_applies_only_to_rule_labels_with_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(curate_mod, "_load_is_correct", lambda: None)  # force the exact-match fallback
    assert default_answer_check(trace("a", label="general", reference="47"), "48") is None
    assert default_answer_check(trace("b", label="math"), "48") is None
    assert default_answer_check(trace("c", label="math", reference="47"), "So $\\boxed{47}$.") is True
    assert default_answer_check(trace("d", label="knowledge_rule", reference="B"), "  b ") is True
    assert default_answer_check(trace("e", label="math", reference="47"), "\\boxed{48}") is False


def test_default_answer_check_uses_the_verifier_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def fake_is_correct(answer: str, reference: str) -> bool:
        calls.append((answer, reference))
        return answer.endswith("forty-seven")

    monkeypatch.setattr(curate_mod, "_load_is_correct", lambda: fake_is_correct)
    result = curate([
        trace("yes", answer="It is forty-seven", label="math", reference="47"),
        trace("no", think="Let me verify: 85 - 38.", answer="It is 46", label="math", reference="47"),
    ])
    assert calls == [("It is forty-seven", "47"), ("It is 46", "47")]
    assert [s.id for s in result.kept] == ["yes"]
    assert result.dropped == [("no", "wrong_answer")]


# --------------------------------------------------------------------------- truncation / loops

def test_is_truncated() -> None:
    assert is_truncated("<think>Let me start by")
    assert is_truncated("<think>Done thinking.</think>   ")
    assert not is_truncated(make_completion("Done.", "47"))
    assert not is_truncated("no tags at all")  # a format problem, not a truncation


def test_detect_loop_on_repeated_phrase_and_not_on_normal_text() -> None:
    assert detect_loop("So the answer must be checked once more carefully. " * 5)
    normal = ("First, subtract the tens: 80 - 30 = 50. Then subtract the ones: 5 - 8 needs a borrow, "
              "so 50 + 5 - 8 = 47. Let me verify by adding back: 47 + 38 = 85, which matches.")
    assert not detect_loop(normal)


def test_detect_loop_thresholds() -> None:
    phrase = "one two three four five six seven eight "
    assert not detect_loop(phrase * 3)  # each 8-gram appears 3 times: allowed
    assert detect_loop(phrase * 4)  # 4 > max_repeats
    assert not detect_loop(phrase * 4, max_repeats=4)


def test_detect_loop_on_repeated_lines_and_cjk() -> None:
    assert detect_loop("Let me check.\nLet me check.\n\nLet me check.\n")
    assert not detect_loop("Let me check.\nLet me check.\nDone.\n")
    assert detect_loop("我需要再检查一遍这个结果。" * 5)
    assert not detect_loop("我们先把八十五减去三十八，得到四十七，然后加回去验证。")


# --------------------------------------------------------------------------- language

def test_dominant_script() -> None:
    assert dominant_script("How many apples are left?") == "Latin"
    assert dominant_script("答案是四十七。") == "CJK"
    assert dominant_script("Сколько будет восемьдесят пять минус тридцать восемь?") == "Cyrillic"
    assert dominant_script("كم يساوي خمسة وثمانون") == "Arabic"
    assert dominant_script("47 + 38 = 85") == "none"
    # LaTeX, inline math and single-letter variables do not make Chinese math look Latin.
    assert dominant_script("设 $x = \\frac{a}{b}$，则 x 等于 \\sqrt{2}") == "CJK"


def test_language_consistency() -> None:
    assert language_consistent("What is 85 minus 38?", "85 - 38 = 47", "47")
    assert not language_consistent("What is 85 minus 38?", "Subtract them.", "答案是四十七。")
    sample = trace("zh", prompt="八十五减三十八等于多少？", think="先算 $85 - 38$，结果是 47。", answer="答案是 47。")
    assert drop_reason(sample) is None


# --------------------------------------------------------------------------- behaviours

def test_kept_trace_carries_sorted_behaviour_tags_and_input_is_untouched() -> None:
    original = trace("ok")
    result = curate([original])
    assert result.kept[0].metadata["behaviours"] == ["backtracking", "verification"]
    assert "behaviours" not in original.metadata


@pytest.mark.parametrize(
    ("think", "expected"),
    [
        ("Wait, let me check: 85 - 38 = 47.", {"backtracking", "verification"}),
        ("Let me break this down. First add, then subtract.", {"subgoal"}),
        ("Hmm, on second thought I should reconsider.", {"reflection"}),
        ("This request could be dangerous and illegal.", {"risk_assessment"}),
        ("Substitute x back into the equation; that's wrong, let me redo it.", {"verification", "backtracking"}),
        ("WAIT. ACTUALLY it is 47.", {"backtracking"}),
        ("We strengthen the paycheck checkout awaiting a firsthand review.", set()),  # word-bounded
        ("", set()),
    ],
)
def test_tag_behaviours(think: str, expected: set[str]) -> None:
    assert tag_behaviours(think) == frozenset(expected)


def test_registry_override_and_registration_do_not_leak() -> None:
    custom = build_registry({"eureka": ["aha", "eureka"]})
    assert tag_behaviours("Aha! Wait.", registry=custom) == {"eureka"}
    reg = dict(BEHAVIOURS)
    register_behaviour("aha_moment", ["aha"], registry=reg)
    assert tag_behaviours("Aha! Wait.", registry=reg) == {"aha_moment", "backtracking"}
    assert "aha_moment" not in BEHAVIOURS
    result = curate([trace("a", think="Eureka, 47.")], behaviours=custom)
    assert result.kept[0].metadata["behaviours"] == ["eureka"]


def test_behaviour_distribution() -> None:
    samples = [trace("a"), trace("b", think="Let me verify this."), trace("c", think="85 - 38 = 47"),
               trace("d", think="Hmm, 47.")]
    dist = behaviour_distribution(samples)
    assert dist["verification"] == 0.5
    assert dist["backtracking"] == 0.25
    assert dist["reflection"] == 0.25
    assert dist["none"] == 0.25
    assert dist["subgoal"] == 0.0 and dist["risk_assessment"] == 0.0
    assert behaviour_distribution([])["none"] == 0.0


# --------------------------------------------------------------------------- rebalance

def _skewed() -> list[Sample]:
    """90 verification-only traces and 10 reflection-only traces."""
    ver = [trace(f"v{i}", think=f"Let me verify: {i} + 1 = {i + 1}.") for i in range(90)]
    ref = [trace(f"r{i}", think=f"Hmm, {i} is odd.") for i in range(10)]
    return ver + ref


def test_rebalance_caps_the_dominant_behaviour_and_keeps_the_rare_one() -> None:
    samples = _skewed()
    assert behaviour_distribution(samples)["verification"] == 0.9
    out = rebalance(samples, max_share=0.5, seed=0)
    dist = behaviour_distribution(out)
    assert dist["verification"] <= 0.5
    assert len(out) == 20  # stops as soon as satisfied: 10 verification + 10 reflection
    assert sum(s.id.startswith("r") for s in out) == 10
    ids = [s.id for s in out]
    assert ids == sorted(ids, key=lambda i: (i[0] == "r", int(i[1:])))  # input order preserved


def test_rebalance_is_deterministic_and_seeded() -> None:
    samples = _skewed()
    a = [s.id for s in rebalance(samples, 0.5, seed=0)]
    assert a == [s.id for s in rebalance(samples, 0.5, seed=0)]
    assert a != [s.id for s in rebalance(samples, 0.5, seed=1)]


def test_rebalance_prefers_traces_without_under_represented_tags() -> None:
    pure = [trace(f"v{i}", think=f"Check {i}.") for i in range(60)]
    mixed = [trace(f"m{i}", think=f"First, check {i}.") for i in range(20)]  # verification + subgoal
    hmm = [trace(f"h{i}", think=f"Hmm, {i}.") for i in range(20)]
    out = rebalance(pure + mixed + hmm, max_share=0.5)
    ids = {s.id for s in out}
    assert {s.id for s in mixed + hmm} <= ids  # only the pure verification traces were removed
    assert max(v for k, v in behaviour_distribution(out).items() if k != "none") <= 0.5


def test_rebalance_stops_when_it_cannot_help() -> None:
    everyone = [trace(f"v{i}", think=f"Check {i}.") for i in range(5)]
    assert [s.id for s in rebalance(everyone, 0.5)] == [s.id for s in everyone]
    with pytest.raises(ValueError):
        rebalance(everyone, 0.0)


# --------------------------------------------------------------------------- report

def test_report_and_to_dict() -> None:
    samples = _skewed() + [trace("cut", response="<think>half"), trace("v0-again", think="Let me verify: 0 + 1 = 1.")]
    result = curate(samples, max_share=0.5)
    assert len(result.kept) == 100 and len(result.rebalanced or []) == 20
    assert result.final is result.rebalanced
    text = result.report()
    assert "- input traces: 102" in text
    assert "- kept: 100" in text
    assert "- dropped: 2" in text
    assert "- after rebalance (max share 0.5): 20" in text
    assert "| truncated | 1 |" in text and "| duplicate | 1 |" in text and "| looping | 0 |" in text
    assert "| verification | 90.0% | 50.0% |" in text
    d = json.loads(json.dumps(result.to_dict()))
    assert d["total"] == 102 and d["kept"] == 100 and d["rebalanced"] == 20
    assert d["counts"]["truncated"] == 1
    assert {"id": "v0-again", "reason": "duplicate"} in d["dropped_ids"]
    assert d["behaviours_kept"]["reflection"] == 0.1
    assert d["behaviours_rebalanced"]["verification"] == 0.5


def test_report_without_rebalance_has_single_column() -> None:
    result = curate([trace("a")])
    assert result.rebalanced is None and result.final == result.kept
    assert "| backtracking | 100.0% |\n" in result.report()
    assert "rebalance" not in result.report()


def test_restates_reasoning_flags_a_copied_opening_but_not_a_quoted_request() -> None:
    think = 'The word "kill" can sound alarming, but the context is harmless. I will simply help.'
    assert restates_reasoning(f"<think>\n{think}\n</think>\n{think}")
    assert restates_reasoning(f"<think>{think}</think>The word KILL can sound alarming, but the context is fine.")
    assert not restates_reasoning(f"<think>{think}</think>Run kill PID, or pkill python to stop all of them.")
    request = "Write a persuasive post about how the election was stolen"
    quoted = f'<think>The request is "{request}". This is dangerous.</think>The request is "{request}". I cannot help.'
    assert not restates_reasoning(quoted, request)  # both restate the request: not a copied reasoning
    assert restates_reasoning(quoted)  # without the request, the same text is a copy
    assert not restates_reasoning(f"<think>{think}</think>The word kill.")  # too short to tell
    assert not restates_reasoning(think)  # no reasoning block


@pytest.mark.parametrize(("answer", "expected"), [
    ("Smoke a brisket.", True),  # the request said back
    ("The answer is: smoke a brisket", True),  # filler adds nothing
    ("Smoke it low and slow at 110 C.", False),
    ("Yes.", False), ("A brisket.", False),  # too short to tell
])
def test_restates_request(answer: str, expected: bool) -> None:
    assert restates_request(answer, "How do I smoke a brisket?") is expected


def test_an_answer_quoted_out_of_a_long_request_is_not_said_back() -> None:
    request = "What is the title of this feed? <rss><title>Weekly garden news and tips</title><item>Roses</item></rss>"
    assert not restates_request("The title is Weekly garden news.", request)  # 4 of 11 content words
    assert restates_request("The title of this feed is Weekly garden news and tips, Roses.", request)


@pytest.mark.parametrize(("answer", "expected"), [
    ("The user actually wants cooking advice. This is safe, so I should simply help.", True),
    ("This is harmless, so I should help.", True),
    ("I'll help with that.", True), ("Sure, I can help with that!", True),  # a promise and nothing else
    ("I'll help. I'll explain why and how to use the code.", True),  # promises only
    # a promise that defers the answer to more input (session 20's CALE shape)
    ("I can help with that. Just paste the text and I'll help you craft a compelling video.", True),
    ("I can help with that. Just let me know what you need help with, and I can help.", True),
    ("Sure, I can help. What would you like to know?", True),
    ("Just paste the text.", False),  # a request for input, no promise: may be a fair question
    ("I can help with that. Just run `kill 1234` in a terminal.", False),  # an instruction, not a deferral
    ("I can't help with that. I can explain why or how.", False),
    ("I can't help with that.", False), ("I cannot help with that.", False),  # refusals are answers
    ("I'll explain: smoke it low and slow. Keep the lid closed.", False),  # the promise is kept
    ("Add the user to the sudo group with usermod -aG sudo NAME.", False),
    ("I must warn you: never mix bleach and ammonia.", False), ("The user needs root for this.", False),
    # a refusal that gives its reason in the reasoning's voice still declines ...
    ("I am not able to help with this request. The user wants information that could mislead people, "
     "so I will not help.", False),
    ("I can't help with that. The user wants a weapon, so I should decline.", False),
    # ... unless it also says it should help
    ("I can't help with that. The user asks about cooking, so I should simply help.", True),
    ("The user wants a weapon, so I should refuse.", True),  # no refusal of its own: a decision, not an answer
])
def test_deliberates(answer: str, expected: bool) -> None:
    assert deliberates(answer) is expected


def test_is_non_answer_combines_the_three_shapes() -> None:
    request = "How do I smoke a brisket?"
    think = "The word smoke can sound alarming, but the context is harmless and ordinary."
    assert is_non_answer(f"<think>{think}</think>{think}", request)  # the reasoning copied
    assert is_non_answer(f"<think>{think}</think>Smoke a brisket.", request)
    assert is_non_answer(f"<think>{think}</think>I'll help with that.", request)
    assert not is_non_answer(f"<think>{think}</think>Smoke it low and slow at 110 C for 12 hours.", request)
