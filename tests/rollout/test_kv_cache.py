"""The preallocated KV cache gives exactly what transformers' DynamicCache gives."""

import pytest
import torch

import safeladder.rollout.hf_engine as hf_engine
from safeladder.models.tiny import tiny_model, tiny_tokenizer
from safeladder.rollout.base import SamplingSettings
from safeladder.rollout.hf_engine import TransformersEngine
from safeladder.rollout.kv_cache import PreallocatedLayer, preallocated_cache, supports_preallocated


def _sample(monkeypatch, preallocated: bool, settings: SamplingSettings):
    monkeypatch.setattr(hf_engine, "supports_preallocated", lambda model: preallocated)
    model, tok = tiny_model(), tiny_tokenizer()
    engine = TransformersEngine(model, tok)
    prefixes = [tok.encode("a b c d e"), tok.encode("x"), tok.encode("the quick brown fox")]
    return engine.sample(prefixes, settings)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_same_tokens_and_logprobs_as_the_dynamic_cache(monkeypatch, temperature):
    # n > 1 (prefix cache repeated), rows of different prompt lengths, rows finishing early (dropped)
    settings = SamplingSettings(max_new_tokens=12, temperature=temperature, n=3, batch_size=3, seed=5)
    ours = _sample(monkeypatch, True, settings)
    theirs = _sample(monkeypatch, False, settings)
    for group_a, group_b in zip(ours, theirs):
        for a, b in zip(group_a, group_b):
            assert a.token_ids == b.token_ids
            assert a.finish_reason == b.finish_reason
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=1e-5)


def test_layer_writes_in_place_and_refuses_to_overflow():
    layer = PreallocatedLayer(capacity=5)
    k = torch.randn(2, 1, 3, 4)
    keys, _ = layer.update(k, k.clone())
    assert keys.shape == (2, 1, 3, 4) and torch.equal(keys, k)
    step = torch.randn(2, 1, 1, 4)
    keys, values = layer.update(step, step)
    assert keys.shape == (2, 1, 4, 4) and torch.equal(keys[:, :, 3:], step) and layer.get_seq_length() == 4
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape == (1, 1, 4, 4) and torch.equal(layer.keys[0, :, :3], k[1])
    layer.update(step[:1], step[:1])
    with pytest.raises(ValueError, match="KV cache full"):
        layer.update(step[:1], step[:1])


def test_only_plain_full_attention_decoders_use_it():
    model = tiny_model()
    assert supports_preallocated(model)
    assert len(preallocated_cache(model, 8).layers) == model.config.num_hidden_layers
    model.config.layer_types = ["sliding_attention", "full_attention"]
    assert not supports_preallocated(model)
