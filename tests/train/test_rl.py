"""The RL loop on the tiny model: rewards rise on a rule reward, resume continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from safeladder.train.rl import RLTrainer
from safeladder.train.rl_config import RLConfig
from safeladder.verifiers.base import Verdict, Verifier, register_verifier
from safeladder.verifiers.recipes import RecipeConfig, RecipeEntry, RewardComputer


@register_verifier("test_contains_7")
class Contains7(Verifier):
    """1 when the judged text contains the digit 7 (a reward the tiny model can learn fast)."""

    def verify(self, items):
        return [Verdict(score=float("7" in self.judged_text(it)), label="seven") for it in items]


# Supervised replay (PPO-ptx) of a few built-in verified traces.
_REPLAY = {"coef": 0.5, "batch_size": 4, "max_len": 256, "builtin": {"math": 5, "harmful": 3, "benign": 3}}


def _prompts(tmp_path: Path, n: int = 12) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Say a number {i}", "label": "seven"}) + "\n" for i in range(n)))
    return path


def _config(tmp_path: Path, **over) -> RLConfig:
    raw = {
        "model": {"name": "tiny"},
        "output_dir": str(tmp_path / "run"),
        "tasks": {"numbers": {"path": str(_prompts(tmp_path)), "split": "all"}},
        "curriculum": [{"name": "one", "steps": 3, "mixture": {"numbers": 1.0}, "recipe": "seven"},
                       {"name": "two", "steps": 3, "mixture": {"numbers": 1.0}, "recipe": "seven"}],
        "rollout": {"group_size": 8, "prompts_per_step": 4, "max_new_tokens": 8, "temperature": 1.0},
        "algorithm": {"kl_coef": 0.0, "micro_batch_size": 16},
        "optim": {"lr": 2e-2, "warmup_ratio": 0.0},
        "save_every": 2, "tensorboard": False, "seed": 0,
    }
    for k, v in over.items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
    return RLConfig.model_validate(raw)


def _computers() -> dict[str, RewardComputer]:
    return {"seven": RewardComputer(RecipeConfig(format_reward=0.0, recipes={"seven": [RecipeEntry(verifier="test_contains_7")]}))}


def test_rl_raises_a_rule_reward_and_changes_parameters(tmp_path):
    cfg = _config(tmp_path)
    trainer = RLTrainer(cfg, reward_computers=_computers())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    rows = [trainer.train_step() for _ in range(6)]
    rewards = [r["reward/mean"] for r in rows]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.15, rewards
    changed = sum(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed > 0
    assert {"time/generate_s", "time/verify_s", "time/train_s", "train/entropy", "adv/std", "reward/test_contains_7/mean"} <= set(rows[0])
    assert [r["phase"] for r in rows] == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("replay", [None, _REPLAY], ids=["plain", "with_replay"])
def test_kill_and_resume_continue_with_the_same_cursor_and_phase(tmp_path, replay):
    cfg = _config(tmp_path, replay=replay)
    full = RLTrainer(cfg.model_copy(update={"output_dir": str(tmp_path / "full")}), reward_computers=_computers())
    full_rows = [full.train_step() for _ in range(4)]

    first = RLTrainer(cfg, reward_computers=_computers())
    for _ in range(2):
        first.train_step()
    first.save()  # what a periodic checkpoint at step 2 leaves behind before a kill
    del first
    resumed = RLTrainer(cfg, reward_computers=_computers())
    assert resumed.resume() and resumed.step == 2
    assert resumed.sampler.cursors == {"numbers": 8}  # 2 steps × 4 prompts consumed
    rows = [resumed.train_step() for _ in range(2)]
    assert [r["phase"] for r in rows] == [0, 1]
    for a, b in zip(rows, full_rows[2:]):
        assert a["reward/mean"] == pytest.approx(b["reward/mean"], abs=1e-6)
    for (n, p), (_, q) in zip(resumed.model.named_parameters(), full.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n


def test_lora_reference_is_the_base_and_kl_starts_at_zero(tmp_path):
    cfg = _config(tmp_path, model={"name": "tiny", "lora": {"r": 4, "alpha": 8}}, algorithm={"kl_coef": 0.1, "micro_batch_size": 16})
    trainer = RLTrainer(cfg, reward_computers=_computers())
    assert trainer.reference is None  # no second copy with LoRA
    row = trainer.train_step()
    assert row["train/kl"] == pytest.approx(0.0, abs=1e-7)  # fresh adapters (B = 0): policy == reference
    while row["adv/std"] == 0:  # steps with all-equal rewards leave the adapters at zero
        row = trainer.train_step()
        assert row["train/kl"] == pytest.approx(0.0, abs=1e-7)
    row = trainer.train_step()
    assert row["train/kl"] > 0


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    results = []
    for mb in (32, 5):
        cfg = _config(tmp_path, algorithm={"kl_coef": 0.0, "micro_batch_size": mb}, output_dir=str(tmp_path / f"mb{mb}"))
        trainer = RLTrainer(cfg, reward_computers=_computers())
        trainer.train_step()
        results.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    for n in results[0]:
        assert torch.allclose(results[0][n], results[1][n], atol=1e-5), n


def test_unknown_task_in_a_phase_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        _config(tmp_path, curriculum=[{"name": "x", "steps": 1, "mixture": {"nope": 1.0}}])


def test_periodic_evaluation_writes_points_through_the_harness(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "generation: {max_new_tokens: 6, batch_size: 8}\n"
        "benchmarks: [{name: arithmetic, kind: math, source: arithmetic, split: dev, limit: 2}]\n"
        "scores: {capability: [{benchmark: arithmetic, metric: accuracy}], safety: []}\n"
    )
    cfg = _config(tmp_path, curriculum=[{"name": "one", "steps": 2, "mixture": {"numbers": 1.0}, "recipe": "seven"}],
                  eval={"every": 1, "suite": str(suite)})
    RLTrainer(cfg, reward_computers=_computers()).train(show_progress=False)
    points = sorted(p.name for p in (tmp_path / "run" / "eval").iterdir())
    assert points == ["step-000001", "step-000002"]
    assert (tmp_path / "run" / "eval" / "step-000002" / "arithmetic" / "generations.jsonl").is_file()


def test_skipping_zero_advantage_rows_gives_the_same_update(tmp_path, monkeypatch):
    import safeladder.train.rl as rl

    cfg = _config(tmp_path, algorithm={"kl_coef": 0.0, "micro_batch_size": 5})
    trainers = [RLTrainer(cfg.model_copy(update={"output_dir": str(tmp_path / f"t{k}")}), reward_computers=_computers()) for k in (0, 1)]
    batch, _ = trainers[0].collect()
    batch.advantages = torch.randn(32, generator=torch.Generator().manual_seed(0))
    batch.advantages[: 8] = 0.0  # one whole group without signal
    batch.advantages[10] = 0.0
    assert rl.rows_with_gradient(list(range(32)), batch.advantages, cfg.algorithm) == [8, 9] + list(range(11, 32))
    with_kl = cfg.algorithm.model_copy(update={"kl_coef": 0.1})
    assert rl.rows_with_gradient(list(range(32)), batch.advantages, with_kl) == list(range(32))

    for t in trainers:  # plain SGD: Adam's first step (≈ lr·sign(g)) would magnify float noise of zero gradients
        t.optimizer = torch.optim.SGD([p for p in t.model.parameters() if p.requires_grad], lr=1.0)
    skipped = trainers[0].train_on(batch)
    monkeypatch.setattr(rl, "rows_with_gradient", lambda rows, adv, algo: rows)  # the reference: every row trained
    full = trainers[1].train_on(batch)
    assert skipped["train/rows"] == 23 and full["train/rows"] == 32
    assert skipped["train/loss"] == pytest.approx(full["train/loss"], abs=1e-6)
    for (n, p), (_, q) in zip(trainers[0].model.named_parameters(), trainers[1].model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), n
    before = RLTrainer(cfg.model_copy(update={"output_dir": str(tmp_path / "t2")}), reward_computers=_computers()).model
    assert not torch.allclose(before.lm_head.weight, trainers[0].model.lm_head.weight, atol=1e-4)  # the update is real


def test_min_new_tokens_reaches_the_engine_and_must_fit_max(tmp_path, monkeypatch):
    import safeladder.train.rl as rl_module

    seen = []
    real = rl_module.rollout
    monkeypatch.setattr(rl_module, "rollout", lambda engine, ids, settings, *a, **kw: seen.append(settings) or real(engine, ids, settings, *a, **kw))
    cfg = _config(tmp_path, rollout={"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 6, "min_new_tokens": 6})
    row = RLTrainer(cfg, reward_computers=_computers()).train_step()
    assert seen[0].min_new_tokens == 6 and row["response/tokens_mean"] == 6
    with pytest.raises(ValueError, match="min_new_tokens"):
        _config(tmp_path, rollout={"max_new_tokens": 6, "min_new_tokens": 7})


def test_every_rollout_is_logged_with_its_reward_verdicts_and_advantage(tmp_path):
    cfg = _config(tmp_path, curriculum=[{"name": "one", "steps": 2, "mixture": {"numbers": 1.0}, "recipe": "seven"}])
    trainer = RLTrainer(cfg, reward_computers=_computers())
    trainer.train(show_progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4 * 8  # steps × prompts × G
    for m in metrics:
        mine = [r for r in rows if r["step"] == m["step"]]
        assert sum(r["reward"] for r in mine) / len(mine) == pytest.approx(m["reward/mean"], abs=1e-6)
        for g in {r["group"] for r in mine}:  # GRPO: advantages centre on zero within each group
            assert sum(r["advantage"] for r in mine if r["group"] == g) == pytest.approx(0.0, abs=1e-4)
    r = rows[0]
    assert r["verdicts"] == {"test_contains_7": "seven"}
    assert all(r["scores"] == {"test_contains_7": r["reward"]} for r in rows)  # no format reward, one verifier
    assert {r["reward"] for r in rows} == {0.0, 1.0}
    assert r["id"].startswith("p") and r["prompt"].startswith("Say a number") and r["label"] == "seven"


def test_replay_order_depends_only_on_the_step_and_covers_every_trace_once_per_pass(tmp_path):
    from safeladder.train.replay import ReplayBatches, ReplaySpec

    trainer = RLTrainer(_config(tmp_path), reward_computers=_computers())
    spec = ReplaySpec.model_validate(_REPLAY)
    a, b = (ReplayBatches(spec, trainer.tokenizer, trainer.cfg.system_prompt) for _ in range(2))
    assert len(a.examples) == 11 and a.per_epoch == 2
    assert [a.indices(s) for s in range(5)] == [b.indices(s) for s in range(5)]
    first_pass = a.indices(0) + a.indices(1)
    assert len(set(first_pass)) == 8  # no trace twice within a pass
    assert a.indices(2) != a.indices(0)  # the next pass is reshuffled
    with pytest.raises(ValueError, match="fewer than batch_size"):
        ReplayBatches(spec.model_copy(update={"batch_size": 12}), trainer.tokenizer, trainer.cfg.system_prompt)


def test_replay_adds_coef_times_the_sft_gradient_even_when_no_rollout_has_signal(tmp_path):
    from safeladder.train.replay import replay_loss

    cfg = _config(tmp_path, replay=_REPLAY, optim={"lr": 1.0, "warmup_ratio": 0.0, "grad_clip": 1e9})
    trainer = RLTrainer(cfg, reward_computers=_computers())
    batch, _ = trainer.collect()
    batch.advantages = torch.zeros_like(batch.advantages)  # no policy gradient at all (kl_coef 0)
    trainer.optimizer = torch.optim.SGD([p for p in trainer.model.parameters() if p.requires_grad], lr=1.0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    trainer.model.zero_grad()  # the expected update, by hand: −lr · coef · ∇ token-mean NLL
    replay_loss(trainer.model, trainer.replay.batch(0)).backward()
    expected = {n: before[n] - 0.5 * p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad()

    row = trainer.train_on(batch)
    assert row["train/rows"] == 0 and row["train/replay_nll"] > 0
    assert len(expected) > 0
    for n, p in trainer.model.named_parameters():
        if n in expected:
            assert torch.allclose(p, expected[n], atol=1e-5), n
