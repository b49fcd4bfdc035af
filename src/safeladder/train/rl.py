"""Stage 2, M³-RL (SPEC §3): the RL loop that stages 3 and 4 reuse with other configs.

One step: draw prompts from the current curriculum phase → G rollouts each (rollout engine) →
rewards through the phase's recipe (verifiers) → reward transforms → advantages (estimator +
transforms) → K optimisation passes over the batch in micro-batches with gradient
accumulation → metrics and, every `save_every` steps, an atomic checkpoint holding the model,
optimiser, scheduler, RNG, data cursors, curriculum position and algorithm state (e.g. λ).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from safeladder.algorithms.advantages import GroupBatch, apply_transforms, informative_groups
from safeladder.algorithms.logprobs import build_token_batch, completion_logprobs
from safeladder.algorithms.losses import AGGREGATIONS, POLICY_LOSSES, cpgd_drift, kl_k3
from safeladder.data.sample import Sample
from safeladder.format import parse_response, render_prompt
from safeladder.models.loader import Policy, load_policy
from safeladder.models.precision import autocast
from safeladder.rollout import Rollout, SamplingSettings, rollout
from safeladder.rollout.environments import build_environment
from safeladder.rollout.engines import build_engine
from safeladder.train import checkpoint as ckpt
from safeladder.train.metrics import MetricsLog
from safeladder.train.progress import progress_bar
from safeladder.train.rl_config import RLConfig
from safeladder.train.rl_data import MixtureSampler, load_task
from safeladder.train.replay import ReplayBatches, replay_loss
from safeladder.verifiers.base import VerifyItem
from safeladder.verifiers.recipes import RewardComputer, RewardResult, load_recipes, recipe_path

# How each aggregation weighs a micro-batch's share of the full batch (so accumulation is exact).
_AGG_UNITS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "token-mean": lambda mask: mask.sum(),
    "seq-mean-token-mean": lambda mask: (mask.sum(-1) > 0).sum(),
}


def rows_with_gradient(rows: list[int], advantages: torch.Tensor, algorithm: Any) -> list[int]:
    """The rows whose loss has a gradient; the others are skipped (an exact saving, not an approximation).

    A row with zero advantage (e.g. its whole group got the same reward) has zero policy-gradient
    loss. With no KL term and no drift gradient (one pass: π_old = π, where the drift surrogate's
    gradient vanishes) it contributes nothing, so it stays in the loss normaliser but never
    runs through the model.
    """
    if algorithm.kl_coef == 0 and (algorithm.drift_coef == 0 or algorithm.epochs == 1):
        return [i for i in rows if float(advantages[i]) != 0.0]
    return rows


@dataclass
class StepBatch:
    """Everything one RL step trains on."""

    samples: list[Sample]  # one per prompt
    rollouts: list[Rollout]  # G per prompt, prompt-major
    rewards: torch.Tensor  # (N,)
    advantages: torch.Tensor  # (N,)
    keep: torch.Tensor  # (N,) bool, after dynamic sampling
    rewards_result: RewardResult | None = None  # components and verdicts behind `rewards`

    def records(self, step: int, phase: int) -> list[dict[str, Any]]:
        """One JSON row per rollout: what was asked, what the policy wrote, how it was judged."""
        res = self.rewards_result
        rows = []
        for i, ro in enumerate(self.rollouts):
            sample = self.samples[ro.prompt_index]
            verdicts = {name: v[i].label for name, v in res.verdicts.items() if v[i] is not None} if res else {}
            scores = {name: vals[i] for name, vals in res.components.items() if vals[i] is not None} if res else {}
            rows.append({
                "step": step, "phase": phase, "id": sample.id, "label": sample.label, "group": ro.prompt_index,
                "sample": ro.sample_index, "prompt": sample.user_text, "completion": ro.text,
                "finish_reason": ro.finish_reason, "tokens": ro.n_model_tokens,
                "reward": float(self.rewards[i]), "advantage": float(self.advantages[i]), "kept": bool(self.keep[i]),
                "scores": scores, "verdicts": verdicts,
            })
        return rows


class RLTrainer:
    def __init__(self, cfg: RLConfig, policy: Policy | None = None, reward_computers: dict[str, RewardComputer] | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        torch.manual_seed(cfg.seed)
        if cfg.ray is not None:
            from safeladder.distributed.cluster import connect

            connect(cfg.ray)
        self.policy = policy or load_policy(cfg.model)
        self.model, self.tokenizer = self.policy.model, self.policy.tokenizer
        self.engine = build_engine(cfg.rollout.engine, self.model, self.tokenizer, **cfg.rollout.engine_options)
        self.environment = build_environment(cfg.rollout.environment, self.tokenizer)
        self.sampler = MixtureSampler({name: load_task(name, spec) for name, spec in cfg.tasks.items()}, cfg.seed)
        self._computers: dict[str, RewardComputer] = dict(reward_computers or {})
        self.reference = self._reference_model()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
        from transformers import get_scheduler

        total_updates = cfg.total_steps * cfg.algorithm.epochs
        self.scheduler = get_scheduler(
            "constant_with_warmup" if cfg.optim.schedule == "constant" else cfg.optim.schedule,
            self.optimizer, num_warmup_steps=int(cfg.optim.warmup_ratio * total_updates), num_training_steps=total_updates,
        )
        self.step = 0
        self.last_batch: StepBatch | None = None  # the latest step's rollouts (for the rollout log)
        self.algo_state: dict[str, Any] = {}  # e.g. Lagrange multipliers, saved in checkpoints
        self.policy_loss = POLICY_LOSSES.get(cfg.algorithm.loss)
        self.aggregation = AGGREGATIONS.get(cfg.algorithm.aggregation)
        self.replay = ReplayBatches(cfg.replay, self.tokenizer, cfg.system_prompt) if cfg.replay else None

    # ------------------------------------------------------------------ parts
    def _reference_model(self) -> Any:
        """LoRA: None (the base with adapters disabled is the reference). Full FT: a frozen copy."""
        if self.cfg.algorithm.kl_coef == 0 or hasattr(self.model, "disable_adapter"):
            return None
        ref = copy.deepcopy(self.model).eval()
        ref.requires_grad_(False)
        if self.cfg.algorithm.reference_device:
            ref.to(self.cfg.algorithm.reference_device)
        return ref

    def _reference_context(self):
        if self.reference is None and hasattr(self.model, "disable_adapter"):
            return self.model, self.model.disable_adapter()
        return self.reference, contextlib.nullcontext()

    def reward_computer(self, recipe: str) -> RewardComputer:
        if recipe not in self._computers:
            self._computers[recipe] = RewardComputer(load_recipes(recipe_path(recipe)))
        return self._computers[recipe]

    # ------------------------------------------------------------------ one step
    def collect(self) -> tuple[StepBatch, dict[str, float]]:
        """Rollouts, rewards and advantages for the current step."""
        cfg, r = self.cfg, self.cfg.rollout
        phase_index, phase = cfg.phase_at(self.step)
        samples = self.sampler.draw(phase, self.step, r.prompts_per_step)
        prompt_ids = [
            self.tokenizer.encode(render_prompt(self.tokenizer, s.chat(), cfg.system_prompt), add_special_tokens=False)
            for s in samples
        ]
        settings = SamplingSettings(
            max_new_tokens=r.max_new_tokens, min_new_tokens=r.min_new_tokens, temperature=r.temperature, top_p=r.top_p, n=r.group_size,
            batch_size=r.batch_size, seed=cfg.seed * 1_000_003 + self.step, precision=cfg.precision,
        )
        t0 = time.perf_counter()
        rollouts = rollout(self.engine, prompt_ids, settings, self.environment, max_turns=r.max_turns)
        t_gen = time.perf_counter() - t0

        items = [
            VerifyItem(
                prompt=samples[ro.prompt_index].user_text, response=ro.text, reference=samples[ro.prompt_index].reference,
                label=samples[ro.prompt_index].label,
                metadata={**samples[ro.prompt_index].metadata, "id": samples[ro.prompt_index].id, "rollout": ro.info,
                          "finish_reason": ro.finish_reason},
            )
            for ro in rollouts
        ]
        group = torch.tensor([ro.prompt_index for ro in rollouts])
        t0 = time.perf_counter()
        result = self.reward_computer(phase.recipe).compute(items, group.tolist())
        t_verify = time.perf_counter() - t0

        rewards = torch.tensor(result.rewards, dtype=torch.float32)
        components = {
            name: torch.tensor([float("nan") if v is None else v for v in values]) for name, values in result.components.items()
        }
        batch = GroupBatch(
            rewards=rewards, group=group, lengths=torch.tensor([ro.n_model_tokens for ro in rollouts]),
            labels=[it.label or "" for it in items], components=components, state=self.algo_state,
        )
        a = cfg.algorithm
        self.algo_state["step"] = self.step  # transforms with per-step state (λ) update once per step
        shaped, adv, transform_metrics = apply_transforms(rewards, batch, a.advantage, a.reward_transforms, a.advantage_transforms, a.eps)
        keep = informative_groups(shaped, group) if a.dynamic_sampling else torch.ones(len(rollouts), dtype=torch.bool)

        lengths = batch.lengths.float()
        think_tokens, answer_tokens = self._split_lengths(rollouts)
        metrics = {
            **result.metrics(), **transform_metrics,
            "phase": float(phase_index), "adv/mean": float(adv.mean()), "adv/std": float(adv.std()) if len(adv) > 1 else 0.0,
            "adv/abs_max": float(adv.abs().max()), "kept_fraction": float(keep.float().mean()),
            "response/tokens_mean": float(lengths.mean()), "response/think_tokens_mean": think_tokens,
            "response/answer_tokens_mean": answer_tokens,
            "response/truncated_fraction": sum(ro.finish_reason == "length" for ro in rollouts) / len(rollouts),
            "response/turns_mean": sum(ro.turns for ro in rollouts) / len(rollouts),
            "time/generate_s": t_gen, "time/verify_s": t_verify,
            "rollout/tokens_per_s": float(lengths.sum()) / max(t_gen, 1e-9),
        }
        for label in sorted(set(batch.labels)):
            idx = [i for i, lb in enumerate(batch.labels) if lb == label]
            metrics[f"reward/by_label/{label}"] = float(rewards[idx].mean())
        return StepBatch(samples, rollouts, shaped, adv, keep, result), metrics

    def _split_lengths(self, rollouts: list[Rollout]) -> tuple[float, float]:
        think, answer = [], []
        for ro in rollouts:
            parsed = parse_response(ro.text)
            think.append(len(self.tokenizer.encode(parsed.think or "", add_special_tokens=False)))
            answer.append(len(self.tokenizer.encode(parsed.answer or "", add_special_tokens=False)))
        return sum(think) / len(think), sum(answer) / len(answer)

    def _micro_batches(self, batch: StepBatch, rows: list[int]) -> list[list[int]]:
        """Rows in micro-batches (exact whatever the grouping: the loss is a weighted sum over them).

        With groups (G > 1) a micro-batch holds rows of one prompt only, so the prompt runs once
        for all of them (`build_token_batch(share_prompt=True)`); otherwise rows of similar
        length go together, so little of each is padding.
        """
        size = self.cfg.algorithm.micro_batch_size
        length = lambda i: len(batch.rollouts[i].prompt_ids) + len(batch.rollouts[i].completion_ids)  # noqa: E731
        if self.cfg.rollout.group_size == 1:
            rows = sorted(rows, key=length)
            return [rows[i : i + size] for i in range(0, len(rows), size)]
        groups: dict[int, list[int]] = {}
        for i in rows:
            groups.setdefault(batch.rollouts[i].prompt_index, []).append(i)
        micro = []
        for members in groups.values():
            members = sorted(members, key=length)
            micro += [members[i : i + size] for i in range(0, len(members), size)]
        return micro

    def train_on(self, batch: StepBatch) -> dict[str, float]:
        """K passes over the kept rollouts; each pass is one optimiser step over all micro-batches."""
        a = self.cfg.algorithm
        rows = [i for i in range(len(batch.rollouts)) if batch.keep[i] and sum(batch.rollouts[i].mask) > 0]
        units = _AGG_UNITS.get(a.aggregation, _AGG_UNITS["seq-mean-token-mean"])
        # The loss is normalised over every kept row ...
        total_units = float(sum(units(torch.tensor(batch.rollouts[i].mask, dtype=torch.float32)[None]) for i in rows))
        rows = rows_with_gradient(rows, batch.advantages, a)  # ... but only these run through the model
        if not rows and self.replay is None:  # no row has a gradient: the loss is exactly 0, nothing to step
            return {**{f"train/{k}": 0.0 for k in ("loss", "pg_loss", "kl", "drift", "clip_frac", "grad_norm", "rows")},
                    "train/entropy": float("nan"), "train/skipped": 1.0, "lr": self.scheduler.get_last_lr()[0],
                    "time/train_s": 0.0, "train/tokens_per_s": 0.0}
        self.model.train()
        pad = self.tokenizer.pad_token_id
        micro = self._micro_batches(batch, rows)
        share = self.cfg.rollout.group_size > 1
        token_batches = [
            build_token_batch(
                [batch.rollouts[i].prompt_ids for i in m], [batch.rollouts[i].completion_ids for i in m],
                [batch.rollouts[i].mask for i in m], pad, share_prompt=share,
            )
            for m in micro
        ]
        temperature = self.cfg.rollout.temperature
        # Old log-probs: with one pass they equal the current policy's (detached) — no extra forward.
        old: list[torch.Tensor | None] = [None] * len(micro)
        if a.epochs > 1:
            with torch.no_grad(), autocast(self.model, self.cfg.precision):
                old = [completion_logprobs(self.model, tb, temperature)[0] for tb in token_batches]
        refs: list[torch.Tensor | None] = [None] * len(micro)
        if a.kl_coef > 0:
            ref_model, ctx = self._reference_context()
            with torch.no_grad(), ctx, autocast(self.model, self.cfg.precision):
                refs = [completion_logprobs(ref_model, tb, temperature)[0] for tb in token_batches]

        sums: dict[str, float] = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "drift": 0.0, "clip_frac": 0.0, "entropy": 0.0}
        if self.replay is not None:
            sums["replay_nll"] = 0.0
        grad_norm = 0.0
        t0 = time.perf_counter()
        params = [p for p in self.model.parameters() if p.requires_grad]
        for epoch in range(a.epochs):
            for k, (m, tb) in enumerate(zip(micro, token_batches)):
                with autocast(self.model, self.cfg.precision):
                    logp, entropy = completion_logprobs(self.model, tb, temperature, with_entropy=epoch == 0)
                logp_old = old[k] if old[k] is not None else logp.detach()
                adv = batch.advantages[m].to(logp.device)  # (b,)
                mask = tb.mask.to(logp.device)  # (b, T)
                pg, pm = self.policy_loss(logp, logp_old, adv, mask, a.clip_eps, self.aggregation)
                loss = pg
                if a.drift_coef > 0:
                    drift = cpgd_drift(logp, logp_old, mask, self.aggregation)
                    loss = loss + a.drift_coef * drift
                    sums["drift"] += float(drift.detach()) / len(micro) / a.epochs
                if a.kl_coef > 0:
                    kl = self.aggregation(kl_k3(logp, refs[k].to(logp.device)), mask)
                    loss = loss + a.kl_coef * kl
                    sums["kl"] += float(kl.detach()) / len(micro) / a.epochs
                share = float(units(tb.mask)) / total_units
                (loss * share).backward()
                sums["loss"] += float(loss.detach()) * share / a.epochs
                sums["pg_loss"] += float(pg.detach()) * share / a.epochs
                sums["clip_frac"] += pm.get("clip_frac", 0.0) / len(micro) / a.epochs
                if entropy is not None:
                    sums["entropy"] += float((entropy * mask).sum() / mask.sum().clamp(min=1)) / len(micro)
            if self.replay is not None:  # PPO-ptx: coef × SFT loss on verified traces, same optimiser step
                with autocast(self.model, self.cfg.precision):
                    nll = replay_loss(self.model, self.replay.batch(self.step))
                (self.cfg.replay.coef * nll).backward()
                sums["replay_nll"] += float(nll.detach()) / a.epochs
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.engine.sync_weights(self.model)  # remote engines (vLLM, Ray workers) sample from the new weights
        t_train = time.perf_counter() - t0
        n_tokens = sum(tb.computed_tokens for tb in token_batches) * a.epochs
        return {**{f"train/{k}": v for k, v in sums.items()}, "train/grad_norm": grad_norm,
                "lr": self.scheduler.get_last_lr()[0], "time/train_s": t_train, "train/rows": float(len(rows)),
                "train/tokens_per_s": n_tokens / max(t_train, 1e-9)}

    def train_step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        batch, metrics = self.collect()
        metrics.update(self.train_on(batch))
        self.step += 1
        metrics.update(step=self.step, **{"time/step_s": time.perf_counter() - t0})
        self.last_batch = batch
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        phase_index, _ = self.cfg.phase_at(max(self.step - 1, 0))
        state = {"stage": "rl", "total_steps": self.cfg.total_steps, "phase": phase_index,
                 "cursors": self.sampler.state(), "algorithm": self.algo_state}
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, state, self.optimizer, self.scheduler,
                                    self.cfg.keep_last, tokenizer=self.tokenizer)

    def resume(self) -> bool:
        ckpt.clean_partial(self.run_dir)
        last = ckpt.latest_checkpoint(self.run_dir)
        if last is None:
            return False
        state = ckpt.load_checkpoint(last, self.model, self.optimizer, self.scheduler)
        self.step = state["step"]
        self.sampler.load_state(state.get("cursors", {}))
        self.algo_state.clear()
        self.algo_state.update(state.get("algorithm", {}))
        return True

    def train(self, resume: bool = False, show_progress: bool = True, on_step: Callable[[dict], None] | None = None) -> Path:
        resumed = self.resume() if resume else False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(self.run_dir / "metrics.jsonl", self.step if resumed else None, self.cfg.tensorboard)
        samples_log = (MetricsLog(self.run_dir / "rollouts.jsonl", self.step if resumed else None, tensorboard=False)
                       if self.cfg.log_rollouts else None)
        bar = progress_bar(disable=not show_progress)
        with bar:
            task = bar.add_task("M³-RL", total=self.cfg.total_steps, completed=self.step, info="")
            while self.step < self.cfg.total_steps:
                row = self.train_step()
                log.log(row)
                if samples_log is not None:
                    samples_log.log_rows(self.last_batch.records(self.step, int(row["phase"])))
                if on_step:
                    on_step(row)
                _, phase = self.cfg.phase_at(self.step - 1)
                bar.update(task, completed=self.step, description=f"M³-RL · {phase.name}",
                           info=f"reward {row['reward/mean']:.3f} · {row['response/tokens_mean']:.0f} tok · "
                                f"{row['time/step_s']:.1f} s/step")
                if self.step % self.cfg.save_every == 0 and self.step < self.cfg.total_steps:
                    self.save()
                if self.cfg.eval.every and self.step % self.cfg.eval.every == 0:
                    self.evaluate()
        log.close()
        if samples_log is not None:
            samples_log.close()
        final = self.save()
        if self.cfg.eval.suite:
            self.evaluate()
        return final

    def evaluate(self) -> None:
        """Run the configured suite on the live policy → run_dir/eval/step-NNNNNN (cached per weights)."""
        if not self.cfg.eval.suite:
            return
        from safeladder.eval.runner import evaluate
        from safeladder.eval.suite import load_suite

        evaluate(self.policy, load_suite(self.cfg.eval.suite), self.run_dir / "eval", f"step-{self.step:06d}",
                 step=self.step, order=self.step, quiet=True)


def run_rl(cfg: RLConfig, resume: bool = False, show_progress: bool = True) -> Path:
    """Train through the curriculum, then export the final policy as `output_dir/final`."""
    from safeladder.models.lora import export_merged

    trainer = RLTrainer(cfg)
    trainer.train(resume=resume, show_progress=show_progress)
    return export_merged(trainer.model, trainer.tokenizer, Path(cfg.output_dir) / "final")
