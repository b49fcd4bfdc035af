"""Score a JSONL file of items with one verifier or a reward recipe (`safeladder verifier score`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from safeladder.data.loaders import read_jsonl, write_jsonl
from safeladder.errors import DataError
from safeladder.verifiers.base import VerifyItem

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "prompt": str, "response": str, "label": (str, type(None)),
    "reference": (str, type(None)), "metadata": (dict, type(None)),
}


def read_items(path: str | Path) -> Iterator[tuple[dict[str, Any], VerifyItem]]:
    """Yield (raw row, item); a row with a missing or mistyped field is a DataError (file:line: field)."""
    for line, row in read_jsonl(path):
        for field in ("prompt", "response"):
            if field not in row:
                raise DataError(path, line, field, "missing")
        for field, kind in _FIELDS.items():
            if field in row and not isinstance(row[field], kind):
                raise DataError(path, line, field, f"expected {getattr(kind, '__name__', 'string or null')}")
        yield row, VerifyItem(
            prompt=row["prompt"], response=row["response"], reference=row.get("reference"),
            label=row.get("label"), metadata=row.get("metadata") or {},
        )


def score_with_verifier(name: str, input_path: Path, output_path: Path, options: dict[str, Any] | None = None) -> int:
    from safeladder.verifiers.base import build_verifier

    rows, items = zip(*read_items(input_path)) if input_path.stat().st_size else ((), ())
    verifier = build_verifier(name, **(options or {}))
    verdicts = verifier(list(items)) if items else []
    out = [
        dict(row) | {"score": v.score, "verdict": v.label, "status": v.status, "details": v.details}
        for row, v in zip(rows, verdicts)
    ]
    return write_jsonl(output_path, out)


def score_with_recipe(recipe_path: Path, input_path: Path, output_path: Path) -> int:
    from safeladder.verifiers.recipes import RewardComputer, load_recipes

    rows, items = zip(*read_items(input_path)) if input_path.stat().st_size else ((), ())
    computer = RewardComputer(load_recipes(recipe_path))
    result = computer.compute(list(items)) if items else None
    out = []
    for i, row in enumerate(rows):
        components = {k: v[i] for k, v in result.components.items() if v[i] is not None}
        out.append(dict(row) | {"score": result.rewards[i], "verdict": None, "status": "ok",
                                "details": {"components": components}})
    return write_jsonl(output_path, out)
