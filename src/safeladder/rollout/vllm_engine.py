"""The vLLM rollout engine (GPU; `pip install safeladder[vllm]`), registered as "vllm".

vLLM samples from its own copy of the weights, so the engine follows the trainer through
`sync_weights`, which the RL loop calls after every optimiser step: the trainer's weights —
LoRA adapters merged in, without modifying the trainer's model — are loaded into the running
vLLM model, and vLLM's prefix cache (KV computed with the old weights) is reset.

Layout, after TRL's colocate mode: vLLM runs in the trainer's process on the same GPU
(`distributed_executor_backend: external_launcher`, `gpu_memory_utilization` leaves the rest
to training), so the weights go straight from tensor to tensor. With another executor (e.g.
tensor parallelism over worker processes) they travel through `LLM.collective_rpc`.

Requests carry the prompt token ids (no re-tokenisation). Log-probs are vLLM's
"processed_logprobs" (after temperature, like ours; recent vLLM also renormalises over the top-p
nucleus, which differs from our engine only when top_p < 1 — the trainer recomputes log-probs
from its own model either way). Seeds follow the transformers engine's layout: prefix i of a
batch seeded s gets `prefix_seed(s, i)`, and vLLM gives its k-th sample that seed + k.

vLLM is imported lazily, so this module imports (and registers the engine) without it.
"""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any, Iterator, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safeladder.errors import ConfigError, SafeLadderError
from safeladder.rollout.base import Completion, FinishReason, SamplingSettings
from safeladder.rollout.engines import ENGINES
from safeladder.rollout.hf_engine import prefix_seed

INSTALL_HINT = "pip install safeladder[vllm]"


class VLLMOptions(BaseModel):
    """`rollout.engine_options` for engine "vllm"."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None  # an HF dir holding the policy's current weights; None: export them
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)  # vLLM's share of the GPU; training uses the rest
    dtype: str = "auto"
    max_model_len: int | None = Field(None, ge=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = False  # True skips CUDA-graph capture: slower decoding, faster start
    enable_prefix_caching: bool = True  # the G samples of a prompt share its KV
    distributed_executor_backend: str | None = "external_launcher"  # in-process, as TRL's colocate mode
    seed: int = 0
    llm_kwargs: dict[str, Any] = Field(default_factory=dict)  # anything else vllm.LLM takes


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise SafeLadderError(f"the vLLM rollout engine needs vLLM (Linux + CUDA): {INSTALL_HINT}") from None
    return vllm


# ------------------------------------------------------------------------------------ weights


def hf_weights(model: Any) -> Iterator[tuple[str, Any]]:
    """(name, tensor) of the plain HF model the trainer's model stands for, as vLLM loads them.

    peft LoRA: base weights plus each adapter's delta, under the base model's parameter names —
    computed, not merged in place, so the trainer's weights are untouched. Tied weights appear
    once (vLLM ties them itself).
    """
    if not hasattr(model, "peft_config"):
        yield from ((name, p.detach()) for name, p in model.named_parameters())
        return
    from peft.tuners.lora import LoraLayer

    adapter = model.active_adapter
    if getattr(model.peft_config[adapter], "use_dora", False):
        raise ConfigError("vLLM weight sync supports LoRA adapters, not DoRA")
    deltas = {
        _base_name(name, adapter) + ".weight": module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
        and (adapter in getattr(module, "lora_A", {}) or adapter in getattr(module, "lora_embedding_A", {}))
    }
    for name, p in model.named_parameters():
        if ".lora_" in name or "original_module" in name:
            continue  # adapters are merged below; modules_to_save keeps its trained copy
        clean = _base_name(name, adapter)
        weight = p.detach()
        if clean in deltas:
            weight = weight + deltas[clean].get_delta_weight(adapter).to(weight.dtype)
        yield clean, weight


def _base_name(name: str, adapter: str) -> str:
    """peft's parameter name -> the wrapped HF model's ("base_model.model.x.base_layer.weight" -> "x.weight")."""
    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
    return name.replace(f".modules_to_save.{adapter}", "")


def _load_weights_on_worker(worker: Any, weights: list[tuple[str, Any]]) -> int:
    """Runs inside a vLLM worker (collective_rpc): load the weights into its model."""
    worker.model_runner.model.load_weights(weights)
    return len(weights)


def _in_process_model(llm: Any) -> Any | None:
    """The vLLM model object when it lives in this process (external_launcher / no multiprocessing)."""
    try:
        worker = llm.llm_engine.model_executor.driver_worker
    except AttributeError:
        return None
    runner = getattr(worker, "model_runner", None) or getattr(getattr(worker, "worker", None), "model_runner", None)
    return getattr(runner, "model", None)


# ------------------------------------------------------------------------------------ engine


def _finish_reason(output: Any) -> FinishReason:
    """vLLM's (finish_reason, stop_reason) -> ours: a stop string is "stop", EOS / stop tokens "eos"."""
    if output.finish_reason == "length":
        return "length"
    if output.finish_reason == "stop":
        return "stop" if isinstance(output.stop_reason, str) else "eos"
    raise RuntimeError(f"vLLM ended a sample with finish_reason={output.finish_reason!r}")


def _default_distributed_env() -> None:
    """external_launcher reads the torch.distributed variables; a single process is rank 0 of 1."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "localhost"}.items():
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("localhost", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


class VLLMEngine:
    """The rollout protocol on vllm.LLM (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, **options: Any):
        try:
            self.options = VLLMOptions.model_validate(options)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"rollout.engine_options (engine: vllm): {problems}") from None
        self.vllm = import_vllm()
        self.tokenizer = tokenizer
        o = self.options
        kwargs: dict[str, Any] = {
            "gpu_memory_utilization": o.gpu_memory_utilization, "dtype": o.dtype, "max_model_len": o.max_model_len,
            "tensor_parallel_size": o.tensor_parallel_size, "enforce_eager": o.enforce_eager,
            "enable_prefix_caching": o.enable_prefix_caching, "seed": o.seed,
            "logprobs_mode": "processed_logprobs", **o.llm_kwargs,
        }
        if o.distributed_executor_backend:
            kwargs["distributed_executor_backend"] = o.distributed_executor_backend
            if o.distributed_executor_backend == "external_launcher":
                _default_distributed_env()
        if o.model_path is not None:
            self.llm = self.vllm.LLM(model=o.model_path, **kwargs)
        else:  # start from the trainer's current weights (merged LoRA), then let the directory go
            from safeladder.models.lora import export_merged

            with tempfile.TemporaryDirectory(prefix="safeladder-vllm-") as tmp:
                export_merged(model, tokenizer, tmp)
                self.llm = self.vllm.LLM(model=tmp, **kwargs)

    def sample(self, prefixes: Sequence[Sequence[int]], settings: SamplingSettings, first_index: int = 0) -> list[list[Completion]]:
        s = settings
        params = [
            self.vllm.SamplingParams(
                n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens, min_tokens=s.min_new_tokens,
                stop=list(s.stop) or None, include_stop_str_in_output=True,  # stop strings stay in the text, as ours
                logprobs=0,  # 0: just the sampled token's log-prob
                seed=None if s.seed is None else prefix_seed(s.seed, first_index + i),
            )
            for i in range(len(prefixes))
        ]
        prompts = [{"prompt_token_ids": list(p)} for p in prefixes]  # vllm.inputs.TokensPrompt is this dict
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        return [[self._completion(o) for o in sorted(out.outputs, key=lambda o: o.index)] for out in outputs]

    def _completion(self, output: Any) -> Completion:
        ids = list(output.token_ids)
        if output.logprobs is None or len(output.logprobs) < len(ids):
            raise RuntimeError("vLLM returned no log-probs for a sample (SamplingParams.logprobs=0 was ignored?)")
        logprobs = [float(output.logprobs[t][tok].logprob) for t, tok in enumerate(ids)]
        # our text is the decode of exactly the trained tokens (vLLM's may cut a token at a stop string)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(ids, logprobs, _finish_reason(output), text)

    def sync_weights(self, model: Any) -> None:
        target = _in_process_model(self.llm)
        if target is not None:
            target.load_weights(hf_weights(model))
        elif hasattr(self.llm, "collective_rpc"):
            weights = [(name, t.cpu()) for name, t in hf_weights(model)]  # pickled to the worker processes
            self.llm.collective_rpc(_load_weights_on_worker, args=(weights,))
        else:
            raise SafeLadderError("this vLLM version exposes neither the in-process model nor collective_rpc; "
                                  "cannot sync weights (use distributed_executor_backend: external_launcher)")
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights


@ENGINES.register("vllm")
def _vllm_engine(model: Any, tokenizer: Any, **options: Any) -> VLLMEngine:
    return VLLMEngine(model, tokenizer, **options)
