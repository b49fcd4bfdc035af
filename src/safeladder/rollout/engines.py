"""Rollout engines by name (`rollout.engine` in an RL config); heavy backends import lazily."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from safeladder.algorithms.registry import Registry
from safeladder.rollout.base import RolloutEngine

# factory(model, tokenizer, **options) -> RolloutEngine
ENGINES: Registry[Callable[..., RolloutEngine]] = Registry("rollout engine")
# Modules that register more engines when imported (vLLM, Ray); missing extras are fine.
OPTIONAL_ENGINE_MODULES = ["safeladder.rollout.vllm_engine", "safeladder.distributed.rollout_workers"]


@ENGINES.register("transformers")
def _transformers(model: Any, tokenizer: Any, decode_threads: int | str = "auto", merge_lora: bool = True,
                  **unknown: Any) -> RolloutEngine:
    from safeladder.rollout.hf_engine import TransformersEngine

    if unknown:
        raise ValueError(f"rollout.engine_options {sorted(unknown)} do not apply to the transformers engine "
                         "(it takes: decode_threads, merge_lora)")
    return TransformersEngine(model, tokenizer, decode_threads=decode_threads, merge_lora=merge_lora)


def build_engine(name: str, model: Any, tokenizer: Any, **options: Any) -> RolloutEngine:
    if name not in ENGINES:
        for module in OPTIONAL_ENGINE_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError:
                pass
    return ENGINES.get(name)(model, tokenizer, **options)
