"""Value-guided step search (SPEC §6) and its baselines, all with the same compute accounting.

Step search: at each reasoning step, sample `n` candidate continuations of every live beam, score
reasoning-so-far + candidate with a value function (`value.py`), optionally drop candidates judged
unsafe, keep the best `beam`, and stop when the reasoning closes (`</think>`) or runs out of steps;
then sample the answer (`answer_n` > 1: keep the answer the value function likes best).

Baselines, sampled in the same two phases (reasoning up to the same token cap, the think block
closed for the model if it did not close it, then the answer) so that only the *selection* differs:
plain sampling (one sample), Best-of-N (the best-valued of N whole samples) and weighted Best-of-N
(samples grouped by answer, value summed per group, the heaviest group wins). Best-of-N can be
given a per-prompt generated-token budget (e.g. what step search spent) instead of a fixed N.

Every result reports generated tokens (every sampled token, discarded candidates included) and
verifier calls (items scored × verifiers per item), so methods are compared at equal compute.
All functions take a batch of prompts and advance them in lock-step: one engine call per step.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from safeladder.format import SYSTEM_PROMPT, THINK_CLOSE, parse_response
from safeladder.inference.steps import (
    FORCED_CLOSE, THINK_PREFILL, SeedSequence, Step, StepSettings, closes_reasoning, context_ids, encode, eos_ids,
    prompt_ids, user_text,
)
from safeladder.inference.value import ValueFunction
from safeladder.rollout.base import Completion, RolloutEngine, SamplingSettings


@dataclass(frozen=True)
class SearchSettings:
    # Defaults: the configuration measured above Best-of-N on the base model (benchmarks/RESULTS.md);
    # choosing among answers matters more than many candidates per reasoning step.
    n: int = 2  # candidates per live beam per step
    beam: int = 1  # beams kept after each step
    answer_n: int = 3  # answers sampled after the reasoning; > 1 keeps the best-valued one
    answer_paths: int = 1  # answers spread over this many best reasoning paths of the last step's pool
    mask_unsafe: bool = True  # drop candidates a verifier labels unsafe (unless all are)
    steps: StepSettings = StepSettings()
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.beam < 1 or self.answer_n < 1 or self.answer_paths < 1:
            raise ValueError("n, beam, answer_n and answer_paths must be >= 1")


@dataclass
class SearchPrompt:
    """A prompt ready for the engine: its token ids end inside the assistant turn, after `prefill`."""

    request: str  # the user's request, as verifiers read it
    ids: list[int]
    prefill: str = THINK_PREFILL


def prepare_prompts(tokenizer: Any, chats: Sequence[Sequence[dict[str, str]]], prefill: str = THINK_PREFILL,
                    system_prompt: str | None = SYSTEM_PROMPT) -> list[SearchPrompt]:
    return [SearchPrompt(user_text(c), prompt_ids(tokenizer, c, prefill, system_prompt), prefill) for c in chats]


@dataclass
class SearchResult:
    method: str
    completion: str  # the whole assistant turn: prefill, reasoning, answer
    steps: list[Step]  # the chosen path: reasoning steps (model and system), then the answer
    generated_tokens: int
    verifier_calls: int
    wall_s: float  # the batch's wall time shared equally among its prompts
    score: float | None = None  # value of the returned completion, when the method computed one
    candidates: int = 0  # samples drawn (candidate steps, or whole samples)
    masked: int = 0  # candidates dropped as unsafe

    @property
    def think(self) -> str | None:
        return parse_response(self.completion).think

    @property
    def answer(self) -> str:
        return parse_response(self.completion).answer


@dataclass
class _Path:
    """A partial assistant turn: the steps so far and the context ids they put after the prompt."""

    steps: list[Step] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    score: float = 0.0
    logprob: float = 0.0  # mean log-prob of the last sampled piece: the tie-break between equal scores
    unsafe: bool = False
    closed: bool = False
    generated: int = 0  # tokens this path's own steps took to sample

    def extended(self, c: Completion, eos: set[int], kind: str = "reasoning") -> "_Path":
        step = Step(len(self.steps), c.text, context_ids(c, eos), kind, "model", c.finish_reason, len(c.token_ids))  # type: ignore[arg-type]
        closed = kind == "answer" or closes_reasoning(c.text) or c.finish_reason == "eos"
        return _Path(self.steps + [step], self.ids + step.token_ids, self.text + c.text, self.score,
                     sum(c.logprobs) / max(len(c.logprobs), 1), False, closed, self.generated + len(c.token_ids))

    def close(self, tokenizer: Any) -> "_Path":
        """Close the think block for the model (it ended its turn or ran out of steps)."""
        if closes_reasoning(self.text):
            return self
        ids = encode(tokenizer, FORCED_CLOSE)
        step = Step(len(self.steps), FORCED_CLOSE, ids, "reasoning", "system")
        return _Path(self.steps + [step], self.ids + ids, self.text + FORCED_CLOSE, self.score, self.logprob,
                     self.unsafe, True, self.generated)


def _rank(paths: Sequence[_Path]) -> list[_Path]:
    return sorted(paths, key=lambda p: (p.score, p.logprob), reverse=True)


def _select(pool: Sequence[_Path], keep: int, mask_unsafe: bool) -> list[_Path]:
    """The best `keep` paths, unsafe ones dropped first (all kept when every one is unsafe)."""
    safe = [p for p in pool if not p.unsafe] if mask_unsafe else list(pool)
    return _rank(safe or pool)[:keep]


def _apply_scores(paths: Sequence[_Path], scores: Sequence[Any]) -> None:
    for p, sc in zip(paths, scores):
        p.score, p.unsafe = sc.score, sc.unsafe
        last = p.steps[-1]
        last.score, last.unsafe, last.verdicts = sc.score, sc.unsafe, sc.verdicts


def step_search(engine: RolloutEngine, prompts: Sequence[SearchPrompt], value: ValueFunction,
                settings: SearchSettings = SearchSettings()) -> list[SearchResult]:
    """Value-guided beam search over reasoning steps, then the answer; one result per prompt."""
    t0 = time.perf_counter()
    s, eos, seeds = settings, eos_ids(engine), SeedSequence(settings.seed)
    tokens, calls, drawn, masked = ([0] * len(prompts) for _ in range(4))
    beams = [[_Path(text=p.prefill)] for p in prompts]
    finals = [list(b) for b in beams]  # the best paths of each prompt's last pool: where answers start
    for _ in range(s.steps.max_steps):
        live = [(i, b) for i, bs in enumerate(beams) for b in bs if not b.closed]
        if not live:
            break
        outs = engine.sample([prompts[i].ids + b.ids for i, b in live], s.steps.reasoning(n=s.n, seed=seeds.next()))
        cands = [(i, b.extended(c, eos)) for (i, b), group in zip(live, outs) for c in group]
        _apply_scores([p for _, p in cands], value.score([(prompts[i].request, p.text) for i, p in cands]))
        for i, p in cands:
            tokens[i] += p.steps[-1].generated_tokens
            calls[i] += value.verifiers_per_item
            drawn[i] += 1
            masked[i] += int(s.mask_unsafe and p.unsafe)
        for i in sorted({i for i, _ in live}):
            pool = [b for b in beams[i] if b.closed] + [p for j, p in cands if j == i]
            finals[i] = _select(pool, max(s.beam, s.answer_paths), s.mask_unsafe)
            beams[i] = finals[i][: s.beam]  # the same ranking, so the best `beam` are its head
    starts = [[p.close(engine.tokenizer) for p in _rank(f)[: s.answer_paths]] for f in finals]
    answers, answer_tokens, answer_calls = _answer(engine, prompts, starts, value, s, seeds, eos)
    wall = (time.perf_counter() - t0) / max(len(prompts), 1)
    return [
        SearchResult("step_search", a.text, a.steps, tokens[i] + answer_tokens[i], calls[i] + answer_calls[i], wall,
                     a.score if s.answer_n > 1 else None, drawn[i], masked[i])
        for i, a in enumerate(answers)
    ]


def _answer(engine: RolloutEngine, prompts: Sequence[SearchPrompt], starts: Sequence[Sequence[_Path]],
            value: ValueFunction, s: SearchSettings, seeds: SeedSequence,
            eos: set[int]) -> tuple[list[_Path], list[int], list[int]]:
    """Sample `answer_n` answers after each prompt's closed reasoning paths (spread round-robin over
    them, best path first); keep the best-valued answer when there are several."""
    settings = s.steps.answer(n=s.answer_n, seed=seeds.next())
    if all(len(paths) == 1 for paths in starts):  # one path each: its prefix encoded once, n samples
        outs = engine.sample([prompts[i].ids + paths[0].ids for i, paths in enumerate(starts)], settings)
        pairs = [[(paths[0], c) for c in group] for paths, group in zip(starts, outs)]
    else:  # one row per answer, after its path
        rows = [(i, paths[k % len(paths)]) for i, paths in enumerate(starts) for k in range(s.answer_n)]
        outs = engine.sample([prompts[i].ids + p.ids for i, p in rows], replace(settings, n=1))
        pairs = [[] for _ in prompts]
        for (i, p), (c,) in zip(rows, outs):
            pairs[i].append((p, c))
    done, tokens, calls = [], [], []
    for i, group in enumerate(pairs):
        options = [p.extended(c, eos, kind="answer") for p, c in group]
        tokens.append(sum(len(c.token_ids) for _, c in group))
        if len(options) > 1:
            _apply_scores(options, value.score([(prompts[i].request, o.text) for o in options], final=True))
            calls.append(len(options) * value.verifiers_per_item)
        else:
            calls.append(0)
        done.append(_rank(options)[0])
    return done, tokens, calls


# --------------------------------------------------------------------------- baselines


@dataclass
class Pool:
    """Whole samples of one prompt, valued, with what they cost."""

    prompt: SearchPrompt
    samples: list[_Path]
    generated_tokens: int = 0
    verifier_calls: int = 0
    wall_s: float = 0.0


def sample_whole(engine: RolloutEngine, prompts: Sequence[SearchPrompt], counts: Sequence[int], steps: StepSettings,
                 seeds: SeedSequence) -> list[list[_Path]]:
    """`counts[i]` whole samples of prompt i, in two phases: reasoning (up to max_steps × step_tokens
    tokens, stopping at `</think>`), the think block closed if the model did not, then the answer."""
    rows = [i for i, k in enumerate(counts) for _ in range(k)]
    eos = eos_ids(engine)
    if not rows:
        return [[] for _ in prompts]
    cap = steps.max_steps * steps.step_tokens
    think = SamplingSettings(max_new_tokens=cap, temperature=steps.temperature, top_p=steps.top_p, n=1,
                             stop=(THINK_CLOSE,), seed=seeds.next(), precision=steps.precision)
    firsts = engine.sample([prompts[i].ids for i in rows], think)
    paths = [_Path(text=prompts[i].prefill).extended(c, eos).close(engine.tokenizer) for i, (c,) in zip(rows, firsts)]
    answers = engine.sample([prompts[i].ids + p.ids for i, p in zip(rows, paths)], steps.answer(seed=seeds.next()))
    out: list[list[_Path]] = [[] for _ in prompts]
    for i, p, (c,) in zip(rows, paths, answers):
        out[i].append(p.extended(c, eos, kind="answer"))
    return out


def sample_pools(engine: RolloutEngine, prompts: Sequence[SearchPrompt], value: ValueFunction | None,
                 steps: StepSettings = StepSettings(), n: int = 4, token_budgets: Sequence[int] | None = None,
                 seed: int | None = 0, max_rounds: int = 8) -> list[Pool]:
    """Whole samples per prompt: `n` each, or — with `token_budgets` — rounds of samples until each
    prompt's spend is within about half a sample of its budget (at least one sample; the actual
    spend is reported)."""
    t0 = time.perf_counter()
    seeds = SeedSequence(seed)
    pools = [Pool(p, []) for p in prompts]

    def add(counts: Sequence[int]) -> None:
        for pool, got in zip(pools, sample_whole(engine, prompts, counts, steps, seeds)):
            pool.samples += got
            pool.generated_tokens += sum(g.generated for g in got)

    if token_budgets is None:
        add([n] * len(prompts))
    else:
        if len(token_budgets) != len(prompts):
            raise ValueError("one token budget per prompt")
        add([1] * len(prompts))
        for _ in range(max_rounds - 1):
            counts = []
            for pool, budget in zip(pools, token_budgets):
                left, mean = budget - pool.generated_tokens, pool.generated_tokens / max(len(pool.samples), 1)
                counts.append(max(0, math.floor(left / max(mean, 1.0) + 0.5)))  # stop within half a sample
            if not any(counts):
                break
            add(counts)
    if value is not None:
        flat = [(pool, p) for pool in pools for p in pool.samples]
        _apply_scores([p for _, p in flat], value.score([(pool.prompt.request, p.text) for pool, p in flat], final=True))
        for pool in pools:
            pool.verifier_calls = len(pool.samples) * value.verifiers_per_item
    wall = (time.perf_counter() - t0) / max(len(prompts), 1)
    for pool in pools:
        pool.wall_s = wall
    return pools


def _result(method: str, pool: Pool, chosen: _Path, scored: bool = True) -> SearchResult:
    return SearchResult(method, chosen.text, chosen.steps, pool.generated_tokens, pool.verifier_calls, pool.wall_s,
                        chosen.score if scored else None, len(pool.samples))


def pick_best(pool: Pool, method: str = "best_of_n") -> SearchResult:
    """Best-of-N: the sample with the highest value (ties: the more probable one)."""
    return _result(method, pool, _rank(pool.samples)[0])


def _normalised_answer(answer: str) -> str:
    return re.sub(r"\s+", " ", answer.lower()).strip(" .!")[:200]


def _refusal_key(answer: str) -> str:
    from safeladder.verifiers.refusal import is_refusal

    return "refusal" if is_refusal(answer) else "compliance"


# How weighted Best-of-N groups samples: by (normalised) answer text, or refusal vs compliance.
ANSWER_KEYS: dict[str, Callable[[str], str]] = {"text": _normalised_answer, "refusal": _refusal_key}


def pick_weighted(pool: Pool, key: str | Callable[[str], str] = "text", method: str = "weighted_bon") -> SearchResult:
    """Weighted Best-of-N: group samples by `key(answer)`, sum their values per group, and return the
    best sample of the heaviest group (with all answers distinct this is plain Best-of-N)."""
    keyf = ANSWER_KEYS[key] if isinstance(key, str) else key
    groups: dict[str, list[_Path]] = {}
    for p in pool.samples:
        groups.setdefault(keyf(parse_response(p.text).answer), []).append(p)
    heaviest = max(groups.values(), key=lambda g: (sum(p.score for p in g), _rank(g)[0].score))
    return _result(method, pool, _rank(heaviest)[0])


def plain_sampling(engine: RolloutEngine, prompts: Sequence[SearchPrompt], steps: StepSettings = StepSettings(),
                   seed: int | None = 0) -> list[SearchResult]:
    """One whole sample per prompt, no verifier: the reference point."""
    return [_result("plain", pool, pool.samples[0], scored=False)
            for pool in sample_pools(engine, prompts, None, steps, n=1, seed=seed)]


def best_of_n(engine: RolloutEngine, prompts: Sequence[SearchPrompt], value: ValueFunction,
              steps: StepSettings = StepSettings(), n: int = 4, token_budgets: Sequence[int] | None = None,
              weighted: bool = False, answer_key: str = "text", seed: int | None = 0) -> list[SearchResult]:
    pools = sample_pools(engine, prompts, value, steps, n, token_budgets, seed)
    return [pick_weighted(p, answer_key) if weighted else pick_best(p) for p in pools]


__all__ = [
    "ANSWER_KEYS", "Pool", "SearchPrompt", "SearchResult", "SearchSettings", "best_of_n", "pick_best",
    "pick_weighted", "plain_sampling", "prepare_prompts", "sample_pools", "sample_whole", "step_search",
]
