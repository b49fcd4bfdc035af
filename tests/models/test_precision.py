"""The mixed-precision policy: "auto" uses bf16 autocast only where the CPU has native bf16."""

from __future__ import annotations

import pytest
import torch

from safeladder.models import precision


@pytest.mark.parametrize("native, choice, expected", [
    (True, "auto", True), (False, "auto", False),     # auto follows the CPU flags
    (False, "bf16", True), (True, "fp32", False),     # an explicit choice wins
])
def test_cpu_precision_policy(monkeypatch, native, choice, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.use_bf16(choice, "cpu") is expected


def test_autocast_runs_matmuls_in_bf16_only_when_chosen(monkeypatch):
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    with precision.autocast(layer, "auto"):
        assert layer(x).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with precision.autocast(layer, "auto"):
        assert layer(x).dtype == torch.float32


def test_the_test_suite_pins_auto_to_fp32():
    assert precision.use_bf16("auto", "cpu") is False  # tests/conftest.py: identities hold to fp32 rounding
