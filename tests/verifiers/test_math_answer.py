"""Behaviour of the rule-based math answer check."""

from __future__ import annotations

import signal
import threading
from fractions import Fraction

import pytest

from safeladder.verifiers.math_answer import extract_answer, is_correct, to_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 1,234.", "1234"),
        ("So we get \\boxed{42}.", "42"),
        ("x = -7", "-7"),
        ("I do not know.", None),
        ("", None),
        ("First 3, then 5. The answer is **85**.", "85"),
        ("Final answer: −12", "-12"),  # unicode minus
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("It costs 3.50 dollars", "3.50"),
        ("85-38", "38"),  # a minus glued to a digit is subtraction, not a sign
        ("\\boxed{\\frac{1}{2}} not 7", "\\frac{1}{2}"),
        ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("so 47 + 38 = 85.", "85"),
        ("The answer is 86. Earlier I thought 85.", "86"),  # explicit answer beats last number
        ("\\boxed{1,000} and then 5", "1000"),  # boxed beats everything
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,234", Fraction(1234)), ("-7", Fraction(-7)), ("85.0", Fraction(85)), ("3/4", Fraction(3, 4)),
     ("$12", Fraction(12)), ("twelve", None), (None, None), ("1/0", None)],
)
def test_to_number(text: str | None, expected: Fraction | None) -> None:
    assert to_number(text) == expected


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("The answer is 85.", "85", True),
        ("The answer is 85.0", "85", True),
        ("The answer is 86.", "85", False),
        ("The answer is 1,234.", "1234", True),
        ("The answer is -7.", "7", False),
        ("The answer is 0.5", "1/2", True),
        ("No idea.", "85", False),
        ("It could be 85 or 86.", "85", False),  # only the final answer counts, not any listed number
        ("The answer is 86. Check: 85", "85", False),
        ("It is 72.", "Natalia sold 48 + 24 = 72 clips.\n#### 72", True),  # worked reference
        # Non-numeric answers go through math-verify.
        ("\\boxed{\\frac{170}{2}}", "85", True),
        ("The answer is 0.5", "\\frac{1}{2}", True),
        ("The answer is $\\frac{1}{3}$", "\\frac{1}{2}", False),
        ("The answer is $1+x$", "x+1", True),
        ("The answer is $x+2$", "x+1", False),
    ],
)
def test_is_correct(answer: str, reference: str, expected: bool) -> None:
    assert is_correct(answer, reference) is expected


def test_is_correct_works_off_the_main_thread() -> None:
    """math-verify's signal timeouts fail in worker threads; the check must not."""
    results: dict[str, bool | BaseException] = {}

    def work() -> None:
        try:
            results["latex"] = is_correct("\\boxed{\\frac{170}{2}}", "85")
            results["symbolic_wrong"] = is_correct("The answer is $x+2$", "x+1")
        except BaseException as e:  # surfaced below
            results["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=60)
    assert results == {"latex": True, "symbolic_wrong": False}


def test_is_correct_leaves_the_callers_alarm_alone() -> None:
    """A signal.alarm-based timeout inside the check would cancel the caller's own timer."""
    old_handler = signal.signal(signal.SIGALRM, lambda *_: None)
    old_timer = signal.setitimer(signal.ITIMER_REAL, 300)
    try:
        assert is_correct("The answer is $\\frac{1}{2}$", "0.5")
    finally:
        left, _ = signal.setitimer(signal.ITIMER_REAL, *old_timer)
        signal.signal(signal.SIGALRM, old_handler)
    assert left > 250
