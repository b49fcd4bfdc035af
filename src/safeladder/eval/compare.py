"""Two runs on one AI-45° chart, with a table of what separates their final checkpoints.

`compare(run_a, run_b)` writes `compare.png` (both trajectories) and `compare.html` (self-contained,
like the run report). The table lists B − A at the final point of each run for the two scores and
every benchmark metric both finals share, with the same conservative interval as the report's
deltas (see `safeladder.eval.report`): [low_B − high_A, high_B − low_A].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from safeladder.eval.report import (
    SCORE_AXES,
    ChartGeometry,
    Point,
    delta,
    delta_cell,
    esc,
    html_page,
    html_table,
    load_points,
    plot_trajectories,
    png_data_uri,
)


@dataclass(frozen=True)
class Comparison:
    png: Path
    html: Path
    labels: tuple[str, str]
    points: tuple[list[Point], list[Point]]
    geometry: ChartGeometry


def run_labels(run_a: Path, run_b: Path) -> tuple[str, str]:
    """Directory names, disambiguated when both runs share one."""
    a, b = run_a.name or str(run_a), run_b.name or str(run_b)
    return (a, b) if a != b else (f"{a} (A)", f"{b} (B)")


def final_deltas(final_a: Point, final_b: Point) -> list[list[Any]]:
    """Rows: what, A, B, B − A — the scores first, then each shared benchmark metric."""
    rows: list[list[Any]] = []
    for axis in SCORE_AXES:
        a, b = final_a.scores[axis], final_b.scores[axis]
        rows.append([f"{axis} score", str(a), str(b), delta_cell(axis, delta(b, a))])
    for name, res_a in final_a.benchmarks.items():
        res_b = final_b.benchmarks.get(name)
        if res_b is None:
            continue
        for metric, a in res_a.metrics.items():
            b = res_b.metrics.get(metric)
            if b is not None:
                rows.append([f"{name} · {metric}", str(a), str(b), delta_cell(metric, delta(b, a))])
    return rows


def _render(labels: tuple[str, str], runs: Sequence[list[Point]], png: Path) -> str:
    (la, lb), (pa, pb) = labels, runs
    title = f"SafeLadder comparison: {la} vs {lb}"
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<img alt="AI-45 chart: both trajectories" src="{png_data_uri(png)}">',
        f"<h2>Final points: {esc(pa[-1].name)} ({esc(la)}) vs {esc(pb[-1].name)} ({esc(lb)})</h2>",
        html_table(["what", la, lb, f"{lb} − {la}"], final_deltas(pa[-1], pb[-1])),
        '<p class="note">Interval of the difference: [low B − high A, high B − low A] (conservative). '
        "Coloured when it excludes 0.</p>",
        "<h2>Trajectories</h2>",
    ]
    for label, points in zip(labels, runs):
        rows = [[p.name, p.model, "" if p.step is None else str(p.step), *(str(p.scores[a]) for a in SCORE_AXES)]
                for p in points]
        body += [f"<h3>{esc(label)}</h3>", html_table(["point", "model", "step", "capability", "safety"], rows)]
    return html_page(title, "\n".join(body))


def compare(
    run_a: str | Path, run_b: str | Path, output_dir: str | Path | None = None,
    eval_dir_a: str | Path | None = None, eval_dir_b: str | Path | None = None,
) -> Comparison:
    """Write compare.png and compare.html (default folder: `<parent of A>/compare-<A>-vs-<B>`)."""
    a, b = Path(run_a), Path(run_b)
    points_a = load_points(Path(eval_dir_a) if eval_dir_a is not None else a / "eval")
    points_b = load_points(Path(eval_dir_b) if eval_dir_b is not None else b / "eval")
    labels = run_labels(a, b)
    out = Path(output_dir) if output_dir is not None else a.parent / f"compare-{a.name}-vs-{b.name}"
    png = out / "compare.png"
    geometry = plot_trajectories(dict(zip(labels, (points_a, points_b))), png, title=f"{labels[0]} vs {labels[1]}")
    page = out / "compare.html"
    page.write_text(_render(labels, (points_a, points_b), png), encoding="utf-8")
    return Comparison(png, page, labels, (points_a, points_b), geometry)
