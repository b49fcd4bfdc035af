"""Every shipped preset validates against its schema (a typo in a preset would only fail at run time)."""

from __future__ import annotations

import pytest

from safeladder.config import load_config
from safeladder.configs import preset_path

SFT = ("demo_sft", "search_sft")
RL = ("rl_cpu", "search_rl")
LADDERS = ("ladder_demo", "ladder_quick")
SUITES = ("eval_default", "eval_demo", "eval_dev", "eval_quick")
RECIPES = ("recipes_release", "recipes_search", "recipes_guarded")


@pytest.mark.parametrize("name", SFT)
def test_sft_presets_validate(name):
    from safeladder.train.sft import SFTConfig

    assert load_config(preset_path(name), SFTConfig).max_len > 0


@pytest.mark.parametrize("name", RL)
def test_rl_presets_validate(name):
    from safeladder.train.rl_config import RLConfig

    assert load_config(preset_path(name), RLConfig).total_steps >= 1


@pytest.mark.parametrize("name", LADDERS)
def test_ladder_presets_validate_with_every_stage(name):
    from safeladder.ladder import load_ladder

    assert load_ladder(name).stages


@pytest.mark.parametrize("name", SUITES)
def test_suites_validate(name):
    from safeladder.eval.suite import load_suite

    assert load_suite(preset_path(name)).benchmarks


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_validate(name):
    from safeladder.verifiers.recipes import load_recipes

    assert load_recipes(preset_path(name)).recipes


def test_search_presets_share_the_system_prompt_and_mask_the_tool_output():
    from safeladder.search.prompt import SEARCH_SYSTEM_PROMPT
    from safeladder.search.traces import TOOL_SPANS
    from safeladder.train.rl_config import RLConfig
    from safeladder.train.sft import SFTConfig

    sft = load_config(preset_path("search_sft"), SFTConfig)
    rl = load_config(preset_path("search_rl"), RLConfig)
    assert sft.system_prompt == rl.system_prompt == SEARCH_SYSTEM_PROMPT
    assert [tuple(s) for s in sft.masked_spans] == list(TOOL_SPANS)
    assert rl.curriculum[0].recipe == "recipes_search"
