"""The `safeladder` command line. Commands are thin: each parses options and calls one function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.panel import Panel

from safeladder.errors import SafeLadderError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SafeLadder: safety and capability, climbed together.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and curate data.")
app.add_typer(data_app, name="data")
verifier_app = typer.Typer(no_args_is_help=True, help="Train, run and serve verifiers.")
app.add_typer(verifier_app, name="verifier")
console = Console()


def _overrides(sets: list[str] | None) -> dict:
    from safeladder.config import _merge, parse_override

    out: dict = {}
    for s in sets or []:
        out = _merge(out, parse_override(s))
    return out


@app.command()
def sft(
    config: Path = typer.Option(..., "--config", "-c", help="SFT config YAML."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key: --set lr=1e-5"),
) -> None:
    """Stage 1: CoT-SFT on verified reasoning traces."""
    from safeladder.config import load_config
    from safeladder.train.sft import SFTConfig, run_sft

    cfg = load_config(config, SFTConfig, _overrides(set_))
    final = run_sft(cfg, resume=resume)
    console.print(f"[green]SFT done[/] · final model: {final}")


@app.command()
def rl(
    config: Path = typer.Option(..., "--config", "-c", help="RL config YAML (or a preset name, e.g. rl_cpu)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key: --set optim.lr=1e-5"),
    ray: bool = typer.Option(False, "--ray", help="Rollout workers as Ray actors (a local cluster unless ray.address is set)."),
) -> None:
    """Stage 2: M³-RL through the configured curriculum (also stages 3–4 with their configs)."""
    from safeladder.config import load_config
    from safeladder.configs import preset_path
    from safeladder.train.rl import run_rl
    from safeladder.train.rl_config import RLConfig

    path = config if config.exists() or config.suffix in (".yaml", ".yml") else preset_path(str(config))
    overrides = _overrides(set_)
    if ray:
        overrides = {**overrides, "ray": overrides.get("ray") or {},
                     "rollout": {**overrides.get("rollout", {}), "engine": "ray"}}
    cfg = load_config(path, RLConfig, overrides)
    final = run_rl(cfg, resume=resume)
    console.print(f"[green]RL done[/] · final model: {final}")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="The user message."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Built-in name, HF directory or checkpoint."),
    max_new_tokens: int = typer.Option(256, min=1, max=8192),
    temperature: float = typer.Option(0.0, min=0.0, max=5.0),
    top_p: float = typer.Option(1.0, min=0.01, max=1.0),
    seed: int = 0,
) -> None:
    """Generate reasoning + answer for one prompt."""
    from safeladder.inference.generate import GenerationSettings
    from safeladder.inference.generate import generate as run_generate
    from safeladder.models.loader import load_policy

    policy = load_policy(str(model))
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    g = run_generate(policy.model, policy.tokenizer, [[{"role": "user", "content": prompt}]], settings)[0]
    if g.think is not None:
        console.print(Panel(g.think or "(empty)", title="reasoning", border_style="dim"))
    console.print(Panel(g.answer or "(empty)", title="answer", border_style="green"))
    console.print(f"[dim]{g.n_tokens} tokens{' (truncated)' if g.truncated else ''}[/]")


@data_app.command("curate")
def data_curate(
    input: Path = typer.Argument(..., help="JSONL/CSV/Parquet of traces (prompt or messages, response)."),
    output: Path = typer.Option(..., "--output", "-o", help="Curated JSONL to write."),
    report: Optional[Path] = typer.Option(None, "--report", help="Markdown report path (default: OUTPUT.report.md)."),
    max_share: Optional[float] = typer.Option(None, min=0.05, max=1.0, help="Rebalance: max share of any behaviour."),
    skip_bad_rows: bool = typer.Option(False, help="Skip and count malformed rows instead of stopping."),
    default_label: str = typer.Option("general", help="Label for rows without one."),
) -> None:
    """Keep verified, well-formed, non-looping, unique traces; tag reasoning behaviours."""
    from safeladder.data.curate import curate
    from safeladder.data.loaders import ColumnMapping, load_samples, write_jsonl

    loaded = load_samples(input, ColumnMapping(default_label=default_label), on_error="skip" if skip_bad_rows else "raise")
    result = curate(loaded.samples, max_share=max_share)
    n = write_jsonl(output, result.final)
    report = report or output.with_suffix(".report.md")
    report.write_text(result.report())
    console.print(result.report())
    console.print(f"[green]{n} traces kept[/] → {output} · {len(loaded.skipped)} bad rows skipped · report: {report}")


@data_app.command("stats")
def data_stats(
    input: Path = typer.Argument(..., help="JSONL/CSV/Parquet of samples."),
    default_label: str = typer.Option("general", help="Label for rows without one."),
) -> None:
    """Counts per label, format compliance and reasoning-behaviour distribution."""
    from collections import Counter

    from rich.table import Table

    from safeladder.data.curate import behaviour_distribution
    from safeladder.data.loaders import ColumnMapping, load_samples
    from safeladder.format import format_ok

    samples = load_samples(input, ColumnMapping(default_label=default_label)).samples
    table = Table(title=f"{input} · {len(samples)} samples")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, n in sorted(Counter(s.label for s in samples).items()):
        table.add_row(f"label {label}", str(n))
    with_resp = [s for s in samples if s.response]
    if with_resp:
        table.add_row("format ok", f"{100 * sum(format_ok(s.response) for s in with_resp) / len(with_resp):.1f}%")
        for name, share in behaviour_distribution(with_resp).items():
            table.add_row(f"behaviour {name}", f"{100 * share:.1f}%")
    console.print(table)


@verifier_app.command("train")
def verifier_train(
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for the heads (default: the cache)."),
    head: Optional[list[str]] = typer.Option(None, "--head", help="Train only these heads (repeatable)."),
    seed: int = 0,
) -> None:
    """Train the embedding heads of the CPU verifiers and report held-out metrics."""
    from rich.table import Table

    from safeladder.paths import write_json

    from safeladder.verifiers.heads import heads_dir, train_heads

    report = train_heads(out, head, seed=seed)
    table = Table(title="verifier heads · held-out metrics")
    for col in ("head", "n", "accuracy", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "head" else "right")
    for name, m in report.items():
        table.add_row(name, str(m.get("n")), *(f"{m.get(k, float('nan')):.3f}" for k in ("accuracy", "precision", "recall", "f1")))
    console.print(table)
    target = write_json((out or heads_dir()) / "report.json", report, default=str)
    console.print(f"heads and report saved in {target.parent}")


@verifier_app.command("score")
def verifier_score(
    input: Path = typer.Option(..., "--input", "-i", help="JSONL of items: prompt, response, [label, reference, metadata]."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL to write: each item + score, verdict, details."),
    verifier: Optional[str] = typer.Option(None, "--verifier", help="A registered verifier name."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="A recipes YAML (label-routed reward)."),
) -> None:
    """Score a file of items with one verifier or with a reward recipe."""
    from safeladder.verifiers.scoring import score_with_recipe, score_with_verifier

    if (verifier is None) == (recipe is None):
        raise SafeLadderError("give exactly one of --verifier NAME or --recipe FILE")
    if not input.is_file():
        raise SafeLadderError(f"{input}: input file not found")
    n = score_with_verifier(verifier, input, output) if verifier else score_with_recipe(recipe, input, output)
    console.print(f"[green]{n} items scored[/] → {output}")


@verifier_app.command("serve")
def verifier_serve(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Service settings YAML."),
    verifier: Optional[list[str]] = typer.Option(None, "--verifier", help="Verifier to serve (repeatable)."),
    host: Optional[str] = typer.Option(None, help="Bind address (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, min=0, max=65535),
) -> None:
    """Serve verifiers over HTTP (batch scoring, health, metrics; bearer token from the environment)."""
    from safeladder.config import load_config
    from safeladder.verifiers.service import ServiceSettings, serve

    overrides = {k: v for k, v in (("host", host), ("port", port), ("verifiers", verifier)) if v}
    if config is not None:
        settings = load_config(config, ServiceSettings, overrides)
    else:
        from pydantic import ValidationError

        from safeladder.config import format_validation_error

        try:
            settings = ServiceSettings(**overrides)
        except ValidationError as err:
            raise SafeLadderError(format_validation_error(err, "command line")) from None
    serve(settings)


@app.command()
def setup(
    heads: bool = typer.Option(True, help="Also install the CPU verifier heads (shipped; retrained only if stale: ~4 min on 2 cores, ~15 more for the cross-encoder)."),
) -> None:
    """Prepare the cache: convert the embedded model and build missing verifier heads."""
    from safeladder.models.builtin import BUILTIN_MODELS, ensure_converted

    for name in BUILTIN_MODELS:
        console.print(f"{name}: {ensure_converted(name)}")
    if heads:
        from safeladder.verifiers.heads import ensure_heads, heads_dir
        from safeladder.verifiers.training_data import HEAD_SETS

        ensure_heads(list(HEAD_SETS))
        console.print(f"verifier heads: {heads_dir()}")


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o"),
    quick: bool = typer.Option(False, "--quick", help="A smoke run of a few minutes."),
) -> None:
    """The embedded demo: the whole ladder on SmolLM2-135M, with a before/after table and the AI-45° chart."""
    from safeladder.demo import run_demo

    run_demo(output, quick=quick)


@app.command()
def ladder(
    config: Path = typer.Argument(..., help="Ladder config YAML (or a preset name: ladder_demo, ladder_quick)."),
    only: Optional[str] = typer.Option(None, "--only", help="Run just this stage (earlier stages must be done)."),
    fresh: bool = typer.Option(False, "--no-resume", help="Do not resume unfinished stages from their checkpoints."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a key: --set output_dir=runs/x"),
) -> None:
    """CoT-SFT → M³-RL → Safe-and-Efficient RL → Search RL, evaluated after every stage."""
    from safeladder.ladder import load_ladder, run_ladder

    result = run_ladder(load_ladder(config, _overrides(set_)), resume=not fresh, only=only)
    console.print(f"[green]ladder done[/] in {result['minutes']:.1f} min · chart: {result.get('chart')} · summary: {result.get('summary')}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory (its evaluations in RUN_DIR/eval)."),
    eval_dir: Optional[Path] = typer.Option(None, "--eval-dir", help="Evaluation results (default: RUN_DIR/eval)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: RUN_DIR/report)."),
) -> None:
    """The AI-45° report of a run: ai45.png and a self-contained report.html."""
    from safeladder.eval.report import build_report

    result = build_report(run_dir, eval_dir, output)
    console.print(f"[green]{len(result.points)} points[/] → {result.png} · {result.html}")


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="First run directory."),
    run_b: Path = typer.Argument(..., help="Second run directory."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: next to RUN_A)."),
) -> None:
    """Both runs' trajectories on one AI-45° chart, with the deltas of their final points."""
    from safeladder.eval.compare import compare as run_compare

    result = run_compare(run_a, run_b, output)
    console.print(f"[green]compared[/] {result.labels[0]} vs {result.labels[1]} → {result.png} · {result.html}")


analyze_app = typer.Typer(no_args_is_help=True, help="Representation analyses.")
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("mi")
def analyze_mi(
    model: str = typer.Option(..., "--model", "-m", help="The (trained) model: built-in name, directory or checkpoint."),
    baseline_model: Optional[str] = typer.Option(None, "--baseline-model", help="A base model to overlay."),
    prompts: Path = typer.Option(..., "--prompts", help="JSONL of harmful prompts (id, prompt)."),
    reference: Path = typer.Option(..., "--reference", help="JSONL of reference safe answers (id, reference)."),
    output: Path = typer.Option(Path("mi-analysis"), "--output", "-o"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, max=4096),
    max_dim: int = typer.Option(1024, "--max-dim", min=2, help="Subsample hidden coordinates above this."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N prompts."),
) -> None:
    """Safety MI peaks (SPEC §7): MI between each generated token's state and a safe answer's."""
    from safeladder.analysis.mi import HSICEstimator
    from safeladder.analysis.mi_run import MISettings, run_mi_analysis

    models = {"baseline": baseline_model, "model": model} if baseline_model else {"model": model}
    result = run_mi_analysis(models, prompts, reference, output,
                             MISettings(max_new_tokens=max_new_tokens, limit=limit), HSICEstimator(max_dim=max_dim))
    console.print(result.table_md.read_text(), markup=False, highlight=False)
    console.print(f"[green]MI analysis[/] → {result.png} · {result.table_md}")


@app.command("eval")
def eval_(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (the base with --checkpoints): built-in name or directory."),
    checkpoints: Optional[Path] = typer.Option(None, "--checkpoints", help="Run directory: also evaluate every checkpoint in it."),
    suite: str = typer.Option("eval_default", "--suite", "-s", help="Suite YAML, or a built-in suite: eval_default, eval_quick."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="EVAL_DIR (default: RUN_DIR/eval, or runs/eval)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a suite key: --set limit=5"),
) -> None:
    """Evaluate a model, or every checkpoint of a run, on a benchmark suite (cached, resumable)."""
    from safeladder.eval.runner import run_eval

    run_eval(model, checkpoints, suite, output, _overrides(set_), console)


value_app = typer.Typer(no_args_is_help=True, help="Value functions for step search.")
app.add_typer(value_app, name="value")


@value_app.command("train")
def value_train(
    model: str = typer.Option(..., "--model", help="The policy whose reasoning the value will judge (name or directory)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the head, its report and the examples."),
    harmful: int = typer.Option(120, min=0, help="Harmful train prompts to sample from."),
    benign: int = typer.Option(60, min=0, help="Benign look-alike train prompts to sample from."),
    per_prompt: int = typer.Option(4, min=1, help="Whole turns sampled per prompt."),
    step_tokens: int = typer.Option(24, min=1, help="Prefixes are cut every this many reasoning tokens."),
    max_steps: int = typer.Option(3, min=1),
    answer_tokens: int = typer.Option(48, min=1),
    temperature: float = typer.Option(0.8, min=0.0),
    judge: str = typer.Option("safety", help="Verifier whose score of the finished turn is the target."),
    seed: int = 0,
) -> None:
    """Train a step value: P(the finished turn is judged safe | request, reasoning so far). Use it with --value OUT."""
    from safeladder.inference.steps import StepSettings
    from safeladder.inference.value_head import build_step_value

    settings = StepSettings(step_tokens=step_tokens, max_steps=max_steps, answer_tokens=answer_tokens, temperature=temperature)
    report = build_step_value(model, out, harmful, benign, per_prompt, settings, judge, seed)
    console.print_json(data=report)
    console.print(f"step value saved in {out}; use it with --value {out}")


search_app = typer.Typer(no_args_is_help=True, help="Retrieval for search RL: corpora, indexes, the retrieval service.")
app.add_typer(search_app, name="search")


@search_app.command("index")
def search_index(
    corpus: Path = typer.Option(..., "--corpus", help="JSONL corpus: id, title, text (or Search-R1 contents)."),
    kind: str = typer.Option("bm25", "--kind", help="bm25 or dense (offline MiniLM + faiss)."),
    output: Path = typer.Option(..., "--output", "-o", help="Index directory to write."),
) -> None:
    """Build a retrieval index over a corpus and save it."""
    from safeladder.search.base import index_corpus

    n = index_corpus(corpus, kind, output)
    console.print(f"[green]{kind} index of {n} documents[/] → {output}")


@search_app.command("serve")
def search_serve(
    index: Path = typer.Option(..., "--index", help="An index directory (safeladder search index)."),
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8732, min=0, max=65535),
) -> None:
    """Serve an index over HTTP with the Search-R1 schema (POST /retrieve; token from $SAFELADDER_RETRIEVER_TOKEN)."""
    from safeladder.search.service import RetrievalSettings, serve

    serve(RetrievalSettings(index=str(index), host=host, port=port))


@search_app.command("world")
def search_world(
    output: Path = typer.Option(..., "--output", "-o", help="Directory for corpus.jsonl and train/dev/test.jsonl."),
    seed: int = typer.Option(0, "--seed"),
    passages: Optional[int] = typer.Option(None, "--passages", min=10, help="Scale the world to about this many passages."),
) -> None:
    """Generate the fictional-world encyclopedia and its QA splits (answers only in the corpus)."""
    from safeladder.search.world import WorldSpec, write_world

    spec = WorldSpec.for_passages(passages, seed) if passages else WorldSpec(seed=seed)
    paths = write_world(output, spec)
    console.print(f"[green]world (seed {seed}, {spec.passages} passages)[/] → {paths['corpus'].parent}")


@search_app.command("traces")
def search_traces_cmd(
    qa: Path = typer.Option(..., "--qa", help="Search questions (e.g. data/world/train.jsonl)."),
    index: Path = typer.Option(..., "--index", help="The index the traces search (safeladder search index)."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL of samples with their trace as `response`."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use the first N questions."),
    topk: int = typer.Option(3, "--topk", min=1),
    max_passage_tokens: int = typer.Option(64, "--max-passage-tokens", min=1, help="Passage cut (see --tokenizer)."),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="Model whose tokens cut the passages, as its RL rollouts will (default: cut by words)."),
) -> None:
    """Warm-up SFT traces for the search stage: real searches, read, answer, stated confidence."""
    from safeladder.data.loaders import load_samples, write_jsonl
    from safeladder.models.loader import load_tokenizer
    from safeladder.search.base import DOCUMENTS, load_index
    from safeladder.search.corpus import load_corpus
    from safeladder.search.environment import SearchEnvironment
    from safeladder.search.traces import search_traces

    samples = load_samples(qa).samples[:limit]
    env = SearchEnvironment(load_index(index), topk=topk, max_passage_tokens=max_passage_tokens,
                            tokenizer=load_tokenizer(tokenizer) if tokenizer else None)
    traced = search_traces(samples, env, load_corpus(index / DOCUMENTS))
    write_jsonl(output, [s.model_dump(mode="json") for s in traced])
    low = sum("<confidence>low" in (s.response or "") for s in traced)
    console.print(f"[green]{len(traced)} traces[/] ({low} answer with low confidence) → {output}")


@search_app.command("eval")
def search_eval_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Built-in name, HF directory or checkpoint."),
    qa: Path = typer.Option(..., "--qa", help="Search questions (e.g. data/world/dev.jsonl)."),
    index: Path = typer.Option(..., "--index", help="The index the model searches."),
    limit: Optional[int] = typer.Option(100, "--limit", min=1, help="First N questions."),
    topk: int = typer.Option(2, "--topk", min=1),
    max_calls: int = typer.Option(2, "--max-calls", min=0),
    max_passage_tokens: int = typer.Option(64, "--max-passage-tokens", min=1),
    max_new_tokens: int = typer.Option(160, "--max-new-tokens", min=1, help="Model tokens over all turns."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write rates and every rollout as JSON."),
) -> None:
    """Greedy rollouts with the search tool in the loop: accuracy, false-certain, honest doubt, search share."""
    from safeladder.data.loaders import load_samples
    from safeladder.paths import write_json
    from safeladder.search.evaluate import evaluate_search_model

    samples = load_samples(qa).samples[:limit]
    result = evaluate_search_model(model, samples, index, topk=topk, max_calls=max_calls,
                                   max_passage_tokens=max_passage_tokens, max_new_tokens=max_new_tokens)
    for name, rate in result.rates.items():
        lo, hi = result.intervals[name]
        console.print(f"{name:20s} {rate:6.1%}  [{lo:.0%}–{hi:.0%}]")
    console.print(f"mean searches {result.mean_calls:.2f} · mean model tokens {result.mean_model_tokens:.0f} · n {result.n}")
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_json(output, {**result.summary(), "intervals": result.intervals, "rows": result.rows}, indent=1)


@search_app.command("adapt")
def search_adapt(
    qa: Path = typer.Option(..., "--qa", help="QA JSONL: question + answer / answers / golden_answers."),
    corpus: Path = typer.Option(..., "--corpus", help="JSONL corpus the answers are in."),
    output: Path = typer.Option(..., "--output", "-o"),
) -> None:
    """Turn your own QA file + corpus into the search task's layout (corpus + train/dev/test)."""
    from safeladder.search.world import adapt_qa

    paths = adapt_qa(qa, corpus, output)
    console.print(f"[green]adapted[/] → {paths['corpus'].parent}")


@app.command("serve")
def serve_chat(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Built-in name, HF directory or checkpoint (default smollm2-135m)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Server settings YAML (ServeSettings keys)."),
    host: Optional[str] = typer.Option(None, help="Bind address (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, min=0, max=65535, help="Port (default 8741)."),
    value: Optional[str] = typer.Option(None, help="Value function for verdicts and guided search (default safety; 'none': off)."),
    guided_default: bool = typer.Option(False, "--guided-default", help="Run step search unless a request says guided=false."),
) -> None:
    """Serve a model: OpenAI-compatible /v1/chat/completions and the step-edit web page (token from $SAFELADDER_SERVE_TOKEN)."""
    from safeladder.inference.server import ServeSettings, serve

    overrides: dict = {k: v for k, v in (("model", model), ("host", host), ("port", port)) if v is not None}
    if value is not None:
        overrides["value"] = None if value.lower() == "none" else value
    if guided_default:
        overrides["guided_default"] = True
    if config is not None:
        from safeladder.config import load_config

        settings = load_config(config, ServeSettings, overrides)
    else:
        from pydantic import ValidationError

        from safeladder.config import format_validation_error

        try:
            settings = ServeSettings(**overrides)
        except ValidationError as err:
            raise SafeLadderError(format_validation_error(err, "command line")) from None
    serve(settings)


@app.command("chat")
def chat_terminal(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Built-in name, HF directory or checkpoint."),
    value: str = typer.Option("safety", help="Value function whose verdicts are shown per step ('none': off)."),
    step_tokens: int = typer.Option(48, min=1, max=1024, help="Token budget of one reasoning step."),
    max_steps: int = typer.Option(12, min=1, max=256),
    max_new_tokens: int = typer.Option(512, min=1, max=8192),
    temperature: float = typer.Option(0.7, min=0.0, max=2.0),
    seed: Optional[int] = typer.Option(None),
) -> None:
    """Chat in the terminal; after each reasoning step press Enter to continue or `e` to edit it."""
    from safeladder.inference.chat_cli import main as chat_main

    chat_main(model, None if value.lower() == "none" else value, step_tokens, max_steps, max_new_tokens, temperature, seed)


def main() -> None:
    """Console entry point: user errors print one clear message and exit 2, without a traceback."""
    import os

    # Our own rich progress bars report long work; silence transformers' per-shard tqdm bars.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
    try:
        app()
    except SafeLadderError as exc:
        from rich.text import Text

        # soft_wrap: never break a file:line message; Text: never read brackets in it as markup
        Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "bold red"), str(exc)))
        sys.exit(2)
