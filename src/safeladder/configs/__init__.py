"""Built-in config presets (YAML), shipped as package data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def preset_path(name: str) -> Path:
    """Path of a built-in preset such as "demo_sft"."""
    return Path(str(resources.files("safeladder.configs") / f"{name}.yaml"))
