"""The README's main job at this stage: CoT-SFT of the embedded model, with a before/after check.

Later stages extend this into the whole ladder. Every step is resumable: the base evaluation is
cached in the run directory and SFT resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from safeladder.config import load_config
from safeladder.configs import preset_path
from safeladder.eval.quick import QuickReport, dev_sets, quick_eval
from safeladder.inference.generate import GenerationSettings
from safeladder.models.loader import load_policy
from safeladder.train.sft import SFTConfig, SFTTrainer

console = Console()

ROWS = [  # (metric key, label, higher is better)
    ("format_ok", "format compliance", True),
    ("harmful_declined", "harmful prompts declined", True),
    ("benign_declined", "benign look-alikes declined", False),
    ("math_accuracy", "arithmetic accuracy", True),
]


def _eval_cached(out: Path, policy, sets, settings, label: str) -> dict:
    path = out / "quick_eval.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    report: QuickReport = quick_eval(policy.model, policy.tokenizer, sets, settings, label=label)
    report.save(out)
    data = report.to_dict() | {"seconds": time.perf_counter() - t0}
    path.write_text(json.dumps(data, indent=2))
    return data


def _rate(r: dict) -> str:
    return f"{100 * r['value']:.1f}% [{100 * r['ci95'][0]:.0f}–{100 * r['ci95'][1]:.0f}]"


def comparison_rows(before: dict, after: dict) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, Δ) rows shared by the terminal table and summary.md."""
    rows = []
    for key, label, _ in ROWS:
        b, a = before["rates"][key], after["rates"][key]
        rows.append((label, _rate(b), _rate(a), f"{100 * (a['value'] - b['value']):+.1f}"))
    tb, ta = before["mean_tokens"], after["mean_tokens"]
    rows.append(("mean tokens", f"{tb:.0f}", f"{ta:.0f}", f"{ta - tb:+.0f}"))
    return rows


def before_after_table(before: dict, after: dict) -> Table:
    table = Table(title="CoT-SFT on the dev splits (95% Wilson intervals)")
    for col in ("metric", "before", "after", "Δ"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for row in comparison_rows(before, after):
        table.add_row(*row)
    return table


def summary_markdown(before: dict, after: dict) -> str:
    lines = ["| metric | before | after | Δ |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in comparison_rows(before, after)]
    return "\n".join(lines) + "\n"


def run_demo(output: Path = Path("runs/demo"), quick: bool = False) -> dict:
    """Base eval → CoT-SFT → eval; prints and writes the before/after table."""
    t_start = time.perf_counter()
    overrides: dict = {"output_dir": str(output / "sft")}
    if quick:
        overrides |= {"data": {"builtin": {"math": 24, "harmful": 24, "benign": 16}}, "max_steps": 4, "save_every": 2}
    cfg = load_config(preset_path("demo_sft"), SFTConfig, overrides)
    n = (20, 12, 20) if quick else (60, 40, 60)
    sets = dev_sets(*n)
    settings = GenerationSettings(max_new_tokens=64 if quick else 160, batch_size=64)

    console.rule("[bold]SafeLadder demo · stage 1: CoT-SFT on SmolLM2-135M")
    console.print("loading the embedded model (first run converts the packaged GGUF to safetensors)…")
    trainer = SFTTrainer(cfg)
    policy = trainer.policy
    before = _eval_cached(output / "eval_base", policy, sets, settings, "evaluating base model")
    console.print(f"base model evaluated ({sum(len(v) for v in sets.values())} dev prompts)")
    trainer.train(resume=True)
    after = _eval_cached(output / "eval_sft", policy, sets, settings, "evaluating after SFT")
    console.print(before_after_table(before, after))
    summary = summary_markdown(before, after)
    (output / "summary.md").write_text("# SafeLadder demo: CoT-SFT\n\n" + summary)
    minutes = (time.perf_counter() - t_start) / 60
    console.print(f"done in {minutes:.1f} min · summary: {output / 'summary.md'} · generations: {output}/eval_*/generations.jsonl")
    return {"before": before, "after": after, "minutes": minutes}
