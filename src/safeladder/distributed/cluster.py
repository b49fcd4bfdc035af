"""Connect to Ray once per process: join a cluster (`address`) or start a local one.

Rollout workers and verifier pools call `connect()` themselves, so a recipe or engine that asks
for Ray works even when the config has no `ray:` block (a default local instance); the trainer
calls `connect(cfg.ray)` first so that an explicit block always wins. Ray stays an optional
extra: nothing here imports it until it is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safeladder.errors import ConfigError, SafeLadderError

if TYPE_CHECKING:
    from safeladder.train.rl_config import RaySpec

INSTALL_HINT = "pip install safeladder[ray]"


def require_ray() -> Any:
    """The `ray` module, or a SafeLadderError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise SafeLadderError(f"Ray is not installed; scale-out needs it: {INSTALL_HINT}") from None
    return ray


def init_kwargs(spec: "RaySpec | None") -> dict[str, Any]:
    """ray.init keyword arguments for a spec (pure, so config mistakes surface before Ray starts)."""
    kwargs: dict[str, Any] = {"include_dashboard": False}  # the dashboard needs extra deps and a port
    if spec is None:
        return kwargs
    if spec.address is not None and spec.num_cpus is not None:
        raise ConfigError(
            "ray.num_cpus sizes a local instance; it cannot be set when joining a cluster at "
            f"ray.address={spec.address!r} (the cluster's nodes declare their own CPUs)"
        )
    if spec.address is not None:
        kwargs["address"] = spec.address
    if spec.num_cpus is not None:
        kwargs["num_cpus"] = spec.num_cpus
    kwargs.update(spec.options)  # anything else ray.init takes: runtime_env, namespace, _temp_dir, ...
    return kwargs


def connect(spec: "RaySpec | None" = None) -> Any:
    """Initialise Ray for this process unless it already is (idempotent); returns the ray module.

    spec.address None starts a local instance (spec.num_cpus CPUs, default: all); "auto" joins
    the cluster this machine belongs to (`ray start --head` / `ray start --address=…`); a
    "ray://host:10001" address connects through Ray Client.
    """
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(**init_kwargs(spec))
    return ray


def split_evenly(count: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges covering range(count) in order, sizes differing by at most 1.

    Empty ranges are dropped, so fewer items than parts uses fewer parts.
    """
    if parts < 1:
        raise ValueError("parts must be >= 1")
    base, extra = divmod(count, parts)
    ranges, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        if end > start:
            ranges.append((start, end))
        start = end
    return ranges


class ActorOptions(BaseModel):
    """Where and how many Ray actors run (rollout workers, verifier pools); YAML-facing.

    GPU placement: `num_gpus: 1` gives each actor one GPU (Ray sets CUDA_VISIBLE_DEVICES, the
    actor's model moves to "cuda"); fractions (0.5) pack two actors per GPU. `resources` asks
    for custom node resources (e.g. {"verifier_node": 1} to pin a pool to tagged nodes) and
    `scheduling_strategy: SPREAD` spreads actors over the cluster's nodes.
    """

    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(2, ge=1)
    num_cpus: float = Field(1, ge=0)  # held by each actor for its lifetime (fractions allowed)
    num_gpus: float = Field(0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    scheduling_strategy: Literal["DEFAULT", "SPREAD"] = "DEFAULT"
    threads: int | None = Field(None, ge=1)  # torch threads per actor; default: num_cpus (at least 1)
    start_timeout_s: float = Field(600, gt=0)  # actors that cannot be placed by then are an error, not a hang

    @property
    def torch_threads(self) -> int:
        return self.threads or max(1, int(self.num_cpus))

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for `ActorClass.options(...)`."""
        out: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "scheduling_strategy": self.scheduling_strategy}
        if self.resources:
            out["resources"] = dict(self.resources)
        return out


def actor_options(what: str, options: dict[str, Any]) -> ActorOptions:
    """Validate placement options; a typo is a ConfigError naming `what` (e.g. "rollout.engine_options")."""
    try:
        return ActorOptions.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(options)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{what}: {problems}") from None


def start_actors(body: type, args: tuple, options: ActorOptions, what: str) -> list[Any]:
    """`options.num_workers` actors running `body(*args)` (a class with a `ready()` method), started.

    Waits until every actor has finished its constructor, so a bad option or a missing module
    fails here; actors that the cluster cannot place within `start_timeout_s` (too few CPUs or
    GPUs for what was asked) raise an error that says so instead of waiting forever.
    """
    ray = connect()
    actor = ray.remote(body).options(**options.ray_options())
    workers = [actor.remote(*args) for _ in range(options.num_workers)]
    try:
        ray.get([w.ready.remote() for w in workers], timeout=options.start_timeout_s)
    except ray.exceptions.GetTimeoutError:
        for w in workers:
            ray.kill(w)
        asked = {k: v for k, v in options.ray_options().items() if k != "scheduling_strategy"}
        raise SafeLadderError(
            f"{what}: {options.num_workers} Ray actors ({asked} each) did not start within {options.start_timeout_s:g} s; "
            f"the cluster has {ray.available_resources()} free — lower num_workers/num_cpus/num_gpus or add nodes"
        ) from None
    except ray.exceptions.RayActorError as exc:  # the constructor raised: its last line says why
        reason = str(exc).strip().splitlines()[-1]
        raise SafeLadderError(f"{what}: a Ray actor failed to start: {reason}") from exc
    return workers
