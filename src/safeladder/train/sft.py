"""Stage 1, CoT-SFT: supervised fine-tuning on verified `<think>…</think> answer` traces.

Loss is the token-mean cross-entropy over assistant tokens only, summed over gradient
accumulation micro-batches and divided by their total token count (so accumulation does not
change the loss). Checkpoints are atomic; `resume=True` continues from the latest one with the
same data order, optimizer, scheduler and RNG state.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from safeladder.data.chat_tokens import IGNORE, collate, encode_example
from safeladder.data.sample import Sample
from safeladder.format import SYSTEM_PROMPT
from safeladder.models.precision import Precision, autocast
from safeladder.models.loader import ModelSpec, Policy, load_policy
from safeladder.train import checkpoint as ckpt
from safeladder.train.metrics import MetricsLog
from safeladder.train.progress import progress_bar


class DataFile(BaseModel):
    """A user file of traces (prompt/messages + response), optionally curated."""

    model_config = ConfigDict(extra="forbid")
    path: str
    mapping: dict[str, Any] | None = None
    on_error: Literal["raise", "skip"] = "raise"
    curate: bool = True


class SFTData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Number of built-in verified traces per task (train split); see safeladder.data.traces.
    builtin: dict[str, int] = Field(default_factory=lambda: {"math": 480, "harmful": 240, "benign": 120})
    files: list[DataFile] = Field(default_factory=list)
    seed: int = 0
    # Safety traces open their reasoning with the verdict ("Harmful request." / "Harmless request.");
    # see `builtin_traces`.
    judgement_first: bool = False


class SFTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: SFTData = Field(default_factory=SFTData)
    output_dir: str = "runs/sft"
    system_prompt: str = SYSTEM_PROMPT
    max_len: int = Field(384, ge=16)
    # (open, close) markers of tool output inside the traces, e.g. [["<information>", "</information>"]]
    # for search traces: read by the model, never trained on (as in RL, where tool tokens have mask 0)
    masked_spans: list[tuple[str, str]] = Field(default_factory=list)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set
    lr: float = Field(5e-5, gt=0)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, gt=0)
    precision: Precision = "auto"  # "auto": bf16 autocast only on hardware with native bf16
    seed: int = 0
    save_every: int = Field(50, ge=1)
    keep_last: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    tensorboard: bool = True


def build_dataset(cfg: SFTConfig) -> list[Sample]:
    """Built-in traces plus curated user files; every sample has `response` set."""
    from safeladder.data.traces import builtin_traces

    samples = builtin_traces(cfg.data.builtin, split="train", seed=cfg.data.seed,
                             judgement_first=cfg.data.judgement_first)
    for f in cfg.data.files:
        from safeladder.data.curate import curate
        from safeladder.data.loaders import load_samples

        loaded = load_samples(f.path, f.mapping, on_error=f.on_error).samples
        samples += curate(loaded).final if f.curate else [s for s in loaded if s.response]
    if not samples:
        raise ValueError("SFT data is empty: enable built-in traces or add files")
    return samples


def labelled_loss_sum(model: Any, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled (assistant) positions of a collated batch.

    The LM head runs only at positions whose next token is labelled (a boolean
    `logits_to_keep`): prompt and padding positions never need their (·, V) logits, and on
    SmolLM2 the head is a fifth of the FLOPs of a token while prompts are a third of the
    tokens of a demo batch.
    """
    device = next(model.parameters()).device
    labels = enc["labels"].to(device)  # (B, T)
    keep = torch.zeros_like(labels, dtype=torch.bool)  # (B, T)
    keep[:, :-1] = labels[:, 1:] != IGNORE  # position p predicts label p + 1
    logits = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                   logits_to_keep=keep).logits
    targets = labels[:, 1:][keep[:, :-1]]  # (N,), in the row-major order of `keep`
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")


class SFTTrainer:
    """Owns the loop; model loading, data and checkpoints are plain functions it calls."""

    def __init__(self, cfg: SFTConfig, samples: list[Sample] | None = None, policy: Policy | None = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        torch.manual_seed(cfg.seed)
        self.policy = policy or load_policy(cfg.model)
        self.samples = samples if samples is not None else build_dataset(cfg)
        tok = self.policy.tokenizer
        self.examples = [
            encode_example(tok, s.chat(), s.response or "", cfg.system_prompt, cfg.max_len, cfg.masked_spans)
            for s in self.samples
        ]
        per_step = cfg.batch_size * cfg.grad_accum
        self.steps_per_epoch = max(1, len(self.examples) // per_step)
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        params = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            cfg.lr_schedule if cfg.lr_schedule != "constant" else "constant_with_warmup",
            self.optimizer, num_warmup_steps=int(cfg.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.step = 0

    # --- data order: a seeded permutation per epoch, so a cursor fully describes the position ---
    def _order(self, epoch: int) -> list[int]:
        """Seeded shuffle, then length-bucketed: each step's examples have similar lengths, so
        little compute is spent on padding (step order is shuffled again afterwards)."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.examples), generator=g).tolist()
        per_step = self.cfg.batch_size * self.cfg.grad_accum
        window = per_step * 16
        steps: list[list[int]] = []
        for w in range(0, len(perm), window):
            chunk = sorted(perm[w : w + window], key=lambda i: len(self.examples[i]["input_ids"]))
            steps += [chunk[i : i + per_step] for i in range(0, len(chunk), per_step)]
        steps = [s for s in steps if len(s) == per_step]  # partial steps would shift the cursor
        step_order = torch.randperm(len(steps), generator=g).tolist()
        return [i for k in step_order for i in steps[k]]

    def _micro_batches(self, step: int) -> list[list[int]]:
        """Indices of the `grad_accum` micro-batches of optimizer step `step` (0-based)."""
        per_step = self.cfg.batch_size * self.cfg.grad_accum
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)[offset * per_step : (offset + 1) * per_step]
        return [order[i : i + self.cfg.batch_size] for i in range(0, len(order), self.cfg.batch_size)]

    def resume(self) -> bool:
        """Load the latest complete checkpoint of `output_dir`, if any."""
        ckpt.clean_partial(self.run_dir)
        last = ckpt.latest_checkpoint(self.run_dir)
        if last is None:
            return False
        state = ckpt.load_checkpoint(last, self.policy.model, self.optimizer, self.scheduler)
        self.step = state["step"]
        return True

    def save(self) -> Path:
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        state = {"epoch": epoch, "cursor": offset, "total_steps": self.total_steps, "stage": "sft"}
        return ckpt.save_checkpoint(
            self.run_dir, self.step, self.policy.model, state, self.optimizer, self.scheduler, self.cfg.keep_last,
            tokenizer=self.policy.tokenizer,
        )

    def train_step(self) -> dict[str, float]:
        model, cfg = self.policy.model, self.cfg
        model.train()
        batches = self._micro_batches(self.step)
        encoded = [collate([self.examples[i] for i in b], self.policy.tokenizer.pad_token_id) for b in batches]
        n_tokens = sum(int((e["labels"][:, 1:] != -100).sum()) for e in encoded)
        loss_total = 0.0
        for enc in encoded:
            with autocast(model, cfg.precision):
                loss_sum = labelled_loss_sum(model, enc)
            (loss_sum / n_tokens).backward()
            loss_total += float(loss_sum.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], cfg.grad_clip
        )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        seq_tokens = sum(int(e["attention_mask"].sum()) for e in encoded)
        return {"loss": loss_total / max(n_tokens, 1), "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0], "tokens": seq_tokens}

    def train(self, resume: bool = False, show_progress: bool = True) -> Path:
        """Run to `total_steps`; return the final checkpoint directory."""
        resumed = self.resume() if resume else False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(self.run_dir / "metrics.jsonl", self.step if resumed else None, self.cfg.tensorboard)
        bar = progress_bar(disable=not show_progress)
        with bar:
            task = bar.add_task("CoT-SFT", total=self.total_steps, completed=self.step, info="")
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                row = self.train_step()
                dt = time.perf_counter() - t0
                row.update(step=self.step, seconds=dt, tokens_per_s=row["tokens"] / dt,
                           epoch=self.step / self.steps_per_epoch)
                if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                    log.log(row)
                bar.update(task, completed=self.step,
                           info=f"loss {row['loss']:.3f} · {row['tokens_per_s']:.0f} tok/s")
                if self.step % self.cfg.save_every == 0 and self.step < self.total_steps:
                    self.save()
        log.close()
        return self.save()


def run_sft(cfg: SFTConfig, resume: bool = False) -> Path:
    """Train, then export the final policy as a standalone HF directory `output_dir/final`."""
    from safeladder.models.lora import export_merged

    trainer = SFTTrainer(cfg)
    trainer.train(resume=resume)
    return export_merged(trainer.policy.model, trainer.policy.tokenizer, Path(cfg.output_dir) / "final")
