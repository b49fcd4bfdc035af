"""Supervised replay during RL: a cross-entropy term on verified traces next to the policy loss.

InstructGPT's PPO-ptx (OpenRLHF and safe-rlhf call it `ptx_coef`): the RL loss plus
`coef` × the SFT loss on a batch of the stage-1 traces each optimiser step. It anchors what the
reward does not watch — on SmolLM2-135M every M³-RL run lowered arithmetic accuracy (groups of
all-wrong answers carry no signal while the other labels' updates move the shared reasoning)
and spliced the two kinds of reasoning traces together (benchmarks/RESULTS.md). The replay
batches come in a fixed seeded order indexed by the RL step, so a resumed run replays the same
traces without extra checkpoint state.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from safeladder.data.chat_tokens import IGNORE, collate, encode_example
from safeladder.data.sample import Sample


class ReplaySpec(BaseModel):
    """`replay:` in an RL config: which traces, how many per optimiser step, at what weight."""

    model_config = ConfigDict(extra="forbid")

    coef: float = Field(gt=0)  # weight of the token-mean cross-entropy against the policy loss
    batch_size: int = Field(8, ge=1)  # traces per optimiser step
    max_len: int = Field(384, ge=16)
    # Built-in verified traces per task (train split), as in the SFT config's `data.builtin`.
    builtin: dict[str, int] = Field(default_factory=lambda: {"math": 180, "harmful": 110, "benign": 230})
    files: list[str] = Field(default_factory=list)  # user trace files (JSONL, curated as in SFT)
    seed: int = 0


def replay_samples(spec: ReplaySpec) -> list[Sample]:
    """The traces to replay: built-in ones plus curated user files (the SFT stage's data rules)."""
    from safeladder.train.sft import DataFile, SFTConfig, SFTData, build_dataset

    data = SFTData(builtin=spec.builtin, files=[DataFile(path=p) for p in spec.files], seed=spec.seed)
    return build_dataset(SFTConfig(data=data))


class ReplayBatches:
    """Tokenised traces served `batch_size` at a time in a seeded order that depends only on the step."""

    def __init__(self, spec: ReplaySpec, tokenizer: Any, system_prompt: str):
        samples = replay_samples(spec)
        if len(samples) < spec.batch_size:
            raise ValueError(f"replay: {len(samples)} traces, fewer than batch_size {spec.batch_size}")
        self.spec = spec
        self.pad_id = tokenizer.pad_token_id
        self.examples = [
            encode_example(tokenizer, s.chat(), s.response or "", system_prompt, spec.max_len) for s in samples
        ]
        self.per_epoch = len(self.examples) // spec.batch_size

    def indices(self, step: int) -> list[int]:
        """The examples of RL step `step` (0-based): a fresh seeded permutation every pass."""
        epoch, offset = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(self.spec.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.examples), generator=g).tolist()
        return perm[offset * self.spec.batch_size : (offset + 1) * self.spec.batch_size]

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        return collate([self.examples[i] for i in self.indices(step)], self.pad_id)


def replay_loss(model: Any, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean cross-entropy over the assistant tokens of a collated batch (the SFT loss)."""
    from safeladder.train.sft import labelled_loss_sum

    n_tokens = int((enc["labels"][:, 1:] != IGNORE).sum())  # labels (B, T); position p predicts p + 1
    return labelled_loss_sum(model, enc) / max(n_tokens, 1)
