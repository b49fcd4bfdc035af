"""Rollout workers on Ray: N actors, each running the transformers engine on its own model copy.

Registered as the rollout engine "ray" (`rollout.engine: ray`, placement in
`rollout.engine_options`, see `cluster.ActorOptions`). Each actor runs the same
`TransformersEngine` the trainer uses in-process — not a fork — so everything that engine
guarantees (shared prompt caches, stop strings, log-probs) holds on every worker.

`sample` gives each worker a contiguous slice of the prefixes plus the slice's start index;
the engine seeds every prefix from (seed, index in the whole batch), so a seeded batch samples
exactly what the in-process engine samples, however it is split. `sync_weights` ships the
trainable state once per optimiser step (LoRA adapters only with peft, else the full state
dict) through the object store: one `ray.put`, every actor reads the same object.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from safeladder.distributed.cluster import actor_options, connect, require_ray, split_evenly, start_actors
from safeladder.rollout.base import Completion, SamplingSettings
from safeladder.rollout.engines import ENGINES
from safeladder.rollout.hf_engine import TransformersEngine


def trainable_state(model: Any) -> dict[str, Any]:
    """What workers need to follow the trainer: LoRA adapter weights (peft) or the full state dict, on CPU."""
    if hasattr(model, "peft_config"):
        return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}
    return {name: t.detach().cpu() for name, t in model.state_dict().items()}


def _on_cpu(model: Any) -> Any:
    """A model that unpickles on CPU-only actors (workers move it to their own device)."""
    return model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()


class RolloutWorker:
    """The Ray actor: one TransformersEngine over its own copy of the policy."""

    def __init__(self, payload: tuple[Any, Any], device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        model, tokenizer = payload
        self.engine = TransformersEngine(model.to(device), tokenizer, decode_threads=1)  # the actor's CPUs: its torch threads

    def ready(self) -> bool:
        return True

    def sample(self, prefixes: list[list[int]], settings: SamplingSettings, first_index: int) -> list[list[Completion]]:
        return self.engine.sample(prefixes, settings, first_index=first_index)

    def load_state(self, state: dict[str, Any]) -> int:
        result = self.engine.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise KeyError(f"weights the worker's model does not have: {result.unexpected_keys[:5]}")
        return len(state)


class RayRolloutEngine:
    """The rollout protocol over a pool of Ray actors (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, **options: Any):
        self.options = actor_options("rollout.engine_options (engine: ray)", options)
        ray = connect()
        self.tokenizer = tokenizer
        payload = ray.put((_on_cpu(model), tokenizer))  # stored once, read by every actor
        device = "cuda" if self.options.num_gpus > 0 else "cpu"
        self.workers = start_actors(RolloutWorker, (payload, device, self.options.torch_threads), self.options, "rollout workers")

    def sample(self, prefixes: Sequence[Sequence[int]], settings: SamplingSettings) -> list[list[Completion]]:
        ray = require_ray()
        ranges = split_evenly(len(prefixes), len(self.workers))
        futures = [
            worker.sample.remote([list(p) for p in prefixes[a:b]], settings, a)
            for worker, (a, b) in zip(self.workers, ranges)
        ]
        return [group for part in ray.get(futures) for group in part]

    def sync_weights(self, model: Any) -> None:
        ray = require_ray()
        state = ray.put(trainable_state(model))  # once; every actor reads the same object
        ray.get([w.load_state.remote(state) for w in self.workers])

    def close(self) -> None:
        """Stop the actors now (they also stop when the engine is garbage-collected)."""
        ray = require_ray()
        for w in self.workers:
            ray.kill(w)
        self.workers = []


@ENGINES.register("ray")
def _ray_engine(model: Any, tokenizer: Any, **options: Any) -> RayRolloutEngine:
    return RayRolloutEngine(model, tokenizer, **options)
