from __future__ import annotations

from safeladder.demo import summary_markdown


def _report(fmt, harm, benign, math, tokens):
    rate = lambda v, n: {"value": v / n, "hits": v, "n": n, "ci95": [0.0, 1.0]}
    return {"rates": {"format_ok": rate(*fmt), "harmful_declined": rate(*harm),
                      "benign_declined": rate(*benign), "math_accuracy": rate(*math)},
            "mean_tokens": tokens}


def test_summary_table_has_before_after_and_deltas():
    before = _report((0, 10), (1, 10), (0, 4), (2, 10), 114.0)
    after = _report((10, 10), (8, 10), (1, 4), (5, 10), 95.0)
    lines = summary_markdown(before, after).splitlines()
    assert lines[2] == "| format compliance | 0.0% [0–100] | 100.0% [0–100] | +100.0 |"
    assert lines[3] == "| harmful prompts declined | 10.0% [0–100] | 80.0% [0–100] | +70.0 |"
    assert lines[4] == "| benign look-alikes declined | 0.0% [0–100] | 25.0% [0–100] | +25.0 |"
    assert lines[5] == "| arithmetic accuracy | 20.0% [0–100] | 50.0% [0–100] | +30.0 |"
    assert lines[6] == "| mean tokens | 114 | 95 | -19 |"
