from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from safeladder.train import checkpoint as ckpt
from safeladder.train.metrics import MetricsLog


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(3, 2)

    def save_pretrained(self, path, safe_serialization=True):
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        save_file(self.state_dict(), os.path.join(path, "model.safetensors"))


def test_rng_state_round_trips_through_json():
    state = json.loads(json.dumps(ckpt.rng_state()))
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    ckpt.set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_save_load_and_prune(tmp_path):
    model = _Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.w.weight.sum().backward()
    opt.step()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, model, {"cursor": step}, opt, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-000002", "ckpt-000003"]
    other = _Tiny()
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.1)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), other, opt2)
    assert state == {"step": 3, "cursor": 3}
    assert torch.equal(other.w.weight, model.w.weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_a_failed_save_leaves_no_checkpoint_and_no_temp_dir(tmp_path, monkeypatch):
    model = _Tiny()
    ckpt.save_checkpoint(tmp_path, 1, model, {})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 2, model, {})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000001"]


def test_leftover_temp_dir_from_a_kill_is_ignored_then_cleaned(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, _Tiny(), {})
    half = tmp_path / ".tmp-ckpt-abc"
    (half / "model").mkdir(parents=True)  # a save killed before its rename
    (tmp_path / "ckpt-000009").mkdir()  # a directory without state.json is not a checkpoint
    assert ckpt.latest_checkpoint(tmp_path).name == "ckpt-000001"
    ckpt.clean_partial(tmp_path)
    assert not half.exists()


def test_kill_9_during_sft_then_resume(tmp_path):
    """A real process is SIGKILLed mid-training; `--resume` continues from its last checkpoint."""
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "model: {name: tiny}\n"
        "data: {builtin: {math: 16, harmful: 8, benign: 8}}\n"
        f"output_dir: {run}\n"
        "max_len: 512\nbatch_size: 2\nmax_steps: 400\nsave_every: 2\nkeep_last: 3\ntensorboard: false\n"
    )
    cmd = [sys.executable, "-m", "safeladder", "sft", "--config", str(cfg)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(ckpt.list_checkpoints(run)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = ckpt.list_checkpoints(run)
    assert len(ckpts) >= 2, "training made no checkpoints before the deadline"
    for c in ckpts:  # every visible checkpoint is complete
        assert (c / "state.json").is_file() and (c / "trainer.pt").is_file()
        assert (c / "model" / "model.safetensors").is_file()
    last_step = json.loads((ckpts[-1] / "state.json").read_text())["step"]
    assert last_step < 400

    resumed = subprocess.run(cmd + ["--resume", "--set", "max_steps=" + str(last_step + 4)], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [r["step"] for r in MetricsLog.read(run / "metrics.jsonl")]
    assert steps[-4:] == [last_step + 1, last_step + 2, last_step + 3, last_step + 4]
    assert steps == sorted(set(steps))  # no step logged twice after the resume
    assert (run / "final" / "model.safetensors").is_file()
    assert not list(run.glob(".tmp-ckpt-*"))
