"""The transformers rollout engine: our own batched decode loop over the model's KV cache.

Why not `model.generate`? Three things RL needs that it makes awkward or slow: each prompt is
encoded once and its cache repeated for the n samples of its group (generate re-encodes it n
times), rows that finish leave the batch at once (generate keeps computing them until the
longest row ends), and the sampling log-probs come out of the same loop (no second pass). It
also skips generate's per-step framework overhead, measured at ~100 ms/step on our 2-core CPU.

Seeding is per row: sample k of prefix i draws from its own generator, seeded with
`prefix_seed(seed, i) + k` where i is the prefix's index in the caller's whole batch. So how a
batch is split (batch_size, Ray workers each taking a slice) does not change what is sampled,
and vLLM, which seeds each request and gives its k-th child seed + k, follows the same layout.
"""

from __future__ import annotations

import contextlib
import math
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence, Union

import torch

from safeladder.cpu import available_cores, torch_threads
from safeladder.models.lora import MergedForSampling
from safeladder.models.precision import autocast
from safeladder.rollout.base import Completion, FinishReason, SamplingSettings
from safeladder.rollout.cpu_kernels import few_row_linears
from safeladder.rollout.kv_cache import preallocated_cache, supports_preallocated


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(gen_eos)
    return ids


# One generator for all rows, one per row (seeded sampling), or None (the global RNG).
Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def prefix_seed(seed: int, index: int) -> int:
    """The seed of prefix `index` of a batch sampled with `seed`; its k-th sample uses + k.

    A hash, not seed + index, so neighbouring steps (seed, seed + 1) never share streams.
    62 bits, so + k stays a valid int64 seed for torch and vLLM.
    """
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def _uniforms(rows: int, generator: Generators, device: torch.device) -> torch.Tensor:
    """(R,) uniforms in [0, 1); row j drawn from generator[j] when one is given per row."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(rows, generator=generator, device=device)
    if len(generator) != rows:
        raise ValueError(f"{len(generator)} generators for {rows} rows")
    return torch.cat([torch.rand(1, generator=g, device=device) for g in generator])


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Row-wise categorical draw from unnormalised `probs` (R, V) with uniforms u (R,) -> (R,).

    Several times faster than torch.multinomial on CPU, and it takes one uniform per row, which
    is what per-row generators need. Zero-probability entries are never picked: the first index
    whose cumulative mass exceeds u·total always has mass of its own.
    """
    cdf = probs.cumsum(-1)  # (R, V)
    total = cdf[:, -1:]  # (R, 1)
    if not bool(((total > 0) & torch.isfinite(total)).all()):
        raise ValueError("cannot sample: a row's probabilities are NaN, infinite or all zero (bad logits?)")
    target = torch.minimum(u[:, None].to(cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)


MIN_TEMPERATURE = 1e-4


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: Generators, banned: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return (tokens (R,), their log-probs (R,)).

    The log-prob is that of the temperature-scaled distribution before top-p truncation and
    before `banned` tokens (EOS under `min_new_tokens`) are removed, i.e. the policy π(·)/T the
    trainer recomputes; greedy (T=0) reports the untempered log-prob. Temperatures below
    `MIN_TEMPERATURE` are greedy: dividing by them overflows to inf/NaN.
    """
    logits = logits.float()  # (R, V)
    ban = list(banned)
    if temperature < MIN_TEMPERATURE:
        logp = torch.log_softmax(logits, dim=-1)
        tokens = (logp.index_fill(-1, torch.tensor(ban, device=logp.device), -math.inf) if ban else logp).argmax(dim=-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / temperature, dim=-1)  # (R, V)
    probs, order = logp.exp(), None
    if ban:
        probs = probs.index_fill(-1, torch.tensor(ban, device=probs.device), 0.0)
        probs = probs / probs.sum(-1, keepdim=True)  # top-p measures the renormalised mass
    if top_p < 1.0:  # sample in sorted order, then map back to token ids
        probs, order = probs.sort(dim=-1, descending=True)
        outside = probs.cumsum(-1) - probs > top_p  # keep the smallest set reaching top_p
        probs = probs.masked_fill(outside, 0.0)
    picks = _inverse_cdf(probs, _uniforms(probs.shape[0], generator, probs.device))  # (R,)
    tokens = picks if order is None else order.gather(-1, picks[:, None]).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


_PARALLEL_LOCK = threading.Lock()  # the intra-op thread count is process-wide: one parallel decode at a time


class TransformersEngine:
    """Samples from a live transformers (or peft) model; weights are shared with the trainer.

    On a CPU, decoding is bound by small matrix products that torch's intra-op threads split
    poorly. So a large chunk can be split over `decode_threads` Python threads, each decoding its
    share with one intra-op thread (torch releases the GIL inside ops). Measured on 2 cores
    (SmolLM2-135M, LoRA, greedy, 64 new tokens): 64 rows 81 → 98 tokens/s with two threads,
    but 16 rows got slower (the Python side of each step contends for the GIL). Each row keeps
    its own seeded generator, so the split never changes what is sampled. "auto": on CPU one
    thread per available core as long as each gets ≥ AUTO_MIN_ROWS rows; on GPU, one.
    """

    AUTO_MIN_ROWS = 32

    def __init__(self, model: Any, tokenizer: Any, decode_threads: int | str = "auto", merge_lora: bool = True):
        self.model = model
        self.merge_lora = merge_lora
        self._merger = MergedForSampling(model)
        self.tokenizer = tokenizer
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids), 0)
        if decode_threads != "auto" and (not isinstance(decode_threads, int) or decode_threads < 1):
            raise ValueError(f"decode_threads must be 'auto' or an integer >= 1, got {decode_threads!r}")
        if not isinstance(merge_lora, bool):
            raise ValueError(f"merge_lora must be true or false, got {merge_lora!r}")
        self.decode_threads = decode_threads

    def sync_weights(self, model: Any) -> None:
        if model is not self.model:
            self._merger = MergedForSampling(model)
        self.model = model  # same process, same tensors: nothing to copy (merged weights follow the adapters)

    def _threads(self, rows: int) -> int:
        if self.decode_threads != "auto":
            return int(self.decode_threads)
        if self._device.type != "cpu":
            return 1
        return max(1, min(available_cores(), rows // self.AUTO_MIN_ROWS))

    def sample(self, prefixes: Sequence[Sequence[int]], settings: SamplingSettings, first_index: int = 0) -> list[list[Completion]]:
        """`first_index`: where prefixes[0] sits in the caller's whole batch (seeds follow it)."""
        was_training = self.model.training
        self.model.eval()
        out: list[list[Completion]] = []
        try:
            with self._merger.active() if self.merge_lora else contextlib.nullcontext(), few_row_linears(self.model):
                for start in range(0, len(prefixes), settings.batch_size):
                    chunk = prefixes[start : start + settings.batch_size]
                    out.extend(self._sample_parallel(chunk, settings, first_index + start))
        finally:
            self.model.train(was_training)
        return out

    def _sample_parallel(self, chunk: Sequence[Sequence[int]], s: SamplingSettings, first: int) -> list[list[Completion]]:
        """Decode `chunk` split into contiguous parts, one Python thread (one torch thread) each."""
        k = min(self._threads(len(chunk) * s.n), len(chunk))
        if k <= 1:
            return self._sample_chunk(chunk, s, self._generators(s, first, len(chunk)))
        bounds = [round(i * len(chunk) / k) for i in range(k + 1)]
        parts = [(bounds[i], bounds[i + 1]) for i in range(k)]
        with _PARALLEL_LOCK, torch_threads(1), ThreadPoolExecutor(max_workers=k) as pool:
            futures = [
                pool.submit(self._sample_chunk, chunk[a:b], s, self._generators(s, first + a, b - a)) for a, b in parts
            ]
            results = [f.result() for f in futures]
        return [group for part in results for group in part]

    def _generators(self, s: SamplingSettings, first: int, count: int) -> list[torch.Generator] | None:
        """One generator per output row (prefix-major, n rows per prefix); None when unseeded."""
        if s.seed is None:
            return None
        return [
            torch.Generator(device=self._device).manual_seed(prefix_seed(s.seed, first + i) + k)
            for i in range(count) for k in range(s.n)
        ]

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def _sample_chunk(self, prefixes: Sequence[Sequence[int]], s: SamplingSettings, generators: list[torch.Generator] | None) -> list[list[Completion]]:
        device, n = self._device, s.n
        if any(len(p) == 0 for p in prefixes):
            raise ValueError("every prefix needs at least one token")
        width = max(len(p) for p in prefixes)
        ids = torch.full((len(prefixes), width), self.pad_id, dtype=torch.long, device=device)  # (B, P)
        attn = torch.zeros_like(ids)  # (B, P), left padding
        for i, p in enumerate(prefixes):
            ids[i, width - len(p) :] = torch.tensor(list(p), device=device)
            attn[i, width - len(p) :] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (B, P)
        extra = {"cache": preallocated_cache(self.model, width + s.max_new_tokens)} if supports_preallocated(self.model) else {}
        with autocast(self.model, s.precision):
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1, **extra)
        cache = out.cache
        logits = out.logits[:, -1, :]  # (B, V)
        if n > 1:  # share each prefix's cache among its n samples
            cache.batch_repeat_interleave(n)
            logits, attn = logits.repeat_interleave(n, 0), attn.repeat_interleave(n, 0)  # (B·n, ·)
        next_pos = attn.sum(-1)  # (R,) position of the next token
        rows = torch.arange(logits.shape[0], device=device)  # live row -> output row
        tokens: list[list[int]] = [[] for _ in range(logits.shape[0])]
        logps: list[list[float]] = [[] for _ in range(logits.shape[0])]
        reasons: list[FinishReason | None] = [None] * logits.shape[0]
        for step in range(s.max_new_tokens):
            live = rows.tolist()
            banned = sorted(self.eos_ids) if step < s.min_new_tokens else ()
            tok, lp = sample_next(
                logits, s.temperature, s.top_p, None if generators is None else [generators[r] for r in live], banned
            )
            keep: list[int] = []
            for j, (r, t, l) in enumerate(zip(live, tok.tolist(), lp.tolist())):
                tokens[r].append(t)
                logps[r].append(l)
                reasons[r] = self._finished(tokens[r], t, s)
                if reasons[r] is None:
                    keep.append(j)
            if not keep or step == s.max_new_tokens - 1:
                break
            if len(keep) < len(rows):  # finished rows leave the batch
                idx = torch.tensor(keep, device=device)
                cache.batch_select_indices(idx)
                rows, tok, attn, next_pos = rows[idx], tok[idx], attn[idx], next_pos[idx]
            attn = torch.cat([attn, attn.new_ones(attn.shape[0], 1)], dim=-1)  # (R, P+t+1)
            with autocast(self.model, s.precision):
                out = self.model(
                    input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                    cache=cache, use_cache=True,
                )
            cache, logits, next_pos = out.cache, out.logits[:, -1, :], next_pos + 1
        results = [
            Completion(tokens[r], logps[r], reasons[r] or "length", self.tokenizer.decode(tokens[r], skip_special_tokens=True))
            for r in range(len(tokens))
        ]
        return [results[i * n : (i + 1) * n] for i in range(len(prefixes))]

    def _finished(self, row: list[int], token: int, s: SamplingSettings) -> FinishReason | None:
        if len(row) < s.min_new_tokens:  # stop strings wait too (as vLLM's min_tokens)
            return None
        if token in self.eos_ids:
            return "eos"
        if s.stop:
            tail = self.tokenizer.decode(row[-16:], skip_special_tokens=True)
            if any(stop in tail for stop in s.stop):
                return "stop"
        if len(row) >= s.max_new_tokens:
            return "length"
        return None
