"""A cross-encoder head: the sentence encoder reads the request and the answer together.

The embedding heads (heads.py) see a request and an answer as two mean-pooled vectors, and a
refusal that names the topic ("I can't help with that. Hackers use software to break into
systems …") lands next to the compliance it refuses: judge v6 called 16 of 453 such refusals of
the demo models harmful, and no data mix fixed it (benchmarks/RESULTS.md, sessions 17–18).
Here all-MiniLM-L6-v2 attends over `[CLS] request [SEP] answer [SEP]` with LoRA adapters (peft)
on its attention and feed-forward projections, and a linear layer on the mean-pooled states
gives P(positive). Fine-tuned on the same labelled set as the embedding head it checks.

Stored like the other heads: `<name>.safetensors` (the LoRA weights, prefixed `lora.`, and the
classifier, `classifier.`) + `<name>.json` (meta, with `reads: "cross"`); the base encoder is the
packaged checkpoint, so the stored head is ~1.4 MB.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from safeladder.cpu import available_cores, torch_threads
from safeladder.errors import SafeLadderError

CROSS_ENCODER_TAG = "all-MiniLM-L6-v2+lora/fp32"  # recorded with the head; a change rebuilds it
LORA_PREFIX, CLASSIFIER_PREFIX = "lora.", "classifier."


@dataclass(frozen=True)
class CrossConfig:
    """Fine-tuning settings (session 18's feasibility run: 2 epochs, ~15 min on 2 cores for ~4 800 pairs)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")
    lr: float = 5e-4
    weight_decay: float = 0.01
    epochs: int = 2
    batch_size: int = 16
    max_length: int = 192  # request + answer tokens; the longer of the two is cut first
    balanced: bool = True


def base_dir() -> Path:
    """The encoder the adapters sit on (the packaged MiniLM; tests point this at a tiny model)."""
    from safeladder.verifiers.embeddings import model_dir

    return model_dir()


class CrossHead:
    """LoRA-adapted encoder + linear classifier over a (request, answer) pair."""

    reads = "cross"

    def __init__(self, meta: dict[str, Any], state: dict[str, torch.Tensor] | None = None, merge: bool = False):
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from transformers import AutoModel, AutoTokenizer

        self.meta = meta
        config = CrossConfig(**{**meta["config"], "target_modules": tuple(meta["config"]["target_modules"])})
        folder = base_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                          target_modules=list(config.target_modules),
                          exclude_modules=["pooler.dense"])  # the [CLS] pooler is not read (mean pooling)
        self.encoder = get_peft_model(AutoModel.from_pretrained(str(folder)), lora)
        self.classifier = nn.Linear(int(self.encoder.config.hidden_size), 1)
        self.config = config
        if state is not None:
            loaded = set_peft_model_state_dict(self.encoder, {k[len(LORA_PREFIX):]: v for k, v in state.items()
                                                              if k.startswith(LORA_PREFIX)})
            missing = [k for k in loaded.missing_keys if "lora_" in k]
            if missing or loaded.unexpected_keys:
                raise SafeLadderError(f"cross head {meta['name']!r}: stored adapters do not fit the encoder "
                                      f"(missing {missing[:3]}, unexpected {list(loaded.unexpected_keys)[:3]})")
            self.classifier.load_state_dict({k[len(CLASSIFIER_PREFIX):]: v for k, v in state.items()
                                             if k.startswith(CLASSIFIER_PREFIX)})
        if merge:  # for inference: W + BA folded into W, so the adapters cost nothing per call
            self.encoder = self.encoder.merge_and_unload()
        self.merged = merge
        self._lock = threading.Lock()  # service threads share a verifier; a fast tokenizer is not re-entrant
        self.eval()

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    def eval(self) -> "CrossHead":
        self.encoder.eval()
        self.classifier.eval()
        return self

    def logits(self, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """(N,) logits; differentiable (training calls this in train mode)."""
        enc = self.tokenizer(list(prompts), list(answers), truncation="longest_first",
                             max_length=self.config.max_length, padding=True, return_tensors="pt")
        states = self.encoder(**enc).last_hidden_state  # (N, T, D)
        mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)  # (N, T, 1)
        pooled = (states * mask).sum(1) / mask.sum(1)  # (N, D)
        return self.classifier(pooled).squeeze(-1)

    @torch.no_grad()
    def predict_pairs(self, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N,) P(positive), in batches of similar length (little padding)."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(answers[i]))
        out = torch.zeros(len(prompts))
        with self._lock, torch_threads(available_cores()):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                out[idx] = torch.sigmoid(self.logits([prompts[i] for i in idx], [answers[i] for i in idx]))
        return out

    def save(self, directory: Path) -> Path:
        from peft import get_peft_model_state_dict

        if self.merged:
            raise ValueError(f"cross head {self.name!r} was loaded for inference (adapters merged); save it after fitting")
        directory.mkdir(parents=True, exist_ok=True)
        state = {f"{LORA_PREFIX}{k}": v for k, v in get_peft_model_state_dict(self.encoder).items()}
        state |= {f"{CLASSIFIER_PREFIX}{k}": v for k, v in self.classifier.state_dict().items()}
        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / f"{self.name}.safetensors"))
        (directory / f"{self.name}.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True), encoding="utf-8")
        return directory / f"{self.name}.json"

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> "CrossHead":
        """For inference: the adapters are merged into the encoder."""
        return cls(meta, load_file(str(directory / f"{meta['name']}.safetensors")), merge=True)


def _length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (sorted with a little jitter), in random order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] + rng.random() * 200)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def fit_cross_head(name: str, pairs: Sequence[tuple[str, str]], labels: Sequence[int],
                   weights: Sequence[float] | None = None, config: CrossConfig = CrossConfig(), seed: int = 0,
                   meta: dict[str, Any] | None = None,
                   on_step: Callable[[int, int, float], None] | None = None) -> CrossHead:
    """Fine-tune the adapters and the classifier with class-balanced weighted BCE (as the embedding
    heads), AdamW and a one-cycle schedule, for a fixed number of epochs. `on_step(step, total, loss)`
    reports progress."""
    from safeladder.verifiers.heads import HEADS_VERSION, _example_weights, _weighted_bce

    torch.manual_seed(seed)
    rng = random.Random(seed)
    head = CrossHead({"name": name, "reads": "cross", "threshold": 0.5, "config": asdict(config),
                      "seed": seed, "version": HEADS_VERSION, "encoder": CROSS_ENCODER_TAG,
                      "n_train": len(pairs), **(meta or {})})
    y = torch.tensor(list(labels), dtype=torch.float)
    w = _example_weights(y, None if weights is None else torch.tensor(list(weights)), config.balanced)
    params = [p for p in head.encoder.parameters() if p.requires_grad] + list(head.classifier.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(pairs) // config.batch_size)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.1)
    lengths = [len(p) + len(a) for p, a in pairs]
    head.encoder.train()
    head.classifier.train()
    step, started = 0, time.perf_counter()
    with torch_threads(available_cores()):
        for _ in range(config.epochs):
            for idx in _length_batches(lengths, config.batch_size, rng):
                loss = _weighted_bce(head.logits([pairs[i][0] for i in idx], [pairs[i][1] for i in idx]), y[idx], w[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if on_step is not None:
                    on_step(step, total, loss.item())
    head.meta.update(epochs=config.epochs, steps=total, train_seconds=round(time.perf_counter() - started, 1))
    return head.eval()
