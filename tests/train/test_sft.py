from __future__ import annotations

import torch

from safeladder.data.traces import builtin_traces
from safeladder.models.loader import load_policy
from safeladder.train import checkpoint as ckpt
from safeladder.train.metrics import MetricsLog
from safeladder.train.sft import SFTConfig, SFTTrainer


def _cfg(tmp_path, **kw) -> SFTConfig:
    base = dict(
        model={"name": "tiny"}, output_dir=str(tmp_path / "run"), max_len=512, batch_size=4,
        lr=3e-3, warmup_ratio=0.0, lr_schedule="constant", tensorboard=False, save_every=2,
        data={"builtin": {"math": 8, "harmful": 4, "benign": 4}},
    )
    return SFTConfig(**(base | kw))


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_loss_falls_on_a_fixed_batch(tmp_path):
    cfg = _cfg(tmp_path, batch_size=4, max_steps=30, data={"builtin": {"math": 4}})
    trainer = SFTTrainer(cfg)
    before = _params(trainer.policy.model)
    losses = [trainer.train_step()["loss"] for _ in range(30)]  # 4 samples = one fixed batch
    assert losses[-1] < 0.5 * losses[0], losses
    after = _params(trainer.policy.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    samples = builtin_traces({"math": 8})
    big = SFTTrainer(_cfg(tmp_path / "a", batch_size=8, grad_accum=1, max_steps=1), samples=samples)
    acc = SFTTrainer(_cfg(tmp_path / "b", batch_size=4, grad_accum=2, max_steps=1), samples=samples)
    # Same examples in the step (the order within a step does not matter for a token-mean loss).
    assert sorted(sum(big._micro_batches(0), [])) == sorted(sum(acc._micro_batches(0), []))
    for t in (big, acc):  # plain SGD: Adam's first step is ~sign(g) and would amplify rounding noise
        t.optimizer = torch.optim.SGD([p for p in t.policy.model.parameters() if p.requires_grad], lr=0.1)
    r1, r2 = big.train_step(), acc.train_step()
    assert abs(r1["loss"] - r2["loss"]) < 1e-5
    p1, p2 = _params(big.policy.model), _params(acc.policy.model)
    assert all(torch.allclose(p1[k], p2[k], atol=1e-6) for k in p1)


def test_data_order_is_a_deterministic_length_bucketed_permutation(tmp_path):
    trainer = SFTTrainer(_cfg(tmp_path, max_steps=2))
    order = trainer._order(0)
    assert order == trainer._order(0) and order != trainer._order(1)
    per_step = trainer.cfg.batch_size
    assert len(order) == trainer.steps_per_epoch * per_step and len(set(order)) == len(order)


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    straight = SFTTrainer(_cfg(tmp_path / "straight", max_steps=6, save_every=100))
    straight.train(show_progress=False)

    first = SFTTrainer(_cfg(tmp_path / "split", max_steps=6, save_every=3))
    for _ in range(3):
        first.train_step()
    first.save()
    second = SFTTrainer(_cfg(tmp_path / "split", max_steps=6, save_every=3))
    assert second.resume() and second.step == 3
    second.train(resume=False, show_progress=False)  # already resumed
    a, b = _params(straight.policy.model), _params(second.policy.model)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows = MetricsLog.read(tmp_path / "split" / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [4, 5, 6]


def test_lora_training_changes_only_adapters_and_checkpoints_them(tmp_path):
    cfg = _cfg(tmp_path, model={"name": "tiny", "lora": {"r": 4, "alpha": 8}}, max_steps=2)
    trainer = SFTTrainer(cfg)
    model = trainer.policy.model
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
    trainer.train(show_progress=False)
    assert all(torch.equal(frozen[k], dict(model.named_parameters())[k]) for k in frozen)
    last = ckpt.latest_checkpoint(tmp_path / "run")
    assert (last / "model" / "adapter_model.safetensors").is_file()
    fresh = load_policy(cfg.model)
    ckpt.load_trainable_weights(fresh.model, last / "model")
    trained = {k: v for k, v in model.named_parameters() if "lora_" in k}
    restored = dict(fresh.model.named_parameters())
    assert trained and all(torch.equal(v, restored[k]) for k, v in trained.items())


def test_user_trace_files_are_curated_before_training(tmp_path):
    import json

    from safeladder.format import make_completion
    from safeladder.train.sft import build_dataset

    good = make_completion("3 + 4 = 7. Check: 7 - 4 = 3.", "The answer is 7.")
    rows = [
        {"id": "ok", "prompt": "What is 3 + 4?", "label": "math", "reference": "7", "response": good},
        {"id": "wrong", "prompt": "What is 3 + 5?", "label": "math", "reference": "8", "response": good},
        {"id": "untagged", "prompt": "Hello?", "label": "normal", "response": "Hi there."},
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(tmp_path, data={"builtin": {}, "files": [{"path": str(path)}]})
    assert [s.id for s in build_dataset(cfg)] == ["ok"]
    raw = _cfg(tmp_path, data={"builtin": {}, "files": [{"path": str(path), "curate": False}]})
    assert [s.id for s in build_dataset(raw)] == ["ok", "wrong", "untagged"]


def test_counts_above_the_split_cycle_with_new_trace_variants():
    from safeladder.data.sources.benign import load_benign
    from safeladder.data.traces import builtin_traces

    pool = len(load_benign("train"))
    samples = builtin_traces({"benign": pool + 10})
    assert len(samples) == pool + 10
    ids = [s.id for s in samples]
    assert len(set(ids)) == pool  # every prompt once, then ten again
    first = {s.id: s.response for s in samples[:pool]}
    again = samples[pool:]
    assert all(s.id in first for s in again)
    assert sum(first[s.id] != s.response for s in again) >= 5  # the second pass uses other trace variants


def test_labelled_loss_skips_prompt_logits_without_changing_the_loss(tmp_path):
    from safeladder.data.chat_tokens import collate, token_losses
    from safeladder.train.sft import labelled_loss_sum

    trainer = SFTTrainer(_cfg(tmp_path, max_steps=1, data={"builtin": {"math": 3, "harmful": 2}}))
    model, pad = trainer.policy.model, trainer.policy.tokenizer.pad_token_id
    enc = collate(trainer.examples[:5], pad)
    seen: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.append(o.shape[:-1].numel()))
    with torch.no_grad():
        fast = labelled_loss_sum(model, enc)
        full, _ = token_losses(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits,
                               enc["labels"])
    hook.remove()
    predicting_a_label = int((enc["labels"][:, 1:] != -100).sum())
    assert seen == [predicting_a_label, enc["input_ids"].numel()]  # the head skipped prompts and padding
    assert torch.allclose(fast, full, rtol=1e-5), (fast, full)


def test_judgement_first_opens_only_the_safety_reasoning_with_its_verdict(tmp_path):
    """`data.judgement_first`: harmful traces think "Harmful request. …", benign look-alikes
    "Harmless request. …", arithmetic is untouched; the rest of each trace is unchanged."""
    from safeladder.format import parse_response
    from safeladder.train.sft import build_dataset

    counts = {"math": 4, "harmful": 6, "benign": 6}
    plain = builtin_traces(counts)
    cfg = _cfg(tmp_path, data={"builtin": counts, "judgement_first": True})
    judged = build_dataset(cfg)
    assert [s.id for s in judged] == [s.id for s in plain]
    expected_opening = {"safety": "Harmful request.", "benign": "Harmless request.", "math": ""}
    for before, after in zip(plain, judged):
        opening = expected_opening[before.label]
        think_before, think_after = parse_response(before.response).think, parse_response(after.response).think
        assert think_after == (f"{opening} {think_before}" if opening else think_before), after.response
        assert parse_response(after.response).answer == parse_response(before.response).answer
