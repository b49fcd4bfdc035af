"""The IFEval checker wrapper and the "ifeval" verifier, on real IFEval prompts, offline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from safeladder.errors import ConfigError
from safeladder.format import make_completion
from safeladder.verifiers import base
from safeladder.verifiers.base import VerifyItem, build_verifier
from safeladder.verifiers.ifeval import ifeval_check, instruction_ids, load_ifeval_prompts, sentence_splitter


@pytest.fixture(autouse=True)
def only_rule_verifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "BUILTIN_VERIFIER_MODULES", ["safeladder.verifiers.rules"])


@pytest.fixture(scope="module")
def rows() -> dict[int, dict]:
    return {row["key"]: row for row in load_ifeval_prompts()}


def check(row: dict, response: str) -> dict[str, list[bool]]:
    return ifeval_check(response, row["instruction_id_list"], row["kwargs"], row["prompt"])


LETTER = (
    "dear sam,\n\ni hope you are doing well. the election is next tuesday and i would love for you "
    "to go and vote with me. it only takes a few minutes and every single voice matters.\n\nsee you soon,\nalex"
)


def test_load_ifeval_prompts_reads_the_shipped_data(rows: dict[int, dict]) -> None:
    assert len(rows) == 541
    assert rows[1001]["instruction_id_list"] == ["punctuation:no_comma"]
    assert all(len(r["kwargs"]) == len(r["instruction_id_list"]) for r in rows.values())
    assert {"punctuation:no_comma", "change_case:english_lowercase"} <= set(instruction_ids())


def test_no_comma(rows: dict[int, dict]) -> None:
    row = rows[1001]  # "... You are not allowed to use any commas in your response."
    assert check(row, "Day one we sail to Kyoto and there we shall dine.") == {"strict": [True], "loose": [True]}
    assert check(row, "Day one, we sail to Kyoto.") == {"strict": [False], "loose": [False]}


def test_all_lowercase(rows: dict[int, dict]) -> None:
    row = rows[1051]  # "Write a letter to a friend in all lowercase letters ..."
    assert check(row, LETTER)["strict"] == [True]
    assert check(row, LETTER.replace("dear sam", "Dear Sam"))["strict"] == [False]
    # loose drops the first line: a capitalised preamble alone is forgiven there, not in strict
    preamble = check(row, "Here Is Your Letter:\n" + LETTER)
    assert preamble == {"strict": [False], "loose": [True]}


def test_at_least_n_words(rows: dict[int, dict]) -> None:
    row = rows[2323]  # "... that has at least 200 words."
    assert check(row, " ".join(["salon"] * 200))["strict"] == [True]
    assert check(row, " ".join(["salon"] * 199))["strict"] == [False]


def test_sentence_count_runs_offline(rows: dict[int, dict]) -> None:
    row = rows[2780]  # "Please respond in less than 6 sentences."
    # abbreviations do not end sentences: 5 sentences, not 7
    five = "Dr. Smith says the train leaves at nine. Mr. Jones agrees. It is fast. It is cheap. Enjoy."
    assert check(row, five)["strict"] == [True]
    assert check(row, five + " Bye.")["strict"] == [False]
    assert sentence_splitter() in {"punkt_english", "punkt_untrained"}


def test_capital_word_frequency_runs_offline(rows: dict[int, dict]) -> None:
    row = rows[2849]  # "use at least 2 words with all capital letters"
    assert check(row, "There once was a GUY from NANTUCKET. He sang.")["strict"] == [True]
    assert check(row, "There once was a GUY from Nantucket. He sang.")["strict"] == [False]


def test_several_instructions_give_one_verdict_each(rows: dict[int, dict]) -> None:
    row = rows[1000]  # no commas, 3 highlighted sections, at least 300 words
    body = "*Early life* *The county* *Later years* " + " ".join(["raymond"] * 300)
    assert check(row, body)["strict"] == [True, True, True]
    assert check(row, body.replace("*", "", 2) + ", end")["strict"] == [False, False, True]


def test_hf_layout_with_null_kwargs_is_accepted() -> None:
    kwargs = [{"num_words": 3, "relation": "at least", "num_highlights": None, "keywords": None}]
    assert ifeval_check("one two three", ["length_constraints:number_words"], kwargs, "p")["strict"] == [True]


@pytest.mark.parametrize(
    ("ids", "kwargs", "problem"),
    [
        (["punctuation:no_dots"], [{}], "unknown IFEval instruction"),
        (["length_constraints:number_words"], [{"relation": "at least"}], "missing kwargs ['num_words']"),
        (["punctuation:no_comma"], [{"num_words": 3}], "unexpected kwargs"),
        (["punctuation:no_comma"], [{}, {}], "1 instruction ids but 2 kwargs"),
    ],
)
def test_bad_metadata_is_rejected(ids: list[str], kwargs: list[dict], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        ifeval_check("text", ids, kwargs, "p")


def test_checker_loads_without_eval_framework_and_leaves_nltk_alone() -> None:
    code = (
        "import sys, nltk, langdetect\n"
        "from safeladder.verifiers.ifeval import ifeval_check\n"
        "print(ifeval_check('A. B. C.', ['length_constraints:number_sentences'],"
        " [{'relation': 'less than', 'num_sentences': 4}], 'p')['strict'])\n"
        "print('eval_framework' in sys.modules, nltk.word_tokenize is nltk.tokenize.word_tokenize,"
        " langdetect.DetectorFactory.seed)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[True]", "False True None"]


# --------------------------------------------------------------------------- the verifier

def ifeval_item(row: dict, answer: str, think: str = "Plan it, carefully, step by step.") -> VerifyItem:
    meta = {"instruction_id_list": row["instruction_id_list"], "kwargs": row["kwargs"]}
    return VerifyItem(row["prompt"], make_completion(think, answer), metadata=meta)


def test_verifier_scores_the_fraction_followed(rows: dict[int, dict]) -> None:
    row = rows[1000]
    body = "*Early life* *The county* *Later years* " + " ".join(["raymond"] * 300)
    verdicts = build_verifier("ifeval")([
        ifeval_item(row, body),
        ifeval_item(row, body.replace("*", "", 2) + ", end"),
        ifeval_item(row, "Short, and plain."),
    ])
    assert [(v.score, v.label) for v in verdicts] == [
        (1.0, "all_followed"), (pytest.approx(1 / 3), "partial"), (0.0, "none"),
    ]
    assert verdicts[1].details["strict"] == [False, False, True]
    assert verdicts[1].details["loose"] == [False, False, True]


def test_verifier_judges_only_the_answer(rows: dict[int, dict]) -> None:
    # the think block has commas; the answer has none
    verdict = build_verifier("ifeval")([ifeval_item(rows[1001], "To Kyoto we sail.")])[0]
    assert verdict.score == 1.0


def test_verifier_loose_mode(rows: dict[int, dict]) -> None:
    it = ifeval_item(rows[1051], "Here Is Your Letter:\n" + LETTER)
    assert build_verifier("ifeval")([it])[0].score == 0.0
    assert build_verifier("ifeval", mode="loose")([it])[0].score == 1.0
    with pytest.raises(ConfigError):
        build_verifier("ifeval", mode="lenient")


def test_verifier_not_applicable_and_error() -> None:
    verifier = build_verifier("ifeval")
    plain = VerifyItem("Say hi.", make_completion("ok", "hi"))
    broken = VerifyItem("Say hi.", make_completion("ok", "hi"), metadata={"instruction_id_list": ["nope:nope"]})
    na, err = verifier([plain, broken])
    assert (na.status, na.score) == ("not_applicable", None)
    assert (err.status, err.score) == ("error", None)
    assert "unknown IFEval instruction" in err.details["reason"]
