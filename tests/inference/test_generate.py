from __future__ import annotations

import pytest

from safeladder.inference.generate import GenerationSettings, generate

CHATS = [[{"role": "user", "content": "What is 2 + 2?"}], [{"role": "user", "content": "Hi"}]]


def test_batched_greedy_generation_equals_one_by_one(tiny_policy):
    s = GenerationSettings(max_new_tokens=12, batch_size=2, precision="fp32")
    batched = generate(tiny_policy.model, tiny_policy.tokenizer, CHATS, s)
    single = [generate(tiny_policy.model, tiny_policy.tokenizer, [c], s)[0] for c in CHATS]
    assert [g.completion for g in batched] == [g.completion for g in single]
    assert all(g.n_tokens <= 12 for g in batched)
    assert tiny_policy.tokenizer.padding_side == "right"  # restored after left-padded generation


def test_sampling_is_seeded(tiny_policy):
    s = GenerationSettings(max_new_tokens=10, temperature=1.0, seed=7, precision="fp32")
    a = generate(tiny_policy.model, tiny_policy.tokenizer, CHATS, s)
    b = generate(tiny_policy.model, tiny_policy.tokenizer, CHATS, s)
    assert [g.completion for g in a] == [g.completion for g in b]


@pytest.mark.slow
def test_smollm2_generates_with_its_chat_template(smollm2):
    g = generate(smollm2.model, smollm2.tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
                 GenerationSettings(max_new_tokens=40))[0]
    assert "Paris" in g.completion
