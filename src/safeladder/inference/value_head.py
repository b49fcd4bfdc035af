"""A trained step value: P(the finished turn will be judged safe | request, reasoning so far).

The built-in `safety_soft` value judges partial reasoning with heads trained on *answers*; on the
SmolLM2 SFT model its score of a reasoning prefix does not predict how the turn ends (measured
in benchmarks/RESULTS.md). This value is learned the Monte-Carlo way instead (as process reward
models are): sample whole turns from the policy with the same two-phase sampling step search
uses, judge each finished turn with a verifier (default: the `safety` verdict score), and
train a head on (request, reasoning prefix) → that score, for prefixes cut every `step_tokens`
tokens. Finished turns (`final=True`) are still judged by the verifier-based value itself.

    collect_examples(...) -> train_step_value(...) -> StepValueHead(directory)

`safeladder value train` runs the first two; `--value <directory>` (step search, serving, chat,
benchmarks/step_search.py) loads the third.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from safeladder.errors import ConfigError
from safeladder.inference.steps import reasoning_for_judging
from safeladder.inference.value import ValueFunction, ValueScore, build_value
from safeladder.verifiers.base import Verifier, VerifyItem, build_verifier
from safeladder.verifiers.heads import HeadConfig, build_features, encode_inputs, fit_head, load_head

HEAD_NAME = "step_value"
REPORT = "step_value_report.json"


@dataclass(frozen=True)
class StepExample:
    prompt_id: str  # groups the examples of one request (validation splits by request)
    request: str
    reasoning: str  # the reasoning prefix, as `reasoning_for_judging` gives it
    target: float  # the verifier's score of the finished turn, in [0, 1]
    cut: int  # tokens of reasoning in the prefix (0 = the whole reasoning)


def prefix_cuts(n_tokens: int, step_tokens: int) -> list[int]:
    """Where step search would have scored this reasoning: every `step_tokens` tokens, and its end."""
    cuts = list(range(step_tokens, n_tokens, step_tokens))
    return [*cuts, n_tokens] if n_tokens else []


def examples_from_turn(prompt_id: str, request: str, prefill: str, reasoning_ids: Sequence[int], tokenizer: Any,
                       target: float, step_tokens: int) -> list[StepExample]:
    """One example per prefix of one finished turn, all labelled with the turn's final score."""
    out = []
    for cut in prefix_cuts(len(reasoning_ids), step_tokens):
        text = reasoning_for_judging(prefill + tokenizer.decode(list(reasoning_ids[:cut]), skip_special_tokens=True))
        if text:
            out.append(StepExample(prompt_id, request, text, float(target), cut))
    return out


def collect_examples(engine: Any, samples: Sequence[Any], settings: Any, per_prompt: int = 4,
                     judge: str | Verifier = "safety", seed: int = 0) -> list[StepExample]:
    """Sample `per_prompt` whole turns per `Sample` (two phases, as step search and Best-of-N do),
    judge each finished turn, and cut its reasoning into labelled prefixes."""
    from safeladder.inference.step_search import prepare_prompts, sample_pools

    verifier = build_verifier(judge) if isinstance(judge, str) else judge
    prompts = prepare_prompts(engine.tokenizer, [s.chat() for s in samples])
    pools = sample_pools(engine, prompts, None, settings, n=per_prompt, seed=seed)
    turns = [(s, pool.prompt, path) for s, pool in zip(samples, pools) for path in pool.samples]
    verdicts = verifier([VerifyItem(prompt=p.request, response=path.text) for _, p, path in turns])
    out: list[StepExample] = []
    for (sample, prompt, path), verdict in zip(turns, verdicts):
        if verdict.status != "ok" or verdict.score is None:
            continue
        reasoning = path.steps[0]  # sample_whole: one reasoning step (then any system close), then the answer
        out += examples_from_turn(sample.id, prompt.request, prompt.prefill, reasoning.token_ids, engine.tokenizer,
                                  min(1.0, max(0.0, verdict.score)), settings.step_tokens)
    return out


def build_step_value(model: str, directory: str | Path, harmful: int = 120, benign: int = 60, per_prompt: int = 4,
                     settings: Any = None, judge: str = "safety", seed: int = 0, chunk: int = 16) -> dict[str, Any]:
    """Train a step value for `model` on the train splits of the built-in harmful requests and
    benign look-alikes (dev and test stay unseen); writes examples.jsonl, the head and its report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from safeladder.inference.steps import StepSettings
    from safeladder.models.loader import load_policy
    from safeladder.rollout.hf_engine import TransformersEngine
    from safeladder.train.rl_data import BUILTIN_PROMPTS

    settings = settings or StepSettings(step_tokens=24, max_steps=3, answer_tokens=48, temperature=0.8)
    verifier = build_verifier(judge)  # a bad name fails here, before the model loads
    samples = []
    for task, k in (("harmful", harmful), ("benign", benign)):
        pool = BUILTIN_PROMPTS[task]("train")
        random.Random(seed).shuffle(pool)
        samples += pool[:k]
    policy = load_policy(model)
    engine = TransformersEngine(policy.model, policy.tokenizer)
    examples: list[StepExample] = []
    columns = (TextColumn("step value · sampling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns) as bar:
        task_id = bar.add_task("prompts", total=len(samples))
        for start in range(0, len(samples), chunk):
            part = samples[start : start + chunk]
            examples += collect_examples(engine, part, settings, per_prompt, verifier, seed=seed + start)
            bar.advance(task_id, len(part))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_examples(examples, directory / "examples.jsonl")
    meta = {"model": str(model), "judge": judge, "per_prompt": per_prompt, "step_tokens": settings.step_tokens,
            "temperature": settings.temperature}
    return train_step_value(examples, directory, seed=seed, meta=meta)


def _features(requests: Sequence[str], reasonings: Sequence[str]) -> torch.Tensor:
    from safeladder.verifiers.embeddings import get_embedder

    return build_features("pair", requests, reasonings, encode_inputs(get_embedder(), requests, reasonings))


def _example_features(examples: Sequence[StepExample]) -> torch.Tensor:
    return _features([e.request for e in examples], [e.reasoning for e in examples])


def split_by_request(examples: Sequence[StepExample], val_fraction: float = 0.2,
                     seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, validation) example indices; a request's prefixes all fall on one side."""
    ids = sorted({e.prompt_id for e in examples})
    random.Random(seed).shuffle(ids)
    held = set(ids[: max(1, round(len(ids) * val_fraction))]) if len(ids) > 1 else set()
    return ([i for i, e in enumerate(examples) if e.prompt_id not in held],
            [i for i, e in enumerate(examples) if e.prompt_id in held])


def ranking_accuracy(examples: Sequence[StepExample], scores: Sequence[float]) -> dict[str, float]:
    """How well `scores` order prefixes by their turn's final score: AUC over all pairs with
    different targets, and within the same request and cut (what step search compares)."""
    def auc(pairs: list[tuple[int, int]]) -> float | None:
        if not pairs:
            return None
        return sum(1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0 for i, j in pairs) / len(pairs)

    idx = range(len(examples))
    better = [(i, j) for i in idx for j in idx if examples[i].target > examples[j].target + 0.5]
    same = [(i, j) for i, j in better if (examples[i].prompt_id, examples[i].cut) == (examples[j].prompt_id, examples[j].cut)]
    return {"auc": auc(better), "auc_within_request": auc(same), "pairs": len(better), "pairs_within_request": len(same)}


def train_step_value(examples: Sequence[StepExample], directory: str | Path, val_fraction: float = 0.2,
                     config: HeadConfig = HeadConfig(), seed: int = 0, baseline: str | None = "safety_soft",
                     meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit the head (validation split by request), save it and a report to `directory`; return the report.

    The report holds the held-out ranking accuracy of the head and, for comparison, of the
    `baseline` value applied to the same prefixes.
    """
    if not examples:
        raise ConfigError("no step-value examples to train on")
    train_idx, val_idx = split_by_request(examples, val_fraction, seed)
    train, val = [examples[i] for i in train_idx], [examples[i] for i in val_idx]
    x, y = _example_features(train), torch.tensor([e.target for e in train])
    x_val = _example_features(val) if val else None
    y_val = torch.tensor([e.target for e in val]) if val else None
    head = fit_head(HEAD_NAME, "pair", x, y, x_val, y_val, config=config, seed=seed)
    head.meta.update(meta or {})
    directory = Path(directory)
    head.save(directory)
    report: dict[str, Any] = {"n_train": len(train), "n_val": len(val), "requests": len({e.prompt_id for e in examples}),
                              "mean_target": float(y.mean()), **(meta or {})}
    if val:
        report["head"] = ranking_accuracy(val, head.predict_proba(x_val).tolist())
        if baseline:
            scored = build_value(baseline).score([(e.request, e.reasoning) for e in val], final=False)
            report[baseline] = ranking_accuracy(val, [s.score for s in scored])
    (directory / REPORT).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def save_examples(examples: Sequence[StepExample], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(asdict(e)) + "\n" for e in examples), encoding="utf-8")


def load_examples(path: str | Path) -> list[StepExample]:
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(StepExample(**json.loads(line)))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{path}:{n}: not a step-value example ({e})") from None
    return out


def is_step_value_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / f"{HEAD_NAME}.json").is_file() and (p / f"{HEAD_NAME}.safetensors").is_file()


class StepValueHead:
    """The trained head for partial reasoning; finished turns go to `final_value` (a verifier value)."""

    verifiers_per_item = 1

    def __init__(self, directory: str | Path, final_value: str | ValueFunction = "safety_soft"):
        if not is_step_value_dir(directory):
            raise ConfigError(f"{directory}: no trained step value (train one with `safeladder value train`)")
        self.head = load_head(Path(directory), HEAD_NAME)
        self.final = build_value(final_value)
        self.name = f"step_value:{directory}"

    def score(self, items: Sequence[tuple[str, str]], final: bool = False) -> list[ValueScore]:
        if not items:
            return []
        if final:
            return self.final.score(items, final=True)
        reasonings = [reasoning_for_judging(text) for _, text in items]
        live = [i for i, r in enumerate(reasonings) if r]
        probs = [0.5] * len(items)  # nothing written yet: no information
        if live:
            x = _features([items[i][0] for i in live], [reasonings[i] for i in live])
            for i, p in zip(live, self.head.predict_proba(x).tolist()):
                probs[i] = p
        return [ValueScore(p, False, {"step_value": {"score": round(p, 4), "label": "learned", "status": "ok"}})
                for p in probs]

    def warm_up(self) -> None:
        self.score([("Hello", "<think>\nHi")])
        self.final.score([("Hello", "Hello.")], final=True)


__all__ = ["StepExample", "StepValueHead", "build_step_value", "collect_examples", "examples_from_turn", "is_step_value_dir",
           "load_examples", "prefix_cuts", "ranking_accuracy", "save_examples", "split_by_request", "train_step_value"]
