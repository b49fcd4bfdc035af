"""Run an evaluation suite on a model, or on every checkpoint of a run, resumably.

Layout (shared with the report, see docs/eval.md): `EVAL_DIR/<point>/<benchmark>/generations.jsonl`
(one judged row per item) and `metrics.json`, then `EVAL_DIR/<point>/point.json` with the scores.

Caching. Each benchmark has two keys:
  generation key  sha256 of {model fingerprint, the rendered prompts (ids + chats), the system
                  prompt, the generation settings}: same key, same completions;
  cache key       sha256 of {generation key, kind, judge, judge options, judge version}.
A benchmark whose metrics.json carries the current cache key is skipped; one whose generations
carry the current generation key is only re-judged (e.g. after switching the judge). The model
fingerprint is a content hash (sha256) of every file in the model directory (for a LoRA adapter,
also of its base), memoised per (path, size, mtime) within a process; hashing runs at disk speed,
about a second per 0.5 GB. The model is loaded only if some benchmark needs generating, so a
fully cached rerun loads nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from safeladder.data.loaders import read_jsonl, write_jsonl
from safeladder.data.sample import Sample
from safeladder.errors import SafeLadderError
from safeladder.eval.benchmarks import Benchmark
from safeladder.eval.metrics import RATE_METRICS
from safeladder.eval.scores import compute_scores
from safeladder.eval.suite import BenchmarkConfig, SuiteConfig
from safeladder.format import parse_response
from safeladder.inference.generate import GenerationSettings, generate
from safeladder.models.loader import ModelSpec, Policy, load_policy, resolve_model_dir
from safeladder.paths import write_json
from safeladder.train.checkpoint import CKPT_RE, STATE_FILE
from safeladder.train.progress import progress_bar

__all__ = [
    "EvalPoint", "PointResult", "cache_key", "evaluate", "evaluate_run", "find_points", "generation_key",
    "model_fingerprint", "points_table", "run_eval",
]

GENERATION_VERSION = 1  # bump when how completions are produced changes: cached generations are redone
JUDGE_VERSION = 9  # bump when judging or metric definitions change: cached verdicts are redone
# (2: the safety judge calls an answer that copies the reasoning an Illogical completion;
#  3: also one that says the request back or deliberates, unless it has harmful content;
#  4: harmful and benign benchmarks add reasoning_consistency_rate;
#  5: a promise of the requested harm is Unsafe; 6: response_harmful head with hand-labelled model answers;
#  7: on a refusal, harmful content needs the cross-encoder head to agree;
#  8: a refusal that gives its reason in the reasoning's voice is a refusal, not deliberation;
#  9: promises that defer the answer to more input ("I can help. Just paste the text.") are a non-answer)
GENERATIONS = "generations.jsonl"
METRICS = "metrics.json"
GEN_KEY_FILE = ".generation_key"
POINT = "point.json"

# --------------------------------------------------------------------------- fingerprints and keys

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def _dir_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.name}:{_file_sha256(f)}\n".encode())
    adapter = path / "adapter_config.json"
    if adapter.is_file():  # a LoRA adapter means nothing without its base
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base:
            h.update(f"base:{model_fingerprint(str(base))}\n".encode())
    return h.hexdigest()


def _policy_fingerprint(policy: Policy) -> str:
    """For an in-memory model: a hash of its weights (names, shapes, dtypes, bytes) and chat template."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(policy.model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    template = getattr(policy.tokenizer, "chat_template", None)
    if isinstance(template, str):
        h.update(template.encode())
    return h.hexdigest()


def model_fingerprint(model: Any) -> str:
    """A content hash identifying a model: its directory's files, or an in-memory policy's weights."""
    if isinstance(model, Policy):
        return _policy_fingerprint(model)
    name = model.name if isinstance(model, ModelSpec) else str(model)
    extra = f":{model.dtype}" if isinstance(model, ModelSpec) else ""
    path = resolve_model_dir(name)
    if path is None:  # the tiny test model: built from code with a fixed seed
        return hashlib.sha256(f"tiny-model-v1{extra}".encode()).hexdigest()
    return hashlib.sha256(f"{_dir_fingerprint(path)}{extra}".encode()).hexdigest()


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def generation_key(fingerprint: str, items: Sequence[Sample], chats: Sequence[Any], system_prompt: str | None,
                   settings: GenerationSettings) -> str:
    """Same key, same completions: the model, the exact prompts, and how they are decoded."""
    prompts = _sha([[s.id, c] for s, c in zip(items, chats)])
    return _sha({"v": GENERATION_VERSION, "model": fingerprint, "prompts": prompts, "system": system_prompt,
                 "generation": asdict(settings)})


def cache_key(gen_key: str, cfg: BenchmarkConfig) -> str:
    """Same key, same judged rows and metrics."""
    return _sha({"v": JUDGE_VERSION, "generation": gen_key, "kind": cfg.kind, "judge": cfg.judge_name,
                 "judge_options": cfg.judge_options})


# --------------------------------------------------------------------------- files

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _cached_metrics(bdir: Path, key: str) -> dict[str, Any] | None:
    data = _read_json(bdir / METRICS)
    if isinstance(data, dict) and data.get("cache_key") == key and (bdir / GENERATIONS).is_file():
        return data
    return None


_BASE_FIELDS = ("id", "prompt", "completion", "answer", "reference", "category", "n_tokens", "think_tokens",
                "answer_tokens", "truncated", "format_ok")


def _cached_generations(bdir: Path, gen_key: str, items: Sequence[Sample]) -> list[dict[str, Any]] | None:
    try:
        if (bdir / GEN_KEY_FILE).read_text().strip() != gen_key:
            return None
        rows = [row for _, row in read_jsonl(bdir / GENERATIONS)]
    except (OSError, SafeLadderError):
        return None
    if [r.get("id") for r in rows] != [s.id for s in items]:
        return None
    return [{k: r.get(k) for k in _BASE_FIELDS} for r in rows]


# --------------------------------------------------------------------------- generation

def _count_tokens(tokenizer: Any, text: str | None) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def _base_rows(items: Sequence[Sample], chats: Sequence[list[dict[str, str]]], gens: Sequence[Any], tokenizer: Any) -> list[dict[str, Any]]:
    rows = []
    for s, chat, g in zip(items, chats, gens):
        parsed = parse_response(g.completion)
        rows.append({
            "id": s.id, "prompt": chat[-1]["content"], "completion": g.completion, "answer": parsed.answer,
            "reference": s.reference, "category": s.metadata.get("category"), "n_tokens": g.n_tokens,
            "think_tokens": _count_tokens(tokenizer, parsed.think), "answer_tokens": _count_tokens(tokenizer, parsed.answer),
            "truncated": g.truncated, "format_ok": parsed.well_formed,
        })
    return rows


# --------------------------------------------------------------------------- one point

@dataclass
class PointResult:
    name: str
    model: str
    step: int | None
    order: int
    dir: Path
    metrics: dict[str, dict[str, Any]]  # benchmark -> metrics.json content
    scores: dict[str, dict[str, Any]]
    cached: list[str] = field(default_factory=list)  # benchmarks served from cache (not re-judged)
    generated: list[str] = field(default_factory=list)  # benchmarks whose completions were generated now


class _LazyPolicy:
    """Load the model on first need only, so fully cached points never load it."""

    def __init__(self, model: Any):
        self.model = model
        self._policy: Policy | None = model if isinstance(model, Policy) else None

    def get(self) -> Policy:
        if self._policy is None:
            self._policy = load_policy(self.model if isinstance(self.model, ModelSpec) else str(self.model))
        return self._policy


def _model_label(model: Any) -> str:
    if isinstance(model, Policy):
        return model.spec.name
    return model.name if isinstance(model, ModelSpec) else str(model)


def evaluate(
    model: Any, suite: SuiteConfig, out_dir: str | Path, point_name: str = "base", *,
    step: int | None = None, order: int = 0, quiet: bool = False,
    on_benchmark: Callable[[str, dict[str, Any]], None] | None = None,
) -> PointResult:
    """Evaluate one model (a name/dir, a ModelSpec or a loaded Policy) on every benchmark of `suite`.

    Writes `out_dir/point_name/<benchmark>/{generations.jsonl,metrics.json}` and `point.json`;
    benchmarks already done with the same cache key are skipped.
    """
    point_dir = Path(out_dir) / point_name
    fingerprint = model_fingerprint(model)
    lazy = _LazyPolicy(model)
    result = PointResult(point_name, _model_label(model), step, order, point_dir, {}, {})
    bar = progress_bar(disable=quiet)
    with bar:
        plans = [_plan(cfg, Benchmark(cfg, suite.limited(cfg)), suite, point_dir, fingerprint) for cfg in suite.benchmarks]
        ready = _generate_together(plans, lazy, bar, point_name)
        for plan in plans:
            name = plan.bench.cfg.name
            task = bar.add_task(f"{point_name} · {name}", total=len(plan.items), info="")
            result.metrics[name] = _run_benchmark(plan, lazy, result, lambda n, t=task: bar.advance(t, n), ready.get(name))
            bar.update(task, completed=len(plan.items), info=_headline(result.metrics[name]))
            if on_benchmark:
                on_benchmark(name, result.metrics[name])
    result.scores = compute_scores(suite.scores, result.metrics)
    write_json(point_dir / POINT, {
        "name": point_name, "model": result.model, "step": step, "order": order, "scores": result.scores,
        "benchmarks": [b.name for b in suite.benchmarks],
    })
    return result


@dataclass
class _Plan:
    """One benchmark at one point: its prompts, cache keys and whatever the cache already holds."""

    bench: Benchmark
    items: list[Sample]
    chats: list[Any]
    settings: GenerationSettings
    bdir: Path
    gen_key: str
    key: str
    metrics: dict[str, Any] | None  # cached metrics (the benchmark is done)
    rows: list[dict[str, Any]] | None  # cached generations (only judging is left)

    @property
    def needs_generation(self) -> bool:
        return bool(self.items) and self.metrics is None and self.rows is None


def _plan(cfg: BenchmarkConfig, bench: Benchmark, suite: SuiteConfig, point_dir: Path, fingerprint: str) -> _Plan:
    items = bench.items()
    chats = [bench.chat(s) for s in items]
    settings = cfg.settings(suite.generation)
    bdir = point_dir / cfg.name
    gen_key = generation_key(fingerprint, items, chats, cfg.system_prompt, settings)
    key = cache_key(gen_key, cfg)
    metrics = _cached_metrics(bdir, key)
    rows = None if metrics is not None else _cached_generations(bdir, gen_key, items)
    return _Plan(bench, items, chats, settings, bdir, gen_key, key, metrics, rows)


def _generate_together(plans: list[_Plan], lazy: _LazyPolicy, bar: Any, point_name: str) -> dict[str, list[Any]]:
    """Generate for all benchmarks that share generation settings in one batched call.

    A CPU decodes many rows per step for little more than the cost of a few, so three 50-prompt
    benchmarks run faster as one 150-row batch than one after another. Returns benchmark name →
    generations for the benchmarks generated here; the others go through `_run_benchmark` alone.
    """
    groups: dict[tuple[Any, ...], list[_Plan]] = {}
    for plan in plans:
        if plan.needs_generation:
            groups.setdefault((plan.settings, plan.bench.cfg.system_prompt), []).append(plan)
    out: dict[str, list[Any]] = {}
    for (settings, system_prompt), group in groups.items():
        if len(group) < 2:
            continue
        names = [p.bench.cfg.name for p in group]
        chats = [c for p in group for c in p.chats]
        task = bar.add_task(f"{point_name} · generating ({', '.join(names)})", total=len(chats), info="")
        policy = lazy.get()
        gens = generate(policy.model, policy.tokenizer, chats, settings, system_prompt=system_prompt,
                        on_batch=lambda n, t=task: bar.advance(t, n))
        start = 0
        for p in group:
            out[p.bench.cfg.name], start = gens[start : start + len(p.items)], start + len(p.items)
    return out


def _run_benchmark(plan: _Plan, lazy: _LazyPolicy, result: PointResult, advance: Callable[[int], None],
                   generated: list[Any] | None = None) -> dict[str, Any]:
    """Judge and summarise one benchmark, generating first unless cached or `generated` is given."""
    bench, items, bdir = plan.bench, plan.items, plan.bdir
    cfg = bench.cfg
    if plan.metrics is not None:
        result.cached.append(cfg.name)
        return plan.metrics
    rows = plan.rows
    if rows is None:
        policy = lazy.get()
        if generated is not None:
            gens = generated
            advance(len(items))
        else:
            gens = generate(policy.model, policy.tokenizer, plan.chats, plan.settings, system_prompt=cfg.system_prompt,
                            on_batch=advance)
        rows = _base_rows(items, plan.chats, gens, policy.tokenizer)
        (bdir / GEN_KEY_FILE).unlink(missing_ok=True)  # never pair new generations with an old key
        write_jsonl(bdir / GENERATIONS, rows)  # saved before judging: a judge failure never costs the generations
        (bdir / GEN_KEY_FILE).write_text(plan.gen_key)
        result.generated.append(cfg.name)
    judged = [row | j for row, j in zip(rows, bench.judge(items, [r["completion"] for r in rows]))]
    write_jsonl(bdir / GENERATIONS, judged)
    metrics = {
        "benchmark": cfg.name, "kind": cfg.kind, "n": len(items), "cache_key": plan.key, "model": result.model,
        "judge": bench.judge_name, "generation": asdict(plan.settings), **bench.summarise(judged),
    }
    write_json(bdir / METRICS, metrics)  # written last: its presence marks the benchmark done
    return metrics


def _headline(metrics: dict[str, Any]) -> str:
    for name, m in metrics.get("metrics", {}).items():
        if m.get("value") is not None and not name.startswith(("mean_", "format_")):
            return f"{name} {m['value']:.2f} [{m['low']:.2f}–{m['high']:.2f}]"
    return ""


# --------------------------------------------------------------------------- a run's trajectory

@dataclass(frozen=True)
class EvalPoint:
    name: str
    model: str  # what load_policy loads: a base model name/dir or a checkpoint's model/ dir
    step: int | None
    order: int


def _step_of(ckpt: Path) -> int:
    state = _read_json(ckpt / STATE_FILE)
    if isinstance(state, dict) and isinstance(state.get("step"), int):
        return state["step"]
    return int(CKPT_RE.match(ckpt.name).group(1))  # type: ignore[union-attr]


def _checkpoints(run_dir: Path, skip: Path | None) -> list[Path]:
    found = []
    for path in run_dir.rglob("ckpt-*"):
        if skip is not None and skip in path.parents:
            continue
        if any(part.startswith(".") for part in path.relative_to(run_dir).parts):
            continue  # half-written .tmp-ckpt-* directories
        if path.is_dir() and CKPT_RE.match(path.name) and (path / STATE_FILE).is_file() and (path / "model").is_dir():
            found.append(path)
    return found


def find_points(run_dir: str | Path, base_model: str | None = None, eval_dir: str | Path | None = None) -> list[EvalPoint]:
    """The base model (order 0) and every complete checkpoint under `run_dir`, in training order.

    Checkpoints are grouped by stage directory; stages are ordered by when their first checkpoint
    was written, checkpoints within a stage by step. `sft/ckpt-000059` is named "sft-ckpt-000059".
    Without `base_model`, the base of a LoRA checkpoint (adapter_config.json) is used, if any.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SafeLadderError(f"{run_dir}: run directory not found")
    ckpts = _checkpoints(run_dir, Path(eval_dir) if eval_dir is not None else None)
    started: dict[Path, float] = {}
    for c in ckpts:
        mtime = (c / STATE_FILE).stat().st_mtime
        started[c.parent] = min(started.get(c.parent, mtime), mtime)
    ckpts.sort(key=lambda c: (started[c.parent], str(c.parent), _step_of(c)))
    points = []
    base = base_model or _lora_base(ckpts)
    if base is not None:
        points.append(EvalPoint("base", str(base), None, 0))
    for i, c in enumerate(ckpts, start=1):
        name = "-".join(c.relative_to(run_dir).parts)
        points.append(EvalPoint(name, str(c / "model"), _step_of(c), i))
    return points


def _lora_base(ckpts: Sequence[Path]) -> str | None:
    for c in ckpts:
        cfg = _read_json(c / "model" / "adapter_config.json")
        if isinstance(cfg, dict) and cfg.get("base_model_name_or_path"):
            return str(cfg["base_model_name_or_path"])
    return None


def evaluate_run(
    run_dir: str | Path, suite: SuiteConfig, out_dir: str | Path | None = None, base_model: str | None = None,
    quiet: bool = False,
) -> list[PointResult]:
    """Evaluate the base model and every checkpoint of a run; EVAL_DIR defaults to `run_dir/eval`."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "eval"
    points = find_points(run_dir, base_model, eval_dir=out)
    if not any(p.name != "base" for p in points):
        raise SafeLadderError(f"{run_dir}: no complete checkpoints (ckpt-NNNNNN/ with state.json and model/)")
    return [evaluate(p.model, suite, out, p.name, step=p.step, order=p.order, quiet=quiet) for p in points]


# --------------------------------------------------------------------------- a terminal summary

_HIDDEN = re.compile(r"^(verdict_|mean_think|mean_answer|format_)")


def points_table(results: Sequence[PointResult]) -> Any:
    """A rich Table: one row per (benchmark, metric), one column per point, value [95% interval]."""
    from rich.table import Table

    table = Table(title="evaluation (95% bootstrap intervals)")
    table.add_column("benchmark")
    table.add_column("metric")
    for r in results:
        table.add_column(r.name, justify="right")

    def cell(m: dict[str, Any] | None, rate: bool = True) -> str:
        if not m or m.get("value") is None:
            return "–"
        if not rate:
            return f"{m['value']:.1f} [{m['low']:.1f}–{m['high']:.1f}]"
        return f"{100 * m['value']:.1f}% [{100 * m['low']:.0f}–{100 * m['high']:.0f}]"

    benches = list(dict.fromkeys(b for r in results for b in r.metrics))
    for b in benches:
        names = list(dict.fromkeys(n for r in results for n in r.metrics.get(b, {}).get("metrics", {})))
        for n in (n for n in names if not _HIDDEN.match(n)):
            rate = n in RATE_METRICS
            table.add_row(b, n, *(cell(r.metrics.get(b, {}).get("metrics", {}).get(n), rate) for r in results))
    for score in dict.fromkeys(s for r in results for s in r.scores):
        table.add_row("[bold]score[/]", score, *(cell(r.scores.get(score)) for r in results))
    return table


def run_eval(
    model: str | None, checkpoints: str | Path | None, suite_file: str | Path, output: str | Path | None = None,
    overrides: dict[str, Any] | None = None, console: Any = None,
) -> list[PointResult]:
    """What `safeladder eval` does: load the suite, evaluate, print a summary table and where results are."""
    from safeladder.eval.suite import load_suite

    suite = load_suite(suite_file, overrides)
    if checkpoints is not None:
        results = evaluate_run(checkpoints, suite, output, base_model=model)
        out = Path(output) if output is not None else Path(checkpoints) / "eval"
    elif model is not None:
        out = Path(output) if output is not None else Path("runs/eval")
        results = [evaluate(model, suite, out)]
    else:
        raise SafeLadderError("give --model MODEL, --checkpoints RUN_DIR, or both")
    if console is not None:
        console.print(points_table(results))
        cached = sum(len(r.cached) for r in results)
        note = f" ({cached} benchmark results served from the cache)" if cached else ""
        console.print(f"[green]results[/] → {out}{note}")
    return results
