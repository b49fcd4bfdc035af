"""Policy losses, drift and KL against hand computations on small tensors."""

from __future__ import annotations

import math

import torch

from safeladder.algorithms.losses import AGGREGATIONS, POLICY_LOSSES, cpgd_drift, kl_k3


def test_aggregations_by_hand():
    values = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert AGGREGATIONS.get("token-mean")(values, mask).item() == (1 + 3 + 2) / 3
    assert AGGREGATIONS.get("seq-mean-token-mean")(values, mask).item() == (2 + 2) / 2


def _grad(loss_name, logp0, logp_old, adv, eps=0.2):
    logp = torch.tensor(logp0, requires_grad=True)
    mask = torch.ones_like(logp)
    loss, metrics = POLICY_LOSSES.get(loss_name)(logp, torch.tensor(logp_old), torch.tensor(adv), mask, eps)
    loss.backward()
    return loss.item(), logp.grad, metrics


def test_cpgd_is_reinforce_inside_the_trust_region():
    # ratio 1: no clipping; loss = −mean_seq mean_tok(logp · A)
    loss, grad, m = _grad("cpgd", [[-1.0, -2.0]], [[-1.0, -2.0]], [2.0])
    assert math.isclose(loss, -((-1.0 * 2) + (-2.0 * 2)) / 2, rel_tol=1e-6)
    assert torch.allclose(grad, torch.tensor([[-1.0, -1.0]]))  # −A / T per token
    assert m["clip_frac"] == 0.0


def test_cpgd_one_sided_clip_zero_gradient_beyond_the_bound():
    up = math.log(1.2)
    # A > 0 and logp already above logp_old + log(1+ε): clipped, no gradient
    loss, grad, m = _grad("cpgd", [[0.5]], [[0.0]], [1.0])
    assert grad.abs().sum() == 0 and m["clip_frac"] == 1.0
    assert math.isclose(loss, -up, rel_tol=1e-6)  # value uses the bound
    # A > 0 and logp below the old one: the clip is one-sided, gradient flows (REINFORCE)
    _, grad, _ = _grad("cpgd", [[-0.5]], [[0.0]], [1.0])
    assert torch.allclose(grad, torch.tensor([[-1.0]]))
    # A < 0 and logp below logp_old + log(1−ε): clipped
    _, grad, _ = _grad("cpgd", [[-0.5]], [[0.0]], [-1.0])
    assert grad.abs().sum() == 0
    # A < 0 and logp above: gradient −A = +1
    _, grad, _ = _grad("cpgd", [[0.5]], [[0.0]], [-1.0])
    assert torch.allclose(grad, torch.tensor([[1.0]]))


def test_ppo_clip_by_hand():
    # ratio e^0.5 ≈ 1.65 > 1.2 with A > 0 → clipped term 1.2·A, zero gradient
    loss, grad, m = _grad("ppo_clip", [[0.5]], [[0.0]], [1.0])
    assert math.isclose(loss, -1.2, rel_tol=1e-6) and grad.abs().sum() == 0 and m["clip_frac"] == 1.0
    # inside: loss −r·A, gradient −r·A
    loss, grad, _ = _grad("ppo_clip", [[0.1]], [[0.0]], [2.0])
    assert math.isclose(loss, -2 * math.exp(0.1), rel_tol=1e-6)
    assert torch.allclose(grad, torch.tensor([[-2 * math.exp(0.1)]]))


def test_masked_tokens_contribute_nothing():
    logp = torch.tensor([[-1.0, -5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0]])  # second token is tool output
    loss, _ = POLICY_LOSSES.get("cpgd")(logp, logp.detach(), torch.tensor([1.0]), mask)
    loss.backward()
    assert loss.item() == 1.0 and logp.grad[0, 1] == 0


def test_drift_is_zero_at_old_policy_and_its_gradient_matches_kl_old_to_new():
    logp_old = torch.tensor([[-1.0, -2.0, -0.5]])
    mask = torch.ones_like(logp_old)
    logp = logp_old.clone().requires_grad_(True)
    cpgd_drift(logp, logp_old, mask).backward()
    assert torch.allclose(logp.grad, torch.zeros_like(logp))
    logp = (logp_old + torch.tensor([[0.3, -0.2, 0.1]])).requires_grad_(True)
    cpgd_drift(logp, logp_old, mask).backward()
    expected = (torch.exp(logp.detach() - logp_old) - 1) / 3  # d/dlogp of mean((r−1)·logp) with r detached
    assert torch.allclose(logp.grad, expected, atol=1e-6)


def test_k3_kl_is_zero_for_identical_policies_and_positive_otherwise():
    p = torch.tensor([-1.0, -2.0, -3.0])
    assert torch.equal(kl_k3(p, p), torch.zeros(3))
    q = p + torch.tensor([0.5, -0.5, 1.0])
    d = q - p
    assert torch.allclose(kl_k3(p, q), torch.exp(d) - d - 1) and (kl_k3(p, q) > 0).all()
