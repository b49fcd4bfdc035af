"""Scale-out on a local Ray cluster: rollout workers and a verifier pool reproduce the in-process run.

Ray starts once for the module (2 CPUs, no dashboard, quiet workers) and the expensive part —
one seeded 2-step RL run in-process and the same run with the "ray" engine (2 workers) and a
"ray_pool" verifier (2 workers) — runs once in a module fixture that several tests read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from safeladder.distributed import verifier_pool  # noqa: E402  (registers "ray_pool")
from safeladder.distributed.cluster import ActorOptions, actor_options, connect, init_kwargs, require_ray, split_evenly  # noqa: E402
from safeladder.distributed.rollout_workers import RayRolloutEngine, trainable_state  # noqa: E402
from safeladder.errors import ConfigError, SafeLadderError  # noqa: E402
from safeladder.rollout import SamplingSettings  # noqa: E402
from safeladder.rollout.hf_engine import TransformersEngine  # noqa: E402
from safeladder.train.rl import RLTrainer  # noqa: E402
from safeladder.train.rl_config import RaySpec, RLConfig  # noqa: E402
from safeladder.verifiers.recipes import RecipeConfig, RecipeEntry, RewardComputer, VerifierSpec  # noqa: E402

QUIET_WORKERS = {"PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
LENGTH = {"max_words": 2, "target": "completion"}  # a rule reward the tiny model's random text spreads over 0…1


@pytest.fixture(scope="module")
def local_ray():
    saved = {k: os.environ.get(k) for k in QUIET_WORKERS}
    os.environ.update(QUIET_WORKERS)  # the raylet, and so every worker, inherits them
    temp = tempfile.mkdtemp(prefix="slray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _config(root: Path, name: str, **over) -> RLConfig:
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Say a number {i}", "label": "short"}) + "\n" for i in range(8)))
    raw = {
        "model": {"name": "tiny"}, "output_dir": str(root / name),
        "tasks": {"numbers": {"path": str(prompts), "split": "all"}},
        "curriculum": [{"name": "one", "steps": 2, "mixture": {"numbers": 1.0}, "recipe": "short"}],
        "rollout": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 8, "temperature": 1.0},
        "algorithm": {"kl_coef": 0.0, "micro_batch_size": 16},
        "optim": {"lr": 3e-2, "warmup_ratio": 0.0}, "tensorboard": False, "seed": 3,
        # fp32 everywhere: the Ray actors are other processes, which conftest's pin of "auto" does not reach
        "precision": "fp32", **over,
    }
    return RLConfig.model_validate(raw)


def _run(trainer: RLTrainer, steps: int) -> list[tuple[list[float], list[str]]]:
    """What train_step does, keeping each step's full reward vector and texts."""
    out = []
    for _ in range(steps):
        batch, _ = trainer.collect()
        trainer.train_on(batch)
        trainer.step += 1
        out.append((batch.rewards.tolist(), [r.text for r in batch.rollouts]))
    return out


@pytest.fixture(scope="module")
def runs(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-rl")
    local = RLTrainer(_config(root, "local"), reward_computers={
        "short": RewardComputer(RecipeConfig(format_reward=0.0, recipes={"short": [RecipeEntry(verifier="length", options=LENGTH)]})),
    })
    pooled = RecipeConfig(
        format_reward=0.0, recipes={"short": [RecipeEntry(verifier="length_pool")]},
        verifiers={"length_pool": VerifierSpec(type="ray_pool", options={
            "verifier": "length", "options": LENGTH, "num_workers": 2, "num_cpus": 0.5})},
    )
    on_ray = RLTrainer(_config(root, "ray", ray={}, rollout={
        "group_size": 4, "prompts_per_step": 4, "max_new_tokens": 8, "temperature": 1.0,
        "engine": "ray", "engine_options": {"num_workers": 2, "num_cpus": 0.5},  # 4 actors on 2 CPUs
    }), reward_computers={"short": RewardComputer(pooled)})
    return local, _run(local, 2), on_ray, _run(on_ray, 2)


def test_the_same_seeded_run_gives_the_same_rewards_in_process_and_on_ray(runs):
    local, local_steps, on_ray, ray_steps = runs
    assert isinstance(on_ray.engine, RayRolloutEngine) and len(on_ray.engine.workers) == 2
    pool = on_ray.reward_computer("short")
    assert "length_pool" in pool.verifiers and len(pool.verifiers["length_pool"].workers) == 2
    for (rewards, texts), (ray_rewards, ray_texts) in zip(local_steps, ray_steps):
        assert ray_texts == texts
        assert ray_rewards == pytest.approx(rewards, abs=1e-6)
    assert len({r for rewards, _ in local_steps for r in rewards}) > 1  # a reward that actually varies
    assert local_steps[1][1] != local_steps[0][1]
    # step 2 sampled from the updated weights on the workers too, so training stayed in lockstep
    for (name, p), (_, q) in zip(local.model.named_parameters(), on_ray.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


def test_sync_weights_changes_what_the_actors_sample(runs):
    _, _, on_ray, _ = runs
    engine, model, tok = on_ray.engine, on_ray.model, on_ray.tokenizer
    prompts = [tok.encode(t, add_special_tokens=False) for t in ["What is 47 + 38?", "0 1 2", "Say a number 5"]]
    settings = SamplingSettings(max_new_tokens=8, temperature=1.0, n=2, seed=5, precision="fp32")
    ids = lambda out: [[c.token_ids for c in group] for group in out]  # noqa: E731
    before = ids(engine.sample(prompts, settings))
    assert before == ids(TransformersEngine(model, tok).sample(prompts, settings))
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(3.0)  # a large change the samples must follow
    assert ids(engine.sample(prompts, settings)) == before  # the workers still hold the old weights
    engine.sync_weights(model)
    after = ids(engine.sample(prompts, settings))
    assert after != before
    assert after == ids(TransformersEngine(model, tok).sample(prompts, settings))


def test_lora_sync_ships_only_the_adapters(tiny_policy):
    from safeladder.models.loader import LoraSpec
    from safeladder.models.lora import apply_lora

    full = trainable_state(tiny_policy.model)
    assert set(full) == set(tiny_policy.model.state_dict())
    peft = apply_lora(tiny_policy.model, LoraSpec(r=2, alpha=4), "tiny")
    state = trainable_state(peft)
    assert state and all("lora_" in k for k in state)
    assert sum(t.numel() for t in state.values()) < sum(t.numel() for t in full.values()) / 5


def test_connect_is_idempotent_and_checks_its_spec(local_ray):
    before = ray.get_runtime_context().get_node_id()
    assert connect(RaySpec(num_cpus=1)) is ray  # already connected: nothing restarts
    assert ray.get_runtime_context().get_node_id() == before
    assert init_kwargs(RaySpec(address="auto", options={"namespace": "x"})) == {
        "include_dashboard": False, "address": "auto", "namespace": "x"}
    with pytest.raises(ConfigError, match="num_cpus"):
        init_kwargs(RaySpec(address="auto", num_cpus=2))


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as on a machine without the extra
    with pytest.raises(SafeLadderError, match=r"pip install safeladder\[ray\]"):
        require_ray()


def test_placement_options_and_batch_splitting():
    assert split_evenly(5, 2) == [(0, 3), (3, 5)]
    assert split_evenly(1, 3) == [(0, 1)]
    assert split_evenly(0, 2) == []
    opts = actor_options("x", {"num_workers": 4, "num_gpus": 0.5, "scheduling_strategy": "SPREAD", "resources": {"big": 1}})
    assert opts.ray_options() == {"num_cpus": 1, "num_gpus": 0.5, "scheduling_strategy": "SPREAD", "resources": {"big": 1}}
    assert ActorOptions(num_cpus=2).torch_threads == 2 and ActorOptions(num_cpus=0.5).torch_threads == 1
    with pytest.raises(ConfigError, match="rollout.engine_options.*num_worker"):
        actor_options("rollout.engine_options", {"num_worker": 2})


def test_actors_the_cluster_cannot_place_are_an_error_not_a_hang(local_ray):
    with pytest.raises(SafeLadderError, match="did not start within 1 s.*num_gpus"):
        verifier_pool.RayVerifierPool(verifier="length", num_workers=1, num_gpus=1, start_timeout_s=1)  # no GPU here


def test_bad_inner_options_fail_when_the_pool_starts(local_ray):
    with pytest.raises(SafeLadderError, match="failed to start.*max_words"):
        verifier_pool.RayVerifierPool(verifier="length", options={"max_words": -1}, num_workers=1, num_cpus=0)  # the run holds the 2 CPUs


def test_a_pool_of_an_unknown_verifier_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown verifier 'nope'"):
        verifier_pool.RayVerifierPool(verifier="nope")
    with pytest.raises(ConfigError, match="cannot itself be a ray_pool"):
        verifier_pool.RayVerifierPool(verifier="ray_pool")
