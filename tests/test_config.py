from __future__ import annotations

import pytest

from safeladder.config import load_config, parse_override
from safeladder.errors import ConfigError
from safeladder.train.sft import SFTConfig


def test_unknown_key_names_file_line_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 1.0e-4\nbatch_size: 4\nlearning_rat: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, SFTConfig)
    assert str(err.value) == f"{cfg}:3: learning_rat: unknown key"


def test_nested_bad_value_has_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: tiny\n  lora:\n    r: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, SFTConfig)
    assert str(err.value).startswith(f"{cfg}:4: model.lora.r: ")
    assert "greater than or equal to 1" in str(err.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad, SFTConfig)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", SFTConfig)


def test_overrides_merge_into_nested_keys(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: tiny\nlr: 0.1\n")
    loaded = load_config(cfg, SFTConfig, parse_override("model.dtype=bfloat16") | parse_override("lr=0.5"))
    assert loaded.model.name == "tiny" and loaded.model.dtype == "bfloat16" and loaded.lr == 0.5
    with pytest.raises(ConfigError):
        parse_override("no-equals-sign")
