"""Where SafeLadder keeps its cache (converted models, trained verifier heads)."""

from __future__ import annotations

import os
from pathlib import Path


def safeladder_home() -> Path:
    """`$SAFELADDER_HOME`, default `~/.cache/safeladder`; created on first use."""
    home = Path(os.environ.get("SAFELADDER_HOME") or Path.home() / ".cache" / "safeladder").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
