"""The evaluation suite config: generation settings, the benchmarks to run and the two scores.

Validated with pydantic through `safeladder.config.load_config`, so every mistake is reported as
`file:line: key: problem`. Kinds, judges, sources and metrics are checked against their registries
(`benchmarks.KINDS`, `judges.JUDGES`, `sources.SOURCES`) rather than hard-coded lists, so a new kind
or source registered in code is accepted here without touching this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from safeladder.config import load_config
from safeladder.errors import ConfigError
from safeladder.format import SYSTEM_PROMPT
from safeladder.inference.generate import GenerationSettings
from safeladder.models.precision import Precision

__all__ = [
    "BenchmarkConfig", "Columns", "GenerationConfig", "ScoreTerm", "SuiteConfig", "load_suite", "suite_path",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a benchmark name is also a directory name


class GenerationConfig(BaseModel):
    """Decoding settings shared by every benchmark (greedy by default, so runs are reproducible)."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(160, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    batch_size: int = Field(32, ge=1)
    precision: Precision = "auto"
    seed: int = 0

    def settings(self) -> GenerationSettings:
        return GenerationSettings(**self.model_dump())


class GenerationOverride(BaseModel):
    """Per-benchmark changes to the suite's generation settings (e.g. longer answers for IFEval)."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    batch_size: int | None = Field(None, ge=1)


class Columns(BaseModel):
    """Which column of a user file feeds each benchmark field (dotted paths reach nested objects).

    Each field defaults to a column of its own name. Only `prompt` is always needed; each kind
    says which others it requires (math: reference; mcq: reference, optionally choices; ifeval:
    instruction_id_list, optionally kwargs). `null` means "never read this column".
    """

    model_config = ConfigDict(extra="forbid")
    prompt: str = "prompt"
    id: str | None = "id"
    reference: str | None = "reference"
    category: str | None = "category"
    choices: str | None = "choices"
    instruction_id_list: str | None = "instruction_id_list"
    kwargs: str | None = "kwargs"


class BenchmarkConfig(BaseModel):
    """One benchmark: a kind (what is measured) fed by a built-in `source` or a user `path`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME)
    kind: str
    source: str | None = None
    path: str | None = None
    columns: Columns | None = None
    split: Literal["train", "dev", "all"] = "dev"
    limit: int | None = Field(None, ge=1)
    # reasoning-gym sources
    dataset: str | None = None
    size: int | None = Field(None, ge=1, le=100_000)
    seed: int = 0
    # jailbreak sources: template names of `template_source` (see sources.TEMPLATE_SOURCES)
    templates: list[str] | None = None
    template_source: str = "pyrit"
    # judging
    judge: str | None = None  # None: the kind's default judge
    judge_options: dict[str, Any] = Field(default_factory=dict)
    # prompting
    system_prompt: str | None = SYSTEM_PROMPT
    ask_confidence: bool = True  # short-answer: ask for <confidence>high|low</confidence>
    generation: GenerationOverride | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from safeladder.eval.benchmarks import KINDS

        if value not in KINDS:
            raise ValueError(f"unknown kind {value!r}; known: {', '.join(KINDS)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "BenchmarkConfig":
        from safeladder.eval.benchmarks import KINDS
        from safeladder.eval.judges import JUDGES
        from safeladder.eval.sources import SOURCES

        if (self.source is None) == (self.path is None):
            raise ValueError("give exactly one of 'source' (a built-in data set) or 'path' (your file)")
        if self.source is not None and self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; known: {', '.join(SOURCES)}")
        if self.columns is not None and self.path is None:
            raise ValueError("'columns' maps the columns of a user file; it needs 'path'")
        kind = KINDS[self.kind]
        if self.judge is not None and self.judge not in kind.judges:
            raise ValueError(f"judge {self.judge!r} cannot judge kind {self.kind!r}; choose one of {', '.join(kind.judges)}")
        needs = JUDGES[self.judge_name].sources
        if needs is not None and self.source not in needs:
            raise ValueError(f"judge {self.judge_name!r} only judges items of source {', '.join(sorted(needs))}")
        if self.templates is not None and self.kind != "jailbreak":
            raise ValueError("'templates' wraps requests in jailbreak templates; it needs kind: jailbreak")
        return self

    @property
    def judge_name(self) -> str:
        from safeladder.eval.benchmarks import KINDS

        return self.judge or KINDS[self.kind].default_judge(self.source)

    def settings(self, base: GenerationConfig) -> GenerationSettings:
        """The suite's generation settings with this benchmark's overrides applied."""
        changes = self.generation.model_dump(exclude_none=True) if self.generation else {}
        return GenerationSettings(**(base.model_dump() | changes))


class ScoreTerm(BaseModel):
    """One term of a score: a benchmark's rate metric, optionally inverted (1 - x), with a weight."""

    model_config = ConfigDict(extra="forbid")
    benchmark: str
    metric: str
    weight: float = Field(1.0, gt=0)
    invert: bool = False


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    limit: int | None = Field(None, ge=1)  # caps every benchmark (smoke runs: --set limit=5)
    benchmarks: list[BenchmarkConfig] = Field(min_length=1)
    scores: dict[str, list[ScoreTerm]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "SuiteConfig":
        from safeladder.eval.benchmarks import KINDS

        names = [b.name for b in self.benchmarks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate benchmark names: {', '.join(dupes)}")
        kinds = {b.name: KINDS[b.kind] for b in self.benchmarks}
        for score, terms in self.scores.items():
            for term in terms:
                if term.benchmark not in kinds:
                    raise ValueError(f"score {score!r}: no benchmark named {term.benchmark!r}")
                kind = kinds[term.benchmark]
                if term.metric not in kind.score_metrics():
                    raise ValueError(
                        f"score {score!r}: benchmark {term.benchmark!r} (kind {kind.name}) has no rate metric "
                        f"{term.metric!r}; choose one of {', '.join(kind.score_metrics())}"
                    )
        return self

    def limited(self, bench: BenchmarkConfig) -> int | None:
        """The effective item cap of one benchmark (the smaller of its own and the suite's)."""
        caps = [c for c in (bench.limit, self.limit) if c is not None]
        return min(caps) if caps else None


def suite_path(name_or_path: str | Path) -> Path:
    """A suite file, or the name of a built-in suite ("eval_default", "eval_quick", or "default"/"quick")."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    from safeladder.configs import preset_path

    name = str(name_or_path)
    for candidate in (name, f"eval_{name}"):
        preset = preset_path(candidate)
        if preset.is_file() and candidate.startswith("eval_"):
            return preset
    raise ConfigError(f"{name_or_path}: suite file not found (built-in suites: eval_default, eval_quick)")


def load_suite(path: str | Path, overrides: dict[str, Any] | None = None) -> SuiteConfig:
    """Read and validate a suite; relative `path:` entries are resolved against the suite's folder
    (falling back to the working directory when the file is not there)."""
    file = suite_path(path)
    suite = load_config(file, SuiteConfig, overrides)
    for bench in suite.benchmarks:
        if bench.path is not None and not Path(bench.path).is_absolute():
            beside = file.parent / bench.path
            if beside.exists() or not Path(bench.path).exists():
                bench.path = str(beside)
    return suite
