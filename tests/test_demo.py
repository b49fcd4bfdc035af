"""The demo's before/after rows come from the first and last evaluation points."""

from __future__ import annotations

import json
from pathlib import Path

from safeladder.demo import before_after_rows


def _point(root: Path, name: str, order: int, safe: float, acc: float, tokens: float) -> None:
    for bench, metrics in {
        "harmful": {"safe_rate": {"value": safe, "low": safe - 0.1, "high": safe + 0.05}, "mean_tokens": {"value": tokens, "low": tokens, "high": tokens}},
        "arithmetic": {"accuracy": {"value": acc, "low": acc - 0.1, "high": acc + 0.1}},
    }.items():
        d = root / name / bench
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"benchmark": bench, "kind": "x", "n": 10, "metrics": metrics, "categories": {}}))
        (d / "generations.jsonl").write_text("")
    (root / name / "point.json").write_text(json.dumps({
        "name": name, "model": name, "step": None, "order": order,
        "scores": {"capability": {"value": acc, "low": acc, "high": acc}, "safety": {"value": safe, "low": safe, "high": safe}},
        "benchmarks": ["harmful", "arithmetic"],
    }))


def test_rows_compare_base_with_the_last_stage(tmp_path):
    _point(tmp_path, "base", 0, 0.1, 0.2, 114)
    _point(tmp_path, "1-sft", 1, 0.5, 0.3, 100)
    _point(tmp_path, "2-rl", 2, 0.85, 0.4, 80)
    rows = {r[0]: r for r in before_after_rows(tmp_path)}
    assert rows["harmful · safe_rate"] == ("harmful · safe_rate", "10.0% [0–15]", "85.0% [75–90]", "+75.0 pts")
    assert rows["arithmetic · accuracy"][3] == "+20.0 pts"
    assert rows["harmful · mean_tokens"][1:] == ("114", "80", "-34.0")


def test_no_rows_without_two_points(tmp_path):
    _point(tmp_path, "base", 0, 0.1, 0.2, 114)
    assert before_after_rows(tmp_path) == []
