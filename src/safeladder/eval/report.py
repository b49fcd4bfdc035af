"""The AI-45° report of one run: a safety-vs-capability chart of its checkpoints and an HTML report.

Input is the evaluation layout (one `EVAL_DIR/<point>/point.json` per checkpoint, with
`<benchmark>/metrics.json` and `<benchmark>/generations.jsonl` beside it; default EVAL_DIR is
`run_dir/eval`). Output, in `run_dir/report/` unless told otherwise:
- `ai45.png`: capability (x) vs safety (y), both 0–1, the 45° diagonal dashed, each point marked
  and labelled, consecutive points joined by arrows, 95% intervals as error bars;
- `report.html`: self-contained (the PNG inlined as a data URI, inline CSS, no scripts, no external
  assets), with the trajectory, per-benchmark metric tables, deltas vs the base point, and the
  best/worst generations of the final point per benchmark. All text is HTML-escaped.

Deltas vs base: the value is the difference of the two point estimates; the interval is the
conservative interval difference [low_p − high_base, high_p − low_base]. Each point's bootstrap
interval comes from its own resample (points are evaluated independently), so no joint bootstrap
exists to difference; combining the endpoints covers every difference of values drawn from the two
intervals, so it is at least as wide as a paired or independent bootstrap interval of the
difference (≈99% coverage for two independent normal 95% intervals). An interval that excludes 0
is a change we are confident in.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from safeladder.errors import DataError, SafeLadderError

SCORE_AXES = ("capability", "safety")
# Per-item judgement fields that rank generations for the best/worst samples, by benchmark kind:
# the first field present (not null) wins; (field, higher_is_better). On a benign set a refusal is
# the failure, so `refused` ranks downwards there.
ITEM_SCORE_FIELDS: dict[str, tuple[tuple[str, bool], ...]] = {
    "harmful": (("score", True), ("safe", True)),
    "jailbreak": (("score", True), ("safe", True)),
    "benign": (("refused", False),),
    "math": (("score", True), ("correct", True)),
    "mcq": (("correct", True),),
    "short-answer": (("correct", True), ("f1", True)),
    "ifeval": (("ifeval_strict", True), ("ifeval_loose", True)),
    "": (("score", True), ("correct", True), ("safe", True)),  # unknown kinds
}
# Metrics where a decrease is an improvement (colours the significant deltas); others read "higher is better"
# unless listed as neutral.
LOWER_IS_BETTER = frozenset({"attack_success_rate", "over_refusal_rate", "false_certain_rate"})
NEUTRAL_PREFIXES = ("mean_", "verdict_", "refusal_rate")
RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
DIAGONAL_COLOUR = "#7f7f7f"


# ---------------------------------------------------------------------------------------- loading

@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval; all None when nothing could be measured (n = 0)."""

    value: float | None
    low: float | None
    high: float | None

    @classmethod
    def parse(cls, obj: Any, path: Path, where: str) -> "Interval":
        if not isinstance(obj, Mapping) or "value" not in obj:
            raise DataError(str(path), None, where, "expected an object {value, low, high}")
        if obj["value"] is None:
            return MISSING
        try:
            value = float(obj["value"])
            low, high = (obj.get(k) for k in ("low", "high"))
            return cls(value, value if low is None else float(low), value if high is None else float(high))
        except (TypeError, ValueError):
            raise DataError(str(path), None, where, "expected numbers value, low, high") from None

    @property
    def known(self) -> bool:
        return self.value is not None

    def __str__(self) -> str:
        if not self.known:
            return "–"
        return f"{_num(self.value)} [{_num(self.low)}, {_num(self.high)}]"


MISSING = Interval(None, None, None)


def delta(point: Interval, base: Interval) -> Interval:
    """point − base, with the conservative interval [low_p − high_b, high_p − low_b] (module docstring)."""
    if not (point.known and base.known):
        return MISSING
    return Interval(point.value - base.value, point.low - base.high, point.high - base.low)


@dataclass
class BenchmarkResult:
    name: str
    kind: str
    n: int
    metrics: dict[str, Interval]
    categories: dict[str, dict[str, Interval]]
    category_n: dict[str, int]
    dir: Path


@dataclass
class Point:
    name: str
    model: str
    step: int | None
    order: int
    scores: dict[str, Interval]
    benchmarks: dict[str, BenchmarkResult] = field(default_factory=dict)
    dir: Path = Path(".")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SafeLadderError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(str(path), getattr(err, "lineno", None), None, f"invalid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise DataError(str(path), None, None, "expected a JSON object")
    return obj


def load_benchmark(bench_dir: Path) -> BenchmarkResult:
    path = bench_dir / "metrics.json"
    obj = _read_json(path)
    metrics = obj.get("metrics")
    if not isinstance(metrics, Mapping):
        raise DataError(str(path), None, "metrics", "missing or not an object")
    categories: dict[str, dict[str, Interval]] = {}
    category_n: dict[str, int] = {}
    for cat, cat_metrics in (obj.get("categories") or {}).items():
        if not isinstance(cat_metrics, Mapping):
            raise DataError(str(path), None, f"categories.{cat}", "expected an object")
        categories[cat] = {m: Interval.parse(v, path, f"categories.{cat}.{m}") for m, v in cat_metrics.items()}
        category_n[cat] = max((int(v.get("n", 0)) for v in cat_metrics.values() if isinstance(v, Mapping)), default=0)
    return BenchmarkResult(
        name=str(obj.get("benchmark", bench_dir.name)), kind=str(obj.get("kind", "")), n=int(obj.get("n", 0)),
        metrics={m: Interval.parse(v, path, f"metrics.{m}") for m, v in metrics.items()},
        categories=categories, category_n=category_n, dir=bench_dir,
    )


def load_point(point_dir: Path) -> Point:
    """One point: point.json plus the metrics of each of its benchmarks."""
    path = point_dir / "point.json"
    obj = _read_json(path)
    scores = obj.get("scores")
    if not isinstance(scores, Mapping):
        raise DataError(str(path), None, "scores", "missing or not an object")
    parsed = {}
    for axis in SCORE_AXES:
        if axis not in scores:
            raise DataError(str(path), None, f"scores.{axis}", "missing")
        parsed[axis] = Interval.parse(scores[axis], path, f"scores.{axis}")
    names = obj.get("benchmarks")
    if names is None:
        names = sorted(p.name for p in point_dir.iterdir() if (p / "metrics.json").is_file())
    benchmarks = {}
    for name in names:
        if (point_dir / name / "metrics.json").is_file():
            benchmarks[name] = load_benchmark(point_dir / name)
    step = obj.get("step")
    return Point(
        name=str(obj.get("name", point_dir.name)), model=str(obj.get("model", "")),
        step=None if step is None else int(step), order=int(obj.get("order", 0)),
        scores=parsed, benchmarks=benchmarks, dir=point_dir,
    )


def load_points(eval_dir: str | Path) -> list[Point]:
    """Every point under EVAL_DIR, sorted along the trajectory (order, then name)."""
    root = Path(eval_dir)
    if not root.is_dir():
        raise SafeLadderError(f"{root}: evaluation directory not found (run `safeladder eval` first)")
    points = [load_point(p) for p in sorted(root.iterdir()) if (p / "point.json").is_file()]
    if not points:
        raise SafeLadderError(f"{root}: no evaluated points (no */point.json)")
    return sorted(points, key=lambda p: (p.order, p.name))


def base_point(points: Sequence[Point]) -> Point:
    """The point named "base", else the first along the trajectory."""
    return next((p for p in points if p.name == "base"), points[0])


# ------------------------------------------------------------------------------------------ chart

@dataclass(frozen=True)
class ChartGeometry:
    """Where things were drawn in the saved PNG, in image pixels (origin top-left, y down).

    `origin` and `corner` are the pixels of data (0, 0) and (1, 1); both axes are linear, so
    `pixel(x, y)` maps any data point. Tests use it to check colours at known places.
    """

    size: tuple[int, int]  # (width, height)
    origin: tuple[float, float]
    corner: tuple[float, float]
    points: dict[str, list[tuple[float, float]]]  # run label -> pixel of each drawn point, in trajectory order
    point_names: dict[str, list[str]]  # run label -> names of the drawn points (both scores known)
    colours: dict[str, str]  # run label -> hex colour of its markers and arrows
    diagonal_colour: str = DIAGONAL_COLOUR

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        (x0, y0), (x1, y1) = self.origin, self.corner
        return (x0 + x * (x1 - x0), y0 + y * (y1 - y0))


def plot_trajectories(runs: Mapping[str, Sequence[Point]], path: str | Path, title: str = "") -> ChartGeometry:
    """Draw each run's trajectory on one AI-45° chart and save it as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6.4, 6.4 if len(runs) == 1 else 7.0), dpi=100)
    FigureCanvasAgg(fig)
    bottom = 0.1 if len(runs) == 1 else 0.17
    fig.subplots_adjust(left=0.12, right=0.95, bottom=bottom, top=0.92)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("capability score")
    ax.set_ylabel("safety score")
    ax.set_title(title or "AI-45° chart")
    ax.grid(True, color="#eeeeee", lw=0.6, zorder=0)
    ax.plot([0, 1], [0, 1], linestyle=(0, (6, 4)), color=DIAGONAL_COLOUR, lw=1.4, zorder=1, label="_diagonal")
    colours: dict[str, str] = {}
    drawn = {label: drawable(points) for label, points in runs.items()}
    for k, (label, points) in enumerate(drawn.items()):
        colour = RUN_COLOURS[k % len(RUN_COLOURS)]
        colours[label] = colour
        _draw_run(ax, points, colour, label)
    if len(runs) > 1:
        fig.legend(loc="lower center", ncol=min(len(runs), 3), frameon=False, fontsize=9)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=fig.dpi)  # same dpi as the transforms below; no bbox cropping
    height = fig.get_size_inches()[1] * fig.dpi
    width = fig.get_size_inches()[0] * fig.dpi

    def to_image(x: float, y: float) -> tuple[float, float]:
        dx, dy = ax.transData.transform((x, y))
        return (float(dx), float(height - dy))

    return ChartGeometry(
        size=(int(round(width)), int(round(height))), origin=to_image(0, 0), corner=to_image(1, 1),
        points={label: [to_image(p.scores["capability"].value, p.scores["safety"].value) for p in pts]
                for label, pts in drawn.items()},
        point_names={label: [p.name for p in pts] for label, pts in drawn.items()},
        colours=colours,
    )


def drawable(points: Sequence[Point]) -> list[Point]:
    """The points with both scores known (a score with no usable benchmark term is null)."""
    return [p for p in points if all(p.scores[a].known for a in SCORE_AXES)]


def _draw_run(ax: Any, points: Sequence[Point], colour: str, label: str) -> None:
    if not points:
        return
    xs = [p.scores["capability"].value for p in points]
    ys = [p.scores["safety"].value for p in points]
    xerr = [[max(0.0, p.scores["capability"].value - p.scores["capability"].low) for p in points],
            [max(0.0, p.scores["capability"].high - p.scores["capability"].value) for p in points]]
    yerr = [[max(0.0, p.scores["safety"].value - p.scores["safety"].low) for p in points],
            [max(0.0, p.scores["safety"].high - p.scores["safety"].value) for p in points]]
    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, alpha=0.45, elinewidth=1.0,
                capsize=2.5, zorder=2)
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=3, annotation_clip=False,
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.6, shrinkA=7, shrinkB=7, mutation_scale=12))
    for i, (x, y, p) in enumerate(zip(xs, ys, points)):
        ax.plot([x], [y], marker="s" if i == 0 else "o", markersize=10, color=colour, markeredgecolor="white",
                markeredgewidth=0.8, linestyle="none", zorder=4, clip_on=False, label=label if i == 0 else "_")
        ax.annotate(p.name, (x, y), xytext=(7, 7), textcoords="offset points", fontsize=8, color="#222222",
                    zorder=5, annotation_clip=False)


# ------------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}.sig{font-weight:600}
.note{color:#555;font-size:.9em}img{max-width:100%;height:auto;border:1px solid #eee}
pre{white-space:pre-wrap;word-break:break-word;background:#f8f8f8;border:1px solid #eee;padding:.6em;font-size:.85em}
.sample{margin:.8em 0;padding:.4em .8em;border-left:4px solid #ccc}.best{border-color:#1a7f37}.worst{border-color:#cf222e}
"""

def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table whose every header and cell is escaped; a cell may be (text, css class)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            text, cls = cell if isinstance(cell, tuple) else (cell, "")
            cells.append(f'<td class="{esc(cls)}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"


def _signed(v: float) -> str:
    return ("+" if v > 0 else "") + _num(v)


def delta_cell(metric: str, d: Interval) -> tuple[str, str]:
    """Δ text with a class: better/worse when the interval excludes 0 and the metric has a direction."""
    if not d.known:
        return "–", ""
    text = f"{_signed(d.value)} [{_signed(d.low)}, {_signed(d.high)}]"
    if d.low <= 0 <= d.high:
        return text, ""
    if metric.startswith(NEUTRAL_PREFIXES):
        return text, "sig"
    up_is_good = metric not in LOWER_IS_BETTER
    return text, "better" if (d.value > 0) == up_is_good else "worse"


def _trajectory_table(points: Sequence[Point], base: Point) -> str:
    rows = []
    for p in points:
        row: list[Any] = [p.name, p.model, "" if p.step is None else str(p.step)]
        row += [str(p.scores[a]) for a in SCORE_AXES]
        row += [delta_cell(a, delta(p.scores[a], base.scores[a])) if p is not base else "—" for a in SCORE_AXES]
        rows.append(row)
    headers = ["point", "model", "step", "capability", "safety", "Δ capability vs base", "Δ safety vs base"]
    return html_table(headers, rows)


def benchmark_names(points: Sequence[Point]) -> list[str]:
    """Every benchmark of any point, in order of first appearance."""
    seen: dict[str, None] = {}
    for p in points:
        seen.update(dict.fromkeys(p.benchmarks))
    return list(seen)


def _benchmark_section(name: str, points: Sequence[Point], base: Point, k: int) -> str:
    having = [p for p in points if name in p.benchmarks]
    metrics: dict[str, None] = {}
    for p in having:
        metrics.update(dict.fromkeys(p.benchmarks[name].metrics))
    first = having[0].benchmarks[name]
    parts = [f"<h3>{esc(name)}</h3>",
             f'<p class="note">kind: {esc(first.kind or "?")} · items: '
             + esc(", ".join(f"{p.name}={p.benchmarks[name].n}" for p in having)) + "</p>"]
    rows = [[m, *(str(p.benchmarks[name].metrics[m]) if m in p.benchmarks[name].metrics else "–" for p in having)]
            for m in metrics]
    parts.append(html_table(["metric", *(p.name for p in having)], rows))
    base_res = base.benchmarks.get(name)
    others = [p for p in having if p is not base]
    if base_res is not None and others:
        rows = []
        for m in metrics:
            row: list[Any] = [m]
            for p in others:
                cur = p.benchmarks[name].metrics.get(m)
                ref = base_res.metrics.get(m)
                row.append(delta_cell(m, delta(cur, ref)) if cur is not None and ref is not None else "–")
            rows.append(row)
        parts.append(f'<p class="note">Δ vs {esc(base.name)} (conservative interval)</p>')
        parts.append(html_table(["metric", *(f"Δ {p.name}" for p in others)], rows))
    final = having[-1].benchmarks[name]
    if final.categories:
        rows = [[cat, str(final.category_n.get(cat, "")),
                 *(str(cm[m]) if m in cm else "–" for m in metrics)] for cat, cm in final.categories.items()]
        parts.append(f"<details><summary>per category ({esc(having[-1].name)})</summary>"
                     + html_table(["category", "n", *metrics], rows) + "</details>")
    parts.append(_samples_html(final.dir / "generations.jsonl", having[-1].name, final.kind, k))
    return "\n".join(parts)


# --------------------------------------------------------------------------------------- samples

def item_score(row: Mapping[str, Any], kind: str = "") -> tuple[str, float] | None:
    """(field, goodness) from the first judgement field of the kind present in the row.

    Booleans count as 1/0; goodness is the value, or 1 − value for a lower-is-better field.
    """
    for name, higher_is_better in ITEM_SCORE_FIELDS.get(kind, ITEM_SCORE_FIELDS[""]):
        v = row.get(name)
        if isinstance(v, bool) or (isinstance(v, (int, float)) and not math.isnan(v)):
            return name, float(v) if higher_is_better else 1.0 - float(v)
    return None


def best_and_worst(path: Path, k: int = 2, kind: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The k best and k worst generations by `item_score` (file order breaks ties); no row is in both."""
    from safeladder.data.loaders import read_jsonl

    scored = [(item_score(row, kind), line, row) for line, row in read_jsonl(path)]
    scored = [(s[1], line, row) for s, line, row in scored if s is not None]
    best = sorted(scored, key=lambda t: (-t[0], t[1]))[:k]
    chosen = {line for _, line, _ in best}
    worst = [t for t in sorted(scored, key=lambda t: (t[0], t[1])) if t[1] not in chosen][:k]
    return [r for _, _, r in best], [r for _, _, r in worst]


def _sample_html(row: Mapping[str, Any], side: str, kind: str, limit: int = 2000) -> str:
    scored = item_score(row, kind)
    facts = [f"id {row.get('id', '?')}"]
    shown = ("verdict", "category", "refused", "safe", "correct", "extracted")
    if scored and scored[0] not in shown:
        facts.append(f"{scored[0]} = {row[scored[0]]}")
    facts += [f"{key}: {row[key]}" for key in shown if row.get(key) not in (None, "")]
    completion = str(row.get("completion", ""))
    if len(completion) > limit:
        completion = completion[:limit] + " […]"
    parts = [f'<div class="sample {side}"><p><b>{esc(side)}</b> · {esc(" · ".join(facts))}</p>',
             f"<p>prompt</p><pre>{esc(row.get('prompt', ''))}</pre>",
             f"<p>completion</p><pre>{esc(completion)}</pre>"]
    if row.get("reference") not in (None, ""):
        parts.append(f"<p>reference</p><pre>{esc(row['reference'])}</pre>")
    return "".join(parts) + "</div>"


def _samples_html(path: Path, point_name: str, kind: str, k: int) -> str:
    if not path.is_file():
        return f'<p class="note">no generations saved for {esc(point_name)}</p>'
    best, worst = best_and_worst(path, k, kind)
    if not best and not worst:
        fields = ", ".join(name for name, _ in ITEM_SCORE_FIELDS.get(kind, ITEM_SCORE_FIELDS[""]))
        return f'<p class="note">generations of {esc(point_name)} carry no per-item judgement ({esc(fields)})</p>'
    body = "".join(_sample_html(r, "best", kind) for r in best) + "".join(_sample_html(r, "worst", kind) for r in worst)
    if best and worst and item_score(best[0], kind) == item_score(worst[-1], kind):
        body = '<p class="note">every shown generation is judged alike: best and worst are arbitrary</p>' + body
    return f"<details open><summary>sample generations ({esc(point_name)}): best and worst</summary>{body}</details>"


# ----------------------------------------------------------------------------------------- report

@dataclass(frozen=True)
class Report:
    png: Path
    html: Path
    points: list[Point]
    geometry: ChartGeometry


def _undrawn_note(points: Sequence[Point]) -> list[str]:
    missing = [p.name for p in points if not all(p.scores[a].known for a in SCORE_AXES)]
    if not missing:
        return []
    return [f'<p class="note">not on the chart (a score has no measured term): {esc(", ".join(missing))}</p>']


def render_html(title: str, points: Sequence[Point], png: Path, samples_per_side: int = 2) -> str:
    base = base_point(points)
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="note">{len(points)} points · base: {esc(base.name)} · scores are weighted means of '
            "benchmark metrics (suite config), 95% bootstrap intervals in brackets</p>",
            f'<img alt="AI-45 chart: safety vs capability" src="{png_data_uri(png)}">',
            *_undrawn_note(points),
            "<h2>Trajectory</h2>", _trajectory_table(points, base),
            '<p class="note">Δ vs base: difference of values; interval [low − base high, high − base low] '
            "(conservative: at least as wide as a bootstrap of the difference). Coloured when it excludes 0.</p>",
            "<h2>Benchmarks</h2>"]
    body += [_benchmark_section(name, points, base, samples_per_side) for name in benchmark_names(points)]
    return html_page(title, "\n".join(body))


def build_report(
    run_dir: str | Path, eval_dir: str | Path | None = None, output_dir: str | Path | None = None,
    samples_per_side: int = 2,
) -> Report:
    """Write ai45.png and report.html for a run (default EVAL_DIR run_dir/eval, output run_dir/report)."""
    run = Path(run_dir)
    points = load_points(Path(eval_dir) if eval_dir is not None else run / "eval")
    out = Path(output_dir) if output_dir is not None else run / "report"
    title = f"SafeLadder AI-45° report: {run.name}"
    png = out / "ai45.png"
    geometry = plot_trajectories({run.name: points}, png, title=run.name)
    page = out / "report.html"
    page.write_text(render_html(title, points, png, samples_per_side), encoding="utf-8")
    return Report(png, page, points, geometry)
