"""The vLLM engine without vLLM: a fake `vllm` module checks requests, Completion records and weight sync."""

from __future__ import annotations

import copy
import os
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from safeladder.errors import ConfigError, SafeLadderError
from safeladder.rollout import SamplingSettings, rollout
from safeladder.rollout.engines import build_engine
from safeladder.rollout.hf_engine import prefix_seed
from safeladder.rollout.vllm_engine import VLLMEngine, _load_weights_on_worker, hf_weights


@dataclass
class FakeLogprob:
    logprob: float


class FakeModel:
    def __init__(self):
        self.loaded: list[list[tuple[str, torch.Tensor]]] = []

    def load_weights(self, weights):
        self.loaded.append([(n, t.clone()) for n, t in weights])
        return {n for n, _ in self.loaded[-1]}


class FakeLLM:
    """Records what the engine asks for; answers from `script(prompt_ids, params)`."""

    def __init__(self, model: str, **kwargs):
        self.files, self.kwargs = sorted(os.listdir(model)), kwargs
        self.model = FakeModel()
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(
            model_runner=SimpleNamespace(model=self.model))))
        self.calls, self.resets, self.rpcs = [], 0, []
        self.script = None

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        return [SimpleNamespace(outputs=self.script(p["prompt_token_ids"], sp)) for p, sp in zip(prompts, sampling_params)]

    def reset_prefix_cache(self):
        self.resets += 1

    def collective_rpc(self, method, args=()):
        self.rpcs.append((method, args))
        return [method(SimpleNamespace(model_runner=SimpleNamespace(model=self.model)), *args)]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)  # the engine sets them (external_launcher); undone after the test
    return module


def _output(index, ids, finish_reason, stop_reason):
    logprobs = [{tok: FakeLogprob(-0.25 * (j + 1)), tok + 1: FakeLogprob(-9.0)} for j, tok in enumerate(ids)]
    return SimpleNamespace(index=index, token_ids=tuple(ids), logprobs=logprobs, finish_reason=finish_reason, stop_reason=stop_reason)


def test_requests_carry_token_ids_and_seeds_and_outputs_become_completions(fake_vllm, tiny_policy):
    tok = tiny_policy.tokenizer
    engine = build_engine("vllm", tiny_policy.model, tok, gpu_memory_utilization=0.2)
    llm = engine.llm
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(llm.files)  # started from the trainer's weights
    assert llm.kwargs["gpu_memory_utilization"] == 0.2 and llm.kwargs["logprobs_mode"] == "processed_logprobs"
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher" and os.environ["WORLD_SIZE"] == "1"

    stop_ids = tok.encode("7 </search>", add_special_tokens=False)
    eos_ids = tok.encode("85", add_special_tokens=False) + [tok.eos_token_id]
    endings = [("stop", "</search>", stop_ids), ("stop", None, eos_ids), ("length", None, [30, 31, 32]), ("stop", tok.eos_token_id, [40])]

    def script(prompt_ids, params):  # returned out of order: the engine must sort by index
        base = 0 if prompt_ids[0] == prompts[0][0] else 2
        return [_output(k, endings[base + k][2], *endings[base + k][:2]) for k in reversed(range(params.n))]

    llm.script = script
    prompts = [tok.encode("What is 47 + 38?", add_special_tokens=False), tok.encode("0 1 2", add_special_tokens=False)]
    settings = SamplingSettings(max_new_tokens=7, min_new_tokens=2, temperature=0.8, top_p=0.9, n=2, stop=("</search>",), seed=4)
    out = engine.sample(prompts, settings)

    sent_prompts, params = llm.calls[0]
    assert sent_prompts == [{"prompt_token_ids": p} for p in prompts]
    assert [p.seed for p in params] == [prefix_seed(4, 0), prefix_seed(4, 1)]
    p = params[0]
    assert (p.n, p.temperature, p.top_p, p.max_tokens, p.min_tokens, p.stop, p.logprobs, p.include_stop_str_in_output) == (
        2, 0.8, 0.9, 7, 2, ["</search>"], 0, True)
    flat = [c for group in out for c in group]
    assert [c.finish_reason for c in flat] == ["stop", "eos", "length", "eos"]
    assert [c.token_ids for c in flat] == [e[2] for e in endings]
    assert flat[0].logprobs == [-0.25 * (j + 1) for j in range(len(stop_ids))]
    assert flat[0].text == tok.decode(stop_ids, skip_special_tokens=True) and flat[0].text.endswith("</search>")
    assert flat[1].text == "85"  # EOS kept in the ids (it is trained on), not in the text

    rollouts = rollout(engine, prompts, settings)  # the multi-turn driver runs on it unchanged
    assert [r.completion_ids for r in rollouts] == [e[2] for e in endings] and all(set(r.mask) == {1} for r in rollouts)
    engine.sample(prompts, SamplingSettings(n=1, seed=None))
    assert llm.calls[-1][1][0].seed is None  # unseeded stays unseeded


def test_sync_loads_the_full_weights_in_process_and_resets_the_prefix_cache(fake_vllm, tiny_policy):
    model = tiny_policy.model
    engine = VLLMEngine(model, tiny_policy.tokenizer)
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(1.0)
    engine.sync_weights(model)
    (loaded,) = engine.llm.model.loaded
    expected = dict(model.named_parameters())
    assert [n for n, _ in loaded] == list(expected)
    assert all(torch.equal(t, expected[n]) for n, t in loaded)
    assert engine.llm.resets == 1


def test_lora_sync_sends_merged_weights_under_base_names_without_touching_the_trainer(fake_vllm, tiny_policy):
    from safeladder.models.loader import LoraSpec
    from safeladder.models.lora import apply_lora

    peft = apply_lora(tiny_policy.model, LoraSpec(r=2, alpha=4), "tiny")
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # fresh adapters are zero: make the merge visible
    snapshot = {n: p.clone() for n, p in peft.named_parameters()}
    merged = dict(copy.deepcopy(peft).merge_and_unload().named_parameters())

    weights = dict(hf_weights(peft))
    assert set(weights) == set(merged)
    assert all(torch.allclose(weights[n], merged[n], atol=1e-6) for n in merged)
    base_q = snapshot["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
    assert not torch.allclose(weights["model.layers.0.self_attn.q_proj.weight"], base_q)  # the adapter's delta is in
    assert all(torch.equal(p, snapshot[n]) for n, p in peft.named_parameters())  # trainer untouched

    engine = VLLMEngine(peft, tiny_policy.tokenizer)
    engine.llm.llm_engine = SimpleNamespace()  # e.g. a multi-process executor: the model is not in this process
    engine.sync_weights(peft)
    ((method, (sent,)),) = engine.llm.rpcs
    assert method is _load_weights_on_worker and {n for n, _ in sent} == set(merged)
    assert all(t.device.type == "cpu" for _, t in sent) and engine.llm.resets == 1
    assert {n for n, _ in engine.llm.model.loaded[0]} == set(merged)


def test_without_vllm_the_module_imports_and_the_engine_says_how_to_install(monkeypatch, tiny_policy):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without the extra
    with pytest.raises(SafeLadderError, match=r"pip install safeladder\[vllm\]"):
        build_engine("vllm", tiny_policy.model, tiny_policy.tokenizer)
    with pytest.raises(ConfigError, match="gpu_memory"):
        build_engine("vllm", tiny_policy.model, tiny_policy.tokenizer, gpu_memory=0.5)
