"""Shared fixtures. Tests never touch the network or the user's real cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Use a throwaway SAFELADDER_HOME unless the caller provides one (CI shares the converted model)."""
    os.environ.setdefault("SAFELADDER_HOME", str(tmp_path_factory.mktemp("safeladder-home")))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _fp32_auto_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """`precision: auto` means fp32 in tests, whatever the CPU: on one with native bf16 (AVX512-BF16,
    AMX) "auto" turns on bf16 autocast, and the tests that check exact identities (accumulated vs
    one big batch, sampled vs teacher-forced log-probs, threads vs one thread) hold to fp32
    rounding, not bf16's. tests/models/test_precision.py checks the "auto" policy itself."""
    from safeladder.models import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


@pytest.fixture
def tiny_policy():
    from safeladder.models.loader import load_policy

    return load_policy("tiny")


@pytest.fixture(scope="session")
def smollm2(request):
    """The real embedded model (converted once per session). Only for tests marked slow."""
    from safeladder.models.loader import load_policy

    return load_policy("smollm2-135m")


REPO = Path(__file__).resolve().parents[1]
