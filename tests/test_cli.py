from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from safeladder.cli import app
from safeladder.format import make_completion

runner = CliRunner()


def test_bad_config_exits_2_with_file_line_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {name: tiny}\nbatch_size: 2\nlearning_rat: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "safeladder", "sft", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"{cfg}:3: learning_rat: unknown key" in proc.stderr.replace("\n", "")
    assert "Traceback" not in proc.stderr


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_data_curate_keeps_verified_traces_and_writes_a_report(tmp_path):
    good = make_completion("Wait, let me check: 2 + 3 = 5. Check: 5 - 3 = 2.", "The answer is 5.")
    rows = [
        {"id": "a", "prompt": "What is 2 + 3?", "label": "math", "reference": "5", "response": good},
        {"id": "b", "prompt": "What is 2 + 3?", "label": "math", "reference": "6", "response": good},  # wrong
        {"id": "c", "prompt": "Hi", "label": "normal", "response": "no tags at all"},  # format
        {"id": "d", "prompt": "What is 2 + 3?", "label": "math", "reference": "5", "response": good},  # duplicate
    ]
    src, out = tmp_path / "traces.jsonl", tmp_path / "kept.jsonl"
    _write(src, rows)
    result = runner.invoke(app, ["data", "curate", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [k["id"] for k in kept] == ["a"]
    assert set(kept[0]["metadata"]["behaviours"]) >= {"verification", "backtracking"}
    report = (tmp_path / "kept.report.md").read_text()
    assert "wrong_answer" in report and "duplicate" in report and "format" in report


def test_data_stats_counts_labels(tmp_path):
    src = tmp_path / "s.jsonl"
    _write(src, [{"prompt": "p1", "label": "math"}, {"prompt": "p2", "label": "math"}, {"prompt": "p3", "label": "safety"}])
    result = runner.invoke(app, ["data", "stats", str(src)])
    assert result.exit_code == 0, result.output
    assert "label math" in result.output and "label safety" in result.output
    line = next(l for l in result.output.splitlines() if "label math" in l)
    assert line.rstrip(" │").endswith("2")


def test_generate_prints_answer_panel():
    result = runner.invoke(app, ["generate", "What is 2 + 2?", "--model", "tiny", "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert "answer" in result.output and "tokens" in result.output


def test_verifier_score_writes_score_verdict_and_details(tmp_path):
    src, out = tmp_path / "items.jsonl", tmp_path / "scored.jsonl"
    _write(src, [
        {"prompt": "What is 40 + 2?", "response": "<think>40 + 2 = 42</think>The answer is 42.", "reference": "42"},
        {"prompt": "What is 40 + 2?", "response": "<think>hmm</think>The answer is 41.", "reference": "42"},
        {"prompt": "Hi", "response": "Hello"},  # no reference: not applicable, no invented score
    ])
    result = runner.invoke(app, ["verifier", "score", "--verifier", "math", "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["score"], r["verdict"], r["status"]) for r in rows] == [
        (1.0, "correct", "ok"), (0.0, "incorrect", "ok"), (None, None, "not_applicable")]
    assert rows[0]["details"]["extracted"] == "42"


def test_verifier_score_rejects_a_bad_row_with_file_line_field(tmp_path):
    from safeladder.errors import DataError

    src = tmp_path / "items.jsonl"
    _write(src, [{"prompt": "a", "response": "b"}, {"prompt": "c"}])
    result = runner.invoke(app, ["verifier", "score", "--verifier", "math", "-i", str(src), "-o", str(tmp_path / "o.jsonl")])
    assert isinstance(result.exception, DataError)
    assert str(result.exception) == f"{src}:2: response: missing"
    assert not (tmp_path / "o.jsonl").exists()  # nothing half-written


def test_value_train_samples_train_prompts_and_saves_a_loadable_step_value(tmp_path):
    from safeladder.inference.value import build_value
    from safeladder.inference.value_head import StepValueHead, load_examples
    from safeladder.train.rl_data import BUILTIN_PROMPTS

    out = tmp_path / "sv"
    result = runner.invoke(app, ["value", "train", "--model", "tiny", "--out", str(out), "--harmful", "3",
                                 "--benign", "2", "--per-prompt", "2", "--step-tokens", "4", "--max-steps", "2",
                                 "--answer-tokens", "4", "--judge", "format"])
    assert result.exit_code == 0, result.output
    examples = load_examples(out / "examples.jsonl")
    report = json.loads((out / "step_value_report.json").read_text())
    assert report["requests"] == 5 and report["n_train"] + report["n_val"] == len(examples) > 0
    train_ids = {s.id for task in ("harmful", "benign") for s in BUILTIN_PROMPTS[task]("train")}
    assert {e.prompt_id for e in examples} <= train_ids  # dev and test prompts are never sampled
    assert all(0 < e.cut <= 8 for e in examples)  # prefixes every 4 tokens of ≤ 2 × 4 reasoning tokens
    assert isinstance(build_value(str(out)), StepValueHead)
