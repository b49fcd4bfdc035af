"""The ladder on the tiny model: stages chain, a kill mid-stage resumes without redoing earlier stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safeladder.ladder import load_ladder, run_ladder
from safeladder.train import checkpoint as ckpt
from safeladder.train.metrics import MetricsLog


def _files(tmp_path: Path) -> tuple[Path, Path]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} + 1?", "label": "math", "reference": str(i + 1)}) + "\n" for i in range(12)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("format_reward: 1.0\nrecipes: {math: [{verifier: math}]}\n")
    return prompts, recipe


def _ladder_yaml(tmp_path: Path, run: Path, rl_steps: int, suite: str | None) -> Path:
    prompts, recipe = _files(tmp_path)
    path = tmp_path / f"ladder-{rl_steps}.yaml"
    path.write_text(
        f"model: tiny\noutput_dir: {run}\n"
        + (f"eval: {{suite: {suite}}}\n" if suite else "eval: {suite: null}\n")
        + "stages:\n"
        "  - name: sft\n    kind: sft\n"
        "    config: {data: {builtin: {math: 8, harmful: 4, benign: 4}}, max_len: 512, batch_size: 2, max_steps: 2, save_every: 1, tensorboard: false}\n"
        "  - name: rl\n    kind: rl\n"
        f"    config: {{tasks: {{m: {{path: {prompts}, split: all}}}}, curriculum: [{{name: p, steps: {rl_steps}, mixture: {{m: 1.0}}, recipe: {recipe}}}],"
        " rollout: {group_size: 2, prompts_per_step: 2, max_new_tokens: 6}, algorithm: {kl_coef: 0.0}, save_every: 1, tensorboard: false}\n"
    )
    return path


def test_stages_chain_and_a_rerun_skips_finished_ones(tmp_path):
    run = tmp_path / "run"
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "generation: {max_new_tokens: 8, batch_size: 8}\n"
        "benchmarks:\n"
        "  - {name: harmful, kind: harmful, source: harmful, split: dev, limit: 3, judge: refusal_rule}\n"
        "  - {name: arithmetic, kind: math, source: arithmetic, split: dev, limit: 3}\n"
        "scores:\n  capability: [{benchmark: arithmetic, metric: accuracy}]\n  safety: [{benchmark: harmful, metric: safe_rate}]\n"
    )
    cfg = load_ladder(_ladder_yaml(tmp_path, run, 2, str(suite)))
    result = run_ladder(cfg)
    sft_final, rl_final = Path(result["finals"]["sft"]), Path(result["finals"]["rl"])
    assert sft_final == run / "1-sft" / "final" and rl_final == run / "2-rl" / "final"
    # stage 2 started from stage 1's export
    assert json.loads((run / "ladder.json").read_text())["stages"][1]["kind"] == "rl"
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["1-sft", "2-rl", "base"]
    assert result["chart"].is_file() and result["html"].is_file()
    summary = (run / "summary.md").read_text()
    assert "| harmful · safe_rate | " in summary and "2-rl" in summary
    done = (run / "2-rl" / "stage.json").stat().st_mtime
    again = run_ladder(cfg)
    assert again["timings"].keys() == {"eval base"}  # nothing retrained; base eval served from cache
    assert (run / "2-rl" / "stage.json").stat().st_mtime == done


def test_kill_mid_stage_then_resume_continues_without_redoing_finished_stages(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "safeladder", "ladder"]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd + [str(_ladder_yaml(tmp_path, run, 400, None))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rl_dir = run / "2-rl"
    deadline = time.time() + 300
    while time.time() < deadline and len(ckpt.list_checkpoints(rl_dir)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "1-sft" / "stage.json").is_file(), "stage 1 should have finished before the kill"
    sft_done = (run / "1-sft" / "stage.json").stat().st_mtime
    sft_metrics = (run / "1-sft" / "metrics.jsonl").read_text()
    last = json.loads((ckpt.latest_checkpoint(rl_dir) / "state.json").read_text())["step"]
    assert not (rl_dir / "stage.json").exists() and last < 400

    done = subprocess.run(cmd + [str(_ladder_yaml(tmp_path, run, last + 2, None))], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "1-sft" / "stage.json").stat().st_mtime == sft_done  # stage 1 not redone
    assert (run / "1-sft" / "metrics.jsonl").read_text() == sft_metrics
    steps = [r["step"] for r in MetricsLog.read(rl_dir / "metrics.jsonl")]
    assert steps[-2:] == [last + 1, last + 2] and steps == sorted(set(steps))
    assert (rl_dir / "stage.json").is_file() and (rl_dir / "final" / "model.safetensors").is_file()


def test_a_typo_in_a_later_stage_fails_at_load_naming_the_stage(tmp_path):
    import pytest

    from safeladder.errors import ConfigError

    path = _ladder_yaml(tmp_path, tmp_path / "run", 2, None)
    path.write_text(path.read_text().replace("kl_coef: 0.0", "kl_coeff: 0.0"))
    with pytest.raises(ConfigError, match=r"stages\.rl\.config: algorithm\.kl_coeff"):
        load_ladder(path)
