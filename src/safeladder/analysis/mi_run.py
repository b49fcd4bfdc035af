"""The safety MI-peaks analysis (SPEC §7): which generated tokens carry information about a safe answer?

For each harmful prompt and each model:
1. greedy generation with `output_hidden_states`; the last-layer state of generated token t is the
   state at the position where t is fed back, i.e. step t+1 of `generate` (the incremental states
   equal a teacher-forced pass). The final token is never fed back, so it has no state and is left
   out — for a reply that ends with EOS that is exactly the EOS;
2. the reference state: teacher-force "chat prompt + reference safe answer" through the same model
   and take the last token's last-layer state (each model is compared with its own reference, so
   both vectors live in the same representation space);
3. Î(h_t; h_ref) per step with the HSIC estimator of `safeladder.analysis.mi`, peaks above
   mean + 2·std of the prompt's own series, and the tokens at the peaks.
Outputs: `mi.png` (mean MI over steps, models overlaid, plus per-prompt small multiples),
`mi_peaks.md` / `mi_peaks.json` (peak tokens with counts, per model) and `mi_series.json`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from safeladder.analysis.mi import HSICEstimator, find_peaks
from safeladder.data.loaders import ColumnMapping, load_samples, read_jsonl
from safeladder.data.sample import Sample
from safeladder.errors import DataError, SafeLadderError
from safeladder.format import SYSTEM_PROMPT, render_prompt

REFERENCE_FIELDS = ("reference", "response", "answer", "completion")


@dataclass(frozen=True)
class MISettings:
    max_new_tokens: int = 128
    n_std: float = 2.0  # peak threshold: mean + n_std · std
    limit: int | None = None  # analyse only the first N prompts
    system_prompt: str | None = SYSTEM_PROMPT
    max_panels: int = 6  # per-prompt small multiples in the PNG


@dataclass
class PromptTrace:
    """One prompt through one model: generated tokens, their MI with the reference, and peaks."""

    id: str
    completion: str
    tokens: list[str]
    mi: np.ndarray
    peaks: list[int]

    def peak_tokens(self) -> list[str]:
        return [self.tokens[i] for i in self.peaks]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "completion": self.completion, "tokens": self.tokens,
                "mi": [float(v) for v in self.mi], "peaks": self.peaks}


@dataclass
class ModelMI:
    label: str
    model: str
    traces: list[PromptTrace] = field(default_factory=list)

    def mean_curve(self) -> np.ndarray:
        """Mean MI per step over the prompts whose generation reaches that step."""
        length = max((len(t.mi) for t in self.traces), default=0)
        sums, counts = np.zeros(length), np.zeros(length)
        for t in self.traces:
            sums[: len(t.mi)] += t.mi
            counts[: len(t.mi)] += 1
        return sums / np.maximum(counts, 1)

    def peak_counts(self) -> Counter[str]:
        return Counter(_token_key(tok) for t in self.traces for tok in t.peak_tokens())

    def summary(self) -> dict[str, Any]:
        peak_values = [float(t.mi[i]) for t in self.traces for i in t.peaks]
        all_values = np.concatenate([t.mi for t in self.traces]) if self.traces else np.zeros(0)
        return {
            "label": self.label, "model": self.model, "prompts": len(self.traces),
            "steps": int(all_values.size), "peaks": len(peak_values),
            "peaks_per_prompt": len(peak_values) / len(self.traces) if self.traces else 0.0,
            "mean_mi": float(all_values.mean()) if all_values.size else None,
            "mean_peak_mi": float(np.mean(peak_values)) if peak_values else None,
        }


def _token_key(token: str) -> str:
    """Peak tokens are counted by their visible text; pure whitespace is shown escaped."""
    stripped = token.strip()
    return stripped if stripped else repr(token)


# ------------------------------------------------------------------------------------------ inputs

def load_items(prompts_path: str | Path, reference_path: str | Path) -> list[tuple[Sample, str]]:
    """Pair each prompt with its reference safe answer.

    References are JSONL rows with one of the fields reference/response/answer/completion. If every
    row has an `id`, rows are matched to prompts by id; otherwise by order (counts must agree).
    """
    samples = load_samples(prompts_path, ColumnMapping(default_label="safety")).samples
    rows: list[tuple[int, str | None, str]] = []
    for line, row in read_jsonl(reference_path):
        text = next((row[f] for f in REFERENCE_FIELDS if isinstance(row.get(f), str) and row[f].strip()), None)
        if text is None:
            raise DataError(str(reference_path), line, "reference", f"missing (give one of {', '.join(REFERENCE_FIELDS)})")
        rows.append((line, None if row.get("id") is None else str(row["id"]), text))
    if rows and all(ident is not None for _, ident, _ in rows):
        by_id = {ident: text for _, ident, text in rows}
        missing = [s.id for s in samples if s.id not in by_id]
        if missing:
            raise SafeLadderError(f"{reference_path}: no reference answer for prompt id(s) {', '.join(missing[:5])}")
        return [(s, by_id[s.id]) for s in samples]
    if len(rows) != len(samples):
        raise SafeLadderError(
            f"{reference_path}: {len(rows)} references for {len(samples)} prompts "
            "(give every reference an 'id', or one per prompt in the same order)"
        )
    return [(s, text) for s, (_, _, text) in zip(samples, rows)]


# ------------------------------------------------------------------------------------ hidden states

def generated_states(policy: Any, prompt_text: str, max_new_tokens: int) -> tuple[list[int], np.ndarray]:
    """Greedy generation; returns the generated ids that have a state and their last-layer states (T, d)."""
    import torch

    tok, model = policy.tokenizer, policy.model
    enc = tok(prompt_text, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    with torch.no_grad():
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
            return_dict_in_generate=True, output_hidden_states=True,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
    ids = out.sequences[0, enc["input_ids"].shape[1] :].tolist()
    # step s >= 1 of generate fed generated token s-1: its last-layer state is hidden_states[s][-1][:, -1]
    states = [out.hidden_states[s][-1][0, -1] for s in range(1, len(out.hidden_states))]
    kept = ids[: len(states)]
    if not states:
        return kept, np.zeros((0, model.config.hidden_size))
    return kept, torch.stack(states).double().cpu().numpy()


def reference_state(policy: Any, prompt_text: str, reference: str) -> np.ndarray:
    """Last-layer state of the last token of the teacher-forced reference answer, shape (d,)."""
    import torch

    tok, model = policy.tokenizer, policy.model
    enc = tok(prompt_text + reference, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return out.hidden_states[-1][0, -1].double().cpu().numpy()


def trace_prompt(
    policy: Any, sample: Sample, reference: str, estimator: HSICEstimator, settings: MISettings
) -> PromptTrace:
    prompt_text = render_prompt(policy.tokenizer, sample.chat(), settings.system_prompt)
    ids, states = generated_states(policy, prompt_text, settings.max_new_tokens)
    ref = reference_state(policy, prompt_text, reference)
    mi = estimator.series(states, ref) if len(ids) else np.zeros(0)
    tokens = [policy.tokenizer.decode([i]) for i in ids]
    completion = policy.tokenizer.decode(ids, skip_special_tokens=True)
    return PromptTrace(sample.id, completion, tokens, mi, [int(i) for i in find_peaks(mi, settings.n_std)])


def analyse_model(
    policy: Any, items: list[tuple[Sample, str]], estimator: HSICEstimator, settings: MISettings,
    label: str, model_name: str,
) -> ModelMI:
    was_training = policy.model.training
    policy.model.eval()
    try:
        return ModelMI(label, model_name, [trace_prompt(policy, s, ref, estimator, settings) for s, ref in items])
    finally:
        policy.model.train(was_training)


# ----------------------------------------------------------------------------------------- outputs

def plot_mi(results: list[ModelMI], path: Path, max_panels: int = 6) -> Path:
    """Mean MI over steps with the models overlaid, then per-prompt small multiples with peaks."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    ids = [t.id for t in results[0].traces][:max_panels] if results else []
    cols = 3
    rows = 1 + math.ceil(len(ids) / cols)
    fig = Figure(figsize=(12, 3.2 * rows), dpi=100)
    inches = 3.2 * rows  # fixed margins in inches, not tight_layout (a second full draw)
    grid = fig.add_gridspec(rows, cols, left=0.06, right=0.98, bottom=0.55 / inches, top=1 - 0.4 / inches,
                            hspace=0.45, wspace=0.2)
    top = fig.add_subplot(grid[0, :])
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, res in enumerate(results):
        curve = res.mean_curve()
        top.plot(np.arange(len(curve)), curve, color=colours[k % len(colours)], label=f"{res.label} ({res.model})")
    top.set_title("MI(h_t; h_ref) over generation steps, mean over prompts")
    top.set_xlabel("generated token t")
    top.set_ylabel("HSIC MI estimate")
    if results:
        top.legend(loc="best", fontsize=8)
    for p, pid in enumerate(ids):
        ax = fig.add_subplot(grid[1 + p // cols, p % cols])
        for k, res in enumerate(results):
            trace = next((t for t in res.traces if t.id == pid), None)
            if trace is None or not len(trace.mi):
                continue
            colour = colours[k % len(colours)]
            ax.plot(np.arange(len(trace.mi)), trace.mi, color=colour, lw=1)
            ax.scatter(trace.peaks, trace.mi[trace.peaks], color=colour, s=14, zorder=3)
            for i in trace.peaks[:4]:
                ax.annotate(_token_key(trace.tokens[i])[:12], (i, trace.mi[i]), fontsize=7, color=colour,
                            xytext=(2, 3), textcoords="offset points")
        ax.set_title(pid[:40], fontsize=8)
        ax.tick_params(labelsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _md_cell(text: str) -> str:
    """Safe inside a table cell and a code span: no pipes, backticks or line breaks."""
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def peak_table(results: list[ModelMI], top: int = 20) -> tuple[str, dict[str, Any]]:
    """Markdown and JSON: per model, a summary and the most frequent tokens at MI peaks."""
    data: dict[str, Any] = {"models": []}
    lines = ["# Safety MI peaks", "", "| model | prompts | steps | peaks | peaks/prompt | mean MI | mean peak MI |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        s = res.summary()
        lines.append(f"| {_md_cell(res.label)} ({_md_cell(res.model)}) | {s['prompts']} | {s['steps']} | {s['peaks']} | "
                     f"{s['peaks_per_prompt']:.2f} | {_num(s['mean_mi'])} | {_num(s['mean_peak_mi'])} |")
        data["models"].append({**s, "peak_tokens": dict(res.peak_counts().most_common())})
    for res in results:
        lines += ["", f"## Tokens at peaks: {_md_cell(res.label)}", "", "| token | count |", "|---|---:|"]
        counts = res.peak_counts().most_common(top)
        lines += [f"| `{_md_cell(tok)}` | {n} |" for tok, n in counts] or ["| (no peaks) | 0 |"]
    return "\n".join(lines) + "\n", data


@dataclass(frozen=True)
class MIAnalysis:
    results: list[ModelMI]
    png: Path
    table_md: Path
    table_json: Path
    series_json: Path


def run_mi_analysis(
    models: Mapping[str, Any],
    prompts_path: str | Path,
    reference_path: str | Path,
    output_dir: str | Path,
    settings: MISettings = MISettings(),
    estimator: HSICEstimator = HSICEstimator(),
) -> MIAnalysis:
    """Analyse each model ({label: model name or loaded Policy}, plotted in order) on the same prompts."""
    from safeladder.models.loader import load_policy

    items = load_items(prompts_path, reference_path)[: settings.limit]
    if not items:
        raise SafeLadderError(f"{prompts_path}: no prompts")
    results = []
    for label, model in models.items():
        policy = load_policy(model) if isinstance(model, str) else model
        name = model if isinstance(model, str) else policy.spec.name
        results.append(analyse_model(policy, items, estimator, settings, label, name))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, data = peak_table(results)
    data["settings"] = {"sigma": estimator.sigma, "eps": estimator.eps, "max_dim": estimator.max_dim,
                        "seed": estimator.seed, "n_std": settings.n_std, "max_new_tokens": settings.max_new_tokens}
    (out / "mi_peaks.md").write_text(md)
    (out / "mi_peaks.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    series = {r.label: {"model": r.model, "prompts": [t.to_dict() for t in r.traces]} for r in results}
    (out / "mi_series.json").write_text(json.dumps(series, ensure_ascii=False))
    png = plot_mi(results, out / "mi.png", settings.max_panels)
    return MIAnalysis(results, png, out / "mi_peaks.md", out / "mi_peaks.json", out / "mi_series.json")
