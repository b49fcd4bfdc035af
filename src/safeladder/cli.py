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
    import json

    from rich.table import Table

    from safeladder.verifiers.heads import heads_dir, train_heads

    report = train_heads(out, head, seed=seed)
    table = Table(title="verifier heads · held-out metrics")
    for col in ("head", "n", "accuracy", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "head" else "right")
    for name, m in report.items():
        table.add_row(name, str(m.get("n")), *(f"{m.get(k, float('nan')):.3f}" for k in ("accuracy", "precision", "recall", "f1")))
    console.print(table)
    target = (out or heads_dir()) / "report.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, default=str))
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
    heads: bool = typer.Option(True, help="Also train the CPU verifier heads if missing (~3-5 min on 2 cores)."),
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
    """The embedded demo: CoT-SFT of SmolLM2-135M with a before/after table."""
    from safeladder.demo import run_demo

    run_demo(output, quick=quick)


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
