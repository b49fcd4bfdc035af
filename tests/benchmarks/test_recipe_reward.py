"""benchmarks/recipe_reward.py: an evaluation's stored generations scored with a reward recipe."""

from __future__ import annotations

import json

import pytest


def test_arithmetic_generations_get_format_plus_math_reward_per_benchmark(tmp_path, load_benchmark):
    rows = [  # routed to label "math": format 1/0 + math 1/0 with the release recipe
        {"prompt": "What is 12 + 30?", "completion": "<think>\n12 + 30 = 42\n</think>\nThe answer is 42.", "reference": "42"},
        {"prompt": "What is 12 + 31?", "completion": "<think>\n12 + 31 = 44\n</think>\nThe answer is 44.", "reference": "43"},
        {"prompt": "What is 2 + 2?", "completion": "The answer is 4.", "reference": "4"},  # no reasoning block
    ]
    (tmp_path / "arithmetic").mkdir()
    (tmp_path / "arithmetic" / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = load_benchmark("recipe_reward").main([str(tmp_path)])[str(tmp_path)]
    assert report["arithmetic"] == pytest.approx((2.0 + 1.0 + 1.0) / 3)
    assert report["mean"] == report["arithmetic"] and set(report) == {"arithmetic", "mean"}


def test_a_directory_without_generations_is_an_error(tmp_path, load_benchmark):
    with pytest.raises(SystemExit, match="generations.jsonl"):
        load_benchmark("recipe_reward").main([str(tmp_path)])
