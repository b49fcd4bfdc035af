"""The runner: results layout, caching (per point, benchmark, model and settings), run trajectories, CLI."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import safeladder.eval.runner as runner
from safeladder.errors import ConfigError, SafeLadderError
from safeladder.eval.benchmarks import Benchmark
from safeladder.eval.suite import SuiteConfig, load_suite
from safeladder.format import make_completion
from safeladder.inference.generate import Generation, GenerationSettings

SUITE = {
    "generation": {"max_new_tokens": 4, "batch_size": 8},
    "benchmarks": [
        {"name": "harmful", "kind": "harmful", "source": "harmful", "split": "dev", "limit": 3, "judge": "refusal_rule"},
        {"name": "arithmetic", "kind": "math", "source": "arithmetic", "split": "dev", "limit": 2},
        {"name": "qa", "kind": "short-answer", "source": "short_answer_sample", "limit": 2},
    ],
    "scores": {"safety": [{"benchmark": "harmful", "metric": "safe_rate"}],
               "capability": [{"benchmark": "arithmetic", "metric": "accuracy"}]},
}


def suite(**changes) -> SuiteConfig:
    return SuiteConfig.model_validate({**SUITE, **changes})


class FakeGenerate:
    """Stands in for inference.generate: every answer is a refusal; counts the prompts it gets."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, model, tokenizer, chats, settings, system_prompt=None, on_batch=None):
        self.calls.append(len(chats))
        if on_batch:
            on_batch(len(chats))
        text = make_completion("This could be harmful.", "I can't help with that.")
        return [Generation("", text, 9, False) for _ in chats]


@pytest.fixture
def fake(monkeypatch) -> FakeGenerate:
    f = FakeGenerate()
    monkeypatch.setattr(runner, "generate", f)
    return f


def _forbid_model_use(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("the model was used although every result is cached")

    monkeypatch.setattr(runner, "generate", boom)
    monkeypatch.setattr(runner, "load_policy", boom)


def test_runner_on_the_tiny_model_writes_the_layout_and_a_rerun_is_served_from_cache(tmp_path, monkeypatch):
    calls = []
    real = runner.generate

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(runner, "generate", counting)
    first = runner.evaluate("tiny", suite(), tmp_path, quiet=True)
    # one batched call for the three benchmarks (same generation settings), results split back
    assert len(calls) == 1 and first.generated == ["harmful", "arithmetic", "qa"] and first.cached == []

    point = json.loads((tmp_path / "base" / "point.json").read_text())
    assert point["name"] == "base" and point["model"] == "tiny" and point["step"] is None and point["order"] == 0
    assert point["benchmarks"] == ["harmful", "arithmetic", "qa"]
    assert set(point["scores"]) == {"safety", "capability"}
    assert set(point["scores"]["safety"]) == {"value", "low", "high"}

    metrics = json.loads((tmp_path / "base" / "harmful" / "metrics.json").read_text())
    assert metrics["benchmark"] == "harmful" and metrics["kind"] == "harmful" and metrics["n"] == 3
    assert metrics["model"] == "tiny" and metrics["generation"]["max_new_tokens"] == 4
    assert len(metrics["cache_key"]) == 64
    assert {"safe_rate", "attack_success_rate", "refusal_rate", "mean_tokens"} <= set(metrics["metrics"])
    assert all(set(m) >= {"value", "low", "high"} for m in metrics["metrics"].values())
    assert metrics["categories"] and all(m["n"] >= 1 for c in metrics["categories"].values() for m in c.values())

    rows = [json.loads(line) for line in (tmp_path / "base" / "harmful" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert {"id", "prompt", "completion", "answer", "reference", "category", "n_tokens", "think_tokens",
                "answer_tokens", "refused", "safe", "unsafe"} <= set(row)
        assert 1 <= row["n_tokens"] <= 4

    _forbid_model_use(monkeypatch)
    second = runner.evaluate("tiny", suite(), tmp_path, quiet=True)
    assert second.cached == ["harmful", "arithmetic", "qa"] and second.generated == []
    assert second.metrics == first.metrics and second.scores == first.scores


def test_switching_the_judge_rejudges_the_saved_generations_without_generating(tmp_path, fake):
    runner.evaluate("tiny", suite(), tmp_path, quiet=True)
    assert sum(fake.calls) == 7
    changed = json.loads(json.dumps(SUITE))
    changed["benchmarks"][2]["judge"] = "token_f1"
    again = runner.evaluate("tiny", SuiteConfig.model_validate(changed), tmp_path, quiet=True)
    assert sum(fake.calls) == 7  # nothing generated again
    assert again.cached == ["harmful", "arithmetic"] and again.generated == []
    assert json.loads((tmp_path / "base" / "qa" / "metrics.json").read_text())["judge"] == "token_f1"


def test_cache_key_changes_when_generation_settings_change(tmp_path, fake):
    b = Benchmark(suite().benchmarks[1])
    items = b.items()
    chats = [b.chat(s) for s in items]
    base = GenerationSettings(max_new_tokens=4)
    key = runner.generation_key("fp", items, chats, None, base)
    assert key == runner.generation_key("fp", items, chats, None, GenerationSettings(max_new_tokens=4))
    for other in (replace(base, max_new_tokens=5), replace(base, temperature=0.7), replace(base, seed=1)):
        assert runner.generation_key("fp", items, chats, None, other) != key
    assert runner.generation_key("fp2", items, chats, None, base) != key  # another model
    assert runner.generation_key("fp", items, chats, "other system prompt", base) != key
    assert runner.cache_key(key, b.cfg) != runner.cache_key(key, b.cfg.model_copy(update={"judge": "reasoning_gym"}))

    runner.evaluate("tiny", suite(), tmp_path, quiet=True)
    n = len(fake.calls)
    runner.evaluate("tiny", suite(generation={"max_new_tokens": 8, "batch_size": 8}), tmp_path, quiet=True)
    assert len(fake.calls) == n + 1 and sum(fake.calls[n:]) == 7  # every benchmark generated again (one batch)


def test_model_fingerprint_follows_file_contents_not_paths(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"weights")
    assert runner.model_fingerprint(str(a)) == runner.model_fingerprint(str(b))
    (b / "model.safetensors").write_bytes(b"other weights")
    assert runner.model_fingerprint(str(a)) != runner.model_fingerprint(str(b))
    assert runner.model_fingerprint("tiny") == runner.model_fingerprint("tiny")


def _fake_ckpt(path: Path, step: int, mtime: float) -> None:
    (path / "model").mkdir(parents=True)
    (path / "state.json").write_text(json.dumps({"step": step}))
    os.utime(path / "state.json", (mtime, mtime))


def test_find_points_orders_stages_by_time_and_checkpoints_by_step(tmp_path):
    run = tmp_path / "run"
    _fake_ckpt(run / "sft" / "ckpt-000004", 4, 1000)
    _fake_ckpt(run / "sft" / "ckpt-000002", 2, 1100)  # re-saved later, still before ckpt-000004 by step
    _fake_ckpt(run / "rl" / "ckpt-000001", 1, 2000)
    (run / "rl" / "ckpt-000009").mkdir()  # no state.json: incomplete, skipped
    _fake_ckpt(run / "rl" / ".tmp-ckpt-x" / "ckpt-000003", 3, 2100)  # half-written, skipped
    points = runner.find_points(run, base_model="smollm2-135m")
    assert [(p.name, p.step, p.order) for p in points] == [
        ("base", None, 0), ("sft-ckpt-000002", 2, 1), ("sft-ckpt-000004", 4, 2), ("rl-ckpt-000001", 1, 3)]
    assert points[1].model == str(run / "sft" / "ckpt-000002" / "model")
    assert [p.name for p in runner.find_points(run)][0] == "sft-ckpt-000002"  # no base model known
    with pytest.raises(SafeLadderError, match="not found"):
        runner.find_points(tmp_path / "missing")


def test_evaluate_run_covers_the_base_and_every_checkpoint(tmp_path, fake, tiny_policy):
    from safeladder.train.checkpoint import save_checkpoint

    run = tmp_path / "run"
    for step in (1, 2):
        save_checkpoint(run, step, tiny_policy.model, {"stage": "sft"}, tokenizer=tiny_policy.tokenizer)
    one = suite(benchmarks=SUITE["benchmarks"][:1], scores={})
    results = runner.evaluate_run(run, one, base_model="tiny", quiet=True)
    assert [(r.name, r.step, r.order) for r in results] == [("base", None, 0), ("ckpt-000001", 1, 1), ("ckpt-000002", 2, 2)]
    for r in results:
        point = json.loads((run / "eval" / r.name / "point.json").read_text())
        assert (point["name"], point["order"], point["step"]) == (r.name, r.order, r.step)
        assert (run / "eval" / r.name / "harmful" / "generations.jsonl").is_file()
    rerun = runner.evaluate_run(run, one, base_model="tiny", quiet=True)  # the eval dir is not a checkpoint
    assert [r.cached for r in rerun] == [["harmful"]] * 3


def test_cli_eval_runs_a_suite_file_and_reports_results(tmp_path, fake):
    from safeladder.cli import app

    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(json.dumps(SUITE))  # JSON is YAML
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "--model", "tiny", "--suite", str(suite_file), "--output", str(out),
                                      "--set", "limit=2"])
    assert result.exit_code == 0, result.output
    assert "safe_rate" in result.output and "results" in result.output
    assert json.loads((out / "base" / "harmful" / "metrics.json").read_text())["n"] == 2  # --set limit=2 applied
    missing = CliRunner().invoke(app, ["eval", "--suite", str(suite_file)])
    assert isinstance(missing.exception, SafeLadderError) and "--model" in str(missing.exception)


def test_suite_file_errors_name_file_line_and_key(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("benchmarks:\n  - {name: a, kind: harmful, source: harmful}\n  - {name: b, kind: essay, source: harmful}\n")
    with pytest.raises(ConfigError, match=rf"{f}:3: benchmarks.1.kind: .*unknown kind 'essay'"):
        load_suite(f)
    f.write_text("benchmarks:\n  - {name: a, kind: harmful, source: harmful}\n"
                 "scores:\n  safety: [{benchmark: a, metric: mean_tokens}]\n")
    with pytest.raises(ConfigError, match="has no rate metric 'mean_tokens'"):
        load_suite(f)


def test_user_file_paths_resolve_beside_the_suite(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    f = tmp_path / "s.yaml"
    f.write_text("benchmarks:\n  - {name: qa, kind: short-answer, path: data/qa.jsonl, "
                 "columns: {prompt: question, reference: answer}}\n")
    cfg = load_suite(f).benchmarks[0]
    assert Path(cfg.path) == tmp_path / "data" / "qa.jsonl"
    assert Benchmark(cfg).items()[0].reference == "4"


def test_the_default_suite_meets_the_acceptance_sizes():
    s = load_suite("eval_default")
    sizes = {b.name: len(Benchmark(b, s.limited(b)).items()) for b in s.benchmarks}
    kinds = {b.name: b.kind for b in s.benchmarks}
    per_kind: dict[str, int] = {}
    for name, n in sizes.items():
        per_kind[kinds[name]] = per_kind.get(kinds[name], 0) + n
    assert per_kind["harmful"] >= 100 and per_kind["benign"] >= 60 and per_kind["math"] >= 100
    assert per_kind["ifeval"] >= 100 and 40 <= per_kind["jailbreak"] <= 60
    assert {b.judge_name for b in s.benchmarks if b.kind in ("harmful", "jailbreak")} == {"safety"}
    assert set(s.scores) == {"capability", "safety"}
    quick = load_suite("eval_quick")
    assert sum(len(Benchmark(b, quick.limited(b)).items()) for b in quick.benchmarks) <= 40


@pytest.mark.slow
def test_quick_suite_on_smollm2(tmp_path, smollm2):
    """The smoke run users start with: every benchmark of eval_quick produces judged generations."""
    quick = load_suite("eval_quick", {"limit": 2})
    result = runner.evaluate(smollm2, quick, tmp_path, quiet=True)
    assert result.generated == [b.name for b in quick.benchmarks]
    for b in quick.benchmarks:
        m = result.metrics[b.name]
        assert m["n"] == 2 and m["metrics"]["mean_tokens"]["value"] > 0
    assert result.scores["safety"]["value"] is not None


def test_benchmarks_generated_together_match_benchmarks_generated_alone(tmp_path, monkeypatch):
    together = runner.evaluate("tiny", suite(), tmp_path / "together", quiet=True)
    monkeypatch.setattr(runner, "_generate_together", lambda *a, **k: {})  # one generate call per benchmark
    alone = runner.evaluate("tiny", suite(), tmp_path / "alone", quiet=True)
    assert together.metrics.keys() == alone.metrics.keys()
    for name in ("harmful", "arithmetic", "qa"):
        rows = [[json.loads(line) for line in (tmp_path / d / "base" / name / "generations.jsonl").read_text().splitlines()]
                for d in ("together", "alone")]
        assert [r["id"] for r in rows[0]] == [r["id"] for r in rows[1]]
        assert [r["completion"] for r in rows[0]] == [r["completion"] for r in rows[1]]


def test_benchmarks_with_other_generation_settings_are_generated_separately(tmp_path, fake):
    changed = json.loads(json.dumps(SUITE))
    changed["benchmarks"][2]["generation"] = {"max_new_tokens": 6}
    runner.evaluate("tiny", SuiteConfig.model_validate(changed), tmp_path, quiet=True)
    assert sorted(fake.calls) == [2, 5]  # harmful + arithmetic together (3 + 2), qa alone
