"""The README's main job: the whole SafeLadder on the embedded SmolLM2-135M, on a CPU, offline.

It is the `ladder_demo` preset (or `ladder_quick` for a smoke run) run through
`safeladder.ladder.run_ladder`, followed by a before/after table of the base model against the
last stage, and the path of the AI-45° chart. Resumable: rerun the same command after a kill.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from safeladder.ladder import HEADLINES, _fmt, load_ladder, run_ladder

console = Console()


def before_after_rows(eval_dir: Path) -> list[tuple[str, str, str, str]]:
    """(benchmark · metric, base, final, Δ) for the headline metrics of the first and last points."""
    from safeladder.eval.report import load_points

    points = load_points(eval_dir)
    if len(points) < 2:
        return []
    base, final = points[0], points[-1]
    rows = []
    for bench, res in base.benchmarks.items():
        after = final.benchmarks.get(bench)
        for metric in HEADLINES:
            b, a = res.metrics.get(metric), after.metrics.get(metric) if after else None
            if b is None or a is None or b.value is None or a.value is None:
                continue
            scale, unit = (1, "") if metric.startswith("mean_tokens") else (100, " pts")
            rows.append((f"{bench} · {metric}", _fmt(metric, b), _fmt(metric, a), f"{scale * (a.value - b.value):+.1f}{unit}"))
    return rows


def run_demo(output: Path = Path("runs/demo"), quick: bool = False) -> dict[str, Any]:
    cfg = load_ladder("ladder_quick" if quick else "ladder_demo", {"output_dir": str(output)})
    console.rule("[bold]SafeLadder demo · SmolLM2-135M · CoT-SFT → M³-RL → Safe-and-Efficient RL")
    result = run_ladder(cfg)
    table = Table(title=f"base → after the last stage ({cfg.stages[-1].name}); 95% intervals")
    for col in ("benchmark · metric", "base", "final", "Δ"):
        table.add_column(col, justify="left" if col.startswith("bench") else "right")
    for row in before_after_rows(Path(cfg.output_dir) / "eval"):
        table.add_row(*row)
    console.print(table)
    console.print(f"done in {result['minutes']:.1f} min · chart: {result.get('chart')} · report: {result.get('html')} · "
                  f"summary: {result.get('summary')}")
    return result
