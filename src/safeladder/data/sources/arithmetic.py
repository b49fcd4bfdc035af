"""Built-in math source: arithmetic drills and GSM-style word problems, with verified CoT traces.

Everything is generated from a seed, so the data needs no download and is exactly reproducible.
Sample `i` of seed `s` depends only on (s, kind, i): asking for more samples never changes the
earlier ones. Traces are rebuilt from the sample's metadata (never by parsing its text) with a
short, rigid, column-by-column procedure a 135M-parameter student can imitate, and every trace
is checked statement by statement before it is returned. The trace ends with an inverse "Check:"
line (undo each step); `check=False` leaves it out (~20 tokens shorter) — but in the one demo run
that tried it, SmolLM2-135M's arithmetic after SFT fell from 16% to 0% (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import operator
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping, Sequence

from safeladder.data.sample import Sample
from safeladder.data.splits import Split, take_split
from safeladder.format import answer_text, make_completion
from safeladder.verifiers.math_answer import is_correct

__all__ = [
    "KINDS", "SOURCE", "WORD_TEMPLATES", "WordTemplate",
    "arithmetic_trace", "generate_math", "load_math",
]

SOURCE = "safeladder-arithmetic"
KINDS = ("add", "sub", "mul", "word")
MAX_TRACE_WORDS = 90  # whitespace-separated tokens in think + answer, check line included; longer are rejected

# ---------------------------------------------------------------------------------------------
# Operations. Metadata stores ASCII symbols; text shows the symbol a reader expects.

_APPLY: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_SHOW = {"+": "+", "-": "-", "*": "×", "/": "/"}
_INVERSE = {"+": "-", "-": "+", "*": "/"}  # used by the check line: undo each step
_COLUMNS = ("Ones", "Tens", "Hundreds", "Thousands", "Ten-thousands", "Hundred-thousands")

_PHRASINGS: dict[str, tuple[str, ...]] = {
    "add": ("What is {a} + {b}?", "Compute {a} + {b}.", "Calculate {a} plus {b}.", "What is the sum of {a} and {b}?"),
    "sub": ("What is {a} - {b}?", "Compute {a} - {b}.", "Calculate {a} minus {b}.", "What is {b} subtracted from {a}?"),
    "mul": ("What is {a} × {b}?", "Compute {a} × {b}.", "Calculate {a} times {b}.", "What is the product of {a} and {b}?"),
}


def _draw_add(rng: random.Random) -> tuple[list[int], list[str]]:
    return [rng.randint(10, 99), rng.randint(10, 99)], ["+"]


def _draw_sub(rng: random.Random) -> tuple[list[int], list[str]]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return [max(a, b), min(a, b)], ["-"]  # non-negative result


def _draw_mul(rng: random.Random) -> tuple[list[int], list[str]]:
    return [rng.randint(10, 99), rng.randint(2, 9)], ["*"]


_ARITHMETIC_DRAWS: dict[str, Callable[[random.Random], tuple[list[int], list[str]]]] = {
    "add": _draw_add, "sub": _draw_sub, "mul": _draw_mul,
}

# ---------------------------------------------------------------------------------------------
# Word problems: each template is a chain ((x0 op0 x1) op1 x2) over named, randomly drawn fields.


@dataclass(frozen=True)
class WordTemplate:
    """A GSM-style story whose answer is `chain[0] ops[0] chain[1] ops[1] chain[2]`, left to right.

    `chain` names the fields in evaluation order (a field may repeat); `labels` (formatted with
    the same fields as the text) head each trace step so the student links story to operation.
    """

    name: str
    text: str
    chain: tuple[str, ...]
    ops: tuple[str, ...]
    labels: tuple[str, ...]
    ranges: Mapping[str, tuple[int, int]]


WORD_TEMPLATES: tuple[WordTemplate, ...] = (
    WordTemplate(
        "buy_give",
        "{name} has {a} {things} and buys {b} more. {She} gives {c} to {her} friend. "
        "How many {things} does {she} have now?",
        ("a", "b", "c"), ("+", "-"), ("Buying", "Giving"), {"a": (10, 60), "b": (5, 35), "c": (2, 30)},
    ),
    WordTemplate(
        "collect",
        "{name} collected {a} {things} in the morning and {b} {things} in the afternoon. "
        "How many {things} did {she} collect in all?",
        ("a", "b"), ("+",), ("In all",), {"a": (10, 99), "b": (10, 99)},
    ),
    WordTemplate(
        "sell",
        "A farm had {a} {animals}. The farmer sold {b} of them. How many {animals} are left?",
        ("a", "b"), ("-",), ("Left",), {"a": (30, 99), "b": (10, 60)},
    ),
    WordTemplate(
        "rows",
        "A garden has {k} rows with {a} {flowers} in each row. How many {flowers} are in the garden?",
        ("a", "k"), ("*",), ("All rows",), {"a": (10, 60), "k": (2, 9)},
    ),
    WordTemplate(
        "packs",
        "{name} buys {k} packs of {things}. Each pack has {a} {things}. {She} already had {c} {things}. "
        "How many {things} does {she} have now?",
        ("a", "k", "c"), ("*", "+"), ("Packs", "Adding"), {"a": (10, 25), "k": (2, 6), "c": (5, 40)},
    ),
    WordTemplate(
        "spend",
        "{name} had {a} dollars. {She} spent {b} dollars on a {item} and {c} dollars on lunch. "
        "How many dollars does {she} have left?",
        ("a", "b", "c"), ("-", "-"), ("After the {item}", "After lunch"), {"a": (50, 99), "b": (10, 40), "c": (5, 30)},
    ),
    WordTemplate(
        "earn",
        "{name} earns {a} dollars each day for {k} days. Then {she} spends {c} dollars. "
        "How many dollars does {she} have left?",
        ("a", "k", "c"), ("*", "-"), ("Earned", "Spending"), {"a": (10, 25), "k": (2, 6), "c": (10, 40)},
    ),
    WordTemplate(
        "bus",
        "There are {a} people on a bus. At the first stop, {b} people get off and {c} people get on. "
        "How many people are on the bus now?",
        ("a", "b", "c"), ("-", "+"), ("Getting off", "Getting on"), {"a": (20, 60), "b": (5, 20), "c": (5, 30)},
    ),
    WordTemplate(
        "more_than",
        "{name} has {a} {things}. {name2} has {b} more {things} than {name}. "
        "How many {things} do they have together?",
        ("a", "b", "a"), ("+", "+"), ("{name2}", "Together"), {"a": (10, 45), "b": (5, 30)},
    ),
    WordTemplate(
        "pages",
        "A book has {c} pages. {name} reads {a} pages on Monday and {b} pages on Tuesday. "
        "How many pages are left to read?",
        ("c", "a", "b"), ("-", "-"), ("After Monday", "After Tuesday"), {"c": (60, 99), "a": (10, 30), "b": (10, 30)},
    ),
    WordTemplate(
        "bake",
        "Each day, a baker makes {a} {foods} in the morning and {b} {foods} in the afternoon. "
        "How many {foods} does the baker make in {k} days?",
        ("a", "b", "k"), ("+", "*"), ("One day", "{k} days"), {"a": (10, 30), "b": (10, 30), "k": (2, 6)},
    ),
    WordTemplate(
        "walk",
        "{name} walks {a} minutes every day. How many minutes does {she} walk in {k} days?",
        ("a", "k"), ("*",), ("{k} days",), {"a": (10, 60), "k": (2, 9)},
    ),
)

_NAMES = (
    ("Mia", "she", "her"), ("Leo", "he", "his"), ("Ava", "she", "her"), ("Noah", "he", "his"),
    ("Emma", "she", "her"), ("Liam", "he", "his"), ("Zoe", "she", "her"), ("Omar", "he", "his"),
    ("Priya", "she", "her"), ("Kenji", "he", "his"), ("Sofia", "she", "her"), ("Ben", "he", "his"),
)
_NOUNS: dict[str, tuple[str, ...]] = {
    "things": ("apples", "stickers", "marbles", "pencils", "cards", "books", "shells", "stamps"),
    "animals": ("chickens", "sheep", "goats", "ducks", "cows"),
    "flowers": ("tulips", "roses", "daisies", "sunflowers"),
    "foods": ("muffins", "cookies", "bagels", "pies"),
    "item": ("book", "toy", "shirt", "game"),
}


def _evaluate(operands: Sequence[int], ops: Sequence[str]) -> list[int]:
    """Running values of the left-to-right chain: [x0, x0 op0 x1, ...]."""
    values = [operands[0]]
    for op, x in zip(ops, operands[1:]):
        values.append(_APPLY[op](values[-1], x))
    return values


def _draw_word(rng: random.Random) -> tuple[WordTemplate, list[int], dict[str, object]]:
    """Pick a template and fill it until every running value is in [1, 999] and the trace fits."""
    template = rng.choice(WORD_TEMPLATES)
    for _ in range(1000):
        person, person2 = rng.sample(_NAMES, 2)
        fields: dict[str, object] = {k: rng.choice(v) for k, v in sorted(_NOUNS.items())}
        fields.update(name=person[0], she=person[1], She=person[1].capitalize(), her=person[2], name2=person2[0])
        fields.update({f: rng.randint(lo, hi) for f, (lo, hi) in sorted(template.ranges.items())})
        operands = [int(fields[f]) for f in template.chain]  # type: ignore[call-overload]
        if all(1 <= v <= 999 for v in _evaluate(operands, template.ops)):
            labels = [label.format(**fields) for label in template.labels]
            if _fits(operands, list(template.ops), labels):
                return template, operands, fields
    raise RuntimeError(f"word template {template.name!r} could not be filled")  # ranges are wrong


# ---------------------------------------------------------------------------------------------
# Generation


def _sample_id(kind: str, seed: int, index: int) -> str:
    return f"math-{kind}-s{seed}-{index:05d}"


def _make_sample(kind: str, seed: int, index: int) -> Sample:
    rng = random.Random(f"{SOURCE}:{seed}:{kind}:{index}")  # own stream: sample i never depends on others
    meta: dict[str, object] = {"source": SOURCE, "task": "arithmetic", "kind": kind}
    if kind == "word":
        template, operands, fields = _draw_word(rng)
        ops = list(template.ops)
        prompt = template.text.format(**fields)
        meta.update(template=template.name, step_labels=[label.format(**fields) for label in template.labels])
    else:
        operands, ops = _ARITHMETIC_DRAWS[kind](rng)
        prompt = rng.choice(_PHRASINGS[kind]).format(a=operands[0], b=operands[1])
    meta.update(operands=operands, ops=ops)
    reference = _evaluate(operands, ops)[-1]
    return Sample(id=_sample_id(kind, seed, index), prompt=prompt, label="math", reference=str(reference), metadata=meta)


def generate_math(n: int, seed: int = 0, kinds: Sequence[str] = KINDS) -> list[Sample]:
    """`n` math samples; sample i has kind `kinds[i % len(kinds)]` and id "math-<kind>-s<seed>-<i:05d>"."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    return [_make_sample(kinds[i % len(kinds)], seed, i) for i in range(n)]


def _problem_key(sample: Sample) -> tuple[object, ...]:
    """Two samples pose the same problem if kind, template and numbers agree, whatever the wording."""
    m = sample.metadata
    return (m["kind"], m.get("template"), tuple(m["operands"]), tuple(m["ops"]))


def load_math(split: Split, n: int = 600, seed: int = 1234) -> list[Sample]:
    """The built-in math pool (fixed n and seed), one split of it.

    Duplicates (same prompt text, or the same problem reworded) are dropped *before* splitting,
    so no question can sit in both train and dev.
    """
    if split not in ("train", "dev", "all"):
        raise ValueError(f"split must be 'train', 'dev' or 'all', got {split!r}")
    seen_prompts: set[str] = set()
    seen_problems: set[tuple[object, ...]] = set()
    unique: list[Sample] = []
    for sample in generate_math(n, seed):
        key = _problem_key(sample)
        if sample.prompt in seen_prompts or key in seen_problems:
            continue
        seen_prompts.add(sample.prompt or "")
        seen_problems.add(key)
        unique.append(sample)
    return take_split(unique, split)


# ---------------------------------------------------------------------------------------------
# Traces: one sentence per column, one line per operation, optionally an inverse check.


def _digits(x: int, width: int) -> list[int]:
    """Digits of x from the ones column up, zero-padded to `width`."""
    return [(x // 10**i) % 10 for i in range(width)]


def _add_steps(a: int, b: int) -> str:
    width = max(len(str(a)), len(str(b)))
    da, db, carry, parts = _digits(a, width), _digits(b, width), 0, []
    for i in range(width):
        col, s = _COLUMNS[i], da[i] + db[i] + carry
        terms = f"{da[i]} + {db[i]}" if i == 0 else f"{da[i]} + {db[i]} + {carry}"
        if i == width - 1:
            parts.append(f"{col}: {terms} = {s}.")
        else:
            parts.append(f"{col}: {terms} = {s}, write {s % 10}, carry {s // 10}.")
        carry = s // 10
    return " ".join(parts)


def _sub_steps(a: int, b: int) -> str:
    width = len(str(a))
    da, db, borrow, parts = _digits(a, width), _digits(b, width), 0, []
    for i in range(width):
        col, top, bottom = _COLUMNS[i], da[i], db[i]
        if i == width - 1:  # a >= b, so the leading column never borrows
            terms = f"{top} - {bottom}" if i == 0 else f"{top} - {bottom} - {borrow}"
            parts.append(f"{col}: {terms} = {top - bottom - borrow}.")
            break
        need = bottom + borrow
        new_borrow = int(top < need)
        high = top + 10 * new_borrow
        cmp = "<" if new_borrow else ">="
        if i == 0:  # the ones column has no borrow coming in
            rhs, minus = f"{bottom}", f"{high} - {bottom}"
        else:
            rhs, minus = f"{bottom} + {borrow}", f"{high} - {bottom} - {borrow}"
        parts.append(f"{col}: {top} {cmp} {rhs}, so {minus} = {high - need}, borrow {new_borrow}.")
        borrow = new_borrow
    return " ".join(parts)


def _mul_steps(a: int, b: int) -> str:
    if a < 10:
        return ""
    digits = str(a)
    partials = [int(d) * 10 ** (len(digits) - 1 - i) for i, d in enumerate(digits)]
    products = [f"{p} × {b} = {p * b}" for p in partials]
    total = " + ".join(str(p * b) for p in partials)
    return f"{', '.join(products)}, {total} = {a * b}."


_STEPS: dict[str, Callable[[int, int], str]] = {"+": _add_steps, "-": _sub_steps, "*": _mul_steps}


def _step_line(a: int, op: str, b: int, label: str | None) -> str:
    """'[label: ]47 + 38. <column sentences> So 47 + 38 = 85.'"""
    expr = f"{a} {_SHOW[op]} {b}"
    body = _STEPS[op](a, b)
    head = f"{label}: {expr}." if label else f"{expr}."
    return " ".join(p for p in (head, body, f"So {expr} = {_APPLY[op](a, b)}.") if p)


def _check_line(operands: Sequence[int], ops: Sequence[str]) -> str:
    """Undo the chain from the result back to the first operand: 'Check: 29 + 9 = 38, 38 - 15 = 23. Correct.'"""
    values = _evaluate(operands, ops)
    undo = [
        f"{values[i + 1]} {_SHOW[_INVERSE[op]]} {operands[i + 1]} = {values[i]}"
        for i, op in reversed(list(enumerate(ops)))
    ]
    return f"Check: {', '.join(undo)}. Correct."


def _render(operands: Sequence[int], ops: Sequence[str], labels: Sequence[str] | None, check: bool) -> tuple[str, str]:
    values = _evaluate(operands, ops)
    lines = [
        _step_line(values[i], op, operands[i + 1], labels[i] if labels else None) for i, op in enumerate(ops)
    ]
    if check:
        lines.append(_check_line(operands, ops))
    return "\n".join(lines), f"The answer is {values[-1]}."


def _fits(operands: Sequence[int], ops: Sequence[str], labels: Sequence[str] | None) -> bool:
    """Whether the trace fits MAX_TRACE_WORDS. Measured with the check line whatever the trace
    style, so the problem pool (and with it the dev split) never depends on the style."""
    think, answer = _render(operands, ops, labels, check=True)
    return len(think.split()) + len(answer.split()) < MAX_TRACE_WORDS


# --- self-verification: every statement in the rendered trace must be true -------------------

_EQUATION = re.compile(r"(\d+(?: [-+×/] \d+)+) = (\d+)")
_COMPARISON = re.compile(r"(\d+) (<|>=) (\d+)(?: \+ (\d+))?")
_WRITE_CARRY = re.compile(r"= (\d+), write (\d+), carry (\d+)")
_EVAL_OPS: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": operator.add, "-": operator.sub, "×": operator.mul, "/": operator.truediv,
}
_BORROW = re.compile(r"so (\d+) - [\d -]+ = \d+, borrow (\d+)")


def _eval_expression(expr: str) -> Fraction:
    """Value of 'n op n op n' where ops are all additive, or a single × or /."""
    tokens = expr.split()
    if len(tokens) > 3 and any(t in ("×", "/") for t in tokens[1::2]):
        raise ValueError(f"mixed precedence in trace expression {expr!r}")
    value = Fraction(tokens[0])
    for op, x in zip(tokens[1::2], tokens[2::2]):
        if op == "/" and int(x) == 0:
            return Fraction(-1)  # never equals a stated (non-negative) result
        value = _EVAL_OPS[op](value, Fraction(x))
    return value


def _false_statements(text: str) -> list[str]:
    """Every equation, comparison, carry and borrow in `text` that does not hold."""
    bad = [m.group(0) for m in _EQUATION.finditer(text) if _eval_expression(m.group(1)) != int(m.group(2))]
    for m in _COMPARISON.finditer(text):
        left, right = int(m.group(1)), int(m.group(3)) + int(m.group(4) or 0)
        if (left < right) != (m.group(2) == "<"):
            bad.append(m.group(0))
    bad += [m.group(0) for m in _WRITE_CARRY.finditer(text)
            if int(m.group(1)) != 10 * int(m.group(3)) + int(m.group(2)) or int(m.group(2)) > 9]
    bad += [m.group(0) for m in _BORROW.finditer(text) if (int(m.group(1)) >= 10) != (m.group(2) == "1")]
    return bad


def _chain_from_metadata(sample: Sample) -> tuple[list[int], list[str], list[str] | None]:
    meta = sample.metadata
    try:
        operands = [int(x) for x in meta["operands"]]
        ops = [str(o) for o in meta["ops"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{sample.id}: metadata needs integer 'operands' and 'ops' ({e})") from e
    labels = meta.get("step_labels")
    if len(operands) != len(ops) + 1 or not ops or any(op not in _APPLY for op in ops):
        raise ValueError(f"{sample.id}: need len(operands) == len(ops) + 1 and ops from {sorted(_APPLY)}")
    if labels is not None and len(labels) != len(ops):
        raise ValueError(f"{sample.id}: 'step_labels' must have one label per op")
    values = _evaluate(operands, ops)
    if any(v < 0 for v in [*operands, *values]):
        raise ValueError(f"{sample.id}: the digit procedure needs non-negative numbers, got {values}")
    if any(op == "*" and not 1 <= x <= 9 for op, x in zip(ops, operands[1:])):
        raise ValueError(f"{sample.id}: multiplication is only traced by a single digit 1-9")
    return operands, ops, labels


def arithmetic_trace(sample: Sample, check: bool = True) -> str:
    """A verified SFT completion `<think>steps</think>The answer is N.` for a generated math sample.

    Rebuilt from metadata (operands, ops, optional step_labels); `check` appends the inverse
    check line. Raises ValueError if the metadata is unusable, disagrees with the reference,
    any statement of the trace is false, or the trace (with its check line) is too long.
    """
    operands, ops, labels = _chain_from_metadata(sample)
    if not _fits(operands, ops, labels):
        words = sum(len(part.split()) for part in _render(operands, ops, labels, check=True))
        raise ValueError(f"{sample.id}: trace has {words} words with its check line (limit {MAX_TRACE_WORDS - 1})")
    think, answer = _render(operands, ops, labels, check)
    completion = make_completion(think, answer)
    if sample.reference is None or not is_correct(answer_text(completion), sample.reference):
        raise ValueError(f"{sample.id}: trace answer {answer!r} does not match reference {sample.reference!r}")
    last = think.splitlines()[-1]
    if check and not (last.startswith("Check: ") and last.endswith(" Correct.") and _EQUATION.search(last)):
        raise ValueError(f"{sample.id}: malformed check line {last!r}")
    false = _false_statements(think)
    if false:
        raise ValueError(f"{sample.id}: trace states false arithmetic: {false}")
    return completion
