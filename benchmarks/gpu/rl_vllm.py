"""A short M³-RL run with vLLM rollouts on a GPU: rollout tokens/s and seconds per step.

    python benchmarks/gpu/rl_vllm.py [--model smollm2-135m] [--steps 6] [--group-size 8] [--prompts 16]
        [--max-new-tokens 256] [--recipe math|release] [--gpu-memory-utilization 0.3] [--out result.json]
    python benchmarks/gpu/rl_vllm.py --dry-run     # CPU: tiny model, transformers engine, 2 steps

The run is the real RL loop (`RLTrainer.train_step`): prompts → G samples each from the engine →
rewards → advantages → one optimiser step → `engine.sync_weights` (the trainer's weights, LoRA
merged, loaded into the running vLLM model). The first step is a warm-up (CUDA graphs, caches)
and is left out of the means. `--recipe math` scores math prompts with the format + answer
rules (no neural verifier to load); `--recipe release` runs the CPU preset's two-phase
curriculum with the released recipes (its safety verifier trains small heads on first use).

`--dry-run` needs no GPU and no vLLM: the tiny random model and the transformers engine on CPU,
so CI proves the whole path (config, trainer, engine, weight sync, metrics, report) still runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MATH_RECIPE = "format_reward: 1.0\non_missing: skip\nrecipes: {math: [{verifier: math}]}\n"
# The dry run's tiny random model never answers a sum or writes the format: its math reward is 0
# everywhere, the advantages are 0 and the trainer (exactly) skips the update. A brevity term
# gives every group reward variance, so the dry run exercises the update and the weight sync.
DRY_RUN_RECIPE = ("format_reward: 1.0\non_missing: skip\nrecipes: {math: [{verifier: math}, "
                  "{verifier: length, weight: 0.5, options: {max_words: 4, target: completion}}]}\n")
REPORTED = ["time/step_s", "time/generate_s", "time/verify_s", "time/train_s", "sync_s", "rollout/tokens_per_s",
            "response/tokens_mean", "reward/mean"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, transformers engine (no GPU, no vLLM)")
    ap.add_argument("--model", default=None, help="built-in name or HF directory (default: smollm2-135m; dry run: tiny)")
    ap.add_argument("--engine", default=None, help="rollout engine (default: vllm; dry run: transformers)")
    ap.add_argument("--steps", type=int, default=None, help="RL steps including the warm-up (default 6; dry run 2)")
    ap.add_argument("--group-size", type=int, default=None, help="samples per prompt (default 8; dry run 4)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (default 16; dry run 2)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="(default 256; dry run 16)")
    ap.add_argument("--recipe", choices=["math", "release"], default="math")
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA r=16")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3, help="vLLM's share of the GPU")
    ap.add_argument("--train-device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    defaults = ({"model": "tiny", "engine": "transformers", "steps": 2, "group_size": 4, "prompts": 2, "max_new_tokens": 16}
                if args.dry_run else
                {"model": "smollm2-135m", "engine": "vllm", "steps": 6, "group_size": 8, "prompts": 16, "max_new_tokens": 256})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    return args


def train_device(choice: str, dry_run: bool) -> str:
    import torch

    if dry_run or choice == "cpu":
        return "cpu"
    if choice == "cuda" or torch.cuda.is_available():
        return "cuda"
    return "cpu"


def build_config(args: argparse.Namespace, work: Path) -> Any:
    """The CPU preset (configs/rl_cpu.yaml) resized for this run."""
    from safeladder.config import load_config
    from safeladder.configs import preset_path
    from safeladder.train.rl_config import RLConfig

    engine_options = {"gpu_memory_utilization": args.gpu_memory_utilization} if args.engine == "vllm" else {}
    overrides: dict[str, Any] = {
        "model": {"name": args.model, "lora": None if args.full else {"r": 16, "alpha": 32}},
        "output_dir": str(work / "run"), "tensorboard": False, "save_every": 10_000,
        "rollout": {"group_size": args.group_size, "prompts_per_step": args.prompts, "max_new_tokens": args.max_new_tokens,
                    "batch_size": args.prompts, "engine": args.engine, "engine_options": engine_options},
        "algorithm": {"micro_batch_size": max(1, args.group_size * args.prompts // 4)},
    }
    if args.dry_run:
        overrides["precision"] = "fp32"
    if args.recipe == "math":
        recipe = work / "recipe_math.yaml"
        recipe.write_text(DRY_RUN_RECIPE if args.dry_run else MATH_RECIPE)
        overrides["curriculum"] = [{"name": "knowledge+general", "steps": args.steps, "mixture": {"math": 1.0}, "recipe": str(recipe)}]
    else:  # the preset's two phases, shrunk to this run's length
        first = max(1, args.steps // 3)
        overrides["curriculum"] = [
            {"name": "knowledge+general", "steps": first, "mixture": {"math": 1.0}, "recipe": "recipes_release"},
            {"name": "safety+value+knowledge+helpfulness+general", "steps": max(1, args.steps - first),
             "mixture": {"math": 0.4, "harmful": 0.35, "benign": 0.25}, "recipe": "recipes_release"},
        ]
    return load_config(preset_path("rl_cpu"), RLConfig, overrides)


def timed_sync(engine: Any, log: list[float]) -> None:
    """Record how long each weight sync takes (it runs inside the trainer's train step)."""
    sync = engine.sync_weights

    def wrapper(model: Any) -> None:
        t0 = time.perf_counter()
        sync(model)
        log.append(time.perf_counter() - t0)

    engine.sync_weights = wrapper


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    measured = rows[1:] or rows  # the first step warms up CUDA graphs and caches
    return {key: statistics.mean(r[key] for r in measured) for key in REPORTED}


def check_dry_run(rows: list[dict[str, float]], steps: int) -> list[str]:
    """What a healthy run looks like; the dry run fails loudly otherwise."""
    problems = []
    if len(rows) != steps:
        problems.append(f"{len(rows)} steps ran, {steps} expected")
    for r in rows:
        for key in REPORTED:
            if not math.isfinite(r.get(key, float("nan"))):
                problems.append(f"step {r.get('step')}: {key} = {r.get(key)}")
        if r.get("rollout/tokens_per_s", 0) <= 0 or r.get("sync_s", -1) < 0:
            problems.append(f"step {r.get('step')}: no tokens generated or no weight sync")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rl-vllm-") as work:  # recipe, run dir: gone afterwards
        return run(args, Path(work))


def run(args: argparse.Namespace, work: Path) -> int:
    import torch

    from safeladder.models.loader import load_policy
    from safeladder.train.rl import RLTrainer

    cfg = build_config(args, work)
    device = train_device(args.train_device, args.dry_run)
    policy = load_policy(cfg.model)
    policy.model.to(device)
    t0 = time.perf_counter()
    trainer = RLTrainer(cfg, policy=policy)
    startup_s = time.perf_counter() - t0
    syncs: list[float] = []
    timed_sync(trainer.engine, syncs)

    rows = []
    for _ in range(args.steps):
        row = trainer.train_step()
        row["sync_s"] = syncs[-1] if syncs else float("nan")
        rows.append(row)
        print(f"  step {row['step']}: {row['time/step_s']:.2f} s, {row['rollout/tokens_per_s']:.0f} rollout tok/s, "
              f"reward {row['reward/mean']:.3f}", file=sys.stderr, flush=True)

    summary = summarise(rows)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    settings = {"model": args.model, "engine": args.engine, "train_device": device, "gpu": gpu, "lora": not args.full,
                "group_size": args.group_size, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens,
                "recipe": args.recipe, "steps": args.steps, "dry_run": args.dry_run}
    print(f"settings: {json.dumps(settings)}")
    print(f"trainer start-up (engine, incl. vLLM init): {startup_s:.1f} s")
    print("| step | s/step | generate s | verify s | train s | sync s | rollout tok/s | tokens/sample | reward |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {int(r['step'])} | {r['time/step_s']:.2f} | {r['time/generate_s']:.2f} | {r['time/verify_s']:.2f} | "
              f"{r['time/train_s']:.2f} | {r['sync_s']:.3f} | {r['rollout/tokens_per_s']:.0f} | "
              f"{r['response/tokens_mean']:.1f} | {r['reward/mean']:.3f} |")
    what = "steps 2+" if len(rows) > 1 else "the only step"
    print(f"mean over {what}: {summary['time/step_s']:.2f} s/step, {summary['rollout/tokens_per_s']:.0f} rollout tokens/s, "
          f"weight sync {summary['sync_s']:.3f} s")
    if args.out:
        args.out.write_text(json.dumps({"settings": settings, "startup_s": startup_s, "steps": rows, "summary": summary}, indent=2))
    if args.dry_run:
        problems = check_dry_run(rows, args.steps)
        if problems:
            print("dry run FAILED: " + "; ".join(problems))
            return 1
        print("dry run OK: config → trainer → engine → rewards → update → weight sync → report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
