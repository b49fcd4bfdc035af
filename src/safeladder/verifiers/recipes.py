"""Reward recipes: route each sample by its label to (verifier, weight) pairs and mix (SPEC §3.2).

    R_i = format_reward · s_format(completion_i) + Σ_{(v, w) ∈ recipe[label_i]} w · s_v(item_i)

Every verifier a recipe names is built once, when the `RewardComputer` is constructed, so a typo
is a ConfigError at start-up rather than a silent 1.0 (the released code's default). At run time
a verifier that cannot score an item it was routed (not_applicable / parse_error / error) is
either an error or an explicit, logged and recorded skip — never an invented score.

Three aggregation modes turn the per-objective scores into rewards (pure functions, picked from
`AGGREGATIONS` by name):

- "sum": the formula above.
- "sum_then_normalise": the formula above, then (R − mean_g R) / (std_g R + eps) within each group
  g (e.g. the G samples of one prompt).
- "normalise_per_objective": each objective's scores are first normalised within the group (over
  the items it applied to), then mixed with the weights — so an objective with a small spread
  is not drowned out by one with a large spread.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from safeladder.config import load_config
from safeladder.errors import ConfigError, SafeLadderError
from safeladder.verifiers import base
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, build_verifier

log = logging.getLogger(__name__)

FORMAT = "format"  # component name of the format reward


class RewardError(SafeLadderError):
    """A reward could not be computed for a sample (unknown label, verifier could not score it)."""


# ---------------------------------------------------------------------------------------- config


class RecipeEntry(BaseModel):
    """One (verifier, weight) pair of a recipe. `verifier` is a registered name or a named instance."""

    model_config = ConfigDict(extra="forbid")

    verifier: str = Field(min_length=1)
    weight: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("weight")
    @classmethod
    def _finite(cls, w: float) -> float:
        if not math.isfinite(w):
            raise ValueError("weight must be a finite number")
        return w


class VerifierSpec(BaseModel):
    """A named verifier instance, so one configured verifier can be shared by several recipes."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class RecipeConfig(BaseModel):
    """Which verifiers score which labels, and how their scores become one reward."""

    model_config = ConfigDict(extra="forbid")

    format_reward: float = 1.0  # weight of the format verifier's 0/1 on every sample; 0 disables
    format_verifier: str = FORMAT  # registered name (or named instance) of the format check
    recipes: dict[str, list[RecipeEntry]] = Field(default_factory=dict)
    verifiers: dict[str, VerifierSpec] = Field(default_factory=dict)
    aggregation: Literal["sum", "sum_then_normalise", "normalise_per_objective"] = "sum"
    normalise_eps: float = Field(default=1e-6, gt=0)
    on_missing: Literal["error", "skip"] = "error"
    unknown_label: Literal["error", "format_only"] = "error"


def load_recipes(path: str | Path, overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """Read a recipes YAML; errors name file:line: key."""
    return load_config(path, RecipeConfig, overrides)


def recipe_path(name: str | Path) -> Path:
    """A recipes YAML path as given, or a built-in preset by name (e.g. "recipes_release")."""
    from safeladder.configs import preset_path

    p = Path(name)
    return p if p.suffix in (".yaml", ".yml") or p.exists() else preset_path(str(name))


def release_recipes_path() -> Path:
    """The released recipes (SPEC §3.2) mapped onto the CPU verifiers; shipped as package data."""
    from safeladder.configs import preset_path

    return preset_path("recipes_release")


# ------------------------------------------------------------------------------ validation


def known_verifier_names() -> set[str]:
    """Every registered verifier name, after importing the built-in verifier modules."""
    for module in base.BUILTIN_VERIFIER_MODULES:
        importlib.import_module(module)
    return set(base.VERIFIERS)


@dataclass(frozen=True)
class _Instance:
    """What to build for one component: registered type + options, and the first label using it."""

    type: str
    options: dict[str, Any]
    first_label: str


def _resolve(config: RecipeConfig, ref: str, options: dict[str, Any], label: str) -> tuple[str, dict[str, Any]]:
    if ref in config.verifiers:
        if options:
            raise ConfigError(
                f"recipe {label!r}: verifier {ref!r} is a named instance; put its options under verifiers.{ref}.options"
            )
        spec = config.verifiers[ref]
        return spec.type, dict(spec.options)
    return ref, dict(options)


def resolve_instances(config: RecipeConfig) -> dict[str, _Instance]:
    """Component name → what to build. Raises ConfigError on ambiguous or misplaced references."""
    out: dict[str, _Instance] = {}
    wanted: list[tuple[str, str, dict[str, Any]]] = []  # (label, ref, options)
    if config.format_reward != 0:
        wanted.append(("(format_reward)", config.format_verifier, {}))
    for label, entries in config.recipes.items():
        seen: set[str] = set()
        for entry in entries:
            if entry.verifier == FORMAT or entry.verifier == config.format_verifier:
                raise ConfigError(
                    f"recipe {label!r}: {entry.verifier!r} is the format check, added to every sample "
                    "through `format_reward`; do not list it in a recipe"
                )
            if entry.verifier in seen:
                raise ConfigError(f"recipe {label!r}: verifier {entry.verifier!r} is listed twice")
            seen.add(entry.verifier)
            wanted.append((label, entry.verifier, entry.options))
    for label, ref, options in wanted:
        type_, opts = _resolve(config, ref, options, label)
        name = FORMAT if label == "(format_reward)" else ref
        prev = out.get(name)
        if prev is None:
            out[name] = _Instance(type_, opts, label)
        elif (prev.type, prev.options) != (type_, opts):
            raise ConfigError(
                f"verifier {ref!r} is used with different options in recipes {prev.first_label!r} and "
                f"{label!r}; declare named instances under `verifiers:` instead"
            )
    return out


def validate_recipes(config: RecipeConfig, known: set[str] | None = None) -> None:
    """Check every referenced verifier name exists, without constructing any verifier.

    `known` defaults to the registry's names (built-in modules imported, nothing built).
    Raises one ConfigError listing every unknown name with the label that uses it.
    """
    known = known_verifier_names() if known is None else known
    instances = resolve_instances(config)
    problems = [
        f"recipe {inst.first_label!r}: unknown verifier {inst.type!r}"
        for inst in instances.values()
        if inst.type not in known
    ]
    problems += [
        f"verifiers.{name}: unknown verifier type {spec.type!r}"
        for name, spec in config.verifiers.items()
        if spec.type not in known
    ]
    if problems:
        raise ConfigError("; ".join(problems) + f" (known: {', '.join(sorted(known))})")


# ------------------------------------------------------------------------------ aggregation

# Signature of an aggregation: (scores, weights, groups, eps) -> rewards, where for N items and
# K objectives scores is [K, N] with NaN where the objective did not apply (or was skipped),
# weights is [K, N] (0 where it did not apply) and groups is [N] integer group ids.
Aggregation = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]


def _weighted_sum(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[K, N], [K, N] -> [N]: Σ_k w_kn · s_kn, NaN scores contributing nothing."""
    return np.where(np.isnan(scores), 0.0, weights * np.nan_to_num(scores)).sum(axis=0)


def _normalise_in_groups(values: np.ndarray, groups: np.ndarray, eps: float) -> np.ndarray:
    """[N] -> [N]: (x − mean_g x) / (std_g x + eps) per group, over non-NaN entries; NaN stays NaN.

    std is the population std (ddof=0), so a group of one (or of equal values) maps to 0.
    """
    out = np.full_like(values, np.nan)
    for g in np.unique(groups):
        idx = np.flatnonzero((groups == g) & ~np.isnan(values))
        if idx.size:
            x = values[idx]
            out[idx] = (x - x.mean()) / (x.std() + eps)
    return out


def aggregate_sum(scores: np.ndarray, weights: np.ndarray, groups: np.ndarray, eps: float) -> np.ndarray:
    """R_n = Σ_k w_kn · s_kn."""
    return _weighted_sum(scores, weights)


def aggregate_sum_then_normalise(
    scores: np.ndarray, weights: np.ndarray, groups: np.ndarray, eps: float
) -> np.ndarray:
    """R_n = (S_n − mean_g S) / (std_g S + eps) with S_n = Σ_k w_kn · s_kn, g = group of n."""
    return _normalise_in_groups(_weighted_sum(scores, weights), groups, eps)


def aggregate_normalise_per_objective(
    scores: np.ndarray, weights: np.ndarray, groups: np.ndarray, eps: float
) -> np.ndarray:
    """R_n = Σ_k w_kn · z_kn with z_k = s_k normalised within each group over the items k applied to."""
    z = np.stack([_normalise_in_groups(row, groups, eps) for row in scores]) if len(scores) else scores
    return _weighted_sum(z, weights)


AGGREGATIONS: dict[str, Aggregation] = {
    "sum": aggregate_sum,
    "sum_then_normalise": aggregate_sum_then_normalise,
    "normalise_per_objective": aggregate_normalise_per_objective,
}


# ------------------------------------------------------------------------------ result


@dataclass
class RewardResult:
    """Rewards for one batch plus every component, so trainers can log what drove them."""

    rewards: list[float]  # aggregated (what the trainer optimises)
    raw_rewards: list[float]  # the plain weighted sum, whatever the aggregation mode
    components: dict[str, list[float | None]]  # objective -> score per item; None: did not apply/skipped
    verdicts: dict[str, list[Verdict | None]]  # objective -> full verdict per item; None: not routed
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (item index, verifier, status)
    unrouted: list[int] = field(default_factory=list)  # items whose label has no recipe (format only)

    def metrics(self) -> dict[str, float]:
        """Means of each component over the items it applied to, with counts and skip counts."""
        out: dict[str, float] = {
            "reward/mean": _mean(self.rewards),
            "reward/raw_mean": _mean(self.raw_rewards),
            "reward/count": float(len(self.rewards)),
            "reward/skipped": float(len(self.skipped)),
            "reward/unrouted": float(len(self.unrouted)),
        }
        skips: dict[str, int] = defaultdict(int)
        for _, name, _ in self.skipped:
            skips[name] += 1
        for name, values in self.components.items():
            applied = [v for v in values if v is not None]
            out[f"reward/{name}/mean"] = _mean(applied)
            out[f"reward/{name}/count"] = float(len(applied))
            out[f"reward/{name}/skipped"] = float(skips[name])
        return out


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


# ------------------------------------------------------------------------------ computer


def sample_id(item: VerifyItem, index: int) -> str:
    """How errors name a sample: its metadata id, else its position in the batch."""
    return str(item.metadata.get("id", f"#{index}"))


class RewardComputer:
    """Builds the recipe's verifiers once; `compute` scores a batch with one call per verifier."""

    def __init__(self, config: RecipeConfig):
        self.config = config
        validate_recipes(config)
        self._instances = resolve_instances(config)
        self.verifiers: dict[str, Verifier] = {
            name: _build(name, inst) for name, inst in self._instances.items()
        }
        # objective order: format first, then in order of first appearance in the recipes
        self.objectives: list[str] = list(self._instances)
        self._aggregate = AGGREGATIONS[config.aggregation]

    @classmethod
    def from_path(cls, path: str | Path) -> "RewardComputer":
        return cls(load_recipes(path))

    @property
    def labels(self) -> list[str]:
        return list(self.config.recipes)

    def weights_for(self, label: str | None) -> dict[str, float]:
        """Objective -> weight for a label (format included); empty recipe for unknown labels."""
        out = {FORMAT: self.config.format_reward} if FORMAT in self.verifiers else {}
        for entry in self.config.recipes.get(label, []) if label is not None else []:
            out[entry.verifier] = entry.weight
        return out

    def max_reward(self, label: str | None) -> float:
        """Largest raw reward a label can earn (every score 1, positive weights only)."""
        return float(sum(w for w in self.weights_for(label).values() if w > 0))

    def compute(self, items: Sequence[VerifyItem], group_ids: Sequence[int] | None = None) -> RewardResult:
        """Score a batch. `group_ids[i]` groups items for the normalising modes (None: one group)."""
        n = len(items)
        if group_ids is not None and len(group_ids) != n:
            raise ValueError(f"got {len(group_ids)} group ids for {n} items")
        weights, unrouted = self._route(items)
        verdicts = self._run_verifiers(items, weights)
        components, skipped = self._components(items, weights, verdicts)

        k = len(self.objectives)
        s = np.array([[np.nan if v is None else v for v in components[o]] for o in self.objectives], dtype=float)
        w = np.array([[weights[i].get(o, 0.0) for i in range(n)] for o in self.objectives], dtype=float)
        s, w = s.reshape(k, n), w.reshape(k, n)  # [K, N] even when N == 0 or K == 0
        groups = np.zeros(n, dtype=int) if group_ids is None else np.asarray(group_ids)
        raw = _weighted_sum(s, w)
        rewards = self._aggregate(s, w, groups, self.config.normalise_eps)
        return RewardResult(
            rewards=[float(r) for r in rewards],
            raw_rewards=[float(r) for r in raw],
            components=components,
            verdicts=verdicts,
            skipped=skipped,
            unrouted=unrouted,
        )

    # -- steps of compute ----------------------------------------------------------------------

    def _route(self, items: Sequence[VerifyItem]) -> tuple[list[dict[str, float]], list[int]]:
        """Per item: objective -> weight, from its label's recipe (plus format)."""
        routed, unrouted = [], []
        for i, item in enumerate(items):
            if item.label not in self.config.recipes:
                if self.config.unknown_label == "error":
                    raise RewardError(
                        f"sample {sample_id(item, i)}: label {item.label!r} has no recipe "
                        f"(recipes: {', '.join(self.labels)}); set unknown_label: format_only to allow it"
                    )
                unrouted.append(i)
            routed.append(self.weights_for(item.label))
        if unrouted:
            log.info("%d sample(s) with no recipe scored on format only", len(unrouted))
        return routed, unrouted

    def _run_verifiers(
        self, items: Sequence[VerifyItem], weights: list[dict[str, float]]
    ) -> dict[str, list[Verdict | None]]:
        """One batched call per verifier, on exactly the items routed to it."""
        out: dict[str, list[Verdict | None]] = {}
        for name, verifier in self.verifiers.items():
            idx = [i for i, w in enumerate(weights) if name in w]
            verdicts: list[Verdict | None] = [None] * len(items)
            if idx:
                batch = [_format_view(items[i]) if name == FORMAT else items[i] for i in idx]
                for i, v in zip(idx, verifier(batch)):
                    verdicts[i] = v
            out[name] = verdicts
        return out

    def _components(
        self,
        items: Sequence[VerifyItem],
        weights: list[dict[str, float]],
        verdicts: dict[str, list[Verdict | None]],
    ) -> tuple[dict[str, list[float | None]], list[tuple[int, str, str]]]:
        components: dict[str, list[float | None]] = {}
        skipped: list[tuple[int, str, str]] = []
        for name, per_item in verdicts.items():
            scores: list[float | None] = []
            for i, v in enumerate(per_item):
                if v is not None and v.status != "ok":
                    self._missing(items[i], i, name, v, weights[i].get(name, 0.0))
                    skipped.append((i, name, v.status))
                scores.append(v.score if v is not None and v.status == "ok" else None)
            components[name] = scores
        skipped.sort(key=lambda s: s[0])  # by item, then objective order (the sort is stable)
        if skipped:
            log.warning(
                "skipped %d reward component(s): %s", len(skipped),
                ", ".join(f"#{i} {name} ({status})" for i, name, status in skipped[:10]),
            )
        return components, skipped

    def _missing(self, item: VerifyItem, index: int, name: str, verdict: Verdict, weight: float) -> None:
        """`on_missing: error` stops on a verifier that could not score a sample it adds to the
        reward. Components at weight 0 (costs for a constraint, instruments) are exempt: their
        missing score is NaN, which the constraints already read as "does not apply"."""
        if self.config.on_missing == "error" and weight != 0.0:
            reason = verdict.details.get("reason", "")
            raise RewardError(
                f"sample {sample_id(item, index)}: label {item.label!r}: verifier {name!r} returned "
                f"{verdict.status}" + (f": {reason}" if reason else "") + " (set on_missing: skip to drop it)"
            )


def _format_view(item: VerifyItem) -> VerifyItem:
    """The format check sees the completion only: the system prompt mentions the tags itself."""
    return replace(item, prompt="")


def _build(name: str, inst: _Instance) -> Verifier:
    try:
        return build_verifier(inst.type, **inst.options)
    except ConfigError as exc:
        raise ConfigError(f"recipe {inst.first_label!r}: verifier {name!r}: {exc}") from None


def group_ids_from_keys(keys: Sequence[Any]) -> list[int]:
    """Items with equal keys (e.g. the same prompt) share a group id, numbered by first appearance."""
    ids: dict[Any, int] = {}
    return [ids.setdefault(k, len(ids)) for k in keys]

