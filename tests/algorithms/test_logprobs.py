"""completion_logprobs: the trainer's only model call, checked against a direct computation."""

import torch

from safeladder.algorithms.logprobs import build_token_batch, completion_logprobs
from safeladder.models.tiny import tiny_model


def _direct(model, prompt: list[int], completion: list[int], temperature: float) -> list[float]:
    """log π(c_j | prompt, c_<j) from one unpadded forward over the full sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0]  # (L, V)
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return [float(logp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(completion)]


def test_logprobs_match_a_direct_computation_for_ragged_prompts_and_masks():
    model = tiny_model().eval()
    # prompts of different lengths (the LM head is skipped before the earliest completion start)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    completions = [[20, 21, 22], [23, 24, 25, 26, 27], [28]]
    masks = [[1, 1, 1], [1, 0, 0, 1, 1], [1]]  # row 1: two tool tokens
    batch = build_token_batch(prompts, completions, masks, pad_id=0)
    with torch.no_grad():
        logp, entropy = completion_logprobs(model, batch, temperature=0.7, with_entropy=True)
    assert logp.shape == (3, 5) and entropy.shape == (3, 5)
    for i, (p, c, m) in enumerate(zip(prompts, completions, masks)):
        want = torch.tensor(_direct(model, p, c, 0.7)) * torch.tensor(m, dtype=torch.float32)
        torch.testing.assert_close(logp[i, : len(c)], want, atol=1e-5, rtol=1e-5)
        assert torch.all(logp[i, len(c):] == 0)  # padding positions contribute nothing
    assert bool((entropy[:, 0] > 0).all())


def test_logprobs_carry_gradients_to_the_parameters():
    model = tiny_model()
    batch = build_token_batch([[5, 6, 7]], [[8, 9]], [[1, 1]], pad_id=0)
    logp, _ = completion_logprobs(model, batch)
    logp.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_the_lm_head_runs_only_where_a_trained_token_is_predicted():
    model = tiny_model().eval()
    prompts, completions = [[5, 6, 7, 8], [9, 10]], [[20, 21], [22, 23, 24, 25]]
    masks = [[1, 1], [1, 0, 0, 1]]  # row 1: two tool tokens
    rows: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: rows.append(o.shape[:-1].numel()))
    with torch.no_grad():
        logp, entropy = completion_logprobs(model, build_token_batch(prompts, completions, masks, pad_id=0),
                                            with_entropy=True)
    hook.remove()
    assert rows == [4]  # 2 + 2 trained tokens, not the 2 × 6 positions of the padded batch
    assert logp[1, 1] == 0 and logp[1, 2] == 0 and entropy[1, 1] == 0  # tool tokens: nothing computed
    assert bool((logp[0, :2] < 0).all()) and logp[1, 0] < 0 and logp[1, 3] < 0 and logp[0, 2] == 0


def test_a_row_without_a_prompt_token_is_refused():
    import pytest

    with pytest.raises(ValueError, match="prompt token"):
        completion_logprobs(tiny_model(), build_token_batch([[]], [[8, 9]], [[1, 1]], pad_id=0))


def test_a_shared_prompt_runs_once_and_gives_the_same_values_and_gradients():
    prompt = [5, 6, 7, 8, 9]
    completions = [[20, 21, 22], [23, 24, 25, 26, 27], [28], [29, 30]]
    masks = [[1, 1, 1], [1, 0, 0, 1, 1], [1], [0, 1]]  # tool tokens; row 3's first token untrained
    results = {}
    for share in (False, True):
        torch.manual_seed(0)
        model = tiny_model()
        batch = build_token_batch([prompt] * 4, completions, masks, pad_id=0, share_prompt=share)
        assert batch.shared_prompt is share
        seen: list[int] = []
        hook = model.model.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(o.shape[:-1].numel()))
        logp, entropy = completion_logprobs(model, batch, temperature=0.7, with_entropy=True)
        hook.remove()
        (logp * batch.mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[share] = (logp.detach(), entropy, grads, sum(seen), batch.computed_tokens)
    (lp0, e0, g0, tokens0, c0), (lp1, e1, g1, tokens1, c1) = results[False], results[True]
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e1, e0, atol=1e-5, rtol=1e-5)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=n)
    assert tokens0 == 4 * 10 and tokens1 == 5 + 4 * 5  # the prompt embedded once, not four times
    assert (c0, c1) == (4 * 5 + 11, 5 + 11)
    assert lp1[3, 0] == 0 and bool((lp1[[0, 1, 2], 0] < 0).all())  # token 0: from the shared prompt pass


def test_rows_with_different_prompts_are_not_shared():
    batch = build_token_batch([[5, 6], [5, 7]], [[8], [9]], [[1], [1]], pad_id=0, share_prompt=True)
    assert not batch.shared_prompt
    assert not build_token_batch([[5, 6]], [[8]], [[1]], pad_id=0, share_prompt=True).shared_prompt
