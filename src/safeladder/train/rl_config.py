"""The M³-RL configuration (SPEC §3): model, prompt tasks, curriculum, rollout, algorithm, optimiser.

Defaults follow the released configuration (SPEC §3.4) where it does not depend on scale:
GRPO advantages, CPGD loss with ε = 0.2, k3 KL coefficient 0.001, Adam β (0.9, 0.95), weight
decay 0.01, grad clip 1.0, 3% warm-up, temperature 1.0, one optimiser step per rollout. Group
size, batch and learning rate are scale-dependent: see configs/rl_cpu.yaml for the CPU preset.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safeladder.format import SYSTEM_PROMPT
from safeladder.models.loader import ModelSpec
from safeladder.models.precision import Precision
from safeladder.train.replay import ReplaySpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Strict):
    """A pool of prompts: a built-in source (`builtin`) or a user file (`path` + column mapping)."""

    builtin: str | None = None  # see safeladder.train.rl_data.BUILTIN_PROMPTS
    path: str | None = None
    mapping: dict[str, Any] | None = None
    split: Literal["train", "dev", "all"] = "train"
    label: str | None = None  # override every sample's recipe label
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> "TaskSpec":
        if (self.builtin is None) == (self.path is None):
            raise ValueError("set exactly one of 'builtin' or 'path'")
        return self


class Phase(_Strict):
    """One curriculum phase: how many steps, which tasks in which proportions, which recipe."""

    name: str = Field(min_length=1)
    steps: int = Field(ge=1)
    mixture: dict[str, float]  # task name -> sampling weight
    recipe: str = "recipes_release"  # a preset name (configs/) or a recipes YAML path
    # How a step's prompts split over the tasks: "independent" draws each prompt's task by weight
    # (a small step may miss a task); "stratified" gives each task floor(k·w) prompts and hands
    # out the remainder by systematic sampling, so every step holds the mixture up to one prompt.
    draw: Literal["independent", "stratified"] = "independent"

    @model_validator(mode="after")
    def _weights(self) -> "Phase":
        if not self.mixture or any(w < 0 for w in self.mixture.values()) or sum(self.mixture.values()) <= 0:
            raise ValueError("mixture needs at least one task with a positive weight (and none negative)")
        return self


class RolloutSpec(_Strict):
    group_size: int = Field(8, ge=1)  # G samples per prompt
    prompts_per_step: int = Field(128, ge=1)
    max_new_tokens: int = Field(1024, ge=1)
    min_new_tokens: int = Field(0, ge=0)  # EOS suppressed before this (fixed-length benchmarks)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(16, ge=1)  # prompts per engine forward (× G rows)
    engine: str = "transformers"  # safeladder.rollout.engines.ENGINES: transformers, vllm, ray
    engine_options: dict[str, Any] = Field(default_factory=dict)  # e.g. {num_workers: 2} for ray
    max_turns: int = Field(1, ge=1)  # > 1 with an environment (search)
    environment: dict[str, Any] | None = None  # {"name": ..., **options}; see safeladder.rollout.environments

    @model_validator(mode="after")
    def _min_within_max(self) -> "RolloutSpec":
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})")
        return self


class AlgorithmSpec(_Strict):
    advantage: str = "grpo"  # safeladder.algorithms.advantages.ADVANTAGES
    loss: str = "cpgd"  # safeladder.algorithms.losses.POLICY_LOSSES
    aggregation: str = "seq-mean-token-mean"  # safeladder.algorithms.losses.AGGREGATIONS
    clip_eps: float = Field(0.2, gt=0, lt=1)
    drift_coef: float = Field(0.0, ge=0)  # CPGD policy drift α
    kl_coef: float = Field(0.001, ge=0)  # k3 KL to the reference model
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal
    epochs: int = Field(1, ge=1)  # K optimisation passes (optimiser steps) per rollout batch
    micro_batch_size: int = Field(8, ge=1)  # sequences per forward/backward
    eps: float = Field(1e-6, gt=0)
    reward_transforms: list[dict[str, Any]] = Field(default_factory=list)
    advantage_transforms: list[dict[str, Any]] = Field(default_factory=list)
    reference_device: str | None = None  # full fine-tuning: where the frozen reference copy lives


class OptimSpec(_Strict):
    lr: float = Field(1e-6, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, gt=0)
    schedule: Literal["constant", "cosine", "linear"] = "constant"


class EvalSpec(_Strict):
    every: int = Field(0, ge=0)  # steps between evaluations; 0 = only at the end
    suite: str | None = None  # an evaluation suite YAML (safeladder eval); None = no evaluation


class RaySpec(_Strict):
    """Scale-out on Ray: connect (or start a local cluster) before building engines and verifiers."""

    address: str | None = None  # None: start a local Ray instance; "auto" or "ray://host:10001" to join one
    num_cpus: int | None = None  # for a local instance
    options: dict[str, Any] = Field(default_factory=dict)  # passed to ray.init


class RLConfig(_Strict):
    model: ModelSpec = Field(default_factory=ModelSpec)
    output_dir: str = "runs/rl"
    system_prompt: str = SYSTEM_PROMPT
    tasks: dict[str, TaskSpec]
    curriculum: list[Phase] = Field(min_length=1)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    ray: RaySpec | None = None  # set to run rollout workers / verifier pools as Ray actors
    replay: ReplaySpec | None = None  # supervised replay of verified traces (PPO-ptx); see train/replay.py
    precision: Precision = "auto"
    seed: int = 0
    save_every: int = Field(10, ge=1)
    keep_last: int = Field(2, ge=1)
    tensorboard: bool = True
    log_rollouts: bool = True  # every rollout (text, reward, verdicts, advantage) → rollouts.jsonl

    @model_validator(mode="after")
    def _phases_use_known_tasks(self) -> "RLConfig":
        for phase in self.curriculum:
            unknown = set(phase.mixture) - set(self.tasks)
            if unknown:
                raise ValueError(f"curriculum phase {phase.name!r} uses unknown task(s) {sorted(unknown)}; tasks: {sorted(self.tasks)}")
        return self

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.curriculum)

    def phase_at(self, step: int) -> tuple[int, Phase]:
        """The phase that RL step `step` (0-based) belongs to."""
        for i, phase in enumerate(self.curriculum):
            if step < phase.steps:
                return i, phase
            step -= phase.steps
        return len(self.curriculum) - 1, self.curriculum[-1]
