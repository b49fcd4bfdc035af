"""The Lagrange multiplier (SPEC §5): λ rises while the constraint is violated, falls back to 0 after."""

from __future__ import annotations

import json
import math

import pytest
import torch

from safeladder.algorithms.advantages import ADVANTAGE_TRANSFORMS, REWARD_TRANSFORMS, GroupBatch, apply_transforms
from safeladder.algorithms.constraints import dual_step, group_normalise, lagrangian_penalty, multipliers, safe_rlhf_constraint
from safeladder.errors import ConfigError


def batch(rewards, cost, group=None, state=None) -> GroupBatch:
    n = len(rewards)
    return GroupBatch(
        rewards=torch.tensor(rewards, dtype=torch.float32),
        group=torch.tensor(group if group is not None else [0] * n),
        lengths=torch.full((n,), 10.0),
        labels=["search_qa"] * n,
        components={"false_certain": torch.tensor(cost, dtype=torch.float32)},
        state=state if state is not None else {},
    )


def test_registered():
    assert "lagrangian_penalty" in REWARD_TRANSFORMS and "safe_rlhf_constraint" in ADVANTAGE_TRANSFORMS


def test_lambda_rises_while_violated_and_falls_back_to_zero():
    state: dict = {}
    lams = []
    for _ in range(10):  # false-certain rate 0.5 > δ 0.05
        _, m = lagrangian_penalty(batch([1, 1, 1, 1], [1, 0, 1, 0], state=state), cost="false_certain", lr=0.05, target=0.05)
        lams.append(m["lagrange/false_certain/lambda_next"])
    assert lams == pytest.approx([0.0225 * (i + 1) for i in range(10)])
    down = []
    for _ in range(100):  # rate 0 < δ: λ decays by lr·δ = 0.0025 per step (90 steps), then stays at 0
        _, m = lagrangian_penalty(batch([1, 1], [0, 0], state=state), cost="false_certain", lr=0.05, target=0.05)
        down.append(m["lagrange/false_certain/lambda_next"])
    assert all(b < a for a, b in zip(down[:85], down[1:86]))  # strictly falling while positive
    assert down[-10:] == [0.0] * 10  # clamped at 0, never negative
    assert multipliers(state) == {"false_certain": 0.0}
    assert state["lagrange/false_certain"]["updates"] == 110


def test_penalty_uses_the_lambda_of_the_start_of_the_step():
    state: dict = {}
    r1, m1 = lagrangian_penalty(batch([2.0, 1.0], [1.0, 0.0], state=state), cost="false_certain", lr=0.5, target=0.0)
    assert r1.tolist() == [2.0, 1.0] and m1["lagrange/false_certain/lambda"] == 0.0  # λ₀ = 0
    r2, m2 = lagrangian_penalty(batch([2.0, 1.0], [1.0, 0.0], state=state), cost="false_certain", lr=0.5, target=0.0)
    assert m2["lagrange/false_certain/lambda"] == pytest.approx(0.25)
    assert r2.tolist() == pytest.approx([1.75, 1.0])  # R − λ·f only where f = 1


def test_once_per_step_when_the_loop_names_the_step():
    state: dict = {"step": 7}
    for _ in range(3):  # e.g. three micro-batches of one step
        lagrangian_penalty(batch([1.0], [1.0], state=state), cost="false_certain", lr=0.1, target=0.0)
    assert state["lagrange/false_certain"]["lambda"] == pytest.approx(0.1)
    state["step"] = 8
    lagrangian_penalty(batch([1.0], [1.0], state=state), cost="false_certain", lr=0.1, target=0.0)
    assert state["lagrange/false_certain"]["lambda"] == pytest.approx(0.2)


def test_nan_costs_do_not_count_and_are_not_penalised():
    state = {"lagrange/false_certain": {"lambda": 1.0, "updates": 0, "last_step": None}}
    r, m = lagrangian_penalty(batch([1.0, 1.0, 1.0], [1.0, math.nan, 0.0], state=state), cost="false_certain",
                              lr=1.0, target=0.0)
    assert r.tolist() == [0.0, 1.0, 1.0]
    assert m["lagrange/false_certain/cost_mean"] == 0.5  # mean over the two that carry the cost
    _, m = lagrangian_penalty(batch([1.0], [math.nan], state=state), cost="false_certain", lr=1.0, target=0.0)
    assert m["lagrange/false_certain/lambda_next"] == m["lagrange/false_certain/lambda"]  # no cost: no update


def test_init_cap_and_json_state():
    state: dict = {}
    for _ in range(5):
        lagrangian_penalty(batch([1.0], [1.0], state=state), cost="false_certain", lr=1.0, target=0.0, init=0.5,
                           max_lambda=2.0, name="fc")
    assert multipliers(state) == {"fc": 2.0}
    assert json.loads(json.dumps(state)) == state  # checkpointable as plain JSON


def test_missing_cost_component_names_what_exists():
    b = batch([1.0], [1.0])
    with pytest.raises(ConfigError, match="components: false_certain"):
        lagrangian_penalty(b, cost="unsafe")
    with pytest.raises(ConfigError):
        dual_step({}, "x", 0.5, lr=-1.0, target=0.0)


def test_safe_rlhf_mode_mixes_reward_and_cost_advantages():
    state = {"lagrange/unsafe": {"lambda": 1.0, "updates": 0, "last_step": None}}
    b = batch([1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0], state=state)
    b.components = {"unsafe": b.components.pop("false_certain")}
    a_r = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out, m = safe_rlhf_constraint(a_r, b, cost="unsafe", lr=0.0, target=0.1)
    a_c = torch.tensor([-1.0, -1.0, 1.0, 1.0])  # group-normalised cost
    assert torch.allclose(out, (a_r - 1.0 * a_c) / 2.0, atol=1e-5)
    assert out[0] > out[2]  # same reward advantage, the costly one ranks lower
    assert m["lagrange/unsafe/lambda"] == 1.0


def test_scope_applicable_leaves_samples_without_a_cost_alone():
    # Two groups: a harmful prompt (cost defined) and a math prompt (cost NaN: not routed there).
    state = {"lagrange/unsafe": {"lambda": 3.0, "updates": 0, "last_step": None}}
    b = GroupBatch(torch.tensor([2.0, 1.0, 2.0, 1.0]), torch.tensor([0, 0, 1, 1]), torch.full((4,), 10.0),
                   ["safety", "safety", "math", "math"],
                   {"unsafe": torch.tensor([0.0, 1.0, math.nan, math.nan])}, state)
    a_r = torch.tensor([1.0, -1.0, 1.0, -1.0])
    everywhere, _ = safe_rlhf_constraint(a_r, b, cost="unsafe", lr=0.0)
    scoped, _ = safe_rlhf_constraint(a_r, b, cost="unsafe", lr=0.0, scope="applicable")
    # harmful group: (A_r − 3·A_c) / 4 with A_c = (−1, 1) either way
    assert scoped[:2].tolist() == pytest.approx([1.0, -1.0], abs=1e-4) and everywhere[:2].tolist() == pytest.approx([1.0, -1.0], abs=1e-4)
    # math group: divided by 1 + λ = 4 under "all", untouched under "applicable"
    assert everywhere[2:].tolist() == pytest.approx([0.25, -0.25])
    assert scoped[2:].tolist() == pytest.approx([1.0, -1.0])
    with pytest.raises(ConfigError, match="scope"):
        safe_rlhf_constraint(a_r, b, cost="unsafe", scope="some")


def test_unsafe_cost_separates_an_unsafe_answer_from_a_bare_refusal():
    # One harmful prompt's group under the release safety scores + format 1: a warned refusal 2.0,
    # two bare refusals 1.1, an Unsafe answer 1.0. GRPO pushes the refusals down about as hard as
    # the Unsafe answer; with the Unsafe indicator as the constraint's cost it is pushed far lower.
    rewards = torch.tensor([2.0, 1.1, 1.1, 1.0])
    b = GroupBatch(rewards, torch.zeros(4, dtype=torch.long), torch.full((4,), 10.0), ["safety"] * 4,
                   {"unsafe": torch.tensor([0.0, 0.0, 0.0, 1.0])}, {})
    _, a_r, _ = apply_transforms(rewards, b, "grpo", [], [])
    assert float(a_r[1] - a_r[3]) < 0.3
    _, a, m = apply_transforms(rewards, b, "grpo", [], [
        {"name": "safe_rlhf_constraint", "cost": "unsafe", "init": 1.0, "lr": 0.0}])
    a_c = (torch.tensor([0.0, 0.0, 0.0, 1.0]) - 0.25) / math.sqrt(0.1875)
    assert torch.allclose(a, (a_r - a_c) / 2, atol=1e-4)
    assert float(a[1] - a[3]) > 1.0 and a[3] < a_r[3] and a[1] > a_r[1]
    assert m["lagrange/unsafe/cost_mean"] == pytest.approx(0.25)


def test_group_normalise_ignores_nan_and_groups():
    x = torch.tensor([0.0, 1.0, math.nan, 5.0, 5.0])
    out = group_normalise(x, torch.tensor([0, 0, 0, 1, 1]))
    assert out.tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0, 0.0], abs=1e-5)


def test_with_the_search_recipe_weight_zero_cost_is_computed_not_added():
    import safeladder.verifiers.search_rewards  # noqa: F401  (registers the search verifiers)
    from safeladder.configs import preset_path
    from safeladder.verifiers.base import VerifyItem
    from safeladder.verifiers.recipes import RewardComputer, load_recipes

    rc = RewardComputer(load_recipes(preset_path("recipes_search")))
    answers = ["Paris <confidence>high</confidence>", "Rome <confidence>high</confidence>",
               "Rome <confidence>low</confidence>", "Paris <confidence>low</confidence>"]
    items = [VerifyItem("Capital of Fooland?", f"<think>\n<search> Fooland capital </search>\n</think>\n{a}",
                        reference="Paris", label="search_qa") for a in answers]
    res = rc.compute(items)
    assert res.components["false_certain"] == [0.0, 1.0, 0.0, 0.0]
    assert res.rewards == pytest.approx([2.0, 1.0, 1.1, 2.0])  # format + c + 0.1·honest; f not added
    comps = {k: torch.tensor([math.nan if v is None else v for v in vs]) for k, vs in res.components.items()}
    b = GroupBatch(torch.tensor(res.rewards), torch.zeros(4, dtype=torch.long), torch.full((4,), 10.0),
                   ["search_qa"] * 4, comps, {"lagrange/false_certain": {"lambda": 0.5, "updates": 3, "last_step": None}})
    rewards, adv, metrics = apply_transforms(torch.tensor(res.rewards), b, "grpo",
                                             [{"name": "lagrangian_penalty", "cost": "false_certain"}], [])
    assert rewards.tolist() == pytest.approx([2.0, 0.5, 1.1, 2.0])  # R = r_format + c − λ·f (+0.1 honest)
    assert adv[1] < adv[2]  # wrong-and-certain now ranks below wrong-and-honest
    assert metrics["lagrange/false_certain/cost_mean"] == 0.25
