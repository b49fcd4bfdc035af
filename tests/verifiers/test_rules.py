"""Behaviour of the rule verifiers: format, math, multiple choice, exact match, F1, language, length."""

from __future__ import annotations

import pytest

from safeladder.errors import ConfigError
from safeladder.format import make_completion
from safeladder.verifiers import base
from safeladder.verifiers.base import VerifyItem, build_verifier
from safeladder.verifiers.rules import (
    extract_choice,
    length_score,
    normalize_answer,
    reference_aliases,
    token_f1,
)

RULE_VERIFIERS = ["format", "math", "multiple_choice", "exact_match", "token_f1", "ifeval", "language", "length"]


@pytest.fixture(autouse=True)
def only_rule_verifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_verifier imports every built-in module; test ours without depending on the others."""
    monkeypatch.setattr(base, "BUILTIN_VERIFIER_MODULES", ["safeladder.verifiers.rules"])


def item(answer: str, reference: str | None = None, think: str = "Let me think.", prompt: str = "Question?", **metadata):
    return VerifyItem(prompt, make_completion(think, answer), reference, metadata=metadata)


def one(name: str, it: VerifyItem, **options):
    (verdict,) = build_verifier(name, **options)([it])
    return verdict


# --------------------------------------------------------------------------- registry and options

@pytest.mark.parametrize("name", RULE_VERIFIERS)
def test_build_verifier_by_name(name: str) -> None:
    verifier = build_verifier(name)
    assert verifier.name == name


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("length", {"max_words": 0}),
        ("length", {"max_words": "10"}),
        ("length", {"max_words": True}),
        ("length", {"target": "reasoning"}),
        ("exact_match", {"alias_sep": ""}),
        ("token_f1", {"alias_sep": 3}),
        ("ifeval", {"mode": "lenient"}),
        ("math", {"tolerance": 0.1}),  # unknown option
        ("format", {"strict": True}),
    ],
)
def test_bad_options_are_config_errors(name: str, options: dict) -> None:
    with pytest.raises(ConfigError):
        build_verifier(name, **options)


def test_verify_is_batched_and_ordered() -> None:
    items = [item("The answer is 85.", "85"), item("The answer is 85.", None), item("The answer is 85.", "86")]
    verdicts = build_verifier("math")(items)
    assert [v.status for v in verdicts] == ["ok", "not_applicable", "ok"]
    assert [v.score for v in verdicts] == [1.0, None, 0.0]


# --------------------------------------------------------------------------- format

def test_format_well_formed_scores_one() -> None:
    verdict = one("format", item("Paris."))
    assert (verdict.score, verdict.label, verdict.details["issues"]) == (1.0, "well_formed", [])


@pytest.mark.parametrize(
    ("completion", "issue"),
    [
        ("Paris.", "no_think_block"),
        ("<think>still thinking", "missing_close_tag"),
        ("<think>\n\n</think> Paris", "empty_think"),
        ("<think>ok</think>   ", "empty_answer"),
        ("Sure. <think>ok</think> Paris", "text_before_think"),
    ],
)
def test_format_malformed_scores_zero_and_names_issue(completion: str, issue: str) -> None:
    verdict = one("format", VerifyItem("q", completion))
    assert verdict.score == 0.0 and verdict.label == "malformed"
    assert issue in verdict.details["issues"]


def test_format_judges_the_whole_completion() -> None:
    assert build_verifier("format").judges_think is True


# --------------------------------------------------------------------------- math

def test_math_correct_incorrect_not_applicable() -> None:
    assert one("math", item("The answer is 85.", "85")).score == 1.0
    wrong = one("math", item("The answer is 85.", "86"))
    assert (wrong.score, wrong.label, wrong.details["extracted"]) == (0.0, "incorrect", "85")
    assert one("math", item("The answer is 85.", None)).status == "not_applicable"
    assert one("math", item("The answer is 85.", "  ")).status == "not_applicable"


def test_math_symbolic_equivalence() -> None:
    assert one("math", item("So \\boxed{\\frac{1}{2}}.", "0.5")).score == 1.0


def test_math_judges_only_the_answer() -> None:
    verdict = one("math", item("I am not sure.", "85", think="47 + 38 = 85"))
    assert (verdict.score, verdict.label, verdict.details["extracted"]) == (0.0, "no_answer", None)


# --------------------------------------------------------------------------- multiple choice

@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (B)", "B"),
        ("B.", "B"),
        ("**C**", "C"),
        ("Answer: d", "D"),
        ("The correct answer is **C**.", "C"),
        ("\\boxed{E}", "E"),
        ("B) Paris is the capital.", "B"),
        ("Paris is the capital.\n\n(A)", "A"),
        ("I would pick (J) here.", "J"),
        ("The answer is A because it is the largest.", "A"),
        ("the answer is a bit unclear", None),
        ("Answer: I think so", None),
        ("No letter here.", None),
    ],
)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text) == letter


def test_explicit_statement_beats_a_parenthesised_mention() -> None:
    assert extract_choice("Option (A) looks tempting, but the answer is C.") == "C"


@pytest.mark.parametrize("reference", ["B", "b", "(B)", "B."])
def test_multiple_choice_reference_letter_forms(reference: str) -> None:
    assert one("multiple_choice", item("The answer is (B)", reference)).score == 1.0
    assert one("multiple_choice", item("The answer is (C)", reference)).score == 0.0


def test_multiple_choice_reference_given_as_choice_text() -> None:
    choices = ["London", "Paris", "Rome"]
    right = one("multiple_choice", item("Answer: B", "Paris", choices=choices))
    assert (right.score, right.details["reference"]) == (1.0, "B")
    assert one("multiple_choice", item("Answer: C", "Paris", choices=choices)).score == 0.0
    mapped = one("multiple_choice", item("Answer: a", "London", choices={"A": "London", "B": "Paris"}))
    assert mapped.score == 1.0


def test_multiple_choice_answer_text_matches_a_choice() -> None:
    verdict = one("multiple_choice", item("Paris", "B", choices=["London", "Paris"]))
    assert (verdict.score, verdict.details["how"]) == (1.0, "choice_text")


def test_multiple_choice_no_letter_is_a_wrong_answer() -> None:
    verdict = one("multiple_choice", item("I cannot decide.", "B"))
    assert (verdict.status, verdict.score, verdict.label) == ("ok", 0.0, "no_choice")


def test_multiple_choice_unusable_reference_is_an_error() -> None:
    verdict = one("multiple_choice", item("Answer: B", "Berlin", choices=["London", "Paris"]))
    assert verdict.status == "error" and verdict.score is None


def test_multiple_choice_no_reference_not_applicable() -> None:
    assert one("multiple_choice", item("Answer: B")).status == "not_applicable"


def test_multiple_choice_judges_only_the_answer() -> None:
    verdict = one("multiple_choice", item("The answer is (B).", "A", think="The answer is (A)?"))
    assert (verdict.score, verdict.details["extracted"]) == (0.0, "B")


# --------------------------------------------------------------------------- exact match / F1

def test_normalize_answer_squad() -> None:
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("An apple a day") == "apple day"


@pytest.mark.parametrize(
    ("reference", "sep", "aliases"),
    [
        ('["NYC", "New York City"]', "|", ["NYC", "New York City"]),
        ("NYC | New York City", "|", ["NYC", "New York City"]),
        ("a|b", None, ["a|b"]),
        ("[not json", "|", ["[not json"]),
        (" | ", "|", []),
    ],
)
def test_reference_aliases(reference: str, sep: str | None, aliases: list[str]) -> None:
    assert reference_aliases(reference, sep) == aliases


def test_exact_match() -> None:
    assert one("exact_match", item("The Eiffel Tower!", "eiffel tower")).score == 1.0
    json_aliases = one("exact_match", item("new york city.", '["NYC", "New York City"]'))
    assert (json_aliases.score, json_aliases.details["best_alias"]) == (1.0, "New York City")
    assert one("exact_match", item("NYC", "New York City|NYC")).score == 1.0
    wrong = one("exact_match", item("Eiffel Tower in Paris", "eiffel tower"))
    assert (wrong.score, wrong.label) == (0.0, "incorrect")
    assert one("exact_match", item("a", "a|b")).score == 1.0
    assert one("exact_match", item("a", "a|b"), alias_sep=None).score == 0.0  # "a|b" is one answer
    assert one("exact_match", item("x", None)).status == "not_applicable"


def test_token_f1_hand_computed() -> None:
    # "the cat sat" -> [cat, sat]; "cat sat down": precision 2/2, recall 2/3 -> F1 0.8
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # counts clipped
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "cat") == 0.0


def test_token_f1_verifier_takes_best_alias() -> None:
    verdict = one("token_f1", item("the cat sat", "dog ran|cat sat down"))
    assert verdict.score == pytest.approx(0.8)
    assert (verdict.label, verdict.details["best_alias"]) == ("partial", "cat sat down")
    assert one("token_f1", item("Cat sat.", "cat sat")).label == "exact"
    assert one("token_f1", item("dog", "cat")).label == "no_overlap"
    assert one("token_f1", item("dog", "")).status == "not_applicable"


# --------------------------------------------------------------------------- language

def test_language_english_question_chinese_answer_is_mixed() -> None:
    verdict = one("language", item("答案是四。", prompt="What is two plus two?", think="Two plus two is four."))
    assert (verdict.score, verdict.label) == (0.0, "mixed")
    assert verdict.details["scripts"] == {"question": "Latin", "reasoning": "Latin", "answer": "CJK"}


def test_language_consistent_scores_one() -> None:
    assert one("language", item("It is four.", prompt="What is two plus two?", think="Add them.")).score == 1.0
    chinese = item("答案是四。", prompt="二加二等于几？", think="二加二等于四。")
    assert one("language", chinese).score == 1.0


def test_language_judges_the_reasoning_too() -> None:
    verdict = one("language", item("It is four.", prompt="What is two plus two?", think="二加二等于四。"))
    assert verdict.score == 0.0


def test_language_without_prose_not_applicable() -> None:
    assert one("language", item("4", prompt="2+2=?", think="2+2=4")).status == "not_applicable"


# --------------------------------------------------------------------------- length

@pytest.mark.parametrize(("words", "score"), [(0, 1.0), (10, 1.0), (12, 0.8), (15, 0.5), (20, 0.0), (35, 0.0)])
def test_length_score_decays_linearly_to_twice_max(words: int, score: float) -> None:
    assert length_score(words, 10) == pytest.approx(score)


def test_length_verifier_counts_answer_or_completion() -> None:
    it = item(" ".join(["word"] * 15), think=" ".join(["step"] * 20))
    answer = one("length", it, max_words=10)
    assert (answer.score, answer.label, answer.details["words"]) == (pytest.approx(0.5), "over_limit", 15)
    # the whole completion: "<think>", 20 steps, "</think>", 15 words = 37 whitespace words
    whole = one("length", it, max_words=20, target="completion")
    assert (whole.details["words"], whole.score) == (37, pytest.approx(1.0 - 17 / 20))
    assert one("length", it, max_words=7, target="completion").label == "too_long"
