"""A verifier pool on Ray: N actors each build the same verifier; a batch is split across them.

Registered as the verifier "ray_pool". Recipes use it as a named instance, so the pooled
verifier keeps one name in the reward components:

    verifiers:
      safety_pool:
        type: ray_pool
        options: {verifier: safety, options: {}, num_workers: 4, num_gpus: 0.25}
    recipes:
      safety: [{verifier: safety_pool}]

Each actor builds the inner verifier with `build_verifier` — the same class as in-process, not
a fork — so verdicts are identical; only where they are computed changes. The inner class is
shipped to the actors too, so a verifier registered by the user's own script (`__main__`) or
package works there without being listed in the built-in modules.
"""

from __future__ import annotations

from typing import Any, Sequence

from safeladder.distributed.cluster import actor_options, require_ray, split_evenly, start_actors
from safeladder.errors import ConfigError
from safeladder.verifiers import base
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, build_verifier, register_verifier

POOL = "ray_pool"


class VerifierWorker:
    """The Ray actor: one inner verifier instance."""

    def __init__(self, name: str, cls: type[Verifier], options: dict[str, Any], threads: int):
        import torch

        torch.set_num_threads(threads)
        base._import_builtin_verifiers()  # built-ins first: registering `cls` early would clash with them
        base.VERIFIERS.setdefault(name, cls)  # user verifiers whose module did not register them here
        self.verifier = build_verifier(name, **options)

    def ready(self) -> bool:
        return True

    def verify(self, items: list[VerifyItem]) -> list[Verdict]:
        return self.verifier(items)


@register_verifier(POOL)
class RayVerifierPool(Verifier):
    """`verifier` (a registered name) with `options`, on `num_workers` Ray actors (placement: cluster.ActorOptions)."""

    def __init__(self, verifier: str, options: dict[str, Any] | None = None, **placement: Any):
        base._import_builtin_verifiers()
        if verifier == POOL:
            raise ConfigError("ray_pool: the inner verifier cannot itself be a ray_pool")
        if verifier not in base.VERIFIERS:
            raise ConfigError(f"ray_pool: unknown verifier {verifier!r}; known: {', '.join(sorted(base.VERIFIERS))}")
        self.inner = verifier
        self.placement = actor_options(f"ray_pool ({verifier})", placement)
        args = (verifier, base.VERIFIERS[verifier], dict(options or {}), self.placement.torch_threads)
        self.workers = start_actors(VerifierWorker, args, self.placement, f"ray_pool ({verifier})")  # bad options fail here

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        ray = require_ray()
        ranges = split_evenly(len(items), len(self.workers))
        futures = [w.verify.remote(list(items[a:b])) for w, (a, b) in zip(self.workers, ranges)]
        return [v for part in ray.get(futures) for v in part]

    def close(self) -> None:
        ray = require_ray()
        for w in self.workers:
            ray.kill(w)
        self.workers = []
