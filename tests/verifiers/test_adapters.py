"""Adapters: TRL reward functions, verl compute_score, OpenRLHF reward_func give the computer's numbers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Sequence

import pytest

from safeladder.format import answer_text, format_ok
from safeladder.verifiers import adapters, base
from safeladder.verifiers.adapters import (
    compute_score,
    compute_score_batch,
    get_computer,
    openrlhf_reward_func_path,
    split_response,
    trl_reward_funcs,
    trl_reward_weights,
)
from safeladder.verifiers.base import Verdict, Verifier, VerifyItem, register_verifier
from safeladder.verifiers.recipes import RecipeConfig, RewardComputer, RewardError

CALLS: list[tuple[str, int]] = []  # (verifier, batch size) per call
BUILT: list[str] = []


class _Ref(Verifier):
    """1 if the answer equals the reference; not_applicable without one."""

    def __init__(self) -> None:
        BUILT.append(self.name)

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        CALLS.append((self.name, len(items)))
        return [
            Verdict.not_applicable("no reference") if it.reference is None
            else Verdict(1.0 if answer_text(it.response) == it.reference else 0.0)
            for it in items
        ]


class _Meta(Verifier):
    """Scores `metadata["quality"]` times 1 if the request (prompt) mentions 'please', else 0.5."""

    def __init__(self) -> None:
        BUILT.append(self.name)

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        CALLS.append((self.name, len(items)))
        return [Verdict(float(it.metadata["quality"]) * (1.0 if "please" in it.prompt else 0.5)) for it in items]


class _Fmt(Verifier):
    def __init__(self) -> None:
        BUILT.append(self.name)

    def verify(self, items: Sequence[VerifyItem]) -> list[Verdict]:
        CALLS.append((self.name, len(items)))
        return [Verdict(1.0 if format_ok(it.response) else 0.0) for it in items]


RECIPES_YAML = """
format_verifier: test_adp_fmt
format_reward: 0.5
aggregation: {aggregation}
on_missing: skip
recipes:
  math: [{{verifier: test_adp_ref}}]
  chat: [{{verifier: test_adp_meta, weight: 2.0}}]
  both: [{{verifier: test_adp_ref}}, {{verifier: test_adp_meta}}]
"""


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(base, "BUILTIN_VERIFIER_MODULES", [])
    added = [
        register_verifier("test_adp_ref")(type("AdpRef", (_Ref,), {})),
        register_verifier("test_adp_meta")(type("AdpMeta", (_Meta,), {})),
        register_verifier("test_adp_fmt")(type("AdpFmt", (_Fmt,), {})),
    ]
    adapters._computer_at.cache_clear()
    CALLS.clear()
    BUILT.clear()
    for mode in ("sum", "sum_then_normalise"):
        (tmp_path / f"{mode}.yaml").write_text(RECIPES_YAML.format(aggregation=mode))
    monkeypatch.setenv(adapters.ENV_RECIPES, str(tmp_path / "sum.yaml"))
    yield tmp_path
    adapters._computer_at.cache_clear()
    for cls in added:
        base.VERIFIERS.pop(cls.name, None)


def done(answer: str) -> str:
    return f"<think>\nworking\n</think>\n{answer}"


# ------------------------------------------------------------------------------------- TRL


def test_trl_functions_return_the_computers_components_per_item(fakes):
    computer = get_computer()
    funcs = trl_reward_funcs(computer)
    assert [f.__name__ for f in funcs] == ["format", "test_adp_ref", "test_adp_meta", "total"]
    assert trl_reward_weights(funcs) == [0.0, 0.0, 0.0, 1.0]

    prompts = [
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "2+2? please"}],
        [{"role": "user", "content": "hello"}],
        [{"role": "user", "content": "3+3? please"}],
    ]
    completions = [
        [{"role": "assistant", "content": done("4")}],
        [{"role": "assistant", "content": "hi there"}],
        [{"role": "assistant", "content": done("7")}],
    ]
    columns = {
        "label": ["math", "chat", "both"],
        "answer": ["4", None, "6"],
        "quality": [0.0, 0.8, 0.4],
        "completion_ids": [[1, 2], [3], [4, 5]],  # TRL extras: must be ignored
        "trainer_state": object(),
    }
    # exactly as GRPOTrainer calls them (keywords), plus once positionally
    outs = {f.__name__: f(prompts=prompts, completions=completions, **columns) for f in funcs}
    assert funcs[-1](prompts, completions, **columns) == outs["total"]

    assert outs["format"] == [1.0, 0.0, 1.0]
    assert outs["test_adp_ref"] == [1.0, None, 0.0]
    assert outs["test_adp_meta"] == [None, pytest.approx(0.8 * 0.5), pytest.approx(0.4 * 1.0)]
    assert outs["total"] == pytest.approx([0.5 + 1.0, 0.0 + 2 * 0.4, 0.5 + 0.0 + 0.4])

    items = [
        VerifyItem("2+2? please", done("4"), "4", "math", {"quality": 0.0}),
        VerifyItem("hello", "hi there", None, "chat", {"quality": 0.8}),
        VerifyItem("3+3? please", done("7"), "6", "both", {"quality": 0.4}),
    ]
    direct = RewardComputer(computer.config).compute(items)
    assert outs["total"] == direct.rewards
    assert {k: outs[k] for k in direct.components} == direct.components


def test_trl_scores_each_batch_once_for_all_functions(fakes):
    funcs = trl_reward_funcs(str(fakes / "sum.yaml"))
    kwargs = {"label": ["math", "math"], "solution": ["1", "2"], "trainer_state": None}
    for f in funcs:
        f(prompts=["a", "b"], completions=[done("1"), done("1")], **kwargs)
    assert sorted(CALLS) == [("test_adp_fmt", 2), ("test_adp_ref", 2)]
    CALLS.clear()
    out = funcs[-1](prompts=["a", "b"], completions=[done("2"), done("2")], **kwargs)  # a new batch
    assert out == [0.5, 1.5] and len(CALLS) == 2


def test_trl_groups_by_prompt_for_normalising_modes(fakes):
    funcs = trl_reward_funcs(str(fakes / "sum_then_normalise.yaml"))
    prompts = ["p1", "p1", "p2", "p2"]
    out = funcs[-1](prompts, [done("1"), done("0"), done("1"), "1"], label=["math"] * 4, answer=["1"] * 4)
    # raw: [1.5, 0.5] in group p1, [1.5, 1.0] in group p2 -> ±1 within each group
    assert out == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-4)


# ------------------------------------------------------------------------------------- verl


def test_verl_compute_score_matches_the_computer(fakes):
    computer = get_computer()
    cases = [
        ("math", done("4"), "4", {"index": 0}),
        ("openai/gsm8k", done("5"), 4, {"label": "math"}),  # label from extra_info, numeric ground truth
        ("chat", "no tags", None, {"quality": 0.5, "prompt": "please help"}),
    ]
    got = [compute_score(ds, sol, gt, extra) for ds, sol, gt, extra in cases]
    items = [
        VerifyItem("", done("4"), "4", "math", {"index": 0}),
        VerifyItem("", done("5"), "4", "math", {}),
        VerifyItem("please help", "no tags", None, "chat", {"quality": 0.5, "prompt": "please help"}),
    ]
    direct = computer.compute(items)
    assert [g["score"] for g in got] == pytest.approx(direct.rewards)
    assert [g["score"] for g in got] == pytest.approx([1.5, 0.5, 1.0])
    for g in got:  # same keys everywhere, NaN where an objective did not apply
        assert set(g) == {"score", "format", "test_adp_ref", "test_adp_meta"}
    assert math.isnan(got[2]["test_adp_ref"]) and got[2]["test_adp_meta"] == 0.5
    assert BUILT.count("test_adp_ref") == 1  # one computer, cached across calls


def test_verl_recipes_from_extra_info_and_batch_groups(fakes):
    other = fakes / "other.yaml"
    other.write_text(RECIPES_YAML.format(aggregation="sum").replace("format_reward: 0.5", "format_reward: 0.0"))
    assert compute_score("math", done("4"), "4", {"recipes": str(other)})["score"] == 1.0

    sols, extras = [done("1"), done("0"), done("1"), "1"], [{"uid": "u1"}, {"uid": "u1"}, {"uid": "u2"}, {"uid": "u2"}]
    path = str(fakes / "sum_then_normalise.yaml")
    for e in extras:
        e["recipes"] = path
    out = compute_score_batch(["math"] * 4, sols, ["1"] * 4, extras)
    assert [o["score"] for o in out] == pytest.approx([1.0, -1.0, 1.0, -1.0], abs=1e-4)
    flat = compute_score_batch(["math"] * 4, sols, ["1"] * 4, [{"recipes": path}] * 4)  # no groups: plain sum
    assert [o["score"] for o in flat] == pytest.approx([1.5, 0.5, 1.5, 1.0])


# --------------------------------------------------------------------------------- OpenRLHF


def _load_openrlhf_func():
    """Load the reward file the way OpenRLHF does (from a path, not as a package import)."""
    spec = importlib.util.spec_from_file_location("reward_func_under_test", openrlhf_reward_func_path())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


def test_openrlhf_reward_func_matches_the_computer(fakes, monkeypatch):
    monkeypatch.setenv(adapters.ENV_RECIPES, str(fakes / "sum_then_normalise.yaml"))
    reward_func = _load_openrlhf_func()
    prompt1 = (
        "<|im_start|>system\nUse <think>…</think> then answer.<|im_end|>\n"
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt2 = prompt1.replace("q1", "q2")
    responses = [done("1"), "1", done("2"), done("3")]
    prompts = [prompt1, prompt1, prompt2, prompt2]
    queries = ["<|endoftext|><|endoftext|>" + p + r + "<|im_end|>" for p, r in zip(prompts, responses)]
    labels = ['{"label": "math", "answer": "1"}', {"label": "math", "reference": "1"},
              '{"label": "both", "answer": "2", "quality": 1.0, "prompt": "q2 please"}',
              '{"label": "chat", "quality": 0.5}']

    out = reward_func(queries, prompts, labels)

    items = [
        VerifyItem(prompt1, done("1"), "1", "math", {}),
        VerifyItem(prompt1, "1", "1", "math", {}),
        VerifyItem("q2 please", done("2"), "2", "both", {"quality": 1.0}),
        VerifyItem(prompt2, done("3"), None, "chat", {"quality": 0.5}),
    ]
    direct = get_computer().compute(items, [0, 0, 1, 1])
    assert out["rewards"].tolist() == pytest.approx(direct.rewards, abs=1e-6)
    assert direct.raw_rewards == pytest.approx([1.5, 1.0, 2.5, 0.5 + 2 * 0.25])
    # scores: raw / the label's best reward (math 1.5, both 2.5, chat 2.5)
    assert out["scores"].tolist() == pytest.approx([1.0, 1.0 / 1.5, 1.0, 1.0 / 2.5])
    assert out["extra_logs"]["safeladder/test_adp_ref"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert out["extra_logs"]["safeladder/test_adp_ref_applied"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert out["extra_logs"]["safeladder/format"].tolist() == [1.0, 0.0, 1.0, 1.0]


def test_openrlhf_plain_labels_use_env_label_and_bad_queries_fail(fakes, monkeypatch):
    monkeypatch.setenv(adapters.ENV_LABEL, "math")
    reward_func = _load_openrlhf_func()
    out = reward_func(["Q:" + done("7"), "Q:" + done("8")], ["Q:", "Q:"], ["7", "7"])
    assert out["rewards"].tolist() == [1.5, 0.5]
    with pytest.raises(RewardError, match="query #0"):
        reward_func(["something else" + done("7")], ["Q:"], ["7"])


def test_split_response_keeps_only_the_completion():
    assert split_response("<pad><pad>PROMPT<think>a</think> b<|im_end|><|endoftext|>", "PROMPT") == "<think>a</think> b"
    assert split_response("PROMPT answer</s>", "PROMPT") == " answer"


def test_as_computer_rejects_other_types():
    with pytest.raises(TypeError, match="RecipeConfig"):
        trl_reward_funcs(42)


def test_trl_funcs_accept_a_recipe_config(fakes):
    cfg = RecipeConfig.model_validate(
        {"format_verifier": "test_adp_fmt", "recipes": {"math": [{"verifier": "test_adp_ref"}]}}
    )
    funcs = trl_reward_funcs(cfg, include_components=False)
    assert [f.__name__ for f in funcs] == ["total"]
    assert funcs[0](["p"], [done("3")], label=["math"], answer=["3"]) == [2.0]
