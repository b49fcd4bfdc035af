"""Where SafeLadder keeps its cache (converted models, trained verifier heads), and how it writes
result files (atomically)."""

from __future__ import annotations

import os
from pathlib import Path


def safeladder_home() -> Path:
    """`$SAFELADDER_HOME`, default `~/.cache/safeladder`; created on first use."""
    home = Path(os.environ.get("SAFELADDER_HOME") or Path.home() / ".cache" / "safeladder").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def write_json(path: str | os.PathLike[str], obj: object, indent: int = 2, default: object = None) -> Path:
    """Write `obj` as JSON atomically: a reader, or a run killed midway, sees the old file or the
    whole new one, never half of it (resume markers and results depend on that)."""
    import json
    import uuid

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=indent, ensure_ascii=False, default=default) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
