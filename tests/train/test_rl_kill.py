"""A real `safeladder rl` process is SIGKILLed mid-run; `--resume` continues where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from safeladder.train import checkpoint as ckpt
from safeladder.train.metrics import MetricsLog


def _write_config(tmp_path, run, phase2_steps: int):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Count to {i}", "label": "plain"}) + "\n" for i in range(10)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("format_reward: 1.0\nunknown_label: format_only\nrecipes: {}\n")
    cfg = tmp_path / f"rl-{phase2_steps}.yaml"
    cfg.write_text(
        "model: {name: tiny}\n"
        f"output_dir: {run}\n"
        f"tasks: {{plain: {{path: {prompts}, split: all}}}}\n"
        "curriculum:\n"
        f"  - {{name: first, steps: 2, mixture: {{plain: 1.0}}, recipe: {recipe}}}\n"
        f"  - {{name: second, steps: {phase2_steps}, mixture: {{plain: 1.0}}, recipe: {recipe}}}\n"
        "rollout: {group_size: 2, prompts_per_step: 3, max_new_tokens: 6}\n"
        "algorithm: {kl_coef: 0.0}\n"
        "optim: {lr: 1.0e-3}\n"
        "save_every: 1\nkeep_last: 3\ntensorboard: false\n"
    )
    return cfg


def test_kill_9_during_rl_then_resume(tmp_path):
    run = tmp_path / "run"
    cfg = _write_config(tmp_path, run, phase2_steps=400)
    cmd = [sys.executable, "-m", "safeladder", "rl"]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd + ["--config", str(cfg)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not ckpt.list_checkpoints(run) or
                                       int(ckpt.list_checkpoints(run)[-1].name.split("-")[1]) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = ckpt.list_checkpoints(run)
    assert ckpts, "no checkpoint before the deadline"
    state = json.loads((ckpts[-1] / "state.json").read_text())
    last = state["step"]
    assert last >= 3 and state["phase"] == 1  # killed inside the second curriculum phase
    assert state["cursors"] == {"plain": 3 * last}  # prompts consumed so far

    resume_cfg = _write_config(tmp_path, run, phase2_steps=last)  # stop two steps after the kill point
    done = subprocess.run(cmd + ["--config", str(resume_cfg), "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = MetricsLog.read(run / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps[-2:] == [last + 1, last + 2] and steps == sorted(set(steps))
    assert all(r["phase"] == 1 for r in rows if r["step"] > last)
    final_state = json.loads((ckpt.latest_checkpoint(run) / "state.json").read_text())
    assert final_state["cursors"] == {"plain": 3 * (last + 2)}  # the cursor continued, not restarted
    assert (run / "final" / "model.safetensors").is_file()
    logged = [r["step"] for r in MetricsLog.read(run / "rollouts.jsonl")]  # rows past the kill point were dropped
    assert logged == sorted(logged) and logged == [s for s in steps for _ in range(3 * 2)]
