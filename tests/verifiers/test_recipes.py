"""Reward recipes: label routing, the mixing formula, missing verdicts, aggregation modes."""

from __future__ import annotations

import math
from typing import Any, Sequence

import pytest

from safeladder.errors import ConfigError
from safeladder.format import format_ok
from safeladder.verifiers import base
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, register_verifier
from safeladder.verifiers.recipes import (
    AGGREGATIONS,
    RecipeConfig,
    RewardComputer,
    RewardError,
    load_recipes,
    release_recipes_path,
    validate_recipes,
)

CALLS: list[tuple[str, list[VerifyItem]]] = []  # (verifier name, items it received) per call
BUILT: list[str] = []  # verifier names, once per construction

NAMES = ("test_rc_a", "test_rc_b", "test_rc_c")


class _Scripted(Verifier):
    """Scores `metadata["scores"][name]`: number → ok, status string → that status, absent → not_applicable."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        BUILT.append(self.name)

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        CALLS.append((self.name, list(items)))
        out = []
        for it in items:
            v = it.metadata.get("scores", {}).get(self.name)
            if v is None:
                out.append(Verdict.not_applicable("no scripted score"))
            elif isinstance(v, str):
                out.append(Verdict(None, None, v, {"reason": "scripted failure"}))
            else:
                out.append(Verdict(float(v) * self.scale, "scripted"))
        return out


class _PromptPlusCompletionFormat(Verifier):
    """A format check that (like the released code) looks at prompt + completion."""

    def __init__(self) -> None:
        BUILT.append(self.name)

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        CALLS.append((self.name, list(items)))
        return [Verdict(1.0 if format_ok(it.prompt + it.response) else 0.0) for it in items]


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch):
    """Register the fake verifiers (and only them: built-in modules are not imported)."""
    monkeypatch.setattr(base, "BUILTIN_VERIFIER_MODULES", [])
    added = [register_verifier(n)(type(f"Fake_{n}", (_Scripted,), {})) for n in NAMES]
    added.append(register_verifier("test_rc_fmt")(type("FakeFmt", (_PromptPlusCompletionFormat,), {})))
    CALLS.clear()
    BUILT.clear()
    yield CALLS
    for cls in added:
        base.VERIFIERS.pop(cls.name, None)


GOOD = "<think>\nreasoning\n</think>\nanswer"
BAD = "answer without tags"


def item(label: str | None, response: str = GOOD, id: str | None = None, **scores: Any) -> VerifyItem:
    meta: dict[str, Any] = {"scores": {f"test_rc_{k}": v for k, v in scores.items()}}
    if id:
        meta["id"] = id
    return VerifyItem(prompt="q", response=response, label=label, metadata=meta)


def config(**kw: Any) -> RecipeConfig:
    base_cfg: dict[str, Any] = {
        "format_verifier": "test_rc_fmt",
        "recipes": {
            "A": [{"verifier": "test_rc_a"}],
            "AB": [{"verifier": "test_rc_a"}, {"verifier": "test_rc_b", "weight": 2.0}],
            "C": [{"verifier": "test_rc_c"}],
        },
    }
    base_cfg.update(kw)
    return RecipeConfig.model_validate(base_cfg)


def calls_of(name: str) -> list[list[VerifyItem]]:
    return [items for n, items in CALLS if n == name]


# ---------------------------------------------------------------------------------------------


def test_each_verifier_runs_once_on_exactly_its_routed_items(fakes):
    rc = RewardComputer(config())
    items = [item("A", a=1), item("AB", a=1, b=1), item("C", c=1), item("AB", a=0, b=0), item("A", a=0)]
    rc.compute(items)
    assert calls_of("test_rc_a") == [[items[0], items[1], items[3], items[4]]]
    assert calls_of("test_rc_b") == [[items[1], items[3]]]
    assert calls_of("test_rc_c") == [[items[2]]]
    assert len(calls_of("test_rc_fmt")) == 1 and len(calls_of("test_rc_fmt")[0]) == 5

    CALLS.clear()
    rc.compute([item("A", a=1)])
    assert calls_of("test_rc_c") == [] and calls_of("test_rc_b") == []  # no C/AB item: never called


def test_verifiers_are_built_once_at_construction(fakes):
    rc = RewardComputer(config())
    assert sorted(BUILT) == ["test_rc_a", "test_rc_b", "test_rc_c", "test_rc_fmt"]
    rc.compute([item("A", a=1)])
    rc.compute([item("AB", a=1, b=1)])
    assert len(BUILT) == 4


def test_reward_is_format_plus_weighted_sum(fakes):
    cfg = config(
        format_reward=0.5,
        recipes={"AB": [{"verifier": "test_rc_a", "weight": 2.0}, {"verifier": "test_rc_b", "weight": -1.0}]},
    )
    res = RewardComputer(cfg).compute([item("AB", a=0.25, b=0.5), item("AB", response=BAD, a=1.0, b=0.0)])
    assert res.rewards == pytest.approx([0.5 * 1 + 2 * 0.25 - 1 * 0.5, 0.5 * 0 + 2 * 1.0 - 0.0])
    assert res.components == {"format": [1.0, 0.0], "test_rc_a": [0.25, 1.0], "test_rc_b": [0.5, 0.0]}
    assert res.raw_rewards == res.rewards


def test_components_are_none_where_not_routed_and_metrics_average_applied_only(fakes):
    res = RewardComputer(config()).compute([item("A", a=0.2), item("AB", a=0.6, b=0.5), item("C", c=1.0)])
    assert res.components["test_rc_b"] == [None, 0.5, None]
    assert res.components["test_rc_a"] == [0.2, 0.6, None]
    m = res.metrics()
    assert m["reward/test_rc_a/mean"] == pytest.approx(0.4)
    assert m["reward/test_rc_a/count"] == 2
    assert m["reward/test_rc_c/count"] == 1
    assert m["reward/mean"] == pytest.approx((1.2 + (1 + 0.6 + 1.0) + 2.0) / 3)
    assert m["reward/skipped"] == 0


def test_format_reward_zero_disables_the_format_check(fakes):
    res = RewardComputer(config(format_reward=0)).compute([item("A", a=0.5)])
    assert "format" not in res.components and res.rewards == [0.5]
    assert calls_of("test_rc_fmt") == []


def test_unknown_verifier_in_recipe_is_a_config_error_at_construction(fakes):
    cfg = config(recipes={"A": [{"verifier": "test_rc_a"}], "knowledge": [{"verifier": "no_such_judge"}]})
    with pytest.raises(ConfigError, match=r"recipe 'knowledge': unknown verifier 'no_such_judge'"):
        RewardComputer(cfg)
    assert BUILT == []  # nothing built before the check


def test_bad_verifier_options_name_the_recipe(fakes):
    cfg = config(recipes={"A": [{"verifier": "test_rc_a", "options": {"nope": 1}}]})
    with pytest.raises(ConfigError, match=r"recipe 'A'.*test_rc_a.*nope"):
        RewardComputer(cfg)


def test_named_instance_is_shared_and_options_conflicts_are_errors(fakes):
    cfg = config(
        verifiers={"a_half": {"type": "test_rc_a", "options": {"scale": 0.5}}},
        recipes={"X": [{"verifier": "a_half"}], "Y": [{"verifier": "a_half", "weight": 2.0}]},
    )
    res = RewardComputer(cfg).compute([item("X", a=1.0), item("Y", a=0.5)])
    assert BUILT.count("test_rc_a") == 1
    assert res.components["a_half"] == [0.5, 0.25]
    assert res.rewards == pytest.approx([1 + 0.5, 1 + 2 * 0.25])

    clash = config(
        recipes={"X": [{"verifier": "test_rc_a", "options": {"scale": 2.0}}], "Y": [{"verifier": "test_rc_a"}]}
    )
    with pytest.raises(ConfigError, match="different options in recipes 'X' and 'Y'"):
        RewardComputer(clash)
    with pytest.raises(ConfigError, match="format_reward"):
        RewardComputer(config(recipes={"X": [{"verifier": "test_rc_fmt"}]}))


def test_missing_verdict_is_an_error_naming_sample_label_and_verifier(fakes):
    rc = RewardComputer(config())
    with pytest.raises(RewardError) as err:
        rc.compute([item("A", a=1.0), item("AB", id="s-7", a=1.0)])  # no score for test_rc_b
    msg = str(err.value)
    for part in ("s-7", "'AB'", "test_rc_b", "not_applicable", "no scripted score"):
        assert part in msg
    with pytest.raises(RewardError, match=r"#1.*test_rc_a.*parse_error"):
        rc.compute([item("A", a=1.0), item("A", a="parse_error")])


def test_missing_verdict_of_a_weight_zero_component_is_recorded_not_an_error(fakes):
    # A cost computed at weight 0 (e.g. the refusal verifier on an empty answer) must not stop a run.
    rc = RewardComputer(config(recipes={"AB": [{"verifier": "test_rc_a"}, {"verifier": "test_rc_b", "weight": 0.0}]}))
    res = rc.compute([item("AB", a=0.5, b=1.0), item("AB", a=0.5)])
    assert res.rewards == pytest.approx([1.5, 1.5])
    assert res.components["test_rc_b"] == [1.0, None] and res.skipped == [(1, "test_rc_b", "not_applicable")]
    with pytest.raises(RewardError, match="test_rc_a"):  # a weighted component still is
        rc.compute([item("AB", b=1.0)])


def test_missing_verdict_under_skip_is_dropped_and_recorded(fakes):
    rc = RewardComputer(config(on_missing="skip"))
    res = rc.compute([item("AB", a=0.5, b=0.5), item("AB", a=0.5, b="error"), item("AB", b=1.0)])
    assert res.rewards == pytest.approx([1 + 0.5 + 1.0, 1 + 0.5, 1 + 2.0])
    assert res.skipped == [(1, "test_rc_b", "error"), (2, "test_rc_a", "not_applicable")]
    assert res.components["test_rc_b"] == [0.5, None, 1.0]
    m = res.metrics()
    assert m["reward/skipped"] == 2 and m["reward/test_rc_b/skipped"] == 1 and m["reward/test_rc_b/count"] == 2


def test_unknown_label_error_or_format_only(fakes):
    with pytest.raises(RewardError, match=r"sample q-3: label 'mystery' has no recipe"):
        RewardComputer(config()).compute([item("A", a=1), item("mystery", id="q-3")])
    with pytest.raises(RewardError, match="label None"):
        RewardComputer(config()).compute([item(None)])

    CALLS.clear()
    rc = RewardComputer(config(unknown_label="format_only", format_reward=0.7))
    items = [item("A", a=1.0), item("mystery"), item("mystery", response=BAD)]
    res = rc.compute(items)
    assert res.rewards == pytest.approx([1.7, 0.7, 0.0])
    assert res.unrouted == [1, 2]
    assert calls_of("test_rc_a") == [[items[0]]]
    assert res.metrics()["reward/unrouted"] == 2


def _two_groups() -> tuple[list[VerifyItem], list[int]]:
    # objectives: format (w 1), test_rc_a (w 1), test_rc_b (w 2); groups [0, 0, 0, 1, 1]
    items = [
        item("AB", a=1.0, b=0.5),            # raw 1 + 1 + 1   = 3
        item("AB", response=BAD, a=0.0, b=1.0),  # raw 0 + 0 + 2   = 2
        item("A", a=0.5),                    # raw 1 + 0.5     = 1.5
        item("AB", a=1.0, b=0.0),            # raw 1 + 1 + 0   = 2
        item("A", a=0.0),                    # raw 1 + 0       = 1
    ]
    return items, [0, 0, 0, 1, 1]


def _z(xs: list[float]) -> list[float]:
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
    return [(x - mean) / (std + 1e-6) for x in xs]


def test_aggregation_sum(fakes):
    items, groups = _two_groups()
    res = RewardComputer(config(aggregation="sum")).compute(items, groups)
    assert res.rewards == pytest.approx([3.0, 2.0, 1.5, 2.0, 1.0])


def test_aggregation_sum_then_normalise(fakes):
    items, groups = _two_groups()
    res = RewardComputer(config(aggregation="sum_then_normalise")).compute(items, groups)
    g0 = [(3 - 13 / 6) / math.sqrt(7 / 18), (2 - 13 / 6) / math.sqrt(7 / 18), (1.5 - 13 / 6) / math.sqrt(7 / 18)]
    assert res.rewards == pytest.approx(g0 + [1.0, -1.0], abs=1e-4)
    assert res.raw_rewards == pytest.approx([3.0, 2.0, 1.5, 2.0, 1.0])
    # no group ids: the whole batch is one group
    whole = RewardComputer(config(aggregation="sum_then_normalise")).compute(items)
    assert whole.rewards == pytest.approx(_z([3.0, 2.0, 1.5, 2.0, 1.0]), abs=1e-6)


def test_aggregation_normalise_per_objective(fakes):
    items, groups = _two_groups()
    res = RewardComputer(config(aggregation="normalise_per_objective")).compute(items, groups)
    r2, r6 = math.sqrt(2), math.sqrt(6)
    # format   g0 [1, 0, 1] -> [1/√2, -√2, 1/√2];  g1 [1, 1] -> [0, 0]
    # test_a   g0 [1, 0, .5] -> [√6/2, -√6/2, 0];  g1 [1, 0] -> [1, -1]
    # test_b   g0 [.5, 1, –] -> [-1, 1, –];       g1 [0, –] -> [0, –]   (weight 2)
    expected = [
        1 / r2 + r6 / 2 + 2 * -1,
        -r2 - r6 / 2 + 2 * 1,
        1 / r2 + 0,
        0 + 1 + 2 * 0,
        0 - 1,
    ]
    assert res.rewards == pytest.approx(expected, abs=1e-4)


def test_aggregations_are_a_registry_of_the_three_modes():
    assert set(AGGREGATIONS) == {"sum", "sum_then_normalise", "normalise_per_objective"}


def test_group_ids_length_must_match(fakes):
    with pytest.raises(ValueError, match="2 group ids for 1 items"):
        RewardComputer(config()).compute([item("A", a=1)], [0, 1])


def test_format_is_scored_on_the_completion_only(fakes):
    prompt_with_tags = "<think>reason inside the tags</think> then answer after them. What is 2+2?"
    items = [
        VerifyItem(prompt=prompt_with_tags, response="4", label="A", metadata={"scores": {"test_rc_a": 1.0}}),
        VerifyItem(prompt=prompt_with_tags, response=GOOD, label="A", metadata={"scores": {"test_rc_a": 1.0}}),
    ]
    assert format_ok(items[0].prompt + items[0].response)  # prompt + completion would pass
    res = RewardComputer(config()).compute(items)
    assert res.components["format"] == [0.0, 1.0]
    (seen,) = calls_of("test_rc_fmt")
    assert [it.prompt for it in seen] == ["", ""] and [it.response for it in seen] == ["4", GOOD]


def test_real_format_verifier_scores_completion_only(fakes):
    pytest.importorskip("safeladder.verifiers.rules")
    if "format" not in base.VERIFIERS:
        pytest.skip("the built-in format verifier is not registered yet")
    prompt_with_tags = "<think>reason inside the tags</think> then answer after them. What is 2+2?"
    items = [VerifyItem(prompt=prompt_with_tags, response=r, label="A", metadata={"scores": {"test_rc_a": 0.0}})
             for r in ("4", GOOD)]
    res = RewardComputer(config(format_verifier="format")).compute(items)
    assert res.components["format"] == [0.0, 1.0]


# ---------------------------------------------------------------------------------- YAML


def test_load_recipes_errors_name_file_and_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("format_reward: 1.0\nrecipes:\n  safety:\n    - {verifier: safety, wieght: 2}\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: recipes.safety.0.wieght: unknown key"):
        load_recipes(path)
    path.write_text("recipes: {}\naggregation: mean\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: aggregation"):
        load_recipes(path)
    path.write_text("recipes:\n  a: [\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: invalid YAML"):
        load_recipes(path)


RELEASE_LABELS = {
    "safety", "value", "knowledge", "knowledge_rule", "normal", "general", "general_rule",
    "instruction_following", "math", "benign",
}
CPU_VERIFIERS = {"format", "safety", "value", "helpfulness", "exact_match", "token_f1", "math", "ifeval"}


def test_release_recipes_load_with_every_label():
    cfg = load_recipes(release_recipes_path())
    assert set(cfg.recipes) == RELEASE_LABELS
    assert cfg.format_reward == 1.0
    assert all(e.weight == 1.0 for entries in cfg.recipes.values() for e in entries)
    names = {label: [e.verifier for e in entries] for label, entries in cfg.recipes.items()}
    assert names["safety"] == ["safety"] and names["benign"] == ["safety"]
    assert names["knowledge"][1:] == ["helpfulness"] and names["knowledge_rule"] == ["math", "helpfulness"]
    assert names["instruction_following"] == ["ifeval", "helpfulness"] and names["normal"] == ["helpfulness"]
    assert names["math"] == names["general"] == names["general_rule"] == ["math"]
    validate_recipes(cfg, known=CPU_VERIFIERS)  # every name is a CPU verifier; nothing is built
    with pytest.raises(ConfigError, match="recipe 'instruction_following': unknown verifier 'ifeval'"):
        validate_recipes(cfg, known=CPU_VERIFIERS - {"ifeval"})


def test_release_recipe_names_are_registered():
    for module in base.BUILTIN_VERIFIER_MODULES:
        pytest.importorskip(module)
    validate_recipes(load_recipes(release_recipes_path()))
