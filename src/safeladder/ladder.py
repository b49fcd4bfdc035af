"""`safeladder ladder`: CoT-SFT → M³-RL → Safe-and-Efficient RL → Deliberative Search RL, evaluated.

Each stage starts from the previous stage's exported model (`<stage>/final`, a plain safetensors
HF directory), runs to completion (resuming from its own checkpoints after a kill), and writes
`<stage>/stage.json` when done; a rerun skips finished stages. The evaluation suite runs on the
base model and after every stage (cached per model and benchmark), and the AI-45° report and
`summary.md` are written at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.console import Console

from safeladder.algorithms.registry import Registry
from safeladder.config import _merge, load_config
from safeladder.configs import preset_path
from safeladder.paths import write_json

console = Console()
STAGE_DONE = "stage.json"


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str  # STAGES: sft, rl
    preset: str | None = None  # a built-in config (configs/<preset>.yaml) the overrides apply to
    config: dict[str, Any] = Field(default_factory=dict)  # stage config (overrides the preset)


class LadderEval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suite: str | None = "eval_demo"  # None: no evaluation
    overrides: dict[str, Any] = Field(default_factory=dict)


class LadderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "smollm2-135m"  # the base model every stage climbs from
    output_dir: str = "runs/ladder"
    eval: LadderEval = Field(default_factory=LadderEval)
    stages: list[StageSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "LadderConfig":
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return self


# (stage config dict, model to start from, stage dir, resume) -> exported final model dir
StageRunner = Callable[[dict[str, Any], str, Path, bool], Path]
STAGES: Registry[StageRunner] = Registry("ladder stage kind")


def _with_model(cfg: dict[str, Any], model: str, out: Path) -> dict[str, Any]:
    spec = dict(cfg.get("model") or {})
    return {**cfg, "model": {**spec, "name": model}, "output_dir": str(out)}


@STAGES.register("sft")
def _run_sft(cfg: dict[str, Any], model: str, out: Path, resume: bool) -> Path:
    from safeladder.train.sft import SFTConfig, run_sft

    return run_sft(SFTConfig.model_validate(_with_model(cfg, model, out)), resume=resume)


@STAGES.register("rl")
def _run_rl(cfg: dict[str, Any], model: str, out: Path, resume: bool) -> Path:
    from safeladder.train.rl import run_rl
    from safeladder.train.rl_config import RLConfig

    return run_rl(RLConfig.model_validate(_with_model(cfg, model, out)), resume=resume)


def stage_config(stage: StageSpec) -> dict[str, Any]:
    """The preset (if any) with the stage's overrides merged in."""
    base: dict[str, Any] = {}
    if stage.preset:
        import yaml

        base = yaml.safe_load(preset_path(stage.preset).read_text()) or {}
    return _merge(base, stage.config)


def _stage_models() -> dict[str, type[BaseModel]]:
    from safeladder.train.rl_config import RLConfig
    from safeladder.train.sft import SFTConfig

    return {"sft": SFTConfig, "rl": RLConfig}


def load_ladder(path: str | Path, overrides: dict[str, Any] | None = None) -> LadderConfig:
    """Read a ladder config and validate every stage's config up front (before hours of training)."""
    from pydantic import ValidationError

    from safeladder.errors import ConfigError

    p = Path(path)
    if not p.is_file() and p.suffix not in (".yaml", ".yml"):
        p = preset_path(str(path))
    cfg = load_config(p, LadderConfig, overrides)
    models = _stage_models()
    for stage in cfg.stages:
        STAGES.get(stage.kind)  # unknown kinds fail before any work starts
        if stage.kind in models:
            try:
                models[stage.kind].model_validate(_with_model(stage_config(stage), cfg.model, Path(cfg.output_dir)))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ConfigError(f"{p}: stages.{stage.name}.config: {problems}") from None
    return cfg


def _evaluate(cfg: LadderConfig, model: str, run: Path, name: str, order: int) -> None:
    if cfg.eval.suite is None:
        return
    from safeladder.eval.runner import evaluate
    from safeladder.eval.suite import load_suite

    suite = load_suite(cfg.eval.suite, cfg.eval.overrides or None)
    evaluate(model, suite, run / "eval", name, order=order)


def run_ladder(cfg: LadderConfig, resume: bool = True, only: str | None = None) -> dict[str, Any]:
    """Climb every stage (or just `only`); returns {stage: final dir} and the report paths."""
    run = Path(cfg.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "ladder.json").write_text(cfg.model_dump_json(indent=2))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    model = cfg.model
    if only is None:
        console.rule("[bold]base model")
        t = time.perf_counter()
        _evaluate(cfg, model, run, "base", 0)
        timings["eval base"] = time.perf_counter() - t
    finals: dict[str, str] = {}
    for i, stage in enumerate(cfg.stages, start=1):
        sdir = run / f"{i}-{stage.name}"
        done = sdir / STAGE_DONE
        if done.is_file() and only != stage.name:
            model = json.loads(done.read_text())["final"]
            finals[stage.name] = model
            console.print(f"[dim]stage {i} {stage.name}: done earlier → {model}[/]")
            continue
        if only is not None and stage.name != only:
            raise SystemExit(f"stage {stage.name!r} must finish before {only!r}; run the ladder without --only")
        console.rule(f"[bold]stage {i}/{len(cfg.stages)}: {stage.name} ({stage.kind})")
        t = time.perf_counter()
        final = STAGES.get(stage.kind)(stage_config(stage), model, sdir, resume)
        timings[stage.name] = time.perf_counter() - t
        t = time.perf_counter()
        _evaluate(cfg, str(final), run, f"{i}-{stage.name}", i)
        timings[f"eval {stage.name}"] = time.perf_counter() - t
        final = Path(final).resolve()  # absolute, so a rerun from another directory still finds it
        write_json(done, {"final": str(final), "seconds": timings[stage.name]})
        model = str(final)
        finals[stage.name] = model
        if only is not None:
            break
    out: dict[str, Any] = {"finals": finals, "timings": timings, "minutes": (time.perf_counter() - t0) / 60}
    if cfg.eval.suite is not None and only is None:
        from safeladder.eval.report import build_report

        report = build_report(run)
        out["chart"], out["html"] = report.png, report.html
        out["summary"] = write_summary(run)
    return out


def write_summary(run: Path) -> Path:
    """run/summary.md: every benchmark's headline metrics, base vs each stage."""
    from safeladder.eval.report import load_points

    points = load_points(run / "eval")
    lines = ["# SafeLadder run summary", ""]
    if not points:
        lines.append("(no evaluations)")
    else:
        head = "| benchmark · metric | " + " | ".join(p.name for p in points) + " |"
        lines += [head, "|---" * (len(points) + 1) + "|"]
        for bench, metric in _headline_metrics(points):
            cells = []
            for p in points:
                m = p.benchmarks.get(bench)
                v = m.metrics.get(metric) if m else None
                cells.append("–" if v is None or v.value is None else _fmt(metric, v))
            lines.append(f"| {bench} · {metric} | " + " | ".join(cells) + " |")
        lines += ["", "Scores (AI-45° axes):", ""]
        for p in points:
            cap, saf = p.scores.get("capability"), p.scores.get("safety")
            lines.append(f"- {p.name}: capability {_fmt('score', cap)} · safety {_fmt('score', saf)}")
    path = run / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


HEADLINES = ("safe_rate", "attack_success_rate", "over_refusal_rate", "reasoning_consistency_rate", "accuracy", "ifeval_loose", "false_certain_rate", "mean_tokens")


def _headline_metrics(points: list) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for p in points:
        for bench, res in p.benchmarks.items():
            for metric in HEADLINES:
                if metric in res.metrics and (bench, metric) not in seen:
                    seen.append((bench, metric))
    return seen


def _fmt(metric: str, v: Any) -> str:
    if v is None or getattr(v, "value", None) is None:
        return "–"
    if metric.startswith("mean_tokens"):
        return f"{v.value:.0f}"
    lo, hi = getattr(v, "low", None), getattr(v, "high", None)
    ci = f" [{100 * lo:.0f}–{100 * hi:.0f}]" if lo is not None and hi is not None else ""
    return f"{100 * v.value:.1f}%{ci}"
