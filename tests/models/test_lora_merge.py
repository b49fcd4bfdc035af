"""MergedForSampling: sampling from merged LoRA weights is the same policy, and training never sees them."""

from __future__ import annotations

import torch

from safeladder.models.loader import LoraSpec
from safeladder.models.lora import MergedForSampling, apply_lora
from safeladder.models.tiny import tiny_model


def _lora_model(seed: int = 0, **lora):
    torch.manual_seed(seed)
    model = apply_lora(tiny_model(), LoraSpec(**lora), "tiny").eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at 0; give the adapters something to merge
            torch.nn.init.normal_(p, std=0.2)
    return model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _base_weights(model):
    return {n: p for n, p in model.named_parameters() if "base_layer" in n}


def test_merged_sampling_computes_the_adapted_model_and_restores_the_weights_exactly():
    model = _lora_model()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    want = _logits(model, ids)
    with model.disable_adapter():
        base = _logits(model, ids)
    before = {n: (p, p.detach().clone()) for n, p in _base_weights(model).items()}
    merger = MergedForSampling(model)
    with merger.active():
        merged = _logits(model, ids)
        assert sum(int(p.data_ptr() != before[n][0].data_ptr()) for n, p in _base_weights(model).items()) > 0
    assert not torch.allclose(want, base, atol=1e-3)  # the adapters matter ...
    torch.testing.assert_close(merged, want, atol=1e-5, rtol=1e-5)  # ... and merging keeps them
    for n, p in _base_weights(model).items():  # the same tensors, bit for bit
        assert p is before[n][0] and torch.equal(p, before[n][1])
    torch.testing.assert_close(_logits(model, ids), want)  # adapters are enabled again


def test_merged_weights_follow_an_optimizer_step():
    model = _lora_model()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    merger = MergedForSampling(model)
    with merger.active():
        first = _logits(model, ids)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(input_ids=ids).logits.sum().backward()
    opt.step()
    model.eval()
    want = _logits(model, ids)
    with merger.active():
        after = _logits(model, ids)
    assert not torch.allclose(first, want, atol=1e-4)
    torch.testing.assert_close(after, want, atol=1e-4, rtol=1e-4)


def test_dora_is_sampled_unmerged():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules="all-linear")).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    ids = torch.tensor([[5, 6, 7]])
    want = _logits(model, ids)
    with MergedForSampling(model).active():
        torch.testing.assert_close(_logits(model, ids), want)


def test_the_engine_samples_the_same_tokens_merged_or_not():
    from safeladder.models.tiny import tiny_tokenizer
    from safeladder.rollout import SamplingSettings
    from safeladder.rollout.hf_engine import TransformersEngine

    model, tok = _lora_model(), tiny_tokenizer()
    prompts = [tok.encode(t, add_special_tokens=False) for t in ("What is 47 + 38?", "How do I kill a process?")]
    settings = SamplingSettings(max_new_tokens=12, temperature=1.0, n=2, seed=3)
    merged = TransformersEngine(model, tok, merge_lora=True).sample(prompts, settings)
    plain = TransformersEngine(model, tok, merge_lora=False).sample(prompts, settings)
    assert [[c.token_ids for c in g] for g in merged] == [[c.token_ids for c in g] for g in plain]
    for gm, gp in zip(merged, plain):
        for cm, cp in zip(gm, gp):
            torch.testing.assert_close(torch.tensor(cm.logprobs), torch.tensor(cp.logprobs), atol=1e-4, rtol=1e-4)
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_applying_lora_does_not_warn_about_peft_reading_a_deprecated_attribute():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_lora(tiny_model(), LoraSpec(r=2, alpha=4), "tiny")
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:  # the filter is scoped: it does not leak
        warnings.simplefilter("always")
        tiny_model().is_gradient_checkpointing
    assert [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
