"""The GPU benchmark's CPU dry run: the whole RL path with the tiny model and the transformers engine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu" / "rl_vllm.py"


def test_dry_run_runs_the_whole_path_on_cpu(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "dry run OK" in proc.stdout and "| step | s/step |" in proc.stdout
    result = json.loads(out.read_text())
    assert result["settings"]["engine"] == "transformers" and result["settings"]["model"] == "tiny"
    assert result["settings"]["train_device"] == "cpu"
    assert [r["step"] for r in result["steps"]] == [1, 2]
    for row in result["steps"]:
        assert row["rollout/tokens_per_s"] > 0 and row["time/step_s"] > 0 and row["sync_s"] >= 0
        assert 0 < row["response/tokens_mean"] <= 16  # dry-run max_new_tokens
    assert result["summary"]["time/step_s"] == result["steps"][1]["time/step_s"]  # the warm-up step is left out


def test_the_dry_run_check_flags_a_broken_step():
    spec = importlib.util.spec_from_file_location("rl_vllm", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    good = {key: 1.0 for key in bench.REPORTED} | {"step": 1}
    assert bench.check_dry_run([good], 1) == []
    assert bench.check_dry_run([good | {"rollout/tokens_per_s": 0.0}], 1)
    assert bench.check_dry_run([good | {"time/train_s": float("nan")}], 1)
    assert bench.check_dry_run([good], 2)
    args = bench.parse_args(["--dry-run", "--steps", "3"])
    assert (args.model, args.engine, args.steps, args.max_new_tokens) == ("tiny", "transformers", 3, 16)
    assert bench.parse_args([]).engine == "vllm"
