"""The transformers engine: log-probs, shared prompt caches, padding, stop strings, tool turns."""

from __future__ import annotations

import pytest
import torch

from safeladder.rollout import SamplingSettings, rollout
from safeladder.rollout.hf_engine import TransformersEngine, sample_next


def _prompts(policy, texts):
    return [policy.tokenizer.encode(t, add_special_tokens=False) for t in texts]


def _teacher_forced_logprobs(model, prompt, completion, temperature=1.0):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_sampling_logprobs_match_a_teacher_forced_pass(tiny_policy):
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    prompts = _prompts(tiny_policy, ["What is 47 + 38?", "How do I kill a Python process? Use kill"])
    out = engine.sample(prompts, SamplingSettings(max_new_tokens=12, temperature=0.7, n=3, seed=1))
    assert [len(group) for group in out] == [3, 3]
    for prompt, group in zip(prompts, out):
        for c in group:
            ref = _teacher_forced_logprobs(tiny_policy.model, prompt, c.token_ids, temperature=0.7)
            assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-4)


def test_greedy_matches_hf_generate_with_left_padding_and_shared_cache(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    engine = TransformersEngine(model, tok)
    prompts = _prompts(tiny_policy, ["What is 47 + 38?", "I can't help with that. It could cause serious harm."])
    out = engine.sample(prompts, SamplingSettings(max_new_tokens=10, temperature=0.0, n=2))
    for prompt, group in zip(prompts, out):
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
        expected = ref[0, len(prompt):].tolist()
        for c in group:  # both samples of the group equal generate's greedy output
            assert c.token_ids == expected[: len(c.token_ids)]
            assert c.finish_reason in ("eos", "length")


def test_same_seed_same_samples_and_different_seed_differs(tiny_policy):
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    prompts = _prompts(tiny_policy, ["What is 47 + 38?"])
    a = engine.sample(prompts, SamplingSettings(max_new_tokens=8, temperature=1.0, n=4, seed=3))
    b = engine.sample(prompts, SamplingSettings(max_new_tokens=8, temperature=1.0, n=4, seed=3))
    c = engine.sample(prompts, SamplingSettings(max_new_tokens=8, temperature=1.0, n=4, seed=4))
    ids = lambda out: [x.token_ids for x in out[0]]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, 0.8, gen)[0]) for _ in range(200)}
    assert picks == {0, 1}
    tok, lp = sample_next(logits, 0.0, 1.0, None)
    assert int(tok) == 0 and abs(float(lp) - torch.log(torch.tensor(0.6)).item()) < 1e-5


class _EchoTool:
    """Answers every `STOP` with a fixed observation, twice at most."""

    stop = ("9",)

    def respond(self, prompt_index, text_so_far, info):
        info["calls"] = info.get("calls", 0) + 1
        return None if info["calls"] > 2 else " <information>OBS</information> "


def test_tool_turns_are_masked_and_text_continues(tiny_policy):
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    prompts = _prompts(tiny_policy, ["0 1 2 3 4 5 6 7 8", "What is 47 + 38?"])
    settings = SamplingSettings(max_new_tokens=40, temperature=1.5, n=4, seed=0)
    rollouts = rollout(engine, prompts, settings, env=_EchoTool(), max_turns=3)
    assert len(rollouts) == 8 and [r.prompt_index for r in rollouts] == [0] * 4 + [1] * 4
    obs = tiny_policy.tokenizer.encode(" <information>OBS</information> ", add_special_tokens=False)
    with_tools = [r for r in rollouts if r.turns > 1]
    assert with_tools, "the seeded run should hit the stop string at least once"
    for r in rollouts:
        assert len(r.completion_ids) == len(r.logprobs) == len(r.mask)
        assert r.n_model_tokens <= settings.max_new_tokens
        zeros = [t for t, m in zip(r.completion_ids, r.mask) if m == 0]
        assert zeros == obs * (r.turns - 1)  # exactly the tool tokens are masked out
        assert all(lp == 0.0 for lp, m in zip(r.logprobs, r.mask) if m == 0)
    r = with_tools[0]
    assert "OBS" in r.text
    # model tokens after a tool turn were sampled from the longer prefix: their log-probs match it
    k = r.mask.index(0) + len(obs)
    if k < len(r.completion_ids):
        ref = _teacher_forced_logprobs(tiny_policy.model, r.prompt_ids + r.completion_ids[:k], r.completion_ids[k:], 1.5)
        assert torch.allclose(torch.tensor(r.logprobs[k:]), ref, atol=1e-4)


def test_a_split_batch_samples_exactly_like_the_whole(tiny_policy):
    """Seeds follow each prefix's index in the whole batch, so Ray workers can each take a slice."""
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    prompts = _prompts(tiny_policy, ["What is 47 + 38?", "0 1 2 3", "I can't help with that."])
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0, n=2, seed=11)
    ids = lambda out: [[c.token_ids for c in group] for group in out]  # noqa: E731
    whole = ids(engine.sample(prompts, settings))
    split = ids(engine.sample(prompts[:1], settings)) + ids(engine.sample(prompts[1:], settings, first_index=1))
    one_by_one = ids(engine.sample(prompts, SamplingSettings(max_new_tokens=6, temperature=1.0, n=2, seed=11, batch_size=1)))
    assert whole == split == one_by_one
    assert len({tuple(c) for c in whole[0]}) > 1  # the n samples of a prefix get different streams
    shifted = ids(engine.sample(prompts[1:], settings))  # same prompts at other indices: other seeds
    assert shifted != whole[1:]


def test_inverse_cdf_sampling_follows_the_distribution_and_skips_zero_mass():
    logits = torch.log(torch.tensor([[0.5, 0.0, 0.3, 0.2]])).repeat(4000, 1)
    tokens, _ = sample_next(logits, 1.0, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert freq[1] == 0
    assert torch.allclose(freq, torch.tensor([0.5, 0.0, 0.3, 0.2]), atol=0.03)
    gens = [torch.Generator().manual_seed(7) for _ in range(3)]  # equal seeds per row: equal picks
    picks, _ = sample_next(torch.randn(1, 50).repeat(3, 1), 1.0, 0.9, gens)
    assert len(set(picks.tolist())) == 1
    with pytest.raises(ValueError, match="NaN"):
        sample_next(torch.full((1, 4), float("nan")), 1.0, 1.0, None)


def test_a_vanishing_temperature_is_greedy_not_nan():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.0]])
    tok, lp = sample_next(logits, 1e-300, 1.0, None)
    assert tok.tolist() == [1, 0] and torch.isfinite(lp).all()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_decoding_in_parallel_threads_samples_the_same_as_one_thread(temperature):
    import torch as _torch

    from safeladder.models.tiny import tiny_model, tiny_tokenizer

    model, tok = tiny_model(), tiny_tokenizer()
    prefixes = [tok.encode(t) for t in ("a b c", "x y", "the quick brown fox", "one", "two three")]
    settings = SamplingSettings(max_new_tokens=10, temperature=temperature, n=2, batch_size=5, seed=3)
    threads_before = _torch.get_num_threads()
    one = TransformersEngine(model, tok, decode_threads=1).sample(prefixes, settings)
    three = TransformersEngine(model, tok, decode_threads=3).sample(prefixes, settings)
    assert _torch.get_num_threads() == threads_before  # the intra-op setting is restored
    assert [[c.token_ids for c in g] for g in one] == [[c.token_ids for c in g] for g in three]
    for g1, g3 in zip(one, three):
        for a, b in zip(g1, g3):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_decode_threads_must_be_auto_or_positive():
    from safeladder.models.tiny import tiny_model, tiny_tokenizer

    with pytest.raises(ValueError, match="decode_threads"):
        TransformersEngine(tiny_model(), tiny_tokenizer(), decode_threads=0)


def test_merge_lora_must_be_a_boolean():
    from safeladder.models.tiny import tiny_model, tiny_tokenizer

    with pytest.raises(ValueError, match="merge_lora"):
        TransformersEngine(tiny_model(), tiny_tokenizer(), merge_lora="no")


def test_banned_tokens_are_never_drawn_and_the_logprob_stays_the_policys():
    logits = torch.tensor([[4.0, 1.0, 0.5, 0.0]] * 400)  # token 0 (say EOS) holds ~90% of the mass
    policy_logp = torch.log_softmax(logits[0], -1)
    tok, lp = sample_next(logits, 1.0, 1.0, torch.Generator().manual_seed(0), banned=[0])
    assert 0 not in tok.tolist() and set(tok.tolist()) == {1, 2, 3}
    assert torch.allclose(lp, policy_logp[tok])  # π(token), not the renormalised draw distribution
    greedy, glp = sample_next(logits[:1], 0.0, 1.0, None, banned=[0])
    assert greedy.tolist() == [1] and glp.item() == pytest.approx(policy_logp[1].item())
    nucleus, _ = sample_next(logits, 1.0, 0.5, torch.Generator().manual_seed(0), banned=[0])
    assert set(nucleus.tolist()) == {1}  # top-p applies to the renormalised mass (token 1 alone ≥ 0.5)


def test_min_new_tokens_holds_back_eos(tiny_policy):
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    prompt = _prompts(tiny_policy, ["What is 47 + 38?"])
    first = engine.sample(prompt, SamplingSettings(max_new_tokens=1, temperature=0.0))[0][0].token_ids[0]
    engine.eos_ids = {first}  # the greedy first token now ends the answer at once
    assert engine.sample(prompt, SamplingSettings(max_new_tokens=6, temperature=0.0))[0][0].finish_reason == "eos"
    for temperature in (0.0, 1.0):
        out = engine.sample(prompt, SamplingSettings(max_new_tokens=6, min_new_tokens=6, temperature=temperature, n=3, seed=2))
        for c in out[0]:
            assert len(c.token_ids) == 6 and first not in c.token_ids and c.finish_reason == "length"
        if temperature:  # log-probs of the policy itself, not of the EOS-free draw distribution
            ref = _teacher_forced_logprobs(tiny_policy.model, prompt[0], out[0][0].token_ids)
            assert torch.allclose(torch.tensor(out[0][0].logprobs), ref, atol=1e-4)
    with pytest.raises(ValueError, match="min_new_tokens"):
        SamplingSettings(max_new_tokens=4, min_new_tokens=5)


def test_min_new_tokens_holds_back_stop_strings(tiny_policy):
    engine = TransformersEngine(tiny_policy.model, tiny_policy.tokenizer)
    prompt = _prompts(tiny_policy, ["What is 47 + 38?"])
    first = engine.sample(prompt, SamplingSettings(max_new_tokens=1, temperature=0.0))[0][0]
    stop = (first.text.strip(),)
    assert stop[0]  # the tiny tokenizer's first greedy token decodes to visible text
    early = engine.sample(prompt, SamplingSettings(max_new_tokens=8, temperature=0.0, stop=stop))[0][0]
    assert (len(early.token_ids), early.finish_reason) == (1, "stop")
    held = engine.sample(prompt, SamplingSettings(max_new_tokens=8, min_new_tokens=3, temperature=0.0, stop=stop))[0][0]
    assert len(held.token_ids) >= 3 and held.token_ids[0] == first.token_ids[0]
