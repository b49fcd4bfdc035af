"""SafeLadder rewards for other trainers: TRL, verl and OpenRLHF.

Each adapter turns the trainer's calling convention into `VerifyItem`s and runs one
`RewardComputer` (label routing + recipes, SPEC §3.2). Building neural verifiers is expensive, so
computers are cached per recipes file (`get_computer`). The recipes file is, in order: the path
given, `$SAFELADDER_RECIPES`, or the released recipes.

Group normalisation: TRL's GRPOTrainer and verl's GRPO estimator already compute
(R − mean_G R) / std_G R themselves, so with them use `aggregation: sum` (what the trainer then
does equals "sum_then_normalise"). The adapters still honour the other modes where they can see
the groups (TRL and OpenRLHF: samples with the same prompt form a group).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from safeladder.verifiers.base import VerifyItem
from safeladder.verifiers.recipes import (
    RecipeConfig,
    RewardComputer,
    RewardError,
    RewardResult,
    group_ids_from_keys,
    release_recipes_path,
)

log = logging.getLogger(__name__)

ENV_RECIPES = "SAFELADDER_RECIPES"  # path of the recipes YAML the adapters use
ENV_LABEL = "SAFELADDER_LABEL"  # OpenRLHF: recipe label for rows whose label column is a plain answer
REFERENCE_KEYS = ("reference", "answer", "solution", "ground_truth")  # first one present is the reference
TRL_IGNORED_KWARGS = frozenset({"completion_ids", "completions_ids", "trainer_state", "log_extra", "log_metric"})
TOTAL = "total"


# ------------------------------------------------------------------------------ computers


def recipes_path(path: str | Path | None = None) -> Path:
    """The recipes file to use: `path`, else $SAFELADDER_RECIPES, else the released recipes."""
    chosen = path or os.environ.get(ENV_RECIPES) or release_recipes_path()
    return Path(chosen).expanduser().resolve()


@functools.lru_cache(maxsize=8)
def _computer_at(path: str) -> RewardComputer:
    return RewardComputer.from_path(path)


def get_computer(path: str | Path | None = None) -> RewardComputer:
    """The (cached) RewardComputer for a recipes file; verifiers are built on first use only."""
    return _computer_at(str(recipes_path(path)))


@functools.singledispatch
def as_computer(spec: Any) -> RewardComputer:
    """A RewardComputer from a computer, a RecipeConfig, or a recipes path (cached)."""
    raise TypeError(f"expected a RewardComputer, RecipeConfig or recipes path, got {type(spec).__name__}")


@as_computer.register
def _(spec: RewardComputer) -> RewardComputer:
    return spec


@as_computer.register
def _(spec: RecipeConfig) -> RewardComputer:
    return RewardComputer(spec)


@as_computer.register(str)
@as_computer.register(Path)
def _(spec: str | Path) -> RewardComputer:
    return get_computer(spec)


# ------------------------------------------------------------------------------ shared parsing


def content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a multimodal content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type", "text") == "text")
    return str(content)


def _last_turn(chat: Sequence[Mapping[str, Any]], role: str) -> str:
    turn = next((m for m in reversed(chat) if m.get("role") == role), chat[-1] if chat else {"content": ""})
    return content_text(turn.get("content", ""))


def prompt_text(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    """What judges see as the request: the prompt string, or the last user turn of a chat."""
    return prompt if isinstance(prompt, str) else _last_turn(prompt, "user")


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The completion string, or the content of the last assistant turn of a chat completion."""
    return completion if isinstance(completion, str) else _last_turn(completion, "assistant")


def _reference(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


def row_fields(row: Mapping[str, Any], default_label: str | None = None) -> dict[str, Any]:
    """Dataset columns of one sample → VerifyItem fields (label, reference, metadata).

    `label` routes the sample; the first of `reference`/`answer`/`solution`/`ground_truth` is the
    reference; a `metadata` dict is merged in and every other column becomes metadata too.
    """
    ref_key = next((k for k in REFERENCE_KEYS if k in row), None)
    metadata = dict(row.get("metadata") or {})
    metadata.update({k: v for k, v in row.items() if k not in {"label", "metadata", ref_key}})
    return {
        "label": row.get("label", default_label),
        "reference": _reference(row.get(ref_key)) if ref_key else None,
        "metadata": metadata,
    }


# ------------------------------------------------------------------------------ TRL


def _trl_rows(n: int, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-sample rows from TRL's keyword columns (lists of length n); trainer extras are ignored."""
    columns = {
        k: v for k, v in kwargs.items()
        if k not in TRL_IGNORED_KWARGS and isinstance(v, (list, tuple)) and len(v) == n
    }
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def trl_items(prompts: Sequence[Any], completions: Sequence[Any], kwargs: Mapping[str, Any]) -> list[VerifyItem]:
    """TRL's (prompts, completions, **columns) → VerifyItems."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions")
    rows = _trl_rows(len(completions), kwargs)
    return [
        VerifyItem(prompt=prompt_text(p), response=completion_text(c), **row_fields(r))
        for p, c, r in zip(prompts, completions, rows)
    ]


class _LastBatch:
    """Computes a batch once and serves every reward function TRL calls on that same batch."""

    def __init__(self, computer: RewardComputer):
        self.computer = computer
        self._key: tuple[list[VerifyItem], list[int]] | None = None
        self._result: RewardResult | None = None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: Mapping[str, Any]) -> RewardResult:
        items = trl_items(prompts, completions, kwargs)
        groups = group_ids_from_keys([json.dumps(p, sort_keys=True, default=str) for p in prompts])
        if self._result is None or not _equal(self._key, (items, groups)):
            self._result = self.computer.compute(items, groups)
            self._key = (items, groups)
        return self._result


def _equal(a: Any, b: Any) -> bool:
    """Equality that treats incomparable metadata (tensors, arrays) as different."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - e.g. "truth value of an array is ambiguous"
        return False


def trl_reward_funcs(
    config_or_computer: Any = None, include_components: bool = True
) -> list[Callable[..., list[float | None]]]:
    """Reward functions for TRL's GRPOTrainer(reward_funcs=...): one per objective, then `total`.

    Each is `f(prompts, completions, **kwargs) -> list[float | None]` (None where the objective did
    not apply; TRL turns it into NaN and logs `rewards/<objective>/mean`). Dataset columns arrive
    as kwargs: `label` routes, `reference`/`answer`/`solution` is the reference, others are
    metadata. TRL SUMS its reward functions: train on `total` alone and log the components with
    `GRPOConfig(reward_weights=trl_reward_weights(funcs))` (1 for total, 0 for the components).
    The batch is scored once however many of these functions TRL calls on it.
    """
    computer = as_computer(config_or_computer if config_or_computer is not None else recipes_path())
    if include_components and TOTAL in computer.objectives:
        raise RewardError(f"an objective is named {TOTAL!r}, which clashes with the total reward function")
    memo = _LastBatch(computer)

    def make(objective: str | None) -> Callable[..., list[float | None]]:
        def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
            result = memo(prompts, completions, kwargs)
            return list(result.rewards) if objective is None else list(result.components[objective])

        reward.__name__ = reward.__qualname__ = objective or TOTAL
        return reward

    components = [make(o) for o in computer.objectives] if include_components else []
    return [*components, make(None)]


def trl_reward_weights(funcs: Sequence[Callable[..., Any]]) -> list[float]:
    """GRPOConfig.reward_weights for `trl_reward_funcs`: optimise `total`, only log the components."""
    return [1.0 if f.__name__ == TOTAL else 0.0 for f in funcs]


# ------------------------------------------------------------------------------ verl

_GROUP_KEYS = ("uid", "index")  # extra_info keys shared by the rollouts of one prompt


def _verl_item(data_source: str, solution_str: str, ground_truth: Any, extra: Mapping[str, Any]) -> VerifyItem:
    metadata = {k: v for k, v in extra.items() if k not in {"recipes", "label"}}
    prompt = extra.get("prompt", extra.get("question", ""))
    return VerifyItem(
        prompt=prompt_text(prompt) if prompt else "",
        response=solution_str,
        reference=_reference(ground_truth),
        label=extra.get("label") or data_source,
        metadata=metadata,
    )


def _verl_records(computer: RewardComputer, result: RewardResult, scores: Sequence[float]) -> list[dict[str, float]]:
    """{"score": R, <objective>: s or NaN}: every record has the same keys, as verl's logging needs."""
    return [
        {"score": float(score), **{o: _nan(result.components[o][i]) for o in computer.objectives}}
        for i, score in enumerate(scores)
    ]


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, float]:
    """verl custom reward function (`custom_reward_function.path=…/adapters.py name=compute_score`).

    Label: `extra_info["label"]`, else `data_source`. Recipes: `extra_info["recipes"]`, else
    $SAFELADDER_RECIPES, else the release. The prompt, if the dataset put it in extra_info
    ("prompt" or "question"), is given to the judges. One sample has no group, so "score" is the
    plain weighted sum; leave group normalisation to verl's advantage estimator.
    """
    extra = dict(extra_info or {})
    computer = get_computer(extra.get("recipes"))
    result = computer.compute([_verl_item(data_source, solution_str, ground_truth, extra)])
    return _verl_records(computer, result, result.raw_rewards)[0]


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None],
    **kwargs: Any,
) -> list[dict[str, float]]:
    """verl BatchRewardManager form: one batched call per verifier for the whole rollout batch.

    Groups come from extra_info "uid" (else "index") when every sample has one; then "score" is the
    aggregated reward, else the plain weighted sum.
    """
    extras = [dict(e or {}) for e in extra_infos]
    paths = {str(recipes_path(e.get("recipes"))) for e in extras}
    if len(paths) > 1:
        raise RewardError(f"one batch names several recipes files: {sorted(paths)}")
    computer = get_computer(paths.pop() if paths else None)
    items = [_verl_item(*args) for args in zip(data_sources, solution_strs, ground_truths, extras)]
    key = next((k for k in _GROUP_KEYS if extras and all(k in e for e in extras)), None)
    groups = group_ids_from_keys([str(e[key]) for e in extras]) if key else None
    result = computer.compute(items, groups)
    return _verl_records(computer, result, result.rewards if key else result.raw_rewards)


# ------------------------------------------------------------------------------ OpenRLHF

_TRAILING_SPECIAL = re.compile(r"(?:\s*(?:<\|[^<>|]*\|>|</s>|<eos>|<pad>))+\s*$")


def split_response(query: str, prompt: str, index: int = 0) -> str:
    """The response part of an OpenRLHF query (= prompt + response), trailing EOS/pad tokens removed.

    Left padding before the prompt is tolerated. A query that does not contain its prompt is an
    error: scoring the whole query would judge the system prompt too (whose tags pass the format
    check).
    """
    at = query.find(prompt)
    if at < 0:
        raise RewardError(f"query #{index}: its prompt does not occur in it, cannot split off the response")
    return _TRAILING_SPECIAL.sub("", query[at + len(prompt):])


def openrlhf_label_fields(label: Any) -> dict[str, Any]:
    """One OpenRLHF `labels` entry (from --label_key) → VerifyItem fields.

    A dict, or a JSON object string, is read like a dataset row (`label`, `reference`/`answer`,
    `prompt`, `metadata`, …); anything else is the reference answer, routed by $SAFELADDER_LABEL.
    """
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            label = json.loads(label)
        except json.JSONDecodeError:
            pass
    if isinstance(label, Mapping):
        return row_fields(label)
    return {"label": os.environ.get(ENV_LABEL), "reference": _reference(label), "metadata": {}}


def openrlhf_rewards(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], computer: RewardComputer | None = None
) -> dict[str, Any]:
    """OpenRLHF's dict protocol: {"rewards": [N] tensor, "scores": [N] in [0, 1], "extra_logs": {...}}.

    rewards: the aggregated reward (samples with the same prompt form a group).
    scores: the plain weighted sum divided by the label's largest attainable reward, clipped to
      [0, 1] (OpenRLHF uses it for dynamic filtering).
    extra_logs: per objective, the score per sample (0 where it did not apply) and a 0/1
      `<objective>_applied` mask, so mean(score)/mean(applied) is the objective's mean.
    """
    import torch

    computer = computer or get_computer()
    items = []
    for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels, strict=True)):
        fields = openrlhf_label_fields(label)
        request = fields["metadata"].pop("prompt", None)
        items.append(VerifyItem(prompt=prompt_text(request) if request else prompt,
                                response=split_response(query, prompt, i), **fields))
    result = computer.compute(items, group_ids_from_keys(list(prompts)))
    scores = [_unit(raw, computer.max_reward(it.label)) for raw, it in zip(result.raw_rewards, items)]
    extra_logs: dict[str, Any] = {}
    for o in computer.objectives:
        values = result.components[o]
        extra_logs[f"safeladder/{o}"] = torch.tensor([v or 0.0 for v in values], dtype=torch.float32)
        extra_logs[f"safeladder/{o}_applied"] = torch.tensor([v is not None for v in values], dtype=torch.float32)
    return {
        "rewards": torch.tensor(result.rewards, dtype=torch.float32),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "extra_logs": extra_logs,
    }


def _unit(raw: float, top: float) -> float:
    return 0.0 if top <= 0 or not math.isfinite(raw) else min(1.0, max(0.0, raw / top))


def openrlhf_reward_func_path() -> Path:
    """The file to pass to OpenRLHF's --remote_rm_url (it defines `reward_func`)."""
    return Path(__file__).resolve().parents[1] / "configs" / "openrlhf_reward_func.py"
