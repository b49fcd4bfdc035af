"""Mean recipe reward of an evaluation's greedy generations: the reward an RL stage optimised, on dev.

    python benchmarks/recipe_reward.py runs/x/eval/base runs/x/eval/1-m3-rl [--recipe recipes_release]

Issue 5 asks that M³-RL "raises the mean recipe reward". The training batches' rewards are
sampled at temperature on train prompts, so they drift with the mixture and the sampling; this
scores the evaluation's stored generations (`<eval dir>/<benchmark>/generations.jsonl`, written
by `safeladder eval` / the ladder) with a reward recipe, routing each benchmark to the label the
RL data gives it: `harmful` → safety, `benign_lookalikes` → benign, `arithmetic` → math. It prints
each benchmark's mean and their unweighted mean (the RL mixture draws the labels in similar
shares), one line per evaluation directory. Nothing is generated; the verifier heads must be
cached (`make install` builds them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

# benchmark directory -> the label its prompts carry in RL
LABELS = {"harmful": "safety", "benign_lookalikes": "benign", "arithmetic": "math"}


def recipe_rewards(eval_dir: Path, recipe: str) -> dict[str, float]:
    """Mean reward per benchmark of one evaluation directory, plus "mean" over the benchmarks."""
    from safeladder.data.loaders import read_jsonl
    from safeladder.verifiers.base import VerifyItem
    from safeladder.verifiers.recipes import RewardComputer, recipe_path

    computer = RewardComputer.from_path(recipe_path(recipe))
    out: dict[str, float] = {}
    for bench, label in LABELS.items():
        gen = eval_dir / bench / "generations.jsonl"
        if not gen.exists():
            continue
        rows = [row for _, row in read_jsonl(gen)]  # a bad line is a DataError naming file:line
        items = [VerifyItem(prompt=r["prompt"], response=r["completion"], reference=r.get("reference"), label=label)
                 for r in rows]
        rewards = computer.compute(items).rewards
        out[bench] = float(sum(rewards) / len(rewards))
    if not out:
        raise SystemExit(f"{eval_dir}: none of {', '.join(f'{b}/generations.jsonl' for b in LABELS)}")
    out["mean"] = sum(out.values()) / len(out)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("eval_dirs", nargs="+", type=Path, help="evaluation directories (one per checkpoint)")
    p.add_argument("--recipe", default="recipes_release", help="a recipes YAML or a preset name")
    args = p.parse_args(argv)
    report = {}
    for d in args.eval_dirs:
        report[str(d)] = r = recipe_rewards(d, args.recipe)
        print(f"{d}: " + " · ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
