"""Behaviour of the built-in arithmetic / word-problem source and its verified traces."""

from __future__ import annotations

import operator
import re
from functools import reduce

import pytest

from safeladder.data.sample import Sample
from safeladder.data.sources.arithmetic import (
    KINDS, WORD_TEMPLATES, arithmetic_trace, generate_math, load_math,
)
from safeladder.format import answer_text, format_ok, make_completion, parse_response
from safeladder.verifiers.math_answer import is_correct

_PY_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _python_value(sample: Sample) -> int:
    """Independent evaluation of the metadata chain, left to right."""
    ops, operands = sample.metadata["ops"], sample.metadata["operands"]
    return reduce(lambda acc, pair: _PY_OPS[pair[0]](acc, pair[1]), zip(ops, operands[1:]), operands[0])


def _arith(a: int, op: str, b: int, reference: int | None = None) -> Sample:
    kind = {"+": "add", "-": "sub", "*": "mul"}[op]
    ref = _PY_OPS[op](a, b) if reference is None else reference
    return Sample(id=f"t-{kind}", prompt=f"What is {a} {op} {b}?", label="math", reference=str(ref),
                  metadata={"kind": kind, "operands": [a, b], "ops": [op]})


# --- generation ------------------------------------------------------------------------------

def test_same_seed_gives_identical_samples() -> None:
    a, b = generate_math(120, seed=7), generate_math(120, seed=7)
    assert [s.model_dump() for s in a] == [s.model_dump() for s in b]


def test_different_seed_gives_different_samples() -> None:
    a, b = generate_math(120, seed=7), generate_math(120, seed=8)
    same = sum(x.prompt == y.prompt for x, y in zip(a, b))
    assert same < 5
    assert {s.id for s in a}.isdisjoint(s.id for s in b)


def test_earlier_samples_do_not_depend_on_n() -> None:
    short, long = generate_math(30, seed=3), generate_math(90, seed=3)
    assert [s.model_dump() for s in short] == [s.model_dump() for s in long[:30]]


def test_ids_kinds_label_and_metadata() -> None:
    samples = generate_math(12, seed=5)
    for i, s in enumerate(samples):
        kind = KINDS[i % len(KINDS)]
        assert s.id == f"math-{kind}-s5-{i:05d}"
        assert s.label == "math"
        assert s.metadata["kind"] == kind
        assert s.metadata["source"] == "safeladder-arithmetic"
        assert s.metadata["task"] == "arithmetic"
        assert len(s.metadata["operands"]) == len(s.metadata["ops"]) + 1
    assert generate_math(1, seed=0)[0].id == "math-add-s0-00000"


def test_kinds_filter_and_bad_arguments() -> None:
    only_mul = generate_math(20, seed=1, kinds=("mul",))
    assert {s.metadata["kind"] for s in only_mul} == {"mul"}
    assert all("×" in s.prompt or "times" in s.prompt or "product" in s.prompt for s in only_mul)
    with pytest.raises(ValueError):
        generate_math(5, kinds=("div",))
    with pytest.raises(ValueError):
        generate_math(-1)
    assert generate_math(0) == []


def test_references_match_python_arithmetic() -> None:
    samples = generate_math(500, seed=42)
    for s in samples:
        assert s.reference == str(_python_value(s)), s
        numbers_in_prompt = [int(x) for x in re.findall(r"\d+", s.prompt or "")]
        kind, operands = s.metadata["kind"], s.metadata["operands"]
        if kind == "word":
            assert set(operands) <= set(numbers_in_prompt), s.prompt
        else:
            assert sorted(numbers_in_prompt) == sorted(operands), s.prompt
            assert all(10 <= x <= 99 for x in operands[:1])
    by_kind = {k: [s for s in samples if s.metadata["kind"] == k] for k in KINDS}
    assert all(len(v) == 125 for v in by_kind.values())
    assert all(10 <= s.metadata["operands"][1] <= 99 for s in by_kind["add"] + by_kind["sub"])
    assert all(2 <= s.metadata["operands"][1] <= 9 for s in by_kind["mul"])


def test_subtraction_is_never_negative() -> None:
    for s in generate_math(400, seed=9, kinds=("sub", "word")):
        a, b = s.metadata["operands"][:2]
        if s.metadata["kind"] == "sub":
            assert a >= b
        assert int(s.reference or "-1") >= 0
        running = s.metadata["operands"][0]
        for op, x in zip(s.metadata["ops"], s.metadata["operands"][1:]):
            running = _PY_OPS[op](running, x)
            assert running >= 0


def test_word_problems_use_many_templates() -> None:
    assert len(WORD_TEMPLATES) >= 8
    words = generate_math(400, seed=2, kinds=("word",))
    assert {s.metadata["template"] for s in words} == {t.name for t in WORD_TEMPLATES}
    assert {len(s.metadata["ops"]) for s in words} == {1, 2}


# --- splits ------------------------------------------------------------------------------------

def test_train_and_dev_are_disjoint_by_id_prompt_and_problem() -> None:
    train, dev, everything = load_math("train"), load_math("dev"), load_math("all")
    assert train and dev
    assert {s.id for s in train}.isdisjoint(s.id for s in dev)
    assert {s.prompt for s in train}.isdisjoint(s.prompt for s in dev)
    def key(s: Sample) -> tuple[object, ...]:
        m = s.metadata
        return (m["kind"], m.get("template"), tuple(m["operands"]), tuple(m["ops"]))

    assert {key(s) for s in train}.isdisjoint(key(s) for s in dev)
    assert len(train) + len(dev) == len(everything)
    assert len({s.prompt for s in everything}) == len(everything)  # dedup happened before the split
    assert 0.1 < len(dev) / len(everything) < 0.3
    assert [s.id for s in load_math("dev")] == [s.id for s in dev]  # fixed pool


def test_load_math_rejects_unknown_split() -> None:
    with pytest.raises(ValueError):
        load_math("test")  # type: ignore[arg-type]


# --- traces ------------------------------------------------------------------------------------

def test_every_generated_trace_is_well_formed_correct_and_short() -> None:
    for s in generate_math(400, seed=11):
        trace = arithmetic_trace(s, check=False)
        assert format_ok(trace), trace
        assert is_correct(answer_text(trace), s.reference or ""), trace
        assert answer_text(trace) == f"The answer is {s.reference}."
        think = parse_response(trace).think or ""
        assert len(think.split()) + len(answer_text(trace).split()) < 90
        assert len(think.splitlines()) == len(s.metadata["ops"])  # one line per operation, no check
        checked = parse_response(arithmetic_trace(s)).think or ""
        lines = checked.splitlines()
        assert lines[:-1] == think.splitlines()  # the check line only appends
        assert lines[-1].startswith("Check: ") and lines[-1].endswith(" Correct.")


def test_addition_trace_with_carry_exact() -> None:
    assert arithmetic_trace(_arith(47, "+", 38)) == make_completion(
        "47 + 38. Ones: 7 + 8 = 15, write 5, carry 1. Tens: 4 + 3 + 1 = 8. So 47 + 38 = 85.\n"
        "Check: 85 - 38 = 47. Correct.",
        "The answer is 85.",
    )
    assert arithmetic_trace(_arith(47, "+", 38), check=False) == make_completion(
        "47 + 38. Ones: 7 + 8 = 15, write 5, carry 1. Tens: 4 + 3 + 1 = 8. So 47 + 38 = 85.",
        "The answer is 85.",
    )


def test_subtraction_trace_with_borrow_exact() -> None:
    assert arithmetic_trace(_arith(52, "-", 17)) == make_completion(
        "52 - 17. Ones: 2 < 7, so 12 - 7 = 5, borrow 1. Tens: 5 - 1 - 1 = 3. So 52 - 17 = 35.\n"
        "Check: 35 + 17 = 52. Correct.",
        "The answer is 35.",
    )


def test_subtraction_trace_without_borrow_and_chained_borrows() -> None:
    assert "Ones: 8 >= 5, so 8 - 5 = 3, borrow 0. Tens: 5 - 1 - 0 = 4. So 58 - 15 = 43." in arithmetic_trace(
        _arith(58, "-", 15)
    )
    assert (
        "Ones: 0 < 1, so 10 - 1 = 9, borrow 1. Tens: 0 < 0 + 1, so 10 - 0 - 1 = 9, borrow 1. "
        "Hundreds: 1 - 0 - 1 = 0. So 100 - 1 = 99."
    ) in arithmetic_trace(_arith(100, "-", 1))


def test_multiplication_trace_by_partial_products_exact() -> None:
    assert arithmetic_trace(_arith(47, "*", 6)) == make_completion(
        "47 × 6. 40 × 6 = 240, 7 × 6 = 42, 240 + 42 = 282. So 47 × 6 = 282.\nCheck: 282 / 6 = 47. Correct.",
        "The answer is 282.",
    )


def test_word_problem_trace_exact() -> None:
    sample = Sample(
        id="w", label="math", reference="29",
        prompt="Mia has 23 apples and buys 15 more. She gives 9 to her friend. How many apples does she have now?",
        metadata={"kind": "word", "operands": [23, 15, 9], "ops": ["+", "-"], "step_labels": ["Buying", "Giving"]},
    )
    assert arithmetic_trace(sample) == make_completion(
        "Buying: 23 + 15. Ones: 3 + 5 = 8, write 8, carry 0. Tens: 2 + 1 + 0 = 3. So 23 + 15 = 38.\n"
        "Giving: 38 - 9. Ones: 8 < 9, so 18 - 9 = 9, borrow 1. Tens: 3 - 0 - 1 = 2. So 38 - 9 = 29.\n"
        "Check: 29 + 9 = 38, 38 - 15 = 23. Correct.",
        "The answer is 29.",
    )


@pytest.mark.parametrize(
    "sample",
    [
        _arith(47, "+", 38, reference=86),  # metadata disagrees with the reference
        Sample(id="m", prompt="q", label="math", reference="3", metadata={"kind": "add"}),  # no operands
        Sample(id="n", prompt="q", label="math", reference="-5", metadata={"operands": [3, 8], "ops": ["-"]}),
        Sample(id="d", prompt="q", label="math", reference="2", metadata={"operands": [8, 4], "ops": ["/"]}),
        Sample(id="z", prompt="q", label="math", reference="0", metadata={"operands": [8, 0], "ops": ["*"]}),
        Sample(id="r", prompt="q", label="math", reference=None, metadata={"operands": [1, 2], "ops": ["+"]}),
        Sample(id="long", prompt="q", label="math", reference=str(98765 + 12345 - 4321),
               metadata={"operands": [98765, 12345, 4321], "ops": ["+", "-"]}),  # trace would be too long
    ],
)
def test_trace_refuses_unverifiable_samples(sample: Sample) -> None:
    with pytest.raises(ValueError):
        arithmetic_trace(sample)
